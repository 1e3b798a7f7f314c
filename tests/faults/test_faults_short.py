"""The short fault run of ``make test``: the real stack as processes, a few thousand events
through ingest, and four faults — the broker killed and restarted, a scoring member
SIGKILLed, PostgreSQL restarted, ingest stopped with SIGTERM under load. Nothing
acknowledged is lost or counted twice; nothing answered 4xx is stored; the state equals a
recomputation; bad input never gets a 5xx. (``make soak`` runs every fault.)"""

from __future__ import annotations

import pytest

from tests.faults.check import table
from tests.faults.faults import quick_faults, run_suite

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


@pytest.mark.timeout(420)
def test_short_fault_run_loses_nothing_and_counts_nothing_twice() -> None:
    # Synchronous on purpose: the harness spawns its processes from the main thread.
    suite = run_suite([quick_faults()], rate=120.0, deadline_s=360.0, scoring_members=1)
    print(table(suite.results))
    print("overall:", suite.overall)
    # Every row, and over every phase together with the api's reads against the stored state.
    suite.assert_all_zero()
    assert sum(r.acked for r in suite.results) >= 2000, "a few thousand events at least"
    for result in suite.results:
        assert result.server_errors == 0, table([result])

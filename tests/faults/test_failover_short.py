"""The short failover of ``make test``: the real stack as processes on a primary with a
synchronous standby, load through ingest, and the primary SIGKILLed while scoring's
commit is on the standby but not yet acknowledged; the standby promoted, the old primary
fenced then rewound. Nothing acknowledged is lost or counted twice, the ambiguous commit
comes out right, the api is ready and scoring applying again without a restart.
(``make soak`` runs every failover fault.)"""

from __future__ import annotations

import pytest

from tests.faults.check import table
from tests.faults.failover import FailoverHarness, PrimaryFailoverInCommit
from tests.faults.faults import run_suite

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


@pytest.mark.timeout(240)
def test_primary_failover_in_commit_loses_nothing_and_counts_nothing_twice() -> None:
    # Synchronous on purpose: the harness spawns its processes from the main thread.
    suite = run_suite(
        [[PrimaryFailoverInCommit()]],
        rate=120.0,
        deadline_s=200.0,
        scoring_members=1,
        harness=FailoverHarness,
    )
    print(table(suite.results))
    print("overall:", suite.overall)
    suite.assert_all_zero()
    [result] = suite.results
    assert result.acked >= 500, table([result])
    notes = "\n".join(result.notes)
    assert "committed" in notes, notes  # the ambiguous commit happened, and was applied
    assert "scoring applying in" in notes, notes  # it found the new primary by itself
    assert "api ready in" in notes, notes

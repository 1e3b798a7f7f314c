"""The restore drill of ``make test`` (issue 18): PostgreSQL lost while events flow, restored
from a base backup and its WAL archive to a point in time, and scoring catching up from
Kafka by itself — every acknowledged event counted exactly once, the state equal to a
recomputation from the stored outcomes. See :mod:`tests.faults.restore` for the timeline and
docs/deploy.md ("Disaster recovery: restoring PostgreSQL") for the runbook it follows."""

from __future__ import annotations

import pytest

from tests.faults.restore import PHASES, ArchivingHarness, run_drill

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


@pytest.mark.timeout(240)
def test_restore_to_a_point_in_time_loses_nothing_and_counts_nothing_twice() -> None:
    # Synchronous on purpose: the harness spawns its processes from the main thread.
    h = ArchivingHarness(scoring_members=1)
    with h:
        drill = run_drill(h, rate=120.0)
    print(drill.report())
    assert drill.problems() == [], drill.report()
    # The drill proves something only if the restore went back in time and had to catch up.
    assert drill.after_t_present_after_restore == 0, drill.report()
    assert drill.behind_after_restore > 0, drill.report()
    assert all(drill.acked_by_phase[p] > 0 for p in PHASES), drill.report()
    assert drill.result.acked >= 500, drill.report()

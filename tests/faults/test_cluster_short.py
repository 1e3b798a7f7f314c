"""The three-broker fault of ``make test``: the stack on a three-node KRaft cluster (topics
at replication factor 3, ``min.insync.replicas`` 2, unclean leader election off), events
through ingest, and the leader of the busiest events partition SIGKILLed under load, then
restarted. Leadership moves to an in-sync replica; nothing acknowledged is lost or counted
twice; the state equals a recomputation. (``make soak`` runs every three-broker fault.)"""

from __future__ import annotations

import pytest

from tests.faults.check import table
from tests.faults.cluster import ClusterHarness, LeaderKill
from tests.faults.faults import run_suite

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


@pytest.mark.timeout(300)
def test_leader_of_the_busiest_partition_killed_loses_nothing() -> None:
    # Synchronous on purpose: the harness spawns its processes from the main thread.
    suite = run_suite(
        [[LeaderKill()]],
        rate=120.0,
        deadline_s=240.0,
        scoring_members=1,
        harness=ClusterHarness,
    )
    print(table(suite.results))
    print("overall:", suite.overall)
    suite.assert_all_zero()
    [result] = suite.results
    assert result.acked >= 500, table([result])
    # The leader did move to another broker, and the killed one caught up again.
    assert any(n.startswith("partition") and "led after" in n for n in result.notes), result.notes
    assert any("back in every ISR" in n for n in result.notes), result.notes
    assert result.server_errors == 0, table([result])

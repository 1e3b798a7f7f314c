"""``python -m tests.faults --quick | --soak``: run faults under load and print the ledger
check per fault; exit 1 unless every count is 0. The soak ends with the primary failover
phase on its own stack (``--failover-only`` runs that phase alone), and the three-broker
phase on a three-node Kafka cluster (``--cluster-only`` runs that phase alone).
``--restore-drill`` runs the PostgreSQL restore drill alone."""

from __future__ import annotations

import argparse
import sys

from tests.faults.check import table
from tests.faults.cluster import ClusterHarness, cluster_faults
from tests.faults.failover import run_failover
from tests.faults.faults import Suite, all_faults, quick_faults, run_suite
from tests.faults.restore import ArchivingHarness, run_drill


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="a few faults (the make test set)")
    mode.add_argument("--soak", action="store_true", help="every fault, several rounds")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every fault (soak)")
    parser.add_argument("--minutes", type=float, default=36.0, help="global deadline (soak)")
    parser.add_argument("--rate", type=float, default=150.0, help="events per second offered")
    parser.add_argument("--members", type=int, default=2, help="scoring members (soak)")
    parser.add_argument("--only", default="", help="comma-separated fault names (soak)")
    # The primary's failover runs on its own stack (a primary with a synchronous standby),
    # after the other rounds of the soak.
    parser.add_argument(
        "--failover-only", action="store_true", help="only the primary failover phase"
    )
    parser.add_argument(
        "--failover-minutes", type=float, default=6.0, help="deadline of the failover phase"
    )
    # The three-broker faults need a cluster: their own stack too, after the failover.
    parser.add_argument("--cluster-only", action="store_true", help="only the three-broker phase")
    parser.add_argument(
        "--cluster-rounds", type=int, default=2, help="rounds of the three-broker faults"
    )
    parser.add_argument(
        "--cluster-minutes", type=float, default=10.0, help="deadline of the three-broker phase"
    )
    # The restore drill (issue 18): its own stack, PostgreSQL lost and restored to a point
    # in time from a base backup and the WAL archive (tests/faults/restore.py).
    parser.add_argument(
        "--restore-drill", action="store_true", help="only the PostgreSQL restore drill"
    )
    args = parser.parse_args()
    if args.restore_drill:
        return _restore_drill(args.rate)
    one_phase = args.failover_only or args.cluster_only
    suites: list[Suite] = []
    if args.soak and not one_phase:
        only = {n for n in args.only.split(",") if n}
        rounds = [
            [f for f in all_faults(n) if not only or f.name in only]
            for n in range(1, args.rounds + 1)
        ]
        suites.append(
            run_suite(
                rounds, rate=args.rate, deadline_s=args.minutes * 60, scoring_members=args.members
            )
        )
    elif not one_phase:
        suites.append(
            run_suite([quick_faults()], rate=args.rate, deadline_s=240, scoring_members=1)
        )
    if (args.soak and not one_phase) or args.failover_only:
        suites.append(
            run_failover(
                rounds=args.rounds,
                rate=args.rate,
                deadline_s=args.failover_minutes * 60,
                scoring_members=args.members,
            )
        )
    if (args.soak and not one_phase) or args.cluster_only:
        suites.append(
            run_suite(
                [cluster_faults(n) for n in range(1, args.cluster_rounds + 1)],
                rate=args.rate,
                deadline_s=args.cluster_minutes * 60,
                scoring_members=args.members,
                harness=ClusterHarness,
            )
        )
    for suite in suites:
        print()
        print(table(suite.results))
        print(f"overall (every phase together): {suite.overall}")
        if suite.skipped:
            print(f"skipped for the deadline: {', '.join(suite.skipped)}")
        print(f"wall time {suite.seconds:.0f} s; {'ALL ZERO' if suite.ok else 'FAILED'}")
    return 0 if all(suite.ok for suite in suites) else 1


def _restore_drill(rate: float) -> int:
    h = ArchivingHarness(scoring_members=1)
    with h:
        drill = run_drill(h, rate=rate)
    print(drill.report())
    problems = drill.problems()
    for problem in problems:
        print(f"FAIL: {problem}")
    print("ALL ZERO" if not problems else "FAILED")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())

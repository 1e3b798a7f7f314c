"""``make bench-scale``: scoring scaled out, one instance against two, on 6 partitions.

On one broker and one database server (started here, unless ``KAFKA_BOOTSTRAP_SERVERS`` /
``TOUCHPULSE_DATABASE_URL`` name servers), with the scoring benchmark's corpus on an events
topic of the production spec (6 partitions), alternating, on a fresh database and a new
consumer group each time:

- one ``touchpulse-scoring`` process drains the topic;
- two ``touchpulse-scoring`` processes (the same group, started side by side, 3 partitions
  each after the group settles) drain it.

Every run gets fresh topics: the processes start, their group settles (every one holds its
partitions), and only then is the events topic filled (records as ingest writes them, about
ten times faster than scoring applies them), so that all of them start on the whole backlog
at once. Each run is measured as the scoring benchmark measures one: from the first poll at
which *every* process has committed a batch until every offset is committed in PostgreSQL;
CPU of each scoring process, PostgreSQL (the postmaster and all its children) and the broker
from /proc (the broker's includes taking in the records). Reported: events/s with one and
with two instances beside Kafka's own ``ConsumerPerformance`` on the same topic (K_cons),
the speed-up of two over one beside linear scaling (2.0), and the events per CPU-second of
each process.

Run ``python -m tests.bench.scale [--quick]``; the result is printed and written to
``.touchpulse/bench/scale-<UTC time>.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from tests.bench.common import (
    KERNEL_IRQ,
    Figure,
    Site,
    Spread,
    close_report,
    cpu_cells,
    figure_table,
    machine,
    open_site,
    peak_rss_bytes,
    ratio,
    sayer,
    stage_main,
    table,
)
from tests.bench.scoring import (
    CUSTOMERS,
    Bench,
    ScoringRun,
    Topics,
    create_topics,
    prefill,
    prepare,
    scoring_versions,
)
from tests.bench.scoring import Plan as ScoringPlan
from touchpulse_shared.settings import Settings

#: Linear scaling: two processes on disjoint partitions do at most twice the work of one.
LINEAR = 2.0
INSTANCES = (1, 2)
SHARED_CORES_NOTE = (
    "Both scoring processes, PostgreSQL, the broker and this process (its pollers) share the "
    "machine's {nproc} cores: a second instance can only use what the first leaves idle."
)
SPEEDUP_CEILING_NOTE = (
    "The speed-up's ceiling is linear scaling (2.0), not K_cons: Kafka's own consumer reads "
    "the topic tens of times faster than one scoring process (the K_cons figures), so the "
    "broker's fetch never binds; what can bind is whether the work divides between processes "
    "and whether the machine has cores for it."
)

#: Every figure the stage reports, each with a ceiling and a ratio.
FIGURE_KEYS = (
    "one_vs_kafka",
    "two_vs_kafka",
    "speedup_vs_linear",
    "per_cpu_s_two_vs_one",
)


@dataclass(frozen=True)
class Plan:
    name: str
    pairs: int
    #: Events pre-filled into the topic, drained by every run.
    events: int

    def scoring(self) -> ScoringPlan:
        """The scoring benchmark's plan for the same corpus, without its open loops."""
        return ScoringPlan(
            name=self.name,
            pairs=self.pairs,
            events=self.events,
            rate_per_s=0.0,
            warmup_s=0.0,
            duration_s=0.0,
            e2e_messages=0,
        )


FULL = Plan(name="full", pairs=2, events=40_000)
QUICK = Plan(name="quick", pairs=1, events=5_000)

say = sayer("bench-scale")


@dataclass
class Pair:
    one: ScoringRun
    two: ScoringRun

    @property
    def speedup(self) -> float:
        return ratio(self.two.events_per_s, self.one.events_per_s)

    def as_dict(self) -> dict[str, Any]:
        return {"one": self.one.as_dict(), "two": self.two.as_dict(), "speedup": self.speedup}


def drain(bench: Bench, index: int, instances: int) -> tuple[ScoringRun, Bench]:
    """``instances`` scoring processes of a new group on a fresh database and fresh topics:
    once the group is stable, the events topic is filled while they consume; measured until
    every offset is committed. Returns the run and the bench on its topics."""
    plan = bench.plan
    suffix = f"{bench.suffix}-{index}-{instances}"
    topics = Topics.named(suffix, prefix="bench-scale")
    site = bench.site
    site.runner.run(create_topics(bench.settings, bench.bootstrap, topics))
    site.remove_topics_later(bench.exit_stack, topics.all(), say)
    here = dataclasses.replace(bench, topics=topics, suffix=suffix.replace("-", "_"))

    async def feed() -> object:
        return await prefill(
            bench.bootstrap,
            topics.events,
            bench.corpus.filled,
            linger_ms=bench.settings.ingest_linger_ms,
        )

    say(
        f"pair {index + 1}/{plan.pairs}: {instances} scoring instance(s), group stable, then "
        f"{plan.events:,} events filled in"
    )
    run, _, _, _ = here.scoring(
        index, keep=False, instances=instances, tag=f"scale-{instances}", feed=feed
    )
    return run, here


def measure(bench: Bench) -> tuple[dict[str, Any], list[Pair]]:
    plan = bench.plan
    pairs = []
    last = bench
    for index in range(plan.pairs):
        one, _ = drain(bench, index, 1)
        two, last = drain(bench, index, 2)
        pairs.append(Pair(one, two))
    say("K_cons (ConsumerPerformance) on the last run's topic")
    return last.kcons(0), pairs


def figures(kcons: dict[str, Any], pairs: Sequence[Pair]) -> dict[str, Figure]:
    def med(values: Sequence[float]) -> float:
        return statistics.median(values)

    kcons_rate = kcons["records_per_s"]
    speedups = [p.speedup for p in pairs]
    return {
        "one_vs_kafka": Figure(
            "events/s committed, 1 scoring instance",
            "events/s",
            med([p.one.events_per_s for p in pairs]),
            "K_cons records/s (ConsumerPerformance)",
            kcons_rate,
            Spread.of(ratio(p.one.events_per_s, kcons_rate) for p in pairs),
        ),
        "two_vs_kafka": Figure(
            "events/s committed, 2 scoring instances",
            "events/s",
            med([p.two.events_per_s for p in pairs]),
            "K_cons records/s (ConsumerPerformance)",
            kcons_rate,
            Spread.of(ratio(p.two.events_per_s, kcons_rate) for p in pairs),
        ),
        "speedup_vs_linear": Figure(
            "speed-up, 2 scoring instances over 1",
            "x",
            med(speedups),
            "linear scaling (2 instances)",
            LINEAR,
            Spread.of(s / LINEAR for s in speedups),
        ),
        "per_cpu_s_two_vs_one": Figure(
            "events per CPU-second per scoring process, 2 instances",
            "events/CPU-s",
            med([p.two.events_per_cpu_s for p in pairs]),
            "the same, 1 instance",
            med([p.one.events_per_cpu_s for p in pairs]),
            Spread.of(ratio(p.two.events_per_cpu_s, p.one.events_per_cpu_s) for p in pairs),
        ),
    }


#: Columns of the CPU table: each scoring process, then the servers and this process.
CPU_COLUMNS = ("scoring", "scoring-1", "scoring-2", "postgres", "kafka", "bench", KERNEL_IRQ)


def cpu_profile(kcons: dict[str, Any], pairs: Sequence[Pair]) -> dict[str, Any]:
    """Median CPU microseconds per event and cores busy, per run and process."""

    def summarise(runs: Sequence[ScoringRun]) -> dict[str, Any]:
        names = runs[0].cpu_s.keys()
        return {
            "unit": "event",
            "us_per_unit": {
                n: statistics.median(r.cpu_s[n] / r.events for r in runs) * 1e6 for n in names
            },
            "cores": {n: statistics.median(r.cpu_s[n] / r.wall_s for r in runs) for n in names},
        }

    return {
        "1 instance": summarise([p.one for p in pairs]),
        "2 instances": summarise([p.two for p in pairs]),
        "K_cons": {
            "unit": "record",
            "us_per_unit": {n: v * 1e6 for n, v in kcons["cpu_s_per_unit"].items()},
            "cores": {n: v / kcons["wall_s_incl_jvm_start"] for n, v in kcons["cpu_s"].items()},
        },
    }


def cpu_table(profile: dict[str, Any]) -> str:
    columns = (*CPU_COLUMNS, "tool_incl_jvm_start")
    rows = [[phase, *cpu_cells(data, columns)] for phase, data in profile.items()]
    header = ["run", "per", "scoring", "scoring-1", "scoring-2", "postgres (all)", "kafka broker"]
    header += ["bench process", "kernel irq", "Kafka tool", "other cores"]
    return table(header, rows)


def figures_printed(found: dict[str, dict[str, Any]]) -> str:
    return figure_table(found, FIGURE_KEYS)


def run(plan: Plan, settings: Settings, site: Site | None = None) -> dict[str, Any]:
    """The scale-out stage on ``site``'s broker and database server (servers of its own,
    started and stopped here, without one)."""
    started = datetime.now(UTC)
    with contextlib.ExitStack() as exit_stack:
        if site is None:
            site = exit_stack.enter_context(open_site(settings, say))
        bench = prepare(plan.scoring(), settings, site, exit_stack, stage="scale", fill=False)
        kcons, pairs = measure(bench)
        found = figures(kcons, pairs)
        rss: dict[str, int | None] = {}
        for key in ("one", "two"):
            for p in pairs:
                for name, value in getattr(p, key).rss_bytes.items():
                    rss[name] = max(rss.get(name) or 0, value or 0)
        if site.kafka.pid is not None:
            rss["kafka"] = peak_rss_bytes(site.kafka.pid)
        corpus = bench.corpus
        return {
            "benchmark": "scale",
            "mode": plan.name,
            "started_at": started.isoformat(),
            "finished_at": datetime.now(UTC).isoformat(),
            "machine": machine(),
            "versions": scoring_versions(settings, site, bench.catalogue),
            "settings": {
                "kafka": "local" if site.kafka.local else "external",
                "postgresql": "local" if site.postgres.local else "external",
                "partitions": settings.events_partitions,
                "instances": list(INSTANCES),
                "scoring_max_batch": settings.scoring_max_batch,
                "corpus": {
                    "events": plan.events,
                    "customers": CUSTOMERS,
                    "record_value_bytes": corpus.value_bytes,
                    "record_key_bytes": corpus.key_bytes,
                    "record_header_bytes": corpus.header_bytes,
                },
                "plan": asdict(plan),
                "speedup_ceiling": LINEAR,
            },
            "figures": {key: found[key].as_dict() for key in FIGURE_KEYS},
            "cpu": cpu_profile(kcons, pairs),
            "peak_rss_bytes": rss,
            "kcons": kcons,
            "pairs": [p.as_dict() for p in pairs],
            "notes": [
                SHARED_CORES_NOTE.format(nproc=os.cpu_count()),
                SPEEDUP_CEILING_NOTE,
            ],
            "warnings": bench.warnings,
            "logs": str(bench.logs),
        }


def report(result: dict[str, Any]) -> str:
    settings = result["settings"]
    lines = [
        f"Touchpulse scoring scale-out benchmark ({result['mode']}), {result['started_at']}",
        f"{settings['corpus']['events']:,} events on {settings['partitions']} partitions, "
        "drained by 1 and by 2 scoring instances (one group, stable before the topic is "
        f"filled), each run on fresh topics and a fresh database; {len(result['pairs'])} "
        "pair(s)",
        *result["notes"],
        "",
        figures_printed(result["figures"]),
        "",
        "CPU microseconds per event or record (cores busy), median over pairs; postgres = the "
        "postmaster and all its children; other = the rest of the machine:",
    ]
    return close_report(lines, cpu_table(result["cpu"]), result)


def main(argv: Sequence[str] | None = None) -> int:
    return stage_main(
        "scale",
        __doc__,
        argv,
        quick="a small topic, one pair",
        plans=(FULL, QUICK),
        run=run,
        report=report,
        say=say,
    )


if __name__ == "__main__":
    sys.exit(main())

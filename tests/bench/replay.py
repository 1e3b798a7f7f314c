"""``make bench-replay``: scoring's replay rebuilding state from the events topic, beside the
plain upsert loop of the same batches (D_upsert), measured in one run.

On one broker and one database server (started here, unless ``KAFKA_BOOTSTRAP_SERVERS`` /
``TOUCHPULSE_DATABASE_URL`` name servers), the scoring benchmark's corpus pre-fills an events
topic of the production spec (6 partitions, records as ingest writes them). Then, in pairs:

- D_upsert: the scoring benchmark's ceiling, scoring's own batch writes (dedupe, outcomes,
  health, journeys, offsets: ``touchpulse_scoring.store``) of the same corpus from memory,
  one transaction per batch of ``TOUCHPULSE_SCORING_MAX_BATCH`` records, on a fresh database;
- the replay: ``touchpulse-scoring replay --scratch-url …`` as its own process, as an
  operator runs it, rebuilding the topic into a fresh scratch database (interventions and
  webhooks muted, its outbox never published) and comparing it with a live database that is
  empty here (so the comparison reports every customer as only in the replay: what is
  measured is the rebuild, not the check). Measured as the scoring benchmark measures
  scoring: from the first poll at which the scratch database holds a committed batch until
  every record is committed there; events per second and events per CPU-second of the
  replaying process. Also reported: the whole run, start-up, the final deadline sweep and
  the comparison included.

Run ``python -m tests.bench.replay [--quick]``; the result is printed and written to
``.touchpulse/bench/replay-<UTC time>.json``. See docs/performance.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from tests.bench.common import (
    KERNEL_IRQ,
    OTHER,
    BenchError,
    CpuMeter,
    Figure,
    Site,
    Spread,
    check_other,
    children_cpu_seconds,
    clock,
    close_report,
    cpu_cells,
    figure_table,
    machine,
    open_site,
    peak_rss_bytes,
    per_unit,
    ratio,
    sayer,
    stage_main,
    table,
)
from tests.bench.scoring import (
    CUSTOMERS,
    REPO,
    SCORING_DRAIN_S,
    Bench,
    UpsertRun,
    prepare,
    scoring_versions,
    upsert_batches,
)
from tests.bench.scoring import Plan as ScoringPlan
from touchpulse_shared.kafka.topics import ensure_topics_at, topic_specs
from touchpulse_shared.settings import Settings
from touchpulse_shared.stack.procs import spawn, stop
from touchpulse_shared.stack.services import settings_env

#: The consumer group the replay records its offsets under (touchpulse_scoring.replay).
REPLAY_GROUP = "touchpulse-replay"
# Issue 14's target: replay at this share of D_upsert's events/s.
TARGET_VS_UPSERT = 0.6
# The committed offsets are polled this often (a replay batch takes tenths of a second).
POLL_S = 0.05
# The whole replay: start-up, rebuild, final sweep and comparison.
REPLAY_TIMEOUT_S = SCORING_DRAIN_S + 120.0
SHARED_CORES_NOTE = (
    "This process (its poller and D_upsert's loop) shares the machine's {nproc} cores with the "
    "replaying process, the broker and PostgreSQL: every figure is what is left after it."
)
LIVE_NOTE = (
    "The replay compares its rebuild with a live database that is empty here, so it reports "
    "every customer as only in the replay (and exits 1): what is measured is the rebuild. "
    "Its batches are its own (up to 2,000 records, touchpulse_scoring.replay), D_upsert's "
    "scoring's (TOUCHPULSE_SCORING_MAX_BATCH)."
)

#: Every figure the stage reports, each with a ceiling and a ratio.
FIGURE_KEYS = (
    "events_per_s_vs_upsert",
    "events_per_cpu_s_vs_upsert",
    "whole_run_events_per_s_vs_upsert",
)


@dataclass(frozen=True)
class Plan:
    name: str
    pairs: int
    #: Events pre-filled into the topic: rebuilt by every replay, written by every D_upsert.
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


FULL = Plan(name="full", pairs=2, events=60_000)
QUICK = Plan(name="quick", pairs=1, events=5_000)

say = sayer("bench-replay")

_COMMITTED = """
    SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offset
    WHERE consumer_group = $1 AND topic = $2
"""
_COUNTS = """
    SELECT (SELECT count(*) FROM processed_event) AS processed,
           (SELECT count(*) FROM outcome) AS outcomes,
           (SELECT count(*) FROM journey_health) AS journeys,
           (SELECT count(*) FROM intervention) AS interventions
"""


@dataclass
class ReplayRun:
    """One ``touchpulse-scoring replay`` process rebuilding the pre-filled topic."""

    #: Events committed from the first batch seen to the last (the first batch left out).
    events: int
    wall_s: float
    cpu_s: dict[str, float]
    #: The whole process: start-up (migrations, profiles), rebuild, sweep, comparison.
    whole_events: int
    whole_wall_s: float
    whole_cpu_s: float
    exit_code: int
    peak_rss_bytes: int | None
    counts: dict[str, int]

    @property
    def events_per_s(self) -> float:
        return self.events / self.wall_s

    @property
    def events_per_cpu_s(self) -> float:
        return self.events / self.cpu_s["replay"]

    @property
    def whole_events_per_s(self) -> float:
        return self.whole_events / self.whole_wall_s

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "wall_s": self.wall_s,
            "events_per_s": self.events_per_s,
            "events_per_cpu_s": self.events_per_cpu_s,
            "cpu_s": self.cpu_s,
            "cpu_s_per_event": per_unit(self.cpu_s, self.events),
            "cores": per_unit(self.cpu_s, self.wall_s),
            "whole_events": self.whole_events,
            "whole_wall_s": self.whole_wall_s,
            "whole_events_per_s": self.whole_events_per_s,
            "whole_cpu_s": self.whole_cpu_s,
            "exit_code": self.exit_code,
            "peak_rss_bytes": self.peak_rss_bytes,
            "counts": self.counts,
        }


@dataclass
class Pair:
    upsert: UpsertRun
    replay: ReplayRun

    def as_dict(self) -> dict[str, Any]:
        return {"upsert": self.upsert.as_dict(), "replay": self.replay.as_dict()}


def profiles_topic(bench: Bench) -> str:
    """An empty profiles topic of the production spec (compacted), removed with the stage:
    the replay reads profiles from it before any event."""
    name = f"bench-replay-{bench.suffix}.profiles"
    spec = next(
        s
        for s in topic_specs(bench.settings.model_copy(update={"profiles_topic": name}))
        if s.name == name
    )
    bench.runner.run(ensure_topics_at(bench.bootstrap, [spec]))
    bench.site.remove_topics_later(bench.exit_stack, [name], say)
    return name


def replay(bench: Bench, index: int, profiles: str) -> ReplayRun:
    """``touchpulse-scoring replay`` of the pre-filled topic into a fresh scratch database."""
    live = bench.new_database("replay_live")
    scratch = bench.new_database("replay_scratch")
    settings = bench.topics.settings(bench.settings).model_copy(
        update={
            "kafka_bootstrap_servers": bench.bootstrap,
            "database_url": live,
            "profiles_topic": profiles,
            "log_level": "WARNING",
        }
    )
    argv = [
        str(Path(sys.executable).with_name("touchpulse-scoring")),
        "replay",
        "--scratch-url",
        scratch,
    ]
    log_path = bench.logs / f"replay-{index}.log"
    children_before = children_cpu_seconds()
    started = clock()
    proc = spawn(argv, log_path=log_path, env={**os.environ, **settings_env(settings)}, cwd=REPO)
    try:
        window = bench.runner.run(_rebuilt(bench, proc, scratch, log_path))
        code = proc.wait(max(1.0, REPLAY_TIMEOUT_S - (clock() - started)))
    except subprocess.TimeoutExpired:
        raise BenchError(f"the replay did not finish in {REPLAY_TIMEOUT_S:.0f} s") from None
    finally:
        stop(proc, timeout=10)
    whole_wall_s = clock() - started
    whole_cpu_s = children_cpu_seconds() - children_before
    if code not in (0, 1):  # 1: the rebuild differs from the (empty) live state
        raise BenchError(
            f"the replay exited with {code}:\n{log_path.read_text(errors='replace')[-2000:]}"
        )
    counts = bench.runner.run(_counts(scratch))
    bench.drop(scratch)
    bench.drop(live)
    events, wall_s, cpu_s, rss = window
    if counts["processed"] != bench.plan.events:
        bench.warnings.append(f"the replay applied {counts['processed']} of {bench.plan.events}")
    return ReplayRun(
        events=events,
        wall_s=wall_s,
        cpu_s=cpu_s,
        whole_events=bench.plan.events,
        whole_wall_s=whole_wall_s,
        whole_cpu_s=whole_cpu_s,
        exit_code=code,
        peak_rss_bytes=rss,
        counts=counts,
    )


async def _rebuilt(
    bench: Bench, proc: subprocess.Popen[bytes], scratch: str, log_path: Path
) -> tuple[int, float, dict[str, float], int | None]:
    """From the first poll at which the scratch database holds a committed batch until every
    record is committed there: events, seconds, CPU by process, the replay's peak RSS."""
    total, topic = bench.plan.events, bench.topics.events
    meter = bench.meter(replay=proc.pid, bench=os.getpid())
    deadline = clock() + REPLAY_TIMEOUT_S
    conn: asyncpg.Connection | None = None
    first: tuple[float, int, dict[str, float]] | None = None
    try:
        while True:
            if proc.poll() is not None:
                raise BenchError(
                    f"the replay exited ({proc.returncode}) before committing every record; "
                    f"see {log_path}"
                )
            if clock() > deadline:
                raise BenchError(f"the replay did not rebuild the topic in {REPLAY_TIMEOUT_S} s")
            if conn is None:
                # The scratch database is migrated by the replay; its offsets table may not
                # be readable before that.
                conn = await asyncpg.connect(scratch)
            try:
                committed = int(await conn.fetchval(_COMMITTED, REPLAY_GROUP, topic))
            except asyncpg.UndefinedTableError:
                committed = 0
            now, cpu = clock(), meter.read()
            if first is None and committed > 0:
                first = (now, committed, cpu)
            if committed >= total:
                break
            await asyncio.sleep(POLL_S)
        rss = peak_rss_bytes(proc.pid)
    finally:
        if conn is not None:
            await conn.close()
    assert first is not None
    t0, committed0, cpu0 = first
    if committed0 >= total:
        raise BenchError("the replay committed the whole topic in one batch: too few events")
    spent = CpuMeter.delta(cpu0, cpu)
    check_other(bench.warnings, "replay", spent[OTHER] / (now - t0))
    return total - committed0, now - t0, spent, rss


async def _counts(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(_COUNTS)
        assert row is not None
        return {k: int(v) for k, v in dict(row).items()}
    finally:
        await conn.close()


def measure(bench: Bench) -> list[Pair]:
    plan = bench.plan
    batches = upsert_batches(
        bench.corpus.filled,
        bench.positions,
        catalogue=bench.catalogue,
        topic=bench.topics.events,
        batch=bench.settings.scoring_max_batch,
    )
    profiles = profiles_topic(bench)
    pairs = []
    for index in range(plan.pairs):
        say(f"pair {index + 1}/{plan.pairs}: D_upsert ({len(batches)} batches)")
        upsert = bench.upsert(batches)
        say(f"pair {index + 1}/{plan.pairs}: touchpulse-scoring replay of {plan.events:,} events")
        pairs.append(Pair(upsert, replay(bench, index, profiles)))
    return pairs


def figures(pairs: Sequence[Pair]) -> dict[str, Figure]:
    def med(values: Sequence[float]) -> float:
        return statistics.median(values)

    per_s = Spread.of(ratio(p.replay.events_per_s, p.upsert.events_per_s) for p in pairs)
    return {
        "events_per_s_vs_upsert": Figure(
            "events/s rebuilt by replay",
            "events/s",
            med([p.replay.events_per_s for p in pairs]),
            "D_upsert events/s",
            med([p.upsert.events_per_s for p in pairs]),
            per_s,
            f">= {TARGET_VS_UPSERT} x D_upsert",
            per_s.median >= TARGET_VS_UPSERT,
        ),
        "events_per_cpu_s_vs_upsert": Figure(
            "events per CPU-second of the replaying process",
            "events/CPU-s",
            med([p.replay.events_per_cpu_s for p in pairs]),
            "D_upsert events per CPU-second of its loop",
            med([p.upsert.events_per_cpu_s for p in pairs]),
            Spread.of(ratio(p.replay.events_per_cpu_s, p.upsert.events_per_cpu_s) for p in pairs),
        ),
        "whole_run_events_per_s_vs_upsert": Figure(
            "events/s over the whole replay (start-up, sweep, comparison)",
            "events/s",
            med([p.replay.whole_events_per_s for p in pairs]),
            "D_upsert events/s",
            med([p.upsert.events_per_s for p in pairs]),
            Spread.of(ratio(p.replay.whole_events_per_s, p.upsert.events_per_s) for p in pairs),
        ),
    }


#: Columns of the CPU table: D_upsert's loop, the replay, then the servers and this process.
CPU_COLUMNS = ("service", "replay", "postgres", "kafka", "bench", KERNEL_IRQ)


def cpu_profile(pairs: Sequence[Pair]) -> dict[str, Any]:
    """Median CPU microseconds per event and cores busy, per phase and process."""

    def summarise(runs: Sequence[tuple[dict[str, float], float, float]]) -> dict[str, Any]:
        names = runs[0][0].keys()
        return {
            "unit": "event",
            "us_per_unit": {
                n: statistics.median(c[n] / u for c, u, _ in runs) * 1e6 for n in names
            },
            "cores": {n: statistics.median(c[n] / s for c, _, s in runs) for n in names},
        }

    return {
        "replay (pre-filled topic)": summarise(
            [(p.replay.cpu_s, p.replay.events, p.replay.wall_s) for p in pairs]
        ),
        "D_upsert": summarise([(p.upsert.cpu_s, p.upsert.events, p.upsert.wall_s) for p in pairs]),
    }


def cpu_table(profile: dict[str, Any]) -> str:
    rows = [[phase, *cpu_cells(data, CPU_COLUMNS)] for phase, data in profile.items()]
    header = ["phase", "per", "D_upsert loop", "replay", "postgres (all)", "kafka broker"]
    header += ["bench process", "kernel irq", "other cores"]
    return table(header, rows)


def figures_printed(found: dict[str, dict[str, Any]]) -> str:
    return figure_table(found, FIGURE_KEYS)


def run(plan: Plan, settings: Settings, site: Site | None = None) -> dict[str, Any]:
    """The replay stage on ``site``'s broker and database server (servers of its own,
    started and stopped here, without one)."""
    started = datetime.now(UTC)
    with contextlib.ExitStack() as exit_stack:
        if site is None:
            site = exit_stack.enter_context(open_site(settings, say))
        bench = prepare(plan.scoring(), settings, site, exit_stack, stage="replay")
        pairs = measure(bench)
        found = figures(pairs)
        rss: dict[str, int | None] = {
            "replay": max((p.replay.peak_rss_bytes or 0) for p in pairs) or None
        }
        if site.kafka.pid is not None:
            rss["kafka"] = peak_rss_bytes(site.kafka.pid)
        corpus = bench.corpus
        return {
            "benchmark": "replay",
            "mode": plan.name,
            "started_at": started.isoformat(),
            "finished_at": datetime.now(UTC).isoformat(),
            "machine": machine(),
            "versions": scoring_versions(settings, site, bench.catalogue),
            "settings": {
                "kafka": "local" if site.kafka.local else "external",
                "postgresql": "local" if site.postgres.local else "external",
                "partitions": settings.events_partitions,
                "scoring_max_batch": settings.scoring_max_batch,
                "corpus": {
                    "events": plan.events,
                    "customers": CUSTOMERS,
                    "record_value_bytes": corpus.value_bytes,
                    "record_key_bytes": corpus.key_bytes,
                    "record_header_bytes": corpus.header_bytes,
                    "measure_outcomes": corpus.measure_outcomes,
                    "deadlines_opened": corpus.deadlines_opened,
                },
                "plan": asdict(plan),
                "poll_ms": POLL_S * 1000,
            },
            "figures": {key: found[key].as_dict() for key in FIGURE_KEYS},
            "targets": {
                "events_per_s_vs_upsert": {
                    "min": TARGET_VS_UPSERT,
                    "met": found["events_per_s_vs_upsert"].met,
                }
            },
            "cpu": cpu_profile(pairs),
            "peak_rss_bytes": rss,
            "work": {"counts": pairs[-1].replay.counts},
            "pairs": [p.as_dict() for p in pairs],
            "notes": [SHARED_CORES_NOTE.format(nproc=os.cpu_count()), LIVE_NOTE],
            "warnings": bench.warnings,
            "logs": str(bench.logs),
        }


def report(result: dict[str, Any]) -> str:
    settings = result["settings"]
    work = result["work"]["counts"]
    lines = [
        f"Touchpulse replay benchmark ({result['mode']}), {result['started_at']}",
        f"{settings['corpus']['events']:,} events on {settings['partitions']} partitions "
        "rebuilt by touchpulse-scoring replay into a fresh scratch database, beside D_upsert "
        f"of the same corpus; {len(result['pairs'])} pair(s); the rebuild: "
        f"{work['processed']:,} events, {work['outcomes']:,} outcomes, {work['journeys']:,} "
        f"journeys, {work['interventions']:,} interventions (muted: none)",
        *result["notes"],
        "",
        figures_printed(result["figures"]),
        "",
        "CPU microseconds per event (cores busy), median over pairs; postgres = the "
        "postmaster and all its children; other = the rest of the machine:",
    ]
    return close_report(lines, cpu_table(result["cpu"]), result)


def main(argv: Sequence[str] | None = None) -> int:
    return stage_main(
        "replay",
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

"""``make bench-history``: scoring's cost per event and the health read's latency on an empty
database and on one holding a year of history, measured in one run.

On one broker and one database server (started here, unless ``KAFKA_BOOTSTRAP_SERVERS`` /
``TOUCHPULSE_DATABASE_URL`` name servers):

1. **The year.** A database is given N stored events' worth of rows as a year of a mid-size
   company's events leaves them (N = 2 million in the full run, 0.2 million in ``--quick``):
   ``touchpulse-scoring`` applies one week of the scoring benchmark's corpus (N / 52 events
   over its 10,000 customers: dedupe rows, outcomes, deadlines, touchpoint and journey
   health, history, interventions, exactly as scoring writes them), and SQL copies that
   week's rows 51 times, each copy a week further back (``INSERT … SELECT … CROSS JOIN
   generate_series``: new event ids, outcome keys, journey keys and intervention ids, times
   shifted; deadlines and interventions of past weeks closed). Database bytes per customer
   (``pg_total_relation_size`` of every table ÷ customers with health) are read then, and
   again after the lifecycle (``touchpulse_scoring.lifecycle.prune_round``, with the wall
   clock at the end of the year) has pruned it and ``VACUUM FULL`` has compacted what is
   kept — the database as scoring's pruning loop leaves it, on which everything below is
   measured.
2. **Scoring's cost per event.** A fixed corpus of new events, once on new customers and
   once on the pre-loaded customers, each pre-filled into a topic of its own, consumed by a
   fresh ``touchpulse-scoring`` process on the empty database and on the year's, alternating
   (empty, year, empty, year): events per second and CPU microseconds per event of scoring and
   of PostgreSQL, from the first committed batch to the last, as the scoring benchmark
   measures them.
3. **The health read.** ``touchpulse-api`` as its own process, on the empty database and on
   the year's, ``GET /v1/customers/{id}/health`` of the pre-loaded customers the corpus
   touched (so they exist in both), an open loop at a fixed rate: p50 and p99 latency from
   each request's scheduled time.

Each figure at N stored events stands beside the same figure on the empty database (issue
14: within 1.2x of each other).

Run ``python -m tests.bench.history [--quick]``; the result is printed and written to
``.touchpulse/bench/history-<UTC time>.json``. See docs/performance.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from random import Random
from typing import Any

import asyncpg

from tests.bench.api import new_key, service_settings
from tests.bench.common import (
    KERNEL_IRQ,
    LOOPBACK,
    OTHER,
    BenchError,
    CpuMeter,
    Figure,
    HttpConnection,
    LoadResult,
    Server,
    Site,
    Spread,
    check_other,
    clock,
    close_report,
    cpu_cells,
    figure_table,
    latency_summary,
    machine,
    ok_requests,
    open_loop,
    open_site,
    peak_rss_bytes,
    ratio,
    raw_calls,
    raw_request,
    sayer,
    stage_main,
    table,
)
from tests.bench.scoring import (
    CUSTOMERS,
    QUIET_S,
    REPO,
    SCORING_DRAIN_S,
    Bench,
    ScoringRun,
    build_events,
    prefill,
    prepare,
    scoring_versions,
)
from tests.bench.scoring import Plan as ScoringPlan
from touchpulse_scoring.lifecycle import Pruned, Terms, prune_round
from touchpulse_shared.auth import Scope
from touchpulse_shared.contract import EVENT_ADAPTER, ExperienceEventV1
from touchpulse_shared.kafka.topics import TopicSpec, ensure_topics_at, topic_specs
from touchpulse_shared.settings import Settings
from touchpulse_shared.stack.services import settings_env

#: The simulated year: one week applied by scoring, copied back this many weeks in all.
WEEKS = 52
# Issue 14's target: each figure at N stored events within this factor of the same on an
# empty database.
TARGET_FACTOR = 1.2
# Rows one lifecycle statement removes at most here (scoring's loop: 5,000 per transaction);
# the rows that go are the same, the bench needs fewer rounds to get there.
PRUNE_BATCH_ROWS = 50_000
PRUNE_MAX_ROUNDS = 2_000
# The rounds run with the wall clock this far ahead (longer than the rest of the stage), so
# that scoring's own pruning loop, in each measured process, finds nothing left to remove.
PRUNE_AHEAD = timedelta(hours=1)
# The health read: distinct requests (random pre-loaded customers), sent in turn.
HEALTH_REQUESTS = 5_000
SEED = 20_261_205
SHARED_CORES_NOTE = (
    "This process (the pre-load, the pollers and the health reads' load generator) shares the "
    "machine's {nproc} cores with scoring or the api, the broker and PostgreSQL."
)

#: Every figure the stage reports, each with a ceiling (the same on the empty database).
FIGURE_KEYS = (
    "events_per_s_preloaded_vs_empty",
    "events_per_s_new_vs_empty",
    "scoring_us_per_event_preloaded_vs_empty",
    "postgres_us_per_event_preloaded_vs_empty",
    "scoring_us_per_event_new_vs_empty",
    "postgres_us_per_event_new_vs_empty",
    "health_p50_vs_empty",
    "health_p99_vs_empty",
    "bytes_per_customer_vs_state",
    "bytes_per_customer_pruned_vs_year",
)
#: The phases of the CPU table: each scoring run and each health read, by database.
EMPTY, YEAR = "empty database", "after the year"
PHASES = tuple(
    f"{what}, {level}"
    for what in ("new customers", "pre-loaded customers", "health read")
    for level in (EMPTY, YEAR)
)


@dataclass(frozen=True)
class Plan:
    name: str
    #: N: events whose rows the year leaves (one week applied by scoring, copied back).
    stored_events: int
    #: Events of each corpus measured (new customers; pre-loaded customers).
    measure_events: int
    health_rate_per_s: float
    health_warmup_s: float
    health_duration_s: float
    health_connections: int = 16

    @property
    def week_events(self) -> int:
        return math.ceil(self.stored_events / WEEKS)

    @property
    def stored_label(self) -> str:
        return f"{self.stored_events / 1e6:.2g} M stored events"

    def scoring(self) -> ScoringPlan:
        """The scoring benchmark's plan for one week of the year, without its open loops."""
        return ScoringPlan(
            name=self.name,
            pairs=1,
            events=self.week_events,
            rate_per_s=0.0,
            warmup_s=0.0,
            duration_s=0.0,
            e2e_messages=0,
        )


FULL = Plan(
    name="full",
    stored_events=2_000_000,
    measure_events=20_000,
    health_rate_per_s=200.0,
    health_warmup_s=3.0,
    health_duration_s=10.0,
)
QUICK = Plan(
    name="quick",
    stored_events=200_000,
    measure_events=6_000,
    health_rate_per_s=100.0,
    health_warmup_s=1.0,
    health_duration_s=3.0,
)
#: The smoke test's form (the suite's ``--smoke``): the same steps, a few seconds each.
SMOKE = dataclasses.replace(
    QUICK,
    name="smoke",
    stored_events=20_000,
    measure_events=3_000,
    health_warmup_s=0.5,
    health_duration_s=1.0,
)

say = sayer("bench-history")

# --- the year: one week applied by scoring, copied back week by week --------------------------

# Each statement copies the week scoring applied (every row there now) to weeks 1 .. $1 - 1
# before it: identities get a '~w<n>' suffix (outcome keys inside their JSON array), times
# move back n weeks; a past week's open deadlines expired at their due time, its open
# interventions were resolved two days after they opened.
_WEEKS = (
    "CROSS JOIN generate_series(1, $1 - 1) AS w"
    " CROSS JOIN LATERAL (SELECT w * interval '7 days') AS s(d)"
)
_COPIES = {
    "processed_event": """
        INSERT INTO processed_event (source, event_id, customer_id, topic, partition,
            "offset", processed_at)
        SELECT source, event_id || '~w' || w, customer_id, topic, partition, "offset",
               processed_at - d
        FROM processed_event WEEKS
    """,
    "outcome": """
        INSERT INTO outcome (customer_id, outcome_key, promise_id, catalogue_version,
            touchpoint, occurred_at, expected, actual, gap, met, score, weight, severity,
            event_ids, recorded_at, opened_at)
        SELECT customer_id, left(outcome_key, -2) || '~w' || w || '"]', promise_id,
               catalogue_version, touchpoint, occurred_at - d, expected, actual, gap,
               met, score, weight, severity,
               ARRAY(SELECT e || '~w' || w FROM unnest(event_ids) AS e),
               recorded_at - d, opened_at - d
        FROM outcome WEEKS
    """,
    "journey_health_history": """
        INSERT INTO journey_health_history (customer_id, at, score, band)
        SELECT customer_id, at - d, score, band FROM journey_health_history WEEKS
    """,
    "deadline": """
        INSERT INTO deadline (customer_id, promise_id, journey_key, opened_at, due_at,
            opening_event_ids, catalogue_version, touchpoint, tolerance_hours, weight,
            breach_weight, severity, state, closed_at, fulfilled_by)
        SELECT customer_id, promise_id, journey_key || '~w' || w, opened_at - d, due_at - d,
               ARRAY(SELECT e || '~w' || w FROM unnest(opening_event_ids) AS e),
               catalogue_version, touchpoint, tolerance_hours, weight, breach_weight,
               severity, CASE WHEN state = 'open' THEN 'expired' ELSE state END,
               coalesce(closed_at, due_at) - d, fulfilled_by || '~w' || w
        FROM deadline WEEKS
    """,
    "early_fulfilment": """
        INSERT INTO early_fulfilment (customer_id, promise_id, journey_key, occurred_at,
            event_ref)
        SELECT customer_id, promise_id, journey_key || '~w' || w, occurred_at - d,
               event_ref || '~w' || w
        FROM early_fulfilment WEEKS
    """,
    "intervention": """
        INSERT INTO intervention (intervention_id, customer_id, state, triggers, gaps,
            actions, priority, threshold, health_at_open, opened_at, acknowledged_at,
            assignee, resolved_at, outcome_note, health_at_resolve, closed_at, follow_up_at,
            follow_up_health, updated_at)
        SELECT intervention_id || '~w' || w, customer_id,
               CASE WHEN state IN ('open', 'acknowledged') THEN 'resolved' ELSE state END,
               triggers, gaps, actions, priority, threshold, health_at_open,
               opened_at - d, acknowledged_at - d, assignee,
               coalesce(resolved_at, opened_at + interval '2 days') - d, outcome_note,
               coalesce(health_at_resolve, health_at_open),
               coalesce(closed_at, resolved_at, opened_at + interval '2 days') - d,
               -- A year's resolved cases were followed up when due, as the live loop does:
               -- copies without one would be a year of follow-ups owed, which the measured
               -- scoring processes would then work off beside the events.
               coalesce(follow_up_at - d, CASE
                   WHEN state <> 'expired' AND coalesce(resolved_at, opened_at
                       + interval '2 days') - d + FOLLOW_UP <= now()
                   THEN coalesce(resolved_at, opened_at + interval '2 days') - d + FOLLOW_UP
               END),
               coalesce(follow_up_health, CASE
                   WHEN state <> 'expired' AND coalesce(resolved_at, opened_at
                       + interval '2 days') - d + FOLLOW_UP <= now()
                   THEN coalesce(health_at_resolve, health_at_open)
               END),
               updated_at - d
        FROM intervention WEEKS
    """,
}
_COMMITTED = """
    SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offset
    WHERE consumer_group = $1 AND topic = $2
"""
_OWED = """
    SELECT (SELECT count(*) FROM kafka_outbox)
         + (SELECT count(*) FROM deadline WHERE state = 'open' AND due_at < now())
"""
# Every table's size with its indexes and TOAST, partitions under their root.
_SIZES = """
    SELECT coalesce(pg_partition_root(c.oid), c.oid)::regclass::text AS name,
           sum(pg_total_relation_size(c.oid))::bigint AS bytes
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public' AND c.relkind = 'r'
    GROUP BY 1 ORDER BY 2 DESC
"""
_ROWS = """
    SELECT (SELECT count(*) FROM processed_event) AS processed_event,
           (SELECT count(*) FROM outcome) AS outcome,
           (SELECT count(*) FROM journey_health_history) AS journey_health_history,
           (SELECT count(*) FROM deadline) AS deadline,
           (SELECT count(*) FROM intervention) AS intervention,
           (SELECT count(*) FROM touchpoint_health) AS touchpoint_health,
           (SELECT count(*) FROM journey_health) AS customers
"""
#: The state health is read from; everything else is history or bookkeeping.
STATE_TABLES = ("touchpoint_health", "journey_health", "customer_profile")


@dataclass
class Sizes:
    """The database's tables (bytes with indexes and TOAST) and rows, at one moment."""

    tables: dict[str, int]
    rows: dict[str, int]

    @property
    def customers(self) -> int:
        return self.rows["customers"]

    @property
    def total(self) -> int:
        return sum(self.tables.values())

    @property
    def per_customer(self) -> float:
        return self.total / self.customers if self.customers else math.nan

    @property
    def state_per_customer(self) -> float:
        state = sum(self.tables.get(t, 0) for t in STATE_TABLES)
        return state / self.customers if self.customers else math.nan

    def as_dict(self) -> dict[str, Any]:
        return {
            "bytes": self.total,
            "bytes_per_customer": self.per_customer,
            "state_bytes_per_customer": self.state_per_customer,
            "tables": self.tables,
            "rows": self.rows,
        }


@dataclass
class Year:
    """The pre-loaded database: how it was built, and its size before and after pruning."""

    url: str
    week_group: str
    #: Seconds scoring took to apply the week and do the work it owed (sweeps, outbox).
    week_s: float
    copy_s: dict[str, float]
    vacuum_s: float
    year: Sizes
    pruned: Sizes
    compacted: Sizes
    prune_rounds: int
    prune_s: float
    pruned_rows: dict[str, int]
    pruned_partitions: dict[str, int]
    compact_s: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "week_s": self.week_s,
            "copy_s": self.copy_s,
            "vacuum_analyze_s": self.vacuum_s,
            "after_the_year": self.year.as_dict(),
            "after_pruning": self.pruned.as_dict(),
            "after_pruning_compacted": self.compacted.as_dict(),
            "prune_rounds": self.prune_rounds,
            "prune_s": self.prune_s,
            "pruned_rows": self.pruned_rows,
            "pruned_partitions": self.pruned_partitions,
            "vacuum_full_s": self.compact_s,
        }


async def apply_week(bench: Bench, url: str, group: str, events: int) -> float:
    """Wait until scoring has committed the week's ``events``, then (a minute at most) until
    it owes no work for them (deadlines past due swept, the outbox published); the seconds
    that took."""
    started = clock()
    conn = await asyncpg.connect(url)
    try:
        while int(await conn.fetchval(_COMMITTED, group, bench.topics.events)) < events:
            if clock() - started > SCORING_DRAIN_S:
                raise BenchError(
                    f"scoring did not apply the week's {events} events in {SCORING_DRAIN_S:.0f} s"
                )
            await asyncio.sleep(0.1)
        applied = clock()
        while owed := int(await conn.fetchval(_OWED)):
            if clock() - applied > QUIET_S:
                bench.warnings.append(f"the week: scoring still owed {owed} sweeps or records")
                break
            await asyncio.sleep(0.1)
        return clock() - started
    finally:
        await conn.close()


async def read_sizes(url: str) -> Sizes:
    conn = await asyncpg.connect(url)
    try:
        tables = {r["name"]: int(r["bytes"]) for r in await conn.fetch(_SIZES)}
        row = await conn.fetchrow(_ROWS)
        assert row is not None
        return Sizes(tables, {k: int(v) for k, v in dict(row).items()})
    finally:
        await conn.close()


async def copy_weeks(url: str, weeks: int, follow_up_days: float) -> dict[str, float]:
    """The week scoring applied, copied back ``weeks - 1`` times; seconds per table."""
    follow_up = f"interval '{float(follow_up_days)} days'"
    spent: dict[str, float] = {}
    conn = await asyncpg.connect(url)
    try:
        # Bench data, rebuilt every run: its commits need not wait for the WAL flush.
        await conn.execute("SET synchronous_commit = off")
        for name, statement in _COPIES.items():
            at = clock()
            sql = statement.replace("WEEKS", _WEEKS).replace("FOLLOW_UP", follow_up)
            await conn.execute(sql, weeks)
            spent[name] = clock() - at
    finally:
        await conn.close()
    return spent


async def vacuum(url: str, *, full: bool) -> float:
    """VACUUM (ANALYZE) the database, as autovacuum would have over the year; with ``full``,
    rewritten to what its rows take."""
    at = clock()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("VACUUM (FULL, ANALYZE)" if full else "VACUUM (ANALYZE)")
    finally:
        await conn.close()
    return clock() - at


async def prune(url: str, terms: Terms, bench: Bench) -> tuple[int, float, Pruned]:
    """Lifecycle rounds (``prune_round``, the wall clock) until one leaves nothing for the
    next; returns the rounds, their seconds and what they removed in all."""
    policy = bench.catalogue.policy.interventions
    total = Pruned()
    at = clock()
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        for rounds in range(1, PRUNE_MAX_ROUNDS + 1):  # noqa: B007 - returned below
            now = datetime.now(UTC) + PRUNE_AHEAD
            done = await prune_round(pool, now=now, terms=terms, policy=policy)
            total.rows.update(done.rows)
            total.partitions.update(done.partitions)
            if not done.more:
                break
        else:
            bench.warnings.append(f"the lifecycle still had work after {PRUNE_MAX_ROUNDS} rounds")
    finally:
        await pool.close()
    return rounds, clock() - at, total


def build_year(bench: Bench, plan: Plan) -> Year:
    """A database holding the rows a year of ``plan.stored_events`` events leaves, then
    pruned by the lifecycle and compacted."""
    url = bench.site.new_database(bench.exit_stack, f"bench_history_year_{bench.suffix}", say)
    group = f"bench-history-week-{bench.suffix}"
    say(f"the year: scoring applies one week ({plan.week_events:,} events)")
    server = bench.scoring_server(url, group, "scoring-week")
    try:
        server.start()
        week_s = bench.runner.run(apply_week(bench, url, group, plan.week_events))
    finally:
        server.stop()
    say(f"the year: copying the week back {WEEKS - 1} times ({plan.stored_events:,} events)")
    follow_up_days = bench.catalogue.policy.interventions.follow_up_days
    copy_s = bench.runner.run(copy_weeks(url, WEEKS, follow_up_days))
    vacuum_s = bench.runner.run(vacuum(url, full=False))
    year = bench.runner.run(read_sizes(url))
    # A group with no offsets: the dedupe window counts back from the round's clock, as it
    # does for each measured process's loop before its first batch.
    terms = dataclasses.replace(
        Terms.from_settings(
            bench.settings.model_copy(
                update={
                    "scoring_group_id": f"bench-history-prune-{bench.suffix}",
                    "events_topic": bench.topics.events,
                }
            )
        ),
        batch_rows=PRUNE_BATCH_ROWS,
    )
    say("the year: the lifecycle prunes it (prune_round until nothing is left to do)")
    rounds, prune_s, pruned_total = bench.runner.run(prune(url, terms, bench))
    pruned = bench.runner.run(read_sizes(url))
    say("the year: VACUUM FULL (what the kept rows take)")
    compact_s = bench.runner.run(vacuum(url, full=True))
    compacted = bench.runner.run(read_sizes(url))
    return Year(
        url=url,
        week_group=group,
        week_s=week_s,
        copy_s=copy_s,
        vacuum_s=vacuum_s,
        year=year,
        pruned=pruned,
        compacted=compacted,
        prune_rounds=rounds,
        prune_s=prune_s,
        pruned_rows=dict(pruned_total.rows),
        pruned_partitions=dict(pruned_total.partitions),
        compact_s=compact_s,
    )


# --- the corpora of new events -------------------------------------------------------------


def corpus(events: int, *, now: datetime, seed: int, customers: str) -> list[ExperienceEventV1]:
    """The scoring benchmark's kind of corpus (its customers ``C-…``, or ``customers``
    instead of ``C``), new event ids, and journey ids of its own (``…-m<seed>``): nothing in
    it is one of the year's events or journeys."""
    found = []
    for event in build_events(events, now=now, seed=seed):
        document = event.model_dump()
        document["customer_id"] = customers + event.customer_id.removeprefix("C")
        if event.journey_id is not None:
            document["journey_id"] = f"{event.journey_id}-m{seed}"
        found.append(EVENT_ADAPTER.validate_python(document))
    return found


def events_topic(bench: Bench, name: str) -> str:
    """A topic of the events topic's production spec, removed with the stage."""
    spec = topic_specs(bench.topics.settings(bench.settings))[0]
    topic = f"bench-history-{bench.suffix}.{name}"
    bench.runner.run(
        ensure_topics_at(
            bench.bootstrap,
            [TopicSpec(topic, spec.partitions, spec.replication_factor, spec.configs)],
        )
    )
    bench.site.remove_topics_later(bench.exit_stack, [topic], say)
    return topic


@dataclass
class Corpus:
    name: str
    topic: str
    events: list[ExperienceEventV1]

    @property
    def customers(self) -> list[str]:
        return sorted({e.customer_id for e in self.events})


def measure_scoring(
    bench: Bench, corpus: Corpus, url: str, level: str, processed_before: int
) -> ScoringRun:
    """One fresh scoring process consuming ``corpus``'s topic into ``url``."""
    group = f"bench-history-{corpus.name}-{level.split(maxsplit=1)[0]}-{bench.suffix}"
    say(f"scoring: {len(corpus.events):,} events of {corpus.name}, {level}")
    server = bench.scoring_server(url, group, "scoring", events_topic=corpus.topic)
    try:
        server.start()
        ready = peak_rss_bytes(server.pid)
        run = bench.runner.run(
            bench._consume(
                [server],
                url,
                group,
                clock(),
                topic=corpus.topic,
                total=len(corpus.events),
                processed_before=processed_before,
                wait_owed=False,
            )
        )
        run.ready_rss_bytes = {"scoring": ready}
        return run
    finally:
        server.stop()


async def known(customers: Sequence[str], *urls: str) -> list[str]:
    """Those of ``customers`` with journey health in every one of ``urls``."""
    found = set(customers)
    for url in urls:
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch(
                "SELECT customer_id FROM journey_health WHERE customer_id = ANY($1::text[])",
                sorted(found),
            )
        finally:
            await conn.close()
        found &= {r["customer_id"] for r in rows}
    if not found:
        raise BenchError("no customer of the corpus has health in both databases")
    return sorted(found)


async def processed(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM processed_event"))
    finally:
        await conn.close()


# --- the health read -----------------------------------------------------------------------


@dataclass
class Read:
    """Health reads at a fixed rate against one database."""

    level: str
    load: LoadResult
    peak_rss_bytes: int | None

    def as_dict(self) -> dict[str, Any]:
        return {"level": self.level, **self.load.as_dict(), "peak_rss_bytes": self.peak_rss_bytes}


def measure_reads(bench: Bench, plan: Plan, url: str, level: str, customers: Sequence[str]) -> Read:
    """``touchpulse-api`` on ``url``; an open loop of health reads of ``customers``."""
    services = service_settings(
        bench.settings, bench.suffix, bootstrap=bench.bootstrap, database_url=url
    )
    key = bench.runner.run(new_key(url, f"bench-history-{level}", Scope.HEALTH_READ))
    api = Server(
        "api",
        [str(Path(sys.executable).with_name("touchpulse-api"))],
        port=services.api_port,
        log_path=bench.logs / f"api-{level.replace(' ', '-')}.log",
        env={**os.environ, **settings_env(services)},
        cwd=REPO,
        ready_path="/readyz",
    )
    host = f"{LOOPBACK}:{services.api_port}"
    headers = {"Authorization": f"Bearer {key}"}
    rng = Random(SEED)
    requests = [
        raw_request("GET", f"/v1/customers/{c}/health", host=host, headers=headers)
        for c in rng.choices(list(customers), k=HEALTH_REQUESTS)
    ]
    say(f"health reads at {plan.health_rate_per_s:,.0f}/s, {level}")
    with api:
        trees = {"postgres": bench.postgres_pid} if bench.postgres_pid is not None else {}
        meter = CpuMeter({"api": api.pid, "bench": os.getpid()}, trees, kernel=True)
        connections = [
            HttpConnection(LOOPBACK, services.api_port) for _ in range(plan.health_connections)
        ]

        async def load() -> LoadResult:
            try:
                return await open_loop(
                    raw_calls(connections, requests, ok_requests),
                    rate_per_s=plan.health_rate_per_s,
                    warmup_s=plan.health_warmup_s,
                    duration_s=plan.health_duration_s,
                    meter=meter,
                )
            finally:
                for connection in connections:
                    await connection.close()

        result = bench.runner.run(load())
        rss = peak_rss_bytes(api.pid)
    check_other(bench.warnings, f"health reads, {level}", result.cores().get(OTHER, 0.0))
    failed = result.requests - result.statuses[200]
    if result.units == 0:
        raise BenchError(f"health reads, {level}: none answered 200 ({dict(result.statuses)})")
    if failed or result.incomplete:
        bench.warnings.append(
            f"health reads, {level}: {failed} of {result.requests} not 200 "
            f"({dict(result.statuses)}), {result.incomplete} incomplete"
        )
    return Read(level, result, rss)


# --- the stage -----------------------------------------------------------------------------


@dataclass
class Measured:
    year: Year
    #: (corpus name, level) -> the scoring run.
    runs: dict[tuple[str, str], ScoringRun]
    reads: dict[str, Read]
    corpora: dict[str, int] = field(default_factory=dict)


def measure(bench: Bench, plan: Plan) -> Measured:
    year = build_year(bench, plan)
    empty = bench.site.new_database(bench.exit_stack, f"bench_history_empty_{bench.suffix}", say)
    now = datetime.now(UTC)
    corpora = [
        Corpus("new customers", events_topic(bench, "new"), []),
        Corpus("pre-loaded customers", events_topic(bench, "preloaded"), []),
    ]
    corpora[0].events = corpus(plan.measure_events, now=now, seed=SEED + 1, customers="N")
    corpora[1].events = corpus(plan.measure_events, now=now, seed=SEED + 2, customers="C")
    for each in corpora:
        say(f"pre-filling {each.topic} with {len(each.events):,} events of {each.name}")
        bench.runner.run(
            prefill(
                bench.bootstrap, each.topic, each.events, linger_ms=bench.settings.ingest_linger_ms
            )
        )
    runs: dict[tuple[str, str], ScoringRun] = {}
    for each in corpora:
        for level, url in ((EMPTY, empty), (YEAR, year.url)):
            before = bench.runner.run(processed(url))
            runs[(each.name, level)] = measure_scoring(bench, each, url, level, before)
    readable = bench.runner.run(known(corpora[1].customers, empty, year.url))
    reads = {
        level: measure_reads(bench, plan, url, level, readable)
        for level, url in ((EMPTY, empty), (YEAR, year.url))
    }
    return Measured(year, runs, reads, {c.name: len(c.events) for c in corpora})


def _us(run: ScoringRun, process: str) -> float:
    return run.cpu_s[process] / run.events * 1e6


def figures(found: Measured, plan: Plan) -> dict[str, Figure]:
    at_n = plan.stored_label
    empty_label = "the same on the empty database"
    rate_target = f">= {1 / TARGET_FACTOR:.2f} (within {TARGET_FACTOR}x)"
    cost_target = f"<= {TARGET_FACTOR}x"

    def versus(
        label: str, unit: str, value: float, ceiling: float, *, lower_is_better: bool
    ) -> Figure:
        share = ratio(value, ceiling)
        met = share <= TARGET_FACTOR if lower_is_better else share >= 1 / TARGET_FACTOR
        return Figure(
            label,
            unit,
            value,
            empty_label,
            ceiling,
            Spread.of([share]),
            cost_target if lower_is_better else rate_target,
            met if math.isfinite(share) else None,
        )

    found_figures: dict[str, Figure] = {}
    for key, name in (("preloaded", "pre-loaded customers"), ("new", "new customers")):
        full, empty = found.runs[(name, YEAR)], found.runs[(name, EMPTY)]
        found_figures[f"events_per_s_{key}_vs_empty"] = versus(
            f"events/s committed, {name}, at {at_n}",
            "events/s",
            full.events_per_s,
            empty.events_per_s,
            lower_is_better=False,
        )
        for process, what in (("scoring", "scoring"), ("postgres", "PostgreSQL")):
            found_figures[f"{process}_us_per_event_{key}_vs_empty"] = versus(
                f"{what} CPU per event, {name}, at {at_n}",
                "µs/event",
                _us(full, process),
                _us(empty, process),
                lower_is_better=True,
            )
    reads = {level: latency_summary(r.load.latencies_s) for level, r in found.reads.items()}
    rate = f"{plan.health_rate_per_s:,.0f}/s"
    for q in ("p50", "p99"):
        found_figures[f"health_{q}_vs_empty"] = versus(
            f"health read {q} at {rate}, at {at_n}",
            "ms",
            reads[YEAR][f"{q}_ms"],
            reads[EMPTY][f"{q}_ms"],
            lower_is_better=True,
        )
    year = found.year
    found_figures["bytes_per_customer_vs_state"] = Figure(
        f"database bytes per customer after the year ({at_n}, unpruned)",
        "B/customer",
        year.year.per_customer,
        "the health state alone (touchpoint, journey, profile rows)",
        year.year.state_per_customer,
        Spread.of([ratio(year.year.per_customer, year.year.state_per_customer)]),
    )
    found_figures["bytes_per_customer_pruned_vs_year"] = Figure(
        "database bytes per customer after the lifecycle's pruning (VACUUM FULL)",
        "B/customer",
        year.compacted.per_customer,
        "the same before pruning",
        year.year.per_customer,
        Spread.of([ratio(year.compacted.per_customer, year.year.per_customer)]),
    )
    return {key: found_figures[key] for key in FIGURE_KEYS}


#: Columns of the CPU table: the process under test, then the servers and this process.
CPU_COLUMNS = ("scoring", "api", "postgres", "kafka", "bench", KERNEL_IRQ)


def cpu_profile(found: Measured) -> dict[str, Any]:
    """CPU microseconds per event (or request) and cores busy, per phase and process."""
    profile: dict[str, Any] = {}
    for (name, level), run in found.runs.items():
        profile[f"{name}, {level}"] = {
            "unit": "event",
            "us_per_unit": {n: s / run.events * 1e6 for n, s in run.cpu_s.items()},
            "cores": {n: s / run.wall_s for n, s in run.cpu_s.items()},
        }
    for level, read in found.reads.items():
        profile[f"health read, {level}"] = {
            "unit": "request",
            "us_per_unit": {n: v * 1e6 for n, v in read.load.cpu_per_unit().items()},
            "cores": read.load.cores(),
        }
    return {phase: profile[phase] for phase in PHASES if phase in profile}


def cpu_table(profile: dict[str, Any]) -> str:
    rows = [[phase, *cpu_cells(data, CPU_COLUMNS)] for phase, data in profile.items()]
    header = ["phase", "per", "scoring", "api", "postgres (all)", "kafka broker"]
    header += ["bench process", "kernel irq", "other cores"]
    return table(header, rows)


def run(plan: Plan, settings: Settings, site: Site | None = None) -> dict[str, Any]:
    """The history stage on ``site``'s broker and database server (servers of its own,
    started and stopped here, without one)."""
    started = datetime.now(UTC)
    with contextlib.ExitStack() as exit_stack:
        if site is None:
            site = exit_stack.enter_context(open_site(settings, say))
        bench = prepare(plan.scoring(), settings, site, exit_stack, stage="history")
        found = measure(bench, plan)
        result_figures = figures(found, plan)
        rss: dict[str, int | None] = {
            "scoring": max((r.peak_rss_bytes or 0) for r in found.runs.values()) or None,
            "api": max((r.peak_rss_bytes or 0) for r in found.reads.values()) or None,
        }
        if site.kafka.pid is not None:
            rss["kafka"] = peak_rss_bytes(site.kafka.pid)
        year = found.year
        return {
            "benchmark": "history",
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
                "plan": asdict(plan),
                "weeks": WEEKS,
                "week_events": plan.week_events,
                "customers": CUSTOMERS,
                "measured_corpora": found.corpora,
                "lifecycle": {
                    "dedupe_window_hours": settings.scoring_dedupe_window_hours,
                    "outcome_keep_days": settings.scoring_outcome_keep_days,
                    "history_full_days": settings.scoring_history_full_days,
                    "history_keep_days": settings.scoring_history_keep_days,
                    "batch_rows_here": PRUNE_BATCH_ROWS,
                },
                "health_route": "GET /v1/customers/{id}/health (trend_days 30)",
            },
            "figures": {key: result_figures[key].as_dict() for key in FIGURE_KEYS},
            "targets": {
                "within": TARGET_FACTOR,
                "met": {
                    key: result_figures[key].met
                    for key in FIGURE_KEYS
                    if result_figures[key].met is not None
                },
            },
            "cpu": cpu_profile(found),
            "peak_rss_bytes": rss,
            "year": year.as_dict(),
            "runs": {f"{name}, {level}": r.as_dict() for (name, level), r in found.runs.items()},
            "reads": {level: r.as_dict() for level, r in found.reads.items()},
            "notes": [
                SHARED_CORES_NOTE.format(nproc=os.cpu_count()),
                f"The year: {plan.week_events:,} events applied by scoring in "
                f"{year.week_s:.1f} s, copied back {WEEKS - 1} weeks by SQL in "
                f"{sum(year.copy_s.values()):.1f} s ({plan.stored_events:,} events' rows over "
                f"{year.year.customers:,} customers); the lifecycle pruned it in "
                f"{year.prune_rounds} rounds, {year.prune_s:.1f} s "
                f"({PRUNE_BATCH_ROWS:,} rows per statement here), "
                f"{sum(year.pruned_rows.values()):,} rows removed; then VACUUM FULL. Scoring and "
                "the api were measured on the pruned, compacted database.",
            ],
            "warnings": bench.warnings,
            "logs": str(bench.logs),
        }


def report(result: dict[str, Any]) -> str:
    year = result["year"]
    lines = [
        f"Touchpulse history benchmark ({result['mode']}), {result['started_at']}",
        *result["notes"],
        "",
        figure_table(result["figures"], FIGURE_KEYS),
        "",
        "Tables (MiB with indexes and TOAST) after the year, after the lifecycle's pruning, "
        "and compacted; rows after the year / after pruning: "
        + ", ".join(
            f"{name} {year['after_the_year']['rows'][name]:,} / "
            f"{year['after_pruning']['rows'][name]:,}"
            for name in year["after_the_year"]["rows"]
        ),
        history_sizes(result),
        "",
        "CPU microseconds per event or request (cores busy); postgres = the postmaster and all "
        "its children; other = the rest of the machine:",
    ]
    return close_report(lines, cpu_table(result["cpu"]), result)


def history_sizes(result: dict[str, Any]) -> str:
    """The sizes table from a result file's ``year``."""
    year = result["year"]
    moments = (
        ("after the year", year["after_the_year"]),
        ("pruned", year["after_pruning"]),
        ("pruned, compacted", year["after_pruning_compacted"]),
    )
    first = moments[0][1]["tables"]
    names = sorted({n for _, m in moments for n in m["tables"]}, key=lambda n: -first.get(n, 0))
    rows = [
        [name, *(f"{m['tables'].get(name, 0) / 2**20:,.1f}" for _, m in moments)]
        for name in names
        if any(m["tables"].get(name, 0) > 2**20 / 10 for _, m in moments)
    ]
    rows.append(["all tables", *(f"{m['bytes'] / 2**20:,.1f}" for _, m in moments)])
    rows.append(
        ["per customer (KiB)", *(f"{m['bytes_per_customer'] / 1024:,.1f}" for _, m in moments)]
    )
    return table(["table (MiB)", *(name for name, _ in moments)], rows)


def main(argv: Sequence[str] | None = None) -> int:
    return stage_main(
        "history",
        __doc__,
        argv,
        quick="0.2 M stored events, a small corpus, short reads",
        plans=(FULL, QUICK),
        run=run,
        report=report,
        say=say,
    )


if __name__ == "__main__":
    sys.exit(main())

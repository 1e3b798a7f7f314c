"""``make bench-api``: the customer-health read beside a bare ASGI route, measured in one run.

On one broker and one database (started here, unless ``KAFKA_BOOTSTRAP_SERVERS`` /
``TOUCHPULSE_DATABASE_URL`` name servers), the real pipeline builds the state the api reads:
``touchpulse-ingest`` and ``touchpulse-scoring`` run as their own processes and a fixed
corpus of events over a fixed set of customers is posted to ingest, so every customer has
journey and touchpoint health, history, outcomes (kept and broken) and, some, an open
intervention. Then ``touchpulse-api`` runs as its own process and
``GET /v1/customers/{id}/health`` is read for random known customers:

- its closed-loop maximum requests/s against a bare Starlette route's (a constant JSON GET,
  ``tests/bench/bare_app.py``) on the same uvicorn set-up: pairs, alternating;
- then an open loop at half that maximum for p50/p99/max latency from each request's
  scheduled send time, *while the pipeline ingests*: a steady background of event batches
  posted to ingest, which scoring applies to the same customers' state; beside it the bare
  route at the same rate and load, and both again with the pipeline idle.

CPU of the api, PostgreSQL (the postmaster and all its children), the load generator (this
process), ingest, scoring and the broker comes from /proc. The load generator shares the
machine's cores with all of it.

Run ``python -m tests.bench.api [--quick]``; the result is printed and written to
``.touchpulse/bench/api-<UTC time>.json``. ``--profile`` instead runs the api under cProfile
through one closed-loop phase of health reads and prints where its time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import math
import os
import pstats
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from random import Random
from typing import Any

import asyncpg
import orjson

from tests.bench.common import (
    KERNEL_IRQ,
    LOOPBACK,
    OTHER,
    PROFILE_START,
    PROFILE_STOP,
    BenchError,
    CpuMeter,
    Figure,
    HttpConnection,
    LoadResult,
    Server,
    Site,
    Spread,
    arguments,
    bench_settings,
    check_other,
    clock,
    close_report,
    closed_loop,
    cpu_cells,
    figure_table,
    guarded,
    latency_summary,
    machine,
    ok_requests,
    open_loop,
    open_site,
    peak_rss_bytes,
    postgres_version,
    profile_summary,
    publish,
    ratio,
    raw_calls,
    raw_request,
    sayer,
    serve_profiled,
    table,
    utc_stamp,
    uvicorn_argv,
    versions,
)
from tests.bench.ingest import accepted_events
from tests.bench.scoring import KINDS, Kind
from touchpulse_api.main import main as serve_api
from touchpulse_shared.auth import Scope, create_key
from touchpulse_shared.contract import EVENT_ADAPTER, ExperienceEventV1, events_to_batch_json
from touchpulse_shared.kafka.topics import ensure_topics_at, topic_specs
from touchpulse_shared.settings import Settings
from touchpulse_shared.stack.procs import free_port
from touchpulse_shared.stack.services import settings_env

REPO = Path(__file__).resolve().parents[2]
SOURCE = "crm-prod"
SEED = 20_261_123
# The corpus' events happened over this span before the run.
SPAN = timedelta(days=7)
# The background's events happened over this span before each phase that sends them.
BACKGROUND_SPAN = timedelta(minutes=10)
FILL_BATCH_EVENTS = 1_000
BACKGROUND_BATCH_EVENTS = 50
BACKGROUND_CONNECTIONS = 4
# Distinct health requests (random known customers), sent in turn.
HEALTH_REQUESTS = 20_000
# Issue 14's targets: p99 at half the maximum while ingesting, and the maximum against bare.
TARGET_P99_MS = 10.0
TARGET_MAX_VS_BARE = 0.15
OPEN_LOOP_FRACTION = 0.5
# Bounds for a loaded machine; every wait ends as soon as its condition holds.
CATCH_UP_S = 180.0
POLL_S = 0.1
PACKAGES = (
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "pydantic",
    "asyncpg",
    "orjson",
    "aiokafka",
    "prometheus-client",
)
SHARED_CORES_NOTE = (
    "The load generator (this process, which also sends the background batches) shares the "
    "machine's {nproc} cores with the api, PostgreSQL, ingest, scoring, the broker and the "
    "bare server: every figure is what is left after it."
)

#: Every figure the benchmark reports, each with a ceiling and a ratio.
FIGURE_KEYS = (
    "health_max_vs_bare",
    "health_rate_at_half",
    "health_p50_vs_bare",
    "health_p99_vs_bare",
    "health_max_latency_vs_bare",
    "health_p99_vs_quiet",
    "quiet_p50_vs_bare",
    "quiet_p99_vs_bare",
    "background_acked",
    "background_committed",
)


@dataclass(frozen=True)
class Plan:
    name: str
    pairs: int
    customers: int
    #: Events of the corpus posted to ingest before anything is measured.
    events: int
    #: Closed-loop load on the api and the bare server before the first pair, not measured.
    prewarm_s: float
    warmup_s: float
    duration_s: float
    open_warmup_s: float
    open_duration_s: float
    #: Events per second posted to ingest during the open loops "while ingesting".
    background_per_s: float
    #: The background alone before the open loops, not measured: the fresh broker's JIT
    #: compiler works through the new code paths here rather than in a measured window.
    pipeline_warmup_s: float
    connections: int = 64
    #: ``--profile``: the closed-loop phase the api is profiled through.
    profile_s: float = 10.0


FULL = Plan(
    name="full",
    pairs=3,
    customers=5_000,
    events=30_000,
    prewarm_s=3.0,
    warmup_s=1.0,
    duration_s=6.0,
    open_warmup_s=3.0,
    open_duration_s=15.0,
    background_per_s=500.0,
    pipeline_warmup_s=15.0,
)
QUICK = Plan(
    name="quick",
    pairs=1,
    customers=1_000,
    events=4_000,
    prewarm_s=1.0,
    warmup_s=0.5,
    duration_s=1.5,
    open_warmup_s=0.5,
    open_duration_s=2.5,
    background_per_s=500.0,
    pipeline_warmup_s=2.0,
    profile_s=3.0,
)


# --- the corpus ------------------------------------------------------------------------------


def customer_id(n: int) -> str:
    return f"C-{n:06d}"


def _document(rng: Random, kind: Kind, customer: str, at: datetime) -> dict[str, Any]:
    document: dict[str, Any] = {
        "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "source": SOURCE,
        "customer_id": customer,
        "touchpoint": kind.touchpoint,
        "type": kind.type,
        "occurred_at": at.replace(microsecond=0),
        "measures": kind.measures(rng),
    }
    if rng.random() < 0.7:
        document["attributes"] = kind.attributes(rng)
    return document


def build_events(
    count: int, *, customers: int, start: datetime, end: datetime, seed: int
) -> list[ExperienceEventV1]:
    """``count`` events from ``start`` to ``end`` in event-time order, the same every run for
    the same arguments: the kinds of the scoring benchmark (every one judged by the
    catalogue), over ``customers`` customers. Orders and complaints open journeys that a later
    event of the same customer ends (if it falls before ``end``) or never does."""
    rng = Random(seed)
    primary = [k for k in KINDS.values() if k.weight > 0]
    weights = [k.weight for k in primary]
    step = (end - start) / count
    pending: list[tuple[datetime, int, dict[str, Any]]] = []
    events: list[ExperienceEventV1] = []
    for n in range(count):
        at = start + step * n
        if pending and pending[0][0] <= at:
            document = heapq.heappop(pending)[2]
        else:
            kind = rng.choices(primary, weights)[0]
            document = _document(rng, kind, customer_id(rng.randrange(customers)), at)
            if kind.follow_up is not None:
                prefix, ends_with, share, low, high = kind.follow_up
                journey = f"{prefix}-{seed}-{n:08d}"  # unique across the corpus and backgrounds
                document["journey_id"] = journey
                if rng.random() < share:
                    end_at = at + timedelta(hours=rng.uniform(low, high))
                    follow = _document(rng, KINDS[ends_with], document["customer_id"], end_at)
                    follow["journey_id"] = journey
                    heapq.heappush(pending, (end_at, n, follow))
        events.append(EVENT_ADAPTER.validate_python(document))
    return events


def batch_bodies(events: Sequence[ExperienceEventV1], size: int) -> list[bytes]:
    return [events_to_batch_json(events[i : i + size]) for i in range(0, len(events), size)]


# --- PostgreSQL: what the benchmark reads ---------------------------------------------------

_COMMITTED = """
    SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offset
    WHERE consumer_group = $1 AND topic = $2
"""
# Work scoring still owes the events it committed: records not yet published, deadlines
# past due that the sweep has not recorded yet.
_OWED = """
    SELECT (SELECT count(*) FROM kafka_outbox)
         + (SELECT count(*) FROM deadline WHERE state = 'open' AND due_at < now())
"""
_STATE = """
    SELECT (SELECT count(*) FROM journey_health) AS customers,
           (SELECT count(*) FROM touchpoint_health) AS touchpoint_health,
           (SELECT count(*) FROM journey_health_history) AS history,
           (SELECT count(*) FROM outcome) AS outcomes,
           (SELECT count(*) FROM outcome WHERE NOT met) AS broken,
           (SELECT coalesce(max(n), 0) FROM
               (SELECT count(*) AS n FROM outcome GROUP BY customer_id) AS c)
               AS max_outcomes_per_customer,
           (SELECT count(*) FROM intervention WHERE state IN ('open', 'acknowledged'))
               AS open_interventions
"""


async def new_key(url: str, name: str, scope: Scope, *, source: str | None = None) -> str:
    conn = await asyncpg.connect(url)
    try:
        plaintext, _ = await create_key(
            conn, name=name, scopes=[scope], source=source, now=datetime.now(UTC)
        )
        return plaintext
    finally:
        await conn.close()


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Background:
    """Event batches posted to ingest at a steady rate during an open loop; scoring applies
    them to the state the api reads."""

    offered_per_s: float
    batch_events: int
    #: The batch requests to ingest, over the same window as the phase they accompany.
    load: LoadResult
    #: Events scoring committed in the window (its committed offsets at both ends).
    committed: int
    #: After the phase: until scoring had committed every event sent (its backlog drained).
    caught_up_s: float = math.nan

    @property
    def acked_per_s(self) -> float:
        return self.load.units_per_s

    @property
    def committed_per_s(self) -> float:
        return self.committed / self.load.window_s

    def as_dict(self) -> dict[str, Any]:
        return {
            "offered_events_per_s": self.offered_per_s,
            "batch_events": self.batch_events,
            "acked_events_per_s": self.acked_per_s,
            "committed_events_per_s": self.committed_per_s,
            "committed_in_window": self.committed,
            "caught_up_s": self.caught_up_s,
            "batches": self.load.as_dict(),
        }


@dataclass
class Pair:
    health: LoadResult
    bare: LoadResult

    def as_dict(self) -> dict[str, Any]:
        return {"health": self.health.as_dict(), "bare": self.bare.as_dict()}


@dataclass
class OpenLoops:
    """Latency at one offered rate: health and bare, while the pipeline ingests and not."""

    rate_per_s: float
    health_ingesting: LoadResult
    health_background: Background
    bare_ingesting: LoadResult
    bare_background: Background
    health_quiet: LoadResult
    bare_quiet: LoadResult

    def as_dict(self) -> dict[str, Any]:
        return {
            "rate_per_s": self.rate_per_s,
            "health_ingesting": self.health_ingesting.as_dict(),
            "health_ingesting_background": self.health_background.as_dict(),
            "bare_ingesting": self.bare_ingesting.as_dict(),
            "bare_ingesting_background": self.bare_background.as_dict(),
            "health_quiet": self.health_quiet.as_dict(),
            "bare_quiet": self.bare_quiet.as_dict(),
        }


@dataclass
class Bench:
    plan: Plan
    logs: Path
    runner: asyncio.Runner
    database_url: str
    events_topic: str
    group: str
    kafka_pid: int | None
    postgres_pid: int | None
    ingest: Server
    scoring: Server
    api: Server
    bare: Server
    health_key: str
    events_key: str
    customers: list[str] = field(default_factory=list)
    health_requests: list[bytes] = field(default_factory=list)
    bare_requests: list[bytes] = field(default_factory=list)
    #: Events ingest has acknowledged so far (the corpus and every background batch).
    acked: int = 0
    backgrounds: int = 0
    warnings: list[str] = field(default_factory=list)

    # --- helpers ---------------------------------------------------------------------------

    def meter(self) -> CpuMeter:
        pids = {
            "api": self.api.pid,
            "bare": self.bare.pid,
            "loadgen": os.getpid(),
            "ingest": self.ingest.pid,
            "scoring": self.scoring.pid,
        }
        if self.kafka_pid is not None:
            pids["kafka"] = self.kafka_pid
        trees = {"postgres": self.postgres_pid} if self.postgres_pid is not None else {}
        return CpuMeter(pids, trees, kernel=True)

    def _count_acked(self, status: int, body: bytes) -> int:
        events = accepted_events(status, body)
        self.acked += events
        return events

    def _check(self, what: str, result: LoadResult, ok: int) -> None:
        check_other(self.warnings, what, result.cores().get(OTHER, 0.0))
        if result.units == 0:
            raise BenchError(f"{what}: nothing was served (statuses {dict(result.statuses)})")
        failed = result.requests - result.statuses[ok]
        if failed or result.incomplete:
            self.warnings.append(
                f"{what}: {failed} of {result.requests} requests not {ok} "
                f"(statuses {dict(result.statuses)}), {result.incomplete} incomplete"
            )

    async def _committed(self, conn: asyncpg.Connection) -> int:
        return int(await conn.fetchval(_COMMITTED, self.group, self.events_topic))

    # --- the state -------------------------------------------------------------------------

    def fill(self, events: Sequence[ExperienceEventV1]) -> float:
        """Post ``events`` to ingest in batches, then wait until scoring has applied them and
        done the work they owe; return the seconds that took."""
        started = clock()
        self.runner.run(self._post(batch_bodies(events, FILL_BATCH_EVENTS)))
        if self.acked != len(events):
            raise BenchError(f"ingest accepted {self.acked} of {len(events)} events")
        self.catch_up("the corpus", strict=True)
        return clock() - started

    async def _post(self, bodies: Sequence[bytes]) -> None:
        connection = HttpConnection(LOOPBACK, self.ingest.port)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.events_key}"}
        host = f"{LOOPBACK}:{self.ingest.port}"
        try:
            for body in bodies:
                raw = raw_request("POST", "/v1/events/batch", host=host, headers=headers, body=body)
                status, answer = await connection.request(raw)
                if status != 202:
                    raise BenchError(f"ingest answered {status}: {answer[:500]!r}")
                self._count_acked(status, answer)
        finally:
            await connection.close()

    def catch_up(self, what: str, *, strict: bool = False) -> float:
        """Wait until scoring has committed every event ingest acknowledged and owes no work;
        return the seconds that took."""
        return self.runner.run(self._catch_up(what, strict=strict))

    async def _catch_up(self, what: str, *, strict: bool) -> float:
        started = clock()
        conn = await asyncpg.connect(self.database_url)
        try:
            while True:
                committed = await self._committed(conn)
                owed = int(await conn.fetchval(_OWED)) if committed >= self.acked else -1
                if owed == 0:
                    return clock() - started
                if clock() - started > CATCH_UP_S:
                    message = (
                        f"after {what}, scoring committed {committed} of {self.acked} events "
                        f"and still owed {max(owed, 0)} outbox rows or sweeps after "
                        f"{CATCH_UP_S:.0f} s; see {self.scoring.log_path}"
                    )
                    if strict:
                        raise BenchError(message)
                    self.warnings.append(message)
                    return math.nan
                await asyncio.sleep(POLL_S)
        finally:
            await conn.close()

    def read_state(self) -> dict[str, int]:
        async def read() -> tuple[dict[str, int], list[str]]:
            conn = await asyncpg.connect(self.database_url)
            try:
                row = await conn.fetchrow(_STATE)
                assert row is not None
                known = await conn.fetch("SELECT customer_id FROM journey_health ORDER BY 1")
            finally:
                await conn.close()
            return {k: int(v) for k, v in dict(row).items()}, [r[0] for r in known]

        state, self.customers = self.runner.run(read())
        if not self.customers:
            raise BenchError("scoring built no customer health from the corpus")
        headers = {"Authorization": f"Bearer {self.health_key}"}
        api_host, bare_host = f"{LOOPBACK}:{self.api.port}", f"{LOOPBACK}:{self.bare.port}"
        rng = Random(SEED + 1)
        self.health_requests = [
            raw_request("GET", f"/v1/customers/{c}/health", host=api_host, headers=headers)
            for c in rng.choices(self.customers, k=HEALTH_REQUESTS)
        ]
        # The same headers, so both servers parse requests of about the same size.
        self.bare_requests = [raw_request("GET", "/", host=bare_host, headers=headers)]
        return state

    def sample_answers(self, count: int = 200) -> dict[str, float]:
        """Read ``count`` customers' health once (every answer must be 200): what an answer
        holds, on average."""

        async def sample() -> list[dict[str, Any]]:
            connection = HttpConnection(LOOPBACK, self.api.port)
            found = []
            try:
                for raw in self.health_requests[:count]:
                    status, body = await connection.request(raw)
                    if status != 200:
                        raise BenchError(f"the health read answered {status}: {body[:500]!r}")
                    document = orjson.loads(body)
                    document["_bytes"] = len(body)
                    found.append(document)
            finally:
                await connection.close()
            return found

        answers = self.runner.run(sample())
        return {
            "answers": len(answers),
            "body_bytes": statistics.fmean(a["_bytes"] for a in answers),
            "touchpoints": statistics.fmean(len(a["touchpoints"]) for a in answers),
            "trend_points": statistics.fmean(len(a["trend"]) for a in answers),
            "explanation_items": statistics.fmean(len(a["explanation"]) for a in answers),
            "with_open_intervention": sum(a["open_intervention_id"] is not None for a in answers)
            / len(answers),
        }

    # --- load ------------------------------------------------------------------------------

    def background_bodies(self, phase_s: float) -> list[bytes]:
        """Fresh events (new ids) for ``phase_s`` of background, encoded before the clock
        starts."""
        plan = self.plan
        self.backgrounds += 1
        count = math.ceil(phase_s * plan.background_per_s) + 2 * BACKGROUND_BATCH_EVENTS
        now = datetime.now(UTC)
        events = build_events(
            count,
            customers=plan.customers,
            start=now - BACKGROUND_SPAN,
            end=now,
            seed=SEED + 100 + self.backgrounds,
        )
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.events_key}"}
        host = f"{LOOPBACK}:{self.ingest.port}"
        return [
            raw_request("POST", "/v1/events/batch", host=host, headers=headers, body=body)
            for body in batch_bodies(events, BACKGROUND_BATCH_EVENTS)
        ]

    def load(
        self,
        server: Server,
        *,
        rate_per_s: float | None = None,
        prewarm: bool = False,
        background: bool = False,
    ) -> tuple[LoadResult, Background | None]:
        plan = self.plan
        connections = [HttpConnection(LOOPBACK, server.port) for _ in range(plan.connections)]
        requests = self.health_requests if server is self.api else self.bare_requests
        calls = raw_calls(connections, requests, ok_requests)
        phase_s = plan.open_warmup_s + plan.open_duration_s
        bodies = self.background_bodies(phase_s) if background else []
        meter = self.meter()

        async def run() -> tuple[LoadResult, Background | None]:
            try:
                if rate_per_s is None:
                    result = await closed_loop(
                        calls,
                        warmup_s=0 if prewarm else plan.warmup_s,
                        duration_s=plan.prewarm_s if prewarm else plan.duration_s,
                        meter=meter,
                    )
                    return result, None
                measured = open_loop(
                    calls,
                    rate_per_s=rate_per_s,
                    warmup_s=plan.open_warmup_s,
                    duration_s=plan.open_duration_s,
                    meter=meter,
                )
                if not bodies:
                    return await measured, None
                return await self._with_background(measured, bodies)
            finally:
                for connection in connections:
                    await connection.close()

        result, feed = self.runner.run(run())
        what = "health" if server is self.api else "bare"
        what += " (warm-up)" if prewarm else ""
        if rate_per_s is not None:
            what += f" (open loop, {'ingesting' if background else 'quiet'})"
        self._check(what, result, 200)
        if feed is not None:
            self._check(f"{what}: background batches", feed.load, 202)
            feed.caught_up_s = self.catch_up(what)
        return result, feed

    def warm_pipeline(self) -> None:
        """The background load alone for the plan's pipeline warm-up, not measured."""
        plan = self.plan
        connections = [
            HttpConnection(LOOPBACK, self.ingest.port) for _ in range(BACKGROUND_CONNECTIONS)
        ]
        calls = raw_calls(
            connections, self.background_bodies(plan.pipeline_warmup_s), self._count_acked
        )

        async def run() -> LoadResult:
            try:
                return await open_loop(
                    calls,
                    rate_per_s=plan.background_per_s / BACKGROUND_BATCH_EVENTS,
                    warmup_s=0.0,
                    duration_s=plan.pipeline_warmup_s,
                )
            finally:
                for connection in connections:
                    await connection.close()

        self._check("pipeline warm-up: background batches", self.runner.run(run()), 202)
        self.catch_up("the pipeline warm-up")

    async def _with_background(
        self, measured: Awaitable[LoadResult], bodies: list[bytes]
    ) -> tuple[LoadResult, Background]:
        """The measured open loop and, over the same window, event batches to ingest at the
        background rate (an open loop of their own, on their own connections)."""
        plan = self.plan
        connections = [
            HttpConnection(LOOPBACK, self.ingest.port) for _ in range(BACKGROUND_CONNECTIONS)
        ]
        calls = raw_calls(connections, bodies, self._count_acked)
        conn = await asyncpg.connect(self.database_url)
        # open_loop opens its window 0.05 s after it starts plus the warm-up: the loops below
        # start within milliseconds of each other, which is all the committed count needs.
        opens = clock() + 0.05 + plan.open_warmup_s
        closes = opens + plan.open_duration_s

        async def committed_in_window() -> int:
            await asyncio.sleep(max(0.0, opens - clock()))
            first = await self._committed(conn)
            await asyncio.sleep(max(0.0, closes - clock()))
            return await self._committed(conn) - first

        try:
            result, batches, committed = await asyncio.gather(
                measured,
                open_loop(
                    calls,
                    rate_per_s=plan.background_per_s / BACKGROUND_BATCH_EVENTS,
                    warmup_s=plan.open_warmup_s,
                    duration_s=plan.open_duration_s,
                ),
                committed_in_window(),
            )
        finally:
            await conn.close()
            for connection in connections:
                await connection.close()
        background = Background(plan.background_per_s, BACKGROUND_BATCH_EVENTS, batches, committed)
        return result, background


def measure(bench: Bench) -> tuple[list[Pair], OpenLoops]:
    plan = bench.plan
    say("warming up the api and the bare server (not measured)")
    bench.load(bench.api, prewarm=True)
    bench.load(bench.bare, prewarm=True)
    pairs: list[Pair] = []
    for index in range(plan.pairs):
        say(f"pair {index + 1}/{plan.pairs}: health, bare (closed loop)")
        health, _ = bench.load(bench.api)
        bare, _ = bench.load(bench.bare)
        pairs.append(Pair(health, bare))
    rate = OPEN_LOOP_FRACTION * statistics.median(p.health.units_per_s for p in pairs)
    phase = f"{plan.open_warmup_s + plan.open_duration_s:.0f} s"
    say(
        f"warming up the pipeline: {plan.background_per_s:,.0f} events/s to ingest for "
        f"{plan.pipeline_warmup_s:.0f} s (not measured)"
    )
    bench.warm_pipeline()
    say(
        f"open loop at {rate:,.0f}/s for {phase}, while ingesting {plan.background_per_s:,.0f} "
        "events/s: health, then bare"
    )
    health_ingesting, health_background = bench.load(bench.api, rate_per_s=rate, background=True)
    bare_ingesting, bare_background = bench.load(bench.bare, rate_per_s=rate, background=True)
    say(f"open loop at {rate:,.0f}/s for {phase}, pipeline idle: health, then bare")
    health_quiet, _ = bench.load(bench.api, rate_per_s=rate)
    bare_quiet, _ = bench.load(bench.bare, rate_per_s=rate)
    assert health_background is not None
    assert bare_background is not None
    return pairs, OpenLoops(
        rate,
        health_ingesting,
        health_background,
        bare_ingesting,
        bare_background,
        health_quiet,
        bare_quiet,
    )


# --- figures ---------------------------------------------------------------------------------


def figures(pairs: Sequence[Pair], paced: OpenLoops) -> dict[str, Figure]:
    health = latency_summary(paced.health_ingesting.latencies_s)
    bare = latency_summary(paced.bare_ingesting.latencies_s)
    quiet = latency_summary(paced.health_quiet.latencies_s)
    bare_quiet = latency_summary(paced.bare_quiet.latencies_s)
    offered = paced.rate_per_s
    target = f"<= {TARGET_P99_MS:.0f} ms"
    met = health["p99_ms"] <= TARGET_P99_MS
    max_vs_bare = Spread.of(ratio(p.health.units_per_s, p.bare.units_per_s) for p in pairs)
    background = paced.health_background

    def latency(
        label: str,
        value: float,
        ceiling_label: str,
        ceiling: float,
        *,
        goal: str = "",
        reached: bool | None = None,
    ) -> Figure:
        return Figure(
            label,
            "ms",
            value,
            ceiling_label,
            ceiling,
            Spread.of([ratio(value, ceiling)]),
            goal,
            reached,
        )

    return {
        "health_max_vs_bare": Figure(
            "health max requests/s (closed loop)",
            "requests/s",
            statistics.median(p.health.units_per_s for p in pairs),
            "bare GET max requests/s",
            statistics.median(p.bare.units_per_s for p in pairs),
            max_vs_bare,
            f">= {TARGET_MAX_VS_BARE} x bare",
            max_vs_bare.median >= TARGET_MAX_VS_BARE,
        ),
        "health_rate_at_half": Figure(
            "health achieved requests/s (open loop, ingesting)",
            "requests/s",
            paced.health_ingesting.units_per_s,
            f"offered rate ({OPEN_LOOP_FRACTION:.0%} of health max)",
            offered,
            Spread.of([ratio(paced.health_ingesting.units_per_s, offered)]),
        ),
        "health_p50_vs_bare": latency(
            "health p50 latency (open loop, ingesting)",
            health["p50_ms"],
            "bare GET p50 at the same rate, ingesting",
            bare["p50_ms"],
        ),
        "health_p99_vs_bare": latency(
            "health p99 latency (open loop, ingesting)",
            health["p99_ms"],
            "bare GET p99 at the same rate, ingesting",
            bare["p99_ms"],
            goal=target,
            reached=met,
        ),
        "health_max_latency_vs_bare": latency(
            "health max latency (open loop, ingesting)",
            health["max_ms"],
            "bare GET max at the same rate, ingesting",
            bare["max_ms"],
        ),
        "health_p99_vs_quiet": latency(
            "health p99 latency (open loop, ingesting)",
            health["p99_ms"],
            "health p99 at the same rate, quiet",
            quiet["p99_ms"],
            goal=target,
            reached=met,
        ),
        "quiet_p50_vs_bare": latency(
            "health p50 latency (open loop, quiet)",
            quiet["p50_ms"],
            "bare GET p50 at the same rate, quiet",
            bare_quiet["p50_ms"],
        ),
        "quiet_p99_vs_bare": latency(
            "health p99 latency (open loop, quiet)",
            quiet["p99_ms"],
            "bare GET p99 at the same rate, quiet",
            bare_quiet["p99_ms"],
        ),
        "background_acked": Figure(
            "background events/s acked by ingest (health, ingesting)",
            "events/s",
            background.acked_per_s,
            "background offered events/s",
            background.offered_per_s,
            Spread.of([ratio(background.acked_per_s, background.offered_per_s)]),
        ),
        "background_committed": Figure(
            "background events/s committed by scoring (health, ingesting)",
            "events/s",
            background.committed_per_s,
            "background offered events/s",
            background.offered_per_s,
            Spread.of([ratio(background.committed_per_s, background.offered_per_s)]),
        ),
    }


def figures_printed(found: dict[str, dict[str, Any]]) -> str:
    return figure_table(found, FIGURE_KEYS)


#: Columns of the CPU table: the servers under test, then the rest of the pipeline.
CPU_COLUMNS = ("api", "bare", "postgres", "loadgen", "ingest", "scoring", "kafka", KERNEL_IRQ)


def cpu_profile(pairs: Sequence[Pair], paced: OpenLoops) -> dict[str, Any]:
    """Median CPU microseconds per request served and cores busy, per phase and process."""

    def summarise(results: Sequence[LoadResult]) -> dict[str, Any]:
        names = results[0].cpu_s.keys()
        return {
            "unit": "request",
            "us_per_unit": {
                n: statistics.median(r.cpu_per_unit()[n] for r in results) * 1e6 for n in names
            },
            "cores": {n: statistics.median(r.cores()[n] for r in results) for n in names},
        }

    return {
        "health (closed)": summarise([p.health for p in pairs]),
        "bare (closed)": summarise([p.bare for p in pairs]),
        "health (open, ingesting)": summarise([paced.health_ingesting]),
        "bare (open, ingesting)": summarise([paced.bare_ingesting]),
        "health (open, quiet)": summarise([paced.health_quiet]),
        "bare (open, quiet)": summarise([paced.bare_quiet]),
    }


def cpu_table(profile: dict[str, Any]) -> str:
    rows = [[phase, *cpu_cells(data, CPU_COLUMNS)] for phase, data in profile.items()]
    header = [
        "phase",
        "per",
        "api",
        "bare",
        "postgres (all)",
        "load generator",
        "ingest",
        "scoring",
        "kafka broker",
        "kernel irq",
        "other cores",
    ]
    return table(header, rows)


# --- setting up and tearing down -------------------------------------------------------------


say = sayer("bench-api")


def service_settings(
    settings: Settings, suffix: str, *, bootstrap: str, database_url: str
) -> Settings:
    """The three services' settings: topics and a group of the benchmark's own, free ports,
    limits far above anything this machine can send (no 429 may ever be answered)."""
    base = f"bench-api-{suffix}"
    return settings.model_copy(
        update={
            "kafka_bootstrap_servers": bootstrap,
            "database_url": database_url,
            "events_topic": f"{base}.events",
            "health_topic": f"{base}.health",
            "interventions_topic": f"{base}.interventions",
            "profiles_topic": f"{base}.profiles",
            "dead_letter_topic": f"{base}.dlq",
            "scoring_group_id": base,
            "ingest_port": free_port(),
            "api_port": free_port(),
            "scoring_metrics_port": free_port(),
            "rate_limit_events_per_s": 1e9,
            "rate_limit_burst": 1e9,
            "api_rate_limit_per_s": 1e9,
            "api_rate_limit_burst": 1e9,
            "log_level": "WARNING",
        }
    )


def _api_argv(profile_to: Path | None) -> list[str]:
    if profile_to is None:
        return [str(Path(sys.executable).with_name("touchpulse-api"))]
    return [sys.executable, "-m", "tests.bench.api", "--serve-profiled", str(profile_to)]


@dataclass
class Setup:
    bench: Bench
    started: datetime
    state: dict[str, int]
    answers: dict[str, float]
    fill_s: float
    topics: list[str]
    postgres_version: str
    kafka_local: bool
    postgres_local: bool


def set_up(
    plan: Plan,
    settings: Settings,
    exit_stack: contextlib.ExitStack,
    *,
    profile_to: Path | None,
    site: Site | None = None,
) -> Setup:
    """Broker, database, topics, keys, the three services and the bare server, and the
    corpus applied by the pipeline; everything stopped or removed by ``exit_stack``."""
    started = datetime.now(UTC)
    if site is None:
        site = exit_stack.enter_context(open_site(settings, say))
    kafka, postgres, runner = site.kafka, site.postgres, site.runner
    logs = site.logs("api")
    suffix = uuid.uuid4().hex[:10]
    database_url = site.new_database(exit_stack, f"bench_api_{suffix}", say)
    services = service_settings(
        settings, suffix, bootstrap=kafka.address, database_url=database_url
    )
    specs = topic_specs(services)
    runner.run(ensure_topics_at(kafka.address, specs))
    topics = [s.name for s in specs]
    site.remove_topics_later(exit_stack, topics, say)
    events_key = runner.run(
        new_key(database_url, "bench-api-events", Scope.EVENTS_WRITE, source=SOURCE)
    )
    health_key = runner.run(new_key(database_url, "bench-api-health", Scope.HEALTH_READ))
    env = {**os.environ, **settings_env(services)}

    def server(name: str, argv: list[str], port: int) -> Server:
        return Server(
            name,
            argv,
            port=port,
            log_path=logs / f"{name}.log",
            env=env,
            cwd=REPO,
            ready_path="/readyz",
        )

    bin_dir = Path(sys.executable).parent
    ingest = server("ingest", [str(bin_dir / "touchpulse-ingest")], services.ingest_port)
    scoring = server(
        "scoring", [str(bin_dir / "touchpulse-scoring")], services.scoring_metrics_port
    )
    api = server("api", _api_argv(profile_to), services.api_port)
    bare_port = free_port()
    bare = Server(
        "bare",
        uvicorn_argv("tests.bench.bare_app:app", bare_port),
        port=bare_port,
        log_path=logs / "bare.log",
        cwd=REPO,
    )
    say("starting ingest, scoring, the api and the bare server")
    for each in (ingest, scoring, api, bare):
        exit_stack.enter_context(each)
    bench = Bench(
        plan=plan,
        logs=logs,
        runner=runner,
        database_url=database_url,
        events_topic=services.events_topic,
        group=services.scoring_group_id,
        kafka_pid=kafka.pid,
        postgres_pid=postgres.pid,
        ingest=ingest,
        scoring=scoring,
        api=api,
        bare=bare,
        health_key=health_key,
        events_key=events_key,
    )
    say(
        f"building the state: {plan.events:,} events over {plan.customers:,} customers through "
        "ingest and scoring"
    )
    corpus = build_events(
        plan.events,
        customers=plan.customers,
        start=started - SPAN,
        end=started - timedelta(minutes=1),
        seed=SEED,
    )
    fill_s = bench.fill(corpus)
    state = bench.read_state()
    answers = bench.sample_answers()
    return Setup(
        bench=bench,
        started=started,
        state=state,
        answers=answers,
        fill_s=fill_s,
        topics=topics,
        postgres_version=runner.run(postgres_version(postgres.address)),
        kafka_local=kafka.local,
        postgres_local=postgres.local,
    )


def run(plan: Plan, settings: Settings, site: Site | None = None) -> dict[str, Any]:
    """The api benchmark on ``site``'s broker and database server (servers of its own,
    started and stopped here, without one)."""
    with contextlib.ExitStack() as exit_stack:
        setup = set_up(plan, settings, exit_stack, profile_to=None, site=site)
        bench = setup.bench
        pairs, paced = measure(bench)
        found = figures(pairs, paced)
        rss = {
            name: peak_rss_bytes(s.pid)
            for name, s in (
                ("api", bench.api),
                ("bare", bench.bare),
                ("ingest", bench.ingest),
                ("scoring", bench.scoring),
            )
        }
        if bench.kafka_pid is not None:
            rss["kafka"] = peak_rss_bytes(bench.kafka_pid)
        return {
            "benchmark": "api",
            "mode": plan.name,
            "started_at": setup.started.isoformat(),
            "finished_at": datetime.now(UTC).isoformat(),
            "machine": machine(),
            "versions": {
                **versions(PACKAGES),
                "kafka": settings.kafka_version if setup.kafka_local else "external",
                "postgresql": setup.postgres_version
                if setup.postgres_local
                else f"external {setup.postgres_version}",
            },
            "settings": {
                "kafka": "local" if setup.kafka_local else "external",
                "postgresql": "local" if setup.postgres_local else "external",
                "route": "GET /v1/customers/{id}/health (trend_days 30)",
                "bare_route": "GET / (tests/bench/bare_app.py: a constant JSON answer)",
                "plan": asdict(plan),
                "open_loop_fraction": OPEN_LOOP_FRACTION,
                "open_loop_rate_per_s": paced.rate_per_s,
                "health_requests": len(bench.health_requests),
                "background": {
                    "events_per_s": plan.background_per_s,
                    "batch_events": BACKGROUND_BATCH_EVENTS,
                    "connections": BACKGROUND_CONNECTIONS,
                    "span_s": BACKGROUND_SPAN.total_seconds(),
                },
                "corpus": {
                    "events": plan.events,
                    "customers": plan.customers,
                    "span_days": SPAN.days,
                    "source": SOURCE,
                    "applied_in_s": setup.fill_s,
                },
            },
            "state": setup.state,
            "answers": setup.answers,
            "figures": {key: found[key].as_dict() for key in FIGURE_KEYS},
            "targets": {
                "health_p99_ms": {
                    "max": TARGET_P99_MS,
                    "at": f"{OPEN_LOOP_FRACTION:.0%} of the health max, while ingesting",
                    "met": found["health_p99_vs_bare"].met,
                },
                "health_max_vs_bare": {
                    "min": TARGET_MAX_VS_BARE,
                    "met": found["health_max_vs_bare"].met,
                },
            },
            "cpu": cpu_profile(pairs, paced),
            "peak_rss_bytes": rss,
            "pairs": [p.as_dict() for p in pairs],
            "open_loop": paced.as_dict(),
            "notes": [SHARED_CORES_NOTE.format(nproc=os.cpu_count())],
            "warnings": bench.warnings,
            "logs": str(bench.logs),
        }


def report(result: dict[str, Any]) -> str:
    mach = result["machine"]
    state, answers = result["state"], result["answers"]
    corpus = result["settings"]["corpus"]
    loops = result["open_loop"]
    lines = [
        f"Touchpulse api benchmark ({result['mode']}), {result['started_at']}",
        f"machine: {mach['nproc']} cores, {mach['memory_bytes'] / 2**30:.1f} GiB memory, "
        f"{mach['cpu_model']}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()),
        f"state: {corpus['events']:,} events over {corpus['customers']:,} customers applied by "
        f"ingest and scoring in {corpus['applied_in_s']:.1f} s: {state['customers']:,} "
        f"customers with health, {state['touchpoint_health']:,} touchpoint rows, "
        f"{state['history']:,} history rows, {state['outcomes']:,} outcomes "
        f"({state['broken']:,} broken, at most {state['max_outcomes_per_customer']} per "
        f"customer), {state['open_interventions']:,} open interventions",
        f"health answer: {answers['body_bytes']:,.0f} B on average, "
        f"{answers['touchpoints']:.1f} touchpoints, {answers['trend_points']:.1f} trend points, "
        f"{answers['explanation_items']:.1f} explanation items, "
        f"{answers['with_open_intervention']:.0%} with an open intervention",
    ]
    for key, what in (
        ("health_ingesting_background", "health"),
        ("bare_ingesting_background", "bare"),
    ):
        b = loops[key]
        lines.append(
            f"background while ingesting ({what}): {b['offered_events_per_s']:,.0f} events/s "
            f"offered to ingest as batches of {b['batch_events']}; "
            f"{b['acked_events_per_s']:,.0f}/s acked, {b['committed_events_per_s']:,.0f}/s "
            f"committed by scoring in the window; scoring caught up {b['caught_up_s']:.1f} s "
            "after the phase"
        )
    for key in ("health_ingesting", "bare_ingesting", "health_quiet", "bare_quiet"):
        loop = loops[key]
        lines.append(
            f"open loop {key.replace('_', ', ')}: {loop['offered_per_s']:,.0f}/s offered, the "
            f"generator at most {loop['max_send_lag_ms']:.1f} ms late, "
            f"{loop['incomplete']} incomplete"
        )
    lines += [
        result["notes"][0],
        "",
        figures_printed(result["figures"]),
        "",
        "CPU microseconds per request served (cores busy), median over pairs; postgres = the "
        "postmaster and all its children; while ingesting, every process also works for the "
        "background; other = the rest of the machine:",
    ]
    return close_report(lines, cpu_table(result["cpu"]), result)


# --- a profile of the api (--profile) ------------------------------------------------------

#: Where the api's time goes, by the file a function lives in (first match wins).
PROFILE_AREAS = (
    ("touchpulse_api/routes", "api route (queries, explanation, answer models)"),
    ("touchpulse_api/", "api, other (auth and rate-limit dependency, context)"),
    ("touchpulse_scoring/domain", "scoring domain (health arithmetic of the explanation)"),
    ("touchpulse_scoring/store", "scoring store (outcome rows to objects)"),
    ("touchpulse_scoring/", "scoring, other (catalogue source)"),
    ("touchpulse_shared/auth", "key verification"),
    ("touchpulse_shared/http", "metrics middleware, access"),
    ("touchpulse_shared/", "shared, other"),
    ("fastapi", "FastAPI"),
    ("typing.py", "typing, inspect, collection ABCs (FastAPI's dependency introspection)"),
    ("inspect.py", "typing, inspect, collection ABCs (FastAPI's dependency introspection)"),
    ("_collections_abc", "typing, inspect, collection ABCs (FastAPI's dependency introspection)"),
    ("opentelemetry", "opentelemetry (FastAPI's request telemetry)"),
    ("starlette", "Starlette"),
    ("uvicorn", "uvicorn + httptools"),
    ("httptools", "uvicorn + httptools"),
    ("pydantic", "pydantic"),
    ("asyncpg", "asyncpg"),
    ("prometheus_client", "prometheus_client"),
    ("uvloop", "uvloop"),
    ("asyncio", "asyncio"),
    ("contextlib", "contextlib (async exit stacks, pool acquire)"),
    ("orjson", "orjson"),
    ("dataclasses", "dataclasses (replace, generated __init__)"),
    ("<string>", "dataclasses (replace, generated __init__)"),
    ("pathlib", "catalogue file stat() per request"),
    ("posix.stat", "catalogue file stat() per request"),
    ("~ <", "Python built-ins (isinstance, dict.get, getattr, ...) called from all of the above"),
)
# An event loop's poll (its idle time). Never entered when profiling starts inside the
# running loop, as it does here: the profile then holds the time in Python functions only.
PROFILE_WAITING = ("run_forever", "epoll")
#: Call paths whose cumulative share is shown (file fragment, function, label).
PROFILE_PATHS = (
    ("httptools_impl.py", "run_asgi", "the ASGI application, all of it"),
    (
        "fastapi/dependencies/utils.py",
        "solve_dependencies",
        "- FastAPI resolving the route's dependencies, all of it",
    ),
    ("touchpulse_api/context.py", "dependency", "  - the key check and the rate limit"),
    ("routes/customers.py", "customer_health", "- the route function, all of it"),
    ("asyncpg/connection.py", "_execute", "  - its five queries in asyncpg (waits excluded)"),
    ("touchpulse_scoring/store.py", "outcome_from_row", "  - an Outcome built per recent row"),
    ("domain/journey.py", "journey_health", "  - journey_health (score, explanation)"),
    ("domain/health.py", "replace_outcome", "  - replace_outcome (explanation)"),
    ("fastapi/routing.py", "serialize_response", "- validating and serialising the answer"),
    ("starlette/responses.py", "__call__", "- sending the answer (Starlette, uvicorn)"),
    ("asyncpg/connection.py", "reset", "asyncpg's reset query at every pool release (a task)"),
)


def profile(plan: Plan, settings: Settings, *, dump: Path, top: int = 25) -> str:
    """cProfile of the api process through one closed-loop phase of health reads."""
    with contextlib.ExitStack() as exit_stack:
        setup = set_up(plan, settings, exit_stack, profile_to=dump)
        bench = setup.bench
        say("warming up the api (not measured)")
        bench.load(bench.api, prewarm=True)
        say(f"health reads for {plan.profile_s:.0f} s, the api under cProfile")
        meter = CpuMeter({"api": bench.api.pid})
        profiled = plan.profile_s
        os.kill(bench.api.pid, PROFILE_START)
        before, started = meter.read(), clock()
        connections = [HttpConnection(LOOPBACK, bench.api.port) for _ in range(plan.connections)]
        calls = raw_calls(connections, bench.health_requests, ok_requests)

        async def run() -> LoadResult:
            try:
                return await closed_loop(calls, warmup_s=0.0, duration_s=profiled)
            finally:
                for connection in connections:
                    await connection.close()

        result = bench.runner.run(run())
        os.kill(bench.api.pid, PROFILE_STOP)
        wall_s = clock() - started
        api_cpu_s = CpuMeter.delta(before, meter.read())["api"]
        deadline = clock() + 30
        while not dump.exists():
            if clock() > deadline:
                raise BenchError(f"the api wrote no profile; see {bench.api.log_path}")
            time.sleep(0.1)
    found = profile_summary(
        pstats.Stats(str(dump)),
        PROFILE_AREAS,
        waiting=PROFILE_WAITING,
        paths=PROFILE_PATHS,
        top=top,
    )
    served = result.units
    lines = [
        f"api under cProfile: {served:,} health reads in {profiled:.0f} s "
        f"({result.units_per_s:,.0f}/s with the profiler's overhead); the api process used "
        f"{api_cpu_s:.2f} CPU-s in {wall_s:.1f} s ({api_cpu_s / wall_s:.2f} cores), "
        f"{found['own_s']:.2f} s of it in Python functions (the profile; the loop's own C "
        "code and its idle poll are not in it). cProfile slows Python code more than C code: "
        "the shares are indicative.",
        "",
        "call paths (cumulative share of the profile):",
        table(
            ["path", "share"],
            [[label, f"{share:.1%}"] for label, share in found["paths"].items()],
        ),
        "",
        "by area (own time):",
        table(["area", "share"], [[a, f"{share:.1%}"] for a, share in found["areas"].items()]),
        "",
        f"top {top} functions by own time:",
    ]

    def ranked(rows: list[dict[str, Any]]) -> str:
        return table(
            ["function", "calls", "own s", "own share", "cumulative share", "own µs per read"],
            [
                [
                    r["function"],
                    f"{r['calls']:,}",
                    f"{r['own_s']:.2f}",
                    f"{r['own_share']:.1%}",
                    f"{r['cumulative_share']:.1%}",
                    f"{r['own_s'] / served * 1e6:.1f}",
                ]
                for r in rows
            ],
        )

    lines.append(ranked(found["top_own"]))
    return "\n".join(lines)


# --- entry point -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = arguments(
        "python -m tests.bench.api",
        __doc__,
        quick="a small state, one pair, short phases",
        output="api",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead: profile the api (cProfile) through a closed-loop phase of health reads",
    )
    parser.add_argument("--serve-profiled", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_profiled is not None:
        # The api process of --profile: touchpulse-api itself, profiled on the bench's signal.
        # Its entry point parses sys.argv, which holds this bench's own flag: hide it.
        sys.argv = sys.argv[:1]
        serve_profiled(serve_api, args.serve_profiled)
        return 0

    def body() -> int:
        settings = bench_settings()
        plan = QUICK if args.quick else FULL
        if args.profile:
            dump = settings.state_dir.resolve() / "bench" / f"api-profile-{utc_stamp()}.pstats"
            dump.parent.mkdir(parents=True, exist_ok=True)
            print(profile(plan, settings, dump=dump))
            print(f"\nwrote {dump} (python -m pstats {dump})")
            return 0
        publish(run(plan, settings), args.output, settings, "api", report)
        return 0

    return guarded(say, body)


if __name__ == "__main__":
    sys.exit(main())

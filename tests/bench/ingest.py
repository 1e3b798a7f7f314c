"""``make bench-ingest``: ingest's two paths beside their ceilings, measured in one run.

On one broker and one database (started here, unless ``KAFKA_BOOTSTRAP_SERVERS`` /
``TOUCHPULSE_DATABASE_URL`` name servers), with one fixed event corpus:

- batch path: ``POST /v1/events/batch`` with 1,000 native events per request; only events
  in 202 answers count (202 means Kafka acknowledged them). Ceilings: Kafka's own
  ``ProducerPerformance`` at the same record size and producer settings (K_prod), and a
  bare Starlette route that only decodes the same bodies;
- single path: ``POST /v1/events`` one event per request, its closed-loop maximum against
  the bare route's, then an open-loop run at half of that maximum for p50/p99/max latency,
  measured from each request's scheduled send time, beside the bare route and Kafka's own
  producer (``ProducerPerformance --throughput``) at the same rate.

System and baseline runs alternate (A, B, A, B, …) and each ratio is the median of its
pairs with the range. The load generator runs in this process, on the same cores as
everything else; its CPU is reported beside that of ingest and the broker.

Run ``python -m tests.bench.ingest [--quick]``; the result is printed and written to
``.touchpulse/bench/ingest-<UTC time>.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import re
import statistics
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from tests.bench.common import (
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
    close_report,
    closed_loop,
    cpu_cells,
    figure_table,
    java_version,
    latency_summary,
    machine,
    open_loop,
    open_site,
    peak_rss_bytes,
    ratio,
    raw_calls,
    raw_request,
    run_kafka_tool,
    sayer,
    stage_main,
    table,
    uvicorn_argv,
    versions,
)
from touchpulse_shared.auth import Scope, create_key
from touchpulse_shared.contract import (
    ExperienceEventV1,
    encode_record,
    event_to_json,
    events_to_batch_json,
    parse_event_json,
)
from touchpulse_shared.kafka.topics import ensure_topics_at, topic_specs
from touchpulse_shared.settings import Settings
from touchpulse_shared.stack.procs import free_port

REPO = Path(__file__).resolve().parents[2]
SOURCE = "crm-prod"
CUSTOMERS = 10_000
BATCH_EVENTS = 1_000
SEED = 20_240_501
# The targets.
TARGET_BATCH_VS_KAFKA = 0.30
TARGET_SINGLE_P99_MS = 20.0
OPEN_LOOP_FRACTION = 0.5
# The ingest producer's settings (producer.py) that K_prod must share.
PRODUCER_BATCH_BYTES = 1024 * 1024
PACKAGES = (
    "aiokafka",
    "fastapi",
    "uvicorn",
    "pydantic",
    "starlette",
    "uvloop",
    "httptools",
    "orjson",
)
SHARED_CORES_NOTE = (
    "The load generator (this process) shares the machine's {nproc} cores with ingest, the "
    "broker, PostgreSQL and the bare server: every figure is what is left after it."
)

#: Every figure the benchmark reports, each with a ceiling and a ratio.
FIGURE_KEYS = (
    "batch_vs_kafka",
    "batch_vs_bare",
    "single_max_vs_bare",
    "single_rate_at_half",
    "single_p50_vs_bare",
    "single_p50_vs_kafka",
    "single_p99_vs_bare",
    "single_p99_vs_kafka",
    "single_max_latency_vs_bare",
)


@dataclass(frozen=True)
class Plan:
    name: str
    pairs: int
    #: Load on ingest before the first pair, not measured.
    prewarm_s: float
    warmup_s: float
    duration_s: float
    open_warmup_s: float
    open_duration_s: float
    #: K_prod's record count is chosen so that one run takes about this long.
    kprod_target_s: float
    kprod_first_records: int
    single_events: int
    batches: int
    batch_connections: int = 4
    single_connections: int = 64


FULL = Plan(
    name="full",
    pairs=4,
    prewarm_s=3.0,
    warmup_s=1.0,
    duration_s=6.0,
    open_warmup_s=3.0,
    open_duration_s=15.0,
    kprod_target_s=5.0,
    kprod_first_records=1_000_000,
    single_events=10_000,
    batches=20,
)
QUICK = Plan(
    name="quick",
    pairs=1,
    prewarm_s=1.0,
    warmup_s=0.5,
    duration_s=1.5,
    open_warmup_s=0.5,
    open_duration_s=2.5,
    kprod_target_s=1.5,
    kprod_first_records=200_000,
    single_events=2_000,
    batches=4,
)


# --- the corpus ------------------------------------------------------------------------------

Maker = Callable[[random.Random], dict[str, Any]]
# Every template is one the promise catalogue accepts (ingest refuses the rest with a 422).
_TEMPLATES: tuple[tuple[str, str, Maker, Maker], ...] = (
    (
        "web",
        "page.viewed",
        lambda r: {"load_seconds": round(r.uniform(0.2, 6.0), 2)},
        lambda r: {"page": r.choice(["checkout", "account", "tracking"])},
    ),
    (
        "call_centre",
        "call.answered",
        lambda r: {
            "wait_seconds": r.randrange(5, 900),
            "first_contact_resolution": r.random() < 0.7,
        },
        lambda r: {"queue": r.choice(["billing", "orders"])},
    ),
    (
        "delivery",
        "delivery.completed",
        lambda r: {"damaged": r.random() < 0.03},
        lambda r: {"carrier": r.choice(["postnl", "dhl", "ups"])},
    ),
    (
        "billing",
        "invoice.issued",
        lambda r: {"days_after_delivery": r.randrange(0, 10)},
        lambda r: {"channel": r.choice(["email", "post"])},
    ),
    (
        "customer_service",
        "case.resolved",
        lambda r: {"resolution_hours": round(r.uniform(0.2, 96), 1)},
        lambda r: {"priority": r.choice(["low", "normal", "high"])},
    ),
    (
        "survey",
        "survey.answered",
        lambda r: {"nps": r.randrange(0, 11)},
        lambda r: {"language": r.choice(["nl", "en", "de"])},
    ),
)


@dataclass(frozen=True)
class Corpus:
    singles: list[bytes]
    batches: list[bytes]
    value_bytes: float
    key_bytes: float
    header_bytes: float
    events: int

    @property
    def record_size(self) -> int:
        return round(self.value_bytes)


def _event(rng: random.Random, now: datetime) -> ExperienceEventV1:
    touchpoint, kind, measures, attributes = rng.choice(_TEMPLATES)
    document: dict[str, Any] = {
        "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "source": SOURCE,
        "customer_id": f"C-{rng.randrange(CUSTOMERS):06d}",
        "touchpoint": touchpoint,
        "type": kind,
        "occurred_at": (now - timedelta(seconds=rng.randrange(6 * 3600))).isoformat(),
        "measures": measures(rng),
    }
    # Context and journeys are optional in the contract, and as often missing in practice.
    if rng.random() < 0.5:
        document["attributes"] = attributes(rng)
    if rng.random() < 0.3:
        document["journey_id"] = f"J-{rng.randrange(1_000_000):07d}"
    # Through the contract's own parser, so every body is one ingest accepts.
    return parse_event_json(orjson.dumps(document))


def build_corpus(plan: Plan, now: datetime) -> Corpus:
    """A fixed set of events (same seed, same customers every run), pre-encoded as bodies."""
    rng = random.Random(SEED)
    now = now.replace(microsecond=0)
    singles = [_event(rng, now) for _ in range(plan.single_events)]
    groups = [[_event(rng, now) for _ in range(BATCH_EVENTS)] for _ in range(plan.batches)]
    everything = singles + [e for group in groups for e in group]
    records = [encode_record(e, producer="ingest", received_at=now) for e in everything]
    return Corpus(
        singles=[event_to_json(e) for e in singles],
        batches=[events_to_batch_json(group) for group in groups],
        value_bytes=statistics.fmean(len(r.value) for r in records),
        key_bytes=statistics.fmean(len(r.key) for r in records),
        header_bytes=statistics.fmean(sum(len(k) + len(v) for k, v in r.headers) for r in records),
        events=len(everything),
    )


# --- Kafka's own producer (K_prod) -----------------------------------------------------------

_SUMMARY = re.compile(
    r"(?P<records>\d+) records sent, (?P<per_s>[\d.]+) records/sec \((?P<mb_s>[\d.]+) MB/sec\), "
    r"(?P<avg_ms>[\d.]+) ms avg latency, (?P<max_ms>[\d.]+) ms max latency, "
    r"(?P<p50_ms>\d+) ms 50th, (?P<p95_ms>\d+) ms 95th, (?P<p99_ms>\d+) ms 99th"
)


def producer_props(bootstrap: str, linger_ms: int) -> list[str]:
    """Those of the ingest producer (producer.py): acks=all, idempotent, 1 MiB, no compression."""
    return [
        f"bootstrap.servers={bootstrap}",
        "acks=all",
        "enable.idempotence=true",
        f"linger.ms={linger_ms}",
        f"batch.size={PRODUCER_BATCH_BYTES}",
        "compression.type=none",
    ]


def parse_summary(output: str) -> dict[str, float]:
    """ProducerPerformance's last summary line (the whole run), as numbers."""
    matches = list(_SUMMARY.finditer(output))
    if not matches:
        raise BenchError("ProducerPerformance printed no summary line:\n" + output[-2000:])
    return {name: float(value) for name, value in matches[-1].groupdict().items()}


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Bench:
    plan: Plan
    settings: Settings
    logs: Path
    bootstrap: str
    kafka_pid: int | None
    topic: str
    corpus: Corpus
    ingest: Server
    bare: Server
    runner: asyncio.Runner
    key: str
    kprod_runs: int = 0
    warnings: list[str] = field(default_factory=list)

    def meter(self, server: Server) -> CpuMeter:
        pids = {"server": server.pid, "loadgen": os.getpid()}
        if self.kafka_pid is not None:
            pids["kafka"] = self.kafka_pid
        return CpuMeter(pids)

    def requests(self, server: Server, *, batch: bool) -> list[bytes]:
        headers = {"Content-Type": "application/json"}
        if server is self.ingest:
            headers["Authorization"] = f"Bearer {self.key}"
            path = "/v1/events/batch" if batch else "/v1/events"
        else:
            path = "/batch" if batch else "/single"
        host = f"{LOOPBACK}:{server.port}"
        bodies = self.corpus.batches if batch else self.corpus.singles
        return [raw_request("POST", path, host=host, headers=headers, body=b) for b in bodies]

    def load(
        self,
        server: Server,
        *,
        batch: bool,
        rate_per_s: float | None = None,
        prewarm: bool = False,
    ) -> LoadResult:
        plan = self.plan
        count = plan.batch_connections if batch else plan.single_connections
        connections = [HttpConnection(LOOPBACK, server.port) for _ in range(count)]
        calls = raw_calls(connections, self.requests(server, batch=batch), accepted_events)

        async def run() -> LoadResult:
            try:
                if rate_per_s is None:
                    return await closed_loop(
                        calls,
                        warmup_s=0 if prewarm else plan.warmup_s,
                        duration_s=plan.prewarm_s if prewarm else plan.duration_s,
                        meter=self.meter(server),
                    )
                return await open_loop(
                    calls,
                    rate_per_s=rate_per_s,
                    warmup_s=plan.open_warmup_s,
                    duration_s=plan.open_duration_s,
                    meter=self.meter(server),
                )
            finally:
                for connection in connections:
                    await connection.close()

        result = self.runner.run(run())
        self._check(server, result, batch=batch, prewarm=prewarm)
        return result

    def _check(self, server: Server, result: LoadResult, *, batch: bool, prewarm: bool) -> None:
        what = f"{server.name} {'batch' if batch else 'single'}"
        what += " (warm-up)" if prewarm else " (open loop)" if result.offered_per_s else ""
        check_other(self.warnings, what, result.cores().get(OTHER, 0.0))
        if result.units == 0:
            raise BenchError(
                f"{what}: nothing was accepted (statuses {dict(result.statuses)}); "
                f"see {server.log_path}"
            )
        failed = result.requests - result.statuses[202]
        if failed or result.incomplete:
            self.warnings.append(
                f"{what}: {failed} of {result.requests} requests not 202 "
                f"(statuses {dict(result.statuses)}), {result.incomplete} incomplete"
            )

    def kprod(self, records: int, *, throughput: float = -1) -> dict[str, Any]:
        """One ProducerPerformance run on the benchmark topic; its summary and CPU.

        ``throughput`` -1 is as fast as it can (the rate ceiling); a rate gives its latency
        at that rate (the latency ceiling), measured from send to acknowledgement.
        """
        self.kprod_runs += 1
        output, run = run_kafka_tool(
            self.settings,
            self.logs,
            f"producer-performance-{self.kprod_runs}",
            "ProducerPerformance",
            [
                "--topic",
                self.topic,
                "--num-records",
                str(records),
                "--record-size",
                str(self.corpus.record_size),
                "--throughput",
                f"{throughput:.0f}",
                "--producer-props",
                *producer_props(self.bootstrap, self.settings.ingest_linger_ms),
            ],
            meter=CpuMeter({"kafka": self.kafka_pid} if self.kafka_pid is not None else {}),
        )
        summary = parse_summary(output)
        cpu, wall_s = run["cpu_s"], run["wall_s_incl_jvm_start"]
        check_other(self.warnings, "K_prod", cpu[OTHER] / wall_s)
        sent = summary["records"]
        return {
            "records": sent,
            "throughput_asked": throughput,
            "records_per_s": summary["per_s"],
            "mb_per_s": summary["mb_s"],
            "latency_ms": {
                k: summary[k] for k in ("avg_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms")
            },
            "wall_s_incl_jvm_start": wall_s,
            "cpu_s": cpu,
            "cpu_s_per_unit": {name: s / sent for name, s in cpu.items()},
        }


def accepted_events(status: int, body: bytes) -> int:
    """Units of work in an answer: the events ingest (or the bare route) accepted."""
    if status != 202:
        return 0
    accepted = orjson.loads(body).get("accepted", 1)
    return int(accepted)


@dataclass
class Round:
    ingest_batch: LoadResult
    kprod: dict[str, Any]
    bare_batch: LoadResult
    ingest_single: LoadResult
    bare_single: LoadResult

    def as_dict(self) -> dict[str, Any]:
        return {
            "ingest_batch": self.ingest_batch.as_dict(),
            "kprod": self.kprod,
            "bare_batch": self.bare_batch.as_dict(),
            "ingest_single": self.ingest_single.as_dict(),
            "bare_single": self.bare_single.as_dict(),
        }


@dataclass
class OpenLoop:
    """Latency at one offered rate: ingest, Kafka's own producer and the bare route."""

    ingest: LoadResult
    kprod: dict[str, Any]
    bare: LoadResult

    def as_dict(self) -> dict[str, Any]:
        return {"ingest": self.ingest.as_dict(), "kprod": self.kprod, "bare": self.bare.as_dict()}


def measure(bench: Bench) -> tuple[list[Round], OpenLoop]:
    plan = bench.plan
    rounds: list[Round] = []
    records = plan.kprod_first_records
    # The broker's JIT and ingest's first-use costs would otherwise fall into pair 1.
    say("warming up ingest and the broker (not measured)")
    bench.load(bench.ingest, batch=True, prewarm=True)
    bench.load(bench.ingest, batch=False, prewarm=True)
    for index in range(plan.pairs):
        say(f"pair {index + 1}/{plan.pairs}: ingest batch, K_prod, bare batch")
        ingest_batch = bench.load(bench.ingest, batch=True)
        kprod = bench.kprod(records)
        # The next K_prod run sized to take about kprod_target_s at the rate just seen.
        records = max(50_000, round(kprod["records_per_s"] * plan.kprod_target_s))
        bare_batch = bench.load(bench.bare, batch=True)
        say(f"pair {index + 1}/{plan.pairs}: ingest single, bare single (closed loop)")
        ingest_single = bench.load(bench.ingest, batch=False)
        bare_single = bench.load(bench.bare, batch=False)
        rounds.append(Round(ingest_batch, kprod, bare_batch, ingest_single, bare_single))
    single_max = statistics.median(r.ingest_single.units_per_s for r in rounds)
    rate = OPEN_LOOP_FRACTION * single_max
    say(f"open loop at {rate:,.0f}/s: ingest single, K_prod at that rate, bare single")
    ingest_open = bench.load(bench.ingest, batch=False, rate_per_s=rate)
    # As many records as ingest was sent, warm-up included: the tool cannot leave it out.
    paced = round(rate * (plan.open_warmup_s + plan.open_duration_s))
    kprod_open = bench.kprod(paced, throughput=rate)
    bare_open = bench.load(bench.bare, batch=False, rate_per_s=rate)
    return rounds, OpenLoop(ingest_open, kprod_open, bare_open)


# --- figures ---------------------------------------------------------------------------------


def figures(rounds: Sequence[Round], paced: OpenLoop) -> dict[str, Figure]:
    def med(values: Iterator[float]) -> float:
        return statistics.median(values)

    batch = med(r.ingest_batch.units_per_s for r in rounds)
    vs_kafka = Spread.of(
        ratio(r.ingest_batch.units_per_s, r.kprod["records_per_s"]) for r in rounds
    )
    ingest = latency_summary(paced.ingest.latencies_s)
    bare = latency_summary(paced.bare.latencies_s)
    kafka = paced.kprod["latency_ms"]
    offered = paced.ingest.offered_per_s or math.nan
    p99_target = f"< {TARGET_SINGLE_P99_MS:.0f} ms"
    p99_met = ingest["p99_ms"] < TARGET_SINGLE_P99_MS

    def latency(
        key: str, ceiling_label: str, ceiling: float, target: str = "", met: bool | None = None
    ) -> Figure:
        what = key.removesuffix("_ms")
        return Figure(
            f"single {what} latency (open loop)",
            "ms",
            ingest[key],
            f"{ceiling_label} {what} at the same rate",
            ceiling,
            Spread.of([ratio(ingest[key], ceiling)]),
            target,
            met,
        )

    return {
        "batch_vs_kafka": Figure(
            "batch events/s acked by Kafka",
            "events/s",
            batch,
            "K_prod records/s (ProducerPerformance)",
            med(r.kprod["records_per_s"] for r in rounds),
            vs_kafka,
            f">= {TARGET_BATCH_VS_KAFKA:.2f} x K_prod",
            vs_kafka.median >= TARGET_BATCH_VS_KAFKA,
        ),
        "batch_vs_bare": Figure(
            "batch events/s acked by Kafka",
            "events/s",
            batch,
            "bare /batch events/s",
            med(r.bare_batch.units_per_s for r in rounds),
            Spread.of(ratio(r.ingest_batch.units_per_s, r.bare_batch.units_per_s) for r in rounds),
        ),
        "single_max_vs_bare": Figure(
            "single max requests/s (closed loop)",
            "requests/s",
            med(r.ingest_single.units_per_s for r in rounds),
            "bare /single max requests/s",
            med(r.bare_single.units_per_s for r in rounds),
            Spread.of(
                ratio(r.ingest_single.units_per_s, r.bare_single.units_per_s) for r in rounds
            ),
        ),
        "single_rate_at_half": Figure(
            "single achieved requests/s (open loop)",
            "requests/s",
            paced.ingest.units_per_s,
            f"offered rate ({OPEN_LOOP_FRACTION:.0%} of single max)",
            offered,
            Spread.of([ratio(paced.ingest.units_per_s, offered)]),
        ),
        "single_p50_vs_bare": latency("p50_ms", "bare /single", bare["p50_ms"]),
        "single_p50_vs_kafka": latency("p50_ms", "K_prod", kafka["p50_ms"]),
        "single_p99_vs_bare": latency(
            "p99_ms", "bare /single", bare["p99_ms"], p99_target, p99_met
        ),
        "single_p99_vs_kafka": latency("p99_ms", "K_prod", kafka["p99_ms"], p99_target, p99_met),
        "single_max_latency_vs_bare": latency("max_ms", "bare /single", bare["max_ms"]),
    }


def figures_printed(found: dict[str, dict[str, Any]]) -> str:
    return figure_table(found, FIGURE_KEYS)


def cpu_profile(rounds: Sequence[Round], paced: OpenLoop) -> dict[str, Any]:
    """Median CPU per unit of work and cores used, per phase and process."""

    def summarise(results: Sequence[LoadResult], unit: str) -> dict[str, Any]:
        names = results[0].cpu_s.keys()
        return {
            "unit": unit,
            "us_per_unit": {
                n: statistics.median(r.cpu_per_unit()[n] for r in results) * 1e6 for n in names
            },
            "cores": {n: statistics.median(r.cores()[n] for r in results) for n in names},
        }

    def tool(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
        names = runs[0]["cpu_s"].keys()
        return {
            "unit": "record",
            "us_per_unit": {
                n: statistics.median(r["cpu_s_per_unit"][n] for r in runs) * 1e6 for n in names
            },
            # Over the tool's whole run, JVM start included: a little below its busy rate.
            "cores": {
                n: statistics.median(r["cpu_s"][n] / r["wall_s_incl_jvm_start"] for r in runs)
                for n in names
            },
        }

    return {
        "ingest batch": summarise([r.ingest_batch for r in rounds], "event"),
        "K_prod": tool([r.kprod for r in rounds]),
        "bare batch": summarise([r.bare_batch for r in rounds], "event"),
        "ingest single (closed)": summarise([r.ingest_single for r in rounds], "request"),
        "bare single (closed)": summarise([r.bare_single for r in rounds], "request"),
        "ingest single (open)": summarise([paced.ingest], "request"),
        "K_prod (paced)": tool([paced.kprod]),
        "bare single (open)": summarise([paced.bare], "request"),
    }


def cpu_table(profile: dict[str, Any]) -> str:
    """CPU microseconds per unit of work and cores busy, per phase and process."""
    processes = ["server", "kafka", "loadgen", "tool_incl_jvm_start"]
    rows = [[phase, *cpu_cells(data, processes)] for phase, data in profile.items()]
    header = ["phase", "per", "ingest/bare", "kafka broker", "load generator", "K_prod tool"]
    return table([*header, "other cores"], rows)


# --- setting up and tearing down -------------------------------------------------------------


async def create_topic(settings: Settings, bootstrap: str, name: str) -> None:
    # The production events topic's spec (partitions, configs) under a name of its own.
    spec = topic_specs(settings.model_copy(update={"events_topic": name}))[0]
    await ensure_topics_at(bootstrap, [spec])


async def new_key(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        plaintext, _ = await create_key(
            conn,
            name="bench-ingest",
            scopes=[Scope.EVENTS_WRITE],
            source=SOURCE,
            now=datetime.now(UTC),
        )
        return plaintext
    finally:
        await conn.close()


def ingest_env(
    settings: Settings, *, bootstrap: str, database_url: str, topic: str, port: int
) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "TOUCHPULSE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "TOUCHPULSE_DATABASE_URL": database_url,
            "TOUCHPULSE_EVENTS_TOPIC": topic,
            "TOUCHPULSE_INGEST_PORT": str(port),
            "TOUCHPULSE_INGEST_LINGER_MS": str(settings.ingest_linger_ms),
            # Far above anything this machine can send: the limiter must never answer 429.
            "TOUCHPULSE_RATE_LIMIT_EVENTS_PER_S": "1e9",
            "TOUCHPULSE_RATE_LIMIT_BURST": "1e9",
            "TOUCHPULSE_LOG_LEVEL": "WARNING",
        }
    )
    return env


say = sayer("bench-ingest")


def run(plan: Plan, settings: Settings, site: Site | None = None) -> dict[str, Any]:
    """The ingest benchmark on ``site``'s broker and database server (servers of its own,
    started and stopped here, without one)."""
    started = datetime.now(UTC)
    with contextlib.ExitStack() as exit_stack:
        if site is None:
            site = exit_stack.enter_context(open_site(settings, say))
        kafka, runner = site.kafka, site.runner
        logs = site.logs("ingest")
        suffix = uuid.uuid4().hex[:10]
        topic, database = f"bench-ingest-{suffix}", f"bench_ingest_{suffix}"
        runner.run(create_topic(settings, kafka.address, topic))
        site.remove_topics_later(exit_stack, [topic], say)
        database_url = site.new_database(exit_stack, database, say)
        key = runner.run(new_key(database_url))
        corpus = build_corpus(plan, started)

        ingest_port, bare_port = free_port(), free_port()
        ingest = Server(
            "ingest",
            [str(Path(sys.executable).with_name("touchpulse-ingest"))],
            port=ingest_port,
            log_path=logs / "ingest.log",
            env=ingest_env(
                settings,
                bootstrap=kafka.address,
                database_url=database_url,
                topic=topic,
                port=ingest_port,
            ),
            cwd=REPO,
            ready_path="/readyz",
        )
        bare = Server(
            "bare",
            uvicorn_argv("tests.bench.bare_app:app", bare_port),
            port=bare_port,
            log_path=logs / "bare.log",
            cwd=REPO,
        )
        say("starting ingest and the bare server")
        exit_stack.enter_context(ingest)
        exit_stack.enter_context(bare)
        bench = Bench(
            plan=plan,
            settings=settings,
            logs=logs,
            bootstrap=kafka.address,
            kafka_pid=kafka.pid,
            topic=topic,
            corpus=corpus,
            ingest=ingest,
            bare=bare,
            runner=runner,
            key=key,
        )
        rounds, paced = measure(bench)
        rss = {"ingest": peak_rss_bytes(ingest.pid), "bare": peak_rss_bytes(bare.pid)}
        if kafka.pid is not None:
            rss["kafka"] = peak_rss_bytes(kafka.pid)
        found = figures(rounds, paced)
        return {
            "benchmark": "ingest",
            "mode": plan.name,
            "started_at": started.isoformat(),
            "finished_at": datetime.now(UTC).isoformat(),
            "machine": machine(),
            "versions": {
                **versions(PACKAGES),
                "kafka": settings.kafka_version
                if kafka.local
                else f"external (tools {settings.kafka_version})",
                "java": java_version(),
            },
            "settings": {
                "kafka": "local" if kafka.local else "external",
                "partitions": settings.events_partitions,
                "producer": {
                    "acks": "all",
                    "enable_idempotence": True,
                    "linger_ms": settings.ingest_linger_ms,
                    "batch_size_bytes": PRODUCER_BATCH_BYTES,
                    "compression": "none",
                },
                "corpus": {
                    "events": corpus.events,
                    "customers": CUSTOMERS,
                    "source": SOURCE,
                    "record_value_bytes": corpus.value_bytes,
                    "record_key_bytes": corpus.key_bytes,
                    "record_header_bytes": corpus.header_bytes,
                    "kprod_record_size": corpus.record_size,
                },
                "batch_events": BATCH_EVENTS,
                "plan": asdict(plan),
                "open_loop_fraction": OPEN_LOOP_FRACTION,
            },
            "figures": {key: found[key].as_dict() for key in FIGURE_KEYS},
            "targets": {
                "batch_vs_kafka": {
                    "min": TARGET_BATCH_VS_KAFKA,
                    "met": found["batch_vs_kafka"].met,
                },
                "single_p99_ms": {
                    "max": TARGET_SINGLE_P99_MS,
                    "met": found["single_p99_vs_bare"].met,
                },
            },
            "cpu": cpu_profile(rounds, paced),
            "peak_rss_bytes": rss,
            "rounds": [r.as_dict() for r in rounds],
            "open_loop": paced.as_dict(),
            "notes": [SHARED_CORES_NOTE.format(nproc=os.cpu_count())],
            "warnings": bench.warnings,
            "logs": str(logs),
        }


def report(result: dict[str, Any]) -> str:
    corpus = result["settings"]["corpus"]
    producer = result["settings"]["producer"]
    mach = result["machine"]
    lines = [
        f"Touchpulse ingest benchmark ({result['mode']}), {result['started_at']}",
        f"machine: {mach['nproc']} cores, {mach['memory_bytes'] / 2**30:.1f} GiB memory, "
        f"{mach['cpu_model']}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()),
        f"records: value {corpus['record_value_bytes']:.0f} B (K_prod --record-size "
        f"{corpus['kprod_record_size']}); ingest adds key {corpus['record_key_bytes']:.0f} B "
        f"+ headers {corpus['record_header_bytes']:.0f} B; {result['settings']['partitions']} "
        f"partitions; acks=all, idempotent, linger.ms={producer['linger_ms']}, batch.size=1 MiB, "
        "no compression",
        result["notes"][0],
        "",
        figures_printed(result["figures"]),
        "",
        "CPU microseconds per unit of work (cores busy), median over pairs; other = the rest "
        "of the machine (PostgreSQL, other tenants):",
    ]
    return close_report(lines, cpu_table(result["cpu"]), result)


def main(argv: Sequence[str] | None = None) -> int:
    return stage_main(
        "ingest",
        __doc__,
        argv,
        quick="a few seconds per phase, one pair",
        plans=(FULL, QUICK),
        run=run,
        report=report,
        say=say,
    )


if __name__ == "__main__":
    sys.exit(main())

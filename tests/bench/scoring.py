"""``make bench-scoring``: the scoring service beside its ceilings, measured in one run.

On one broker and one database (started here, unless ``KAFKA_BOOTSTRAP_SERVERS`` /
``TOUCHPULSE_DATABASE_URL`` name servers), with one fixed corpus of events that the promise
catalogue judges (several measures per event, deadlines opened and fulfilled or missed,
breaches, critical survey answers) over a fixed set of customers:

- throughput: a topic pre-filled with the corpus (6 partitions, records as ingest writes
  them), consumed by ``touchpulse-scoring`` as its own process on a fresh database; events
  per second until every offset is committed in PostgreSQL, events per CPU-second of the
  scoring process, and its CPU and PostgreSQL's per event. Ceilings: a plain loop of
  scoring's own batch writes (``touchpulse_scoring.store``: the offsets claimed and stored,
  the dedupe, outcomes, health, journeys and their history) on rows the domain built from
  the corpus before the clock started, one transaction per batch of
  ``TOUCHPULSE_SCORING_MAX_BATCH`` records (D_upsert), and Kafka's own
  ``ConsumerPerformance`` on the same topic (K_cons);
- latency: with scoring caught up, an open-loop producer offers a fixed rate of new events
  (each ``touchpulse-received-at`` header is its scheduled send time), then half that rate,
  then 2.5 times it (5,000/s in the full run: a backlog may build, reported as the rate
  sustained and the backlog's growth, never a failure); event-to-health is measured from
  that time to the moment the commit that applied the event is visible in PostgreSQL,
  beside scoring's own histogram. Ceiling: Kafka's own ``EndToEndLatency`` at the same
  record size (K_e2e);
- memory: scoring's peak RSS in the throughput run beside its RSS when ready, the customers
  it touched; and a probe — a fresh scoring process over one event for each of many new
  customers, its RSS sampled as it commits them — stating the RSS at a million customers
  (extrapolated from the probe unless ``--probe-customers 1000000``) beside the bound that
  ``TOUCHPULSE_SCORING_WINDOW_OUTCOMES`` sets.

System and baseline runs alternate (K_cons, D_upsert, scoring; repeated) and each ratio is
the median of its pairs with the range. Processes' CPU comes from /proc.

Run ``python -m tests.bench.scoring [--quick]``; the result is printed and written to
``.touchpulse/bench/scoring-<UTC time>.json``. ``--profile`` instead runs the scoring
service in this process under cProfile over the same pre-filled topic and prints where its
time goes. See docs/performance.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import dataclasses
import functools
import gc
import heapq
import math
import os
import pstats
import re
import statistics
import sys
import time
import tracemalloc
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from random import Random
from typing import Any

import asyncpg
import httpx
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

from tests.bench.common import (
    KERNEL_IRQ,
    OTHER,
    BenchError,
    CpuMeter,
    Figure,
    Server,
    Site,
    Spread,
    arguments,
    bench_settings,
    check_other,
    cleanup,
    clock,
    close_report,
    cpu_cells,
    create_database,
    delete_topics,
    drop_database,
    figure_table,
    guarded,
    histogram_quantile,
    java_version,
    latency_summary,
    machine,
    open_site,
    peak_rss_bytes,
    per_unit,
    postgres_version,
    publish,
    ratio,
    run_kafka_tool,
    sayer,
    table,
    utc_stamp,
    versions,
)
from touchpulse_scoring.domain import (
    Catalogue,
    CustomerProfile,
    Outcome,
    TouchpointHealth,
    apply_outcomes,
    assess,
    evaluate,
    load_catalogue_file,
)
from touchpulse_scoring.service import ScoringService
from touchpulse_scoring.store import (
    JourneyRow,
    claim_batch,
    claim_events,
    outcome_from_row,
    store_offsets,
    write_health,
    write_journeys,
    write_outcomes,
)
from touchpulse_shared.contract import EVENT_ADAPTER, ExperienceEventV1
from touchpulse_shared.contract.record import (
    HEADER_RECEIVED_AT,
    KafkaRecord,
    encode_records,
    format_received_at,
)
from touchpulse_shared.kafka.topics import TopicSpec, ensure_topics_at, topic_specs
from touchpulse_shared.settings import Settings
from touchpulse_shared.stack.local import LocalStack
from touchpulse_shared.stack.procs import free_port
from touchpulse_shared.stack.services import settings_env

REPO = Path(__file__).resolve().parents[2]
SOURCE = "crm-prod"
CUSTOMERS = 10_000
SEED = 20_261_122
# The corpus' events happened over this span before the run (deadlines of the older ones
# are long past due when scoring sees them: the sweep records those breaches).
SPAN = timedelta(days=7)
# Issue 14's targets: shares of the ceilings measured in the same run, and the latency.
TARGET_PER_S_VS_UPSERT = 0.6
TARGET_PER_CPU_S_VS_UPSERT = 0.4
TARGET_SCORING_US_PER_EVENT = 40.0
TARGET_POSTGRES_US_PER_EVENT = 60.0
TARGET_P99_MS = 100.0
TARGET_RATE = 2_000.0
# The open loop runs again at this fraction of the target's rate, to show the knee.
LOWER_RATE_FRACTION = 0.5
# And at this multiple of it (5,000/s in the full run), last: it may build a backlog, which is
# reported (the rate sustained, the backlog's growth), never a failure.
HIGH_RATE_FACTOR = 2.5
# The memory probe: this many customers with one event each (``--probe-customers`` sets it),
# scoring's resident memory sampled as it commits them; the figure is stated at this many.
PROBE_STATED_CUSTOMERS = 1_000_000
# How often the throughput phase looks at the committed offsets (a readiness-style poll).
THROUGHPUT_POLL_S = 0.1
# How often the latency phase does: a commit is seen at most this much after it happened.
LATENCY_POLL_S = 0.01
# Bounds for a loaded machine; every wait ends as soon as its condition holds.
SCORING_DRAIN_S = 300.0
GROUP_SETTLE_S = 60.0
QUIET_S = 60.0
LATENCY_DRAIN_S = 30.0
PACKAGES = ("aiokafka", "asyncpg", "pydantic", "orjson", "uvloop", "prometheus-client")
SHARED_CORES_NOTE = (
    "This process (the producer, the pollers and D_upsert's loop) shares the machine's "
    "{nproc} cores with scoring, the broker, PostgreSQL and Kafka's tools: every figure is "
    "what is left after it."
)

#: Every figure the benchmark reports, each with a ceiling and a ratio.
FIGURE_KEYS = (
    "events_per_cpu_s_vs_upsert",
    "events_per_s_vs_upsert",
    "events_per_s_vs_kafka",
    "scoring_us_per_event_vs_upsert",
    "postgres_us_per_event_vs_upsert",
    "rate_at_offered",
    "p50_vs_kafka",
    "p99_vs_kafka",
    "max_vs_kafka",
    "lower_rate_p99_vs_kafka",
    "high_rate_at_offered",
    "high_rate_p50_vs_kafka",
    "high_rate_p99_vs_kafka",
    "metric_p50_vs_db",
    "metric_p99_vs_db",
    "peak_rss_mib",
    "customers_touched",
    "rss_at_1m_customers_mib",
)


@dataclass(frozen=True)
class Loop:
    """One open loop: its offered rate, warm-up and measured window."""

    rate_per_s: float
    warmup_s: float
    duration_s: float

    @property
    def events(self) -> int:
        return math.floor((self.warmup_s + self.duration_s) * self.rate_per_s)


@dataclass(frozen=True)
class Plan:
    name: str
    pairs: int
    #: Events pre-filled into the topic, consumed by each scoring and K_cons run.
    events: int
    rate_per_s: float
    warmup_s: float
    duration_s: float
    #: Round trips of Kafka's EndToEndLatency (one at a time).
    e2e_messages: int
    #: The open loop at ``HIGH_RATE_FACTOR`` times ``rate_per_s``: its warm-up and window
    #: (shorter than the others': it may build a backlog, which then drains). 0: not run.
    high_warmup_s: float = 0.0
    high_duration_s: float = 0.0
    #: Customers of the memory probe (one event each); 0: not run.
    probe_customers: int = 0

    @property
    def rates(self) -> tuple[float, float]:
        """The open loop's offered rates: the target's, then a lower one for comparison."""
        return (self.rate_per_s, self.rate_per_s * LOWER_RATE_FRACTION)

    @property
    def loops(self) -> list[Loop]:
        """Every open loop in the order they run: the target's rate, the lower one, then
        (if planned) the high one, last because its backlog may outlast its window."""
        found = [Loop(rate, self.warmup_s, self.duration_s) for rate in self.rates]
        if self.high_duration_s > 0:
            found.append(
                Loop(self.rate_per_s * HIGH_RATE_FACTOR, self.high_warmup_s, self.high_duration_s)
            )
        return [loop for loop in found if loop.events > 0]

    @property
    def paced_events(self) -> int:
        return sum(loop.events for loop in self.loops)


FULL = Plan(
    name="full",
    pairs=3,
    events=100_000,
    rate_per_s=TARGET_RATE,
    warmup_s=5.0,
    duration_s=20.0,
    e2e_messages=3_000,
    high_warmup_s=2.0,
    high_duration_s=10.0,
    probe_customers=100_000,
)
QUICK = Plan(
    name="quick",
    pairs=1,
    events=10_000,
    rate_per_s=500.0,
    warmup_s=1.0,
    duration_s=4.0,
    e2e_messages=300,
    high_warmup_s=1.0,
    high_duration_s=2.0,
    probe_customers=10_000,
)


# --- the corpus ------------------------------------------------------------------------------

Measures = Callable[[Random], dict[str, float | bool]]
Attributes = Callable[[Random], dict[str, Any]]


@dataclass(frozen=True)
class Kind:
    """One kind of event a touchpoint system sends (every one is judged by the catalogue)."""

    touchpoint: str
    type: str
    weight: float
    measures: Measures
    attributes: Attributes
    #: Journeys: the prefix of the journey ids this kind opens, the kind that ends them, the
    #: share of journeys that end, and the hours (min, max) until they do.
    follow_up: tuple[str, str, float, float, float] | None = None


def _nps(r: Random) -> int:
    return r.choices(range(11), weights=[1, 1, 1, 1, 2, 3, 5, 9, 14, 12, 8])[0]


_NO_MEASURES: dict[str, float | bool] = {}
KINDS: dict[str, Kind] = {
    k.type: k
    for k in (
        Kind(
            "call_centre",
            "call.answered",
            15,
            lambda r: {
                "wait_seconds": round(r.expovariate(1 / 45)),
                "first_contact_resolution": r.random() < 0.8,
            },
            lambda r: {"queue": r.choice(["billing", "orders", "returns"])},
        ),
        Kind(
            "switchboard",
            "call.transferred",
            4,
            lambda r: {
                "transfer_seconds": round(r.expovariate(1 / 15)),
                "transfers": r.randint(0, 3),
            },
            lambda r: {"queue": r.choice(["billing", "orders"])},
        ),
        Kind(
            "web",
            "page.viewed",
            14,
            lambda r: {"load_seconds": round(r.lognormvariate(0.3, 0.6), 2)},
            lambda r: {"page": r.choice(["checkout", "account", "tracking", "home"])},
        ),
        Kind(
            "web",
            "checkout.submitted",
            4,
            lambda r: {"succeeded": r.random() < 0.97},
            lambda r: {"basket_items": r.randint(1, 6)},
        ),
        Kind(
            "app",
            "session.ended",
            7,
            lambda r: {"crashed": r.random() < 0.03},
            lambda r: {"platform": r.choice(["ios", "android"])},
        ),
        Kind(
            "app",
            "screen.loaded",
            6,
            lambda r: {"load_seconds": round(r.lognormvariate(0.0, 0.6), 2)},
            lambda r: {"screen": r.choice(["orders", "invoices", "support"])},
        ),
        Kind(
            "sales",
            "quote.sent",
            3,
            lambda r: {"turnaround_hours": round(r.expovariate(1 / 14), 1)},
            lambda r: {"channel": r.choice(["email", "phone"])},
        ),
        Kind(
            "sales",
            "order.placed",
            8,
            lambda r: {"price_matches_quote": r.random() < 0.97},
            lambda r: {"channel": r.choice(["web", "app", "phone"])},
            follow_up=("O", "delivery.completed", 0.85, 6.0, 72.0),
        ),
        Kind(
            "delivery",
            "delivery.completed",
            0,  # only as the end of an order's journey
            lambda r: {"damaged": r.random() < 0.03, "all_items_delivered": r.random() < 0.95},
            lambda r: {"carrier": r.choice(["postnl", "dhl", "ups"])},
        ),
        Kind(
            "billing",
            "invoice.issued",
            7,
            lambda r: {
                "invoice_correct": r.random() < 0.95,
                "days_after_delivery": r.choice([0, 1, 1, 2, 3, 5, 12]),
            },
            lambda r: {"channel": r.choice(["email", "post"])},
        ),
        Kind(
            "billing",
            "payment.captured",
            4,
            lambda r: {"double_charged": r.random() < 0.003},
            lambda r: {"method": r.choice(["card", "ideal", "invoice"])},
        ),
        Kind(
            "customer_service",
            "case.resolved",
            5,
            lambda r: {"resolution_hours": round(r.expovariate(1 / 30), 1)},
            lambda r: {"priority": r.choice(["low", "normal", "high"])},
        ),
        Kind(
            "customer_service",
            "complaint.received",
            2,
            lambda r: _NO_MEASURES,
            lambda r: {"topic": r.choice(["delivery", "billing", "staff"])},
            follow_up=("K", "complaint.acknowledged", 0.9, 1.0, 40.0),
        ),
        Kind(
            "customer_service",
            "complaint.acknowledged",
            0,  # only as the end of a complaint's journey
            lambda r: _NO_MEASURES,
            lambda r: {"by": r.choice(["phone", "email"])},
        ),
        Kind(
            "communication",
            "message.answered",
            5,
            lambda r: {"response_hours": round(r.expovariate(1 / 12), 1)},
            lambda r: {"channel": r.choice(["email", "chat", "whatsapp"])},
        ),
        Kind(
            "survey",
            "survey.answered",
            5,
            lambda r: {
                "csat": r.choices([1, 2, 3, 4, 5], weights=[2, 3, 10, 40, 45])[0],
                "nps": _nps(r),
            },
            lambda r: {"language": r.choice(["nl", "en", "de"])},
        ),
    )
}


def build_events(count: int, *, now: datetime, seed: int = SEED) -> list[ExperienceEventV1]:
    """``count`` events in event-time order over :data:`SPAN` up to ``now``, the same every
    run for the same ``now``: journeys (orders, complaints) end in a later event of the same
    customer and ``journey_id``, or never (the deadline sweep records the breach)."""
    rng = Random(seed)
    primary = [k for k in KINDS.values() if k.weight > 0]
    weights = [k.weight for k in primary]
    start = now - SPAN
    step = SPAN / count
    # (occurred_at, order, document) of journey ends not yet due in the timeline
    pending: list[tuple[datetime, int, dict[str, Any]]] = []
    events: list[ExperienceEventV1] = []
    for n in range(count):
        at = start + step * n
        if pending and pending[0][0] <= at:
            document = heapq.heappop(pending)[2]
        else:
            kind = rng.choices(primary, weights)[0]
            document = _document(rng, kind, f"C-{rng.randrange(CUSTOMERS):06d}", at)
            if kind.follow_up is not None:
                prefix, ends_with, share, low, high = kind.follow_up
                journey = f"{prefix}-{n:08d}"
                document["journey_id"] = journey
                if rng.random() < share:
                    end_at = at + timedelta(hours=rng.uniform(low, high))
                    end = _document(rng, KINDS[ends_with], document["customer_id"], end_at)
                    end["journey_id"] = journey
                    heapq.heappush(pending, (end_at, n, end))
        events.append(EVENT_ADAPTER.validate_python(document))
    return events


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


@dataclass(frozen=True)
class Corpus:
    """The pre-fill part (``filled``) and the events the open loop sends (``paced``)."""

    filled: list[ExperienceEventV1]
    #: Encoded once; the open loop sets each one's received-at header as it sends it.
    paced: list[KafkaRecord]
    value_bytes: float
    key_bytes: float
    header_bytes: float
    #: Outcomes and deadlines the catalogue finds in the pre-fill (what scoring must do).
    measure_outcomes: int
    deadlines_opened: int
    deadline_ends: int

    @property
    def record_size(self) -> int:
        return round(self.value_bytes)


def build_corpus(plan: Plan, catalogue: Catalogue, now: datetime) -> Corpus:
    events = build_events(plan.events + plan.paced_events, now=now.replace(microsecond=0))
    filled, paced = events[: plan.events], events[plan.events :]
    records = encode_records(filled, producer="ingest", received_at=now)
    profile = CustomerProfile()
    return Corpus(
        filled=filled,
        paced=encode_records(paced, producer="ingest", received_at=now),
        value_bytes=statistics.fmean(len(r.value) for r in records),
        key_bytes=statistics.fmean(len(r.key) for r in records),
        header_bytes=statistics.fmean(sum(len(k) + len(v) for k, v in r.headers) for r in records),
        measure_outcomes=sum(len(evaluate(e, catalogue, profile)) for e in filled),
        deadlines_opened=sum(len(catalogue.deadlines_opened_by(e.type)) for e in filled),
        deadline_ends=sum(
            len(catalogue.deadlines_fulfilled_by(e.type)) for e in filled if e.journey_id
        ),
    )


# --- Kafka: topics, pre-fill, Kafka's own tools ----------------------------------------------

_KCONS_HEADER = re.compile(r"^start\.time, end\.time, .*$", re.MULTILINE)
_E2E_AVG = re.compile(r"Avg latency: (?P<avg>[\d.]+) ms")
_E2E_PERCENTILES = re.compile(
    r"Percentiles: 50th = (?P<p50>\d+), 99th = (?P<p99>\d+), 99\.9th = (?P<p999>\d+)"
)


@dataclass(frozen=True)
class Topics:
    events: str
    health: str
    interventions: str
    dead_letters: str
    e2e: str
    #: An events topic of the production spec for the memory probe's corpus.
    probe: str

    @classmethod
    def named(cls, suffix: str, prefix: str = "bench-scoring") -> Topics:
        base = f"{prefix}-{suffix}"
        return cls(
            events=f"{base}.events",
            health=f"{base}.health",
            interventions=f"{base}.interventions",
            dead_letters=f"{base}.dlq",
            e2e=f"{base}.e2e",
            probe=f"{base}.probe",
        )

    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(
            update={
                "events_topic": self.events,
                "health_topic": self.health,
                "interventions_topic": self.interventions,
                "dead_letter_topic": self.dead_letters,
            }
        )

    def all(self) -> list[str]:
        return [
            self.events,
            self.health,
            self.interventions,
            self.dead_letters,
            self.e2e,
            self.probe,
        ]


async def create_topics(settings: Settings, bootstrap: str, topics: Topics) -> None:
    # The production specs (partitions, configs) under names of our own; EndToEndLatency
    # gets a one-partition topic of the events topic's configs.
    specs = topic_specs(topics.settings(settings))
    events = specs[0]
    specs.append(TopicSpec(topics.e2e, 1, events.replication_factor, events.configs))
    specs.append(
        TopicSpec(topics.probe, events.partitions, events.replication_factor, events.configs)
    )
    await ensure_topics_at(bootstrap, specs)


def new_producer(bootstrap: str, linger_ms: int) -> AIOKafkaProducer:
    """The ingest producer's settings (producer.py): acks=all, idempotent, no compression."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=linger_ms,
        max_batch_size=1024 * 1024,
    )


async def prefill(
    bootstrap: str, topic: str, events: Sequence[ExperienceEventV1], *, linger_ms: int
) -> list[tuple[int, int]]:
    """Write ``events`` as ingest would (batches of 1,000 received together); return each
    one's (partition, offset)."""
    producer = new_producer(bootstrap, linger_ms)
    await producer.start()
    try:
        received_at = datetime.now(UTC)
        futures = []
        for begin in range(0, len(events), 1000):
            chunk = events[begin : begin + 1000]
            for record in encode_records(chunk, producer="ingest", received_at=received_at):
                futures.append(
                    await producer.send(topic, record.value, key=record.key, headers=record.headers)
                )
        metadata = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [(m.partition, m.offset) for m in metadata]


# --- PostgreSQL: what the benchmark reads ---------------------------------------------------

_COMMITTED = """
    SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offset
    WHERE consumer_group = $1 AND topic = $2
"""
_OFFSETS = """
    SELECT partition, next_offset FROM consumer_offset WHERE consumer_group = $1 AND topic = $2
"""
# Work scoring still owes the events it committed: health records not yet published, and
# deadlines past due that the sweep has not recorded yet.
_OWED = """
    SELECT (SELECT count(*) FROM kafka_outbox)
         + (SELECT count(*) FROM deadline WHERE state = 'open' AND due_at < now())
"""
_COUNTS = """
    SELECT (SELECT count(*) FROM processed_event) AS processed,
           (SELECT count(DISTINCT customer_id) FROM processed_event) AS customers,
           (SELECT count(*) FROM outcome) AS outcomes,
           (SELECT count(*) FROM outcome WHERE NOT met) AS broken,
           (SELECT count(*) FROM outcome WHERE actual = 'null'::jsonb) AS missed_deadlines,
           (SELECT count(*) FROM deadline) AS deadlines,
           (SELECT count(*) FROM touchpoint_health) AS touchpoint_health,
           (SELECT count(*) FROM journey_health) AS journeys,
           (SELECT count(*) FROM journey_health WHERE band = 'red') AS red_journeys,
           (SELECT count(*) FROM intervention) AS interventions
"""


# --- the D_upsert ceiling: the scorer's batch writes from memory ----------------------------
#
# The statements are scoring's own (touchpulse_scoring.store), called with the domain objects
# scoring would pass them: the baseline is the batch's write shape by construction and cannot
# drift from it. What it leaves out is everything else a batch does: decoding, the customer
# locks, the state reads, judging, deadlines, interventions and the outbox.


@dataclass(frozen=True, slots=True)
class UpsertRecord:
    """What the store's functions read of a Kafka record: where it is and its timestamp."""

    topic: str
    partition: int
    offset: int
    #: Milliseconds since the epoch (the record's timestamp: the partition's watermark).
    timestamp: int


@dataclass
class UpsertBatch:
    """One batch's rows as scoring's store functions take them, built before the clock."""

    events: int
    rows: int
    records: list[UpsertRecord]
    claimed: list[tuple[UpsertRecord, ExperienceEventV1]]
    outcomes: list[Outcome]
    health: list[tuple[str, str, TouchpointHealth]]
    journeys: list[JourneyRow]


def upsert_batches(
    events: Sequence[ExperienceEventV1],
    positions: Sequence[tuple[int, int]],
    *,
    catalogue: Catalogue,
    topic: str,
    batch: int,
    received_ms: int | None = None,
) -> list[UpsertBatch]:
    """The rows scoring writes for ``events``, batch by batch of ``batch`` records (scoring's
    ``TOUCHPULSE_SCORING_MAX_BATCH``): one dedupe row per event, the catalogue's measure
    outcomes, each touched (customer, touchpoint)'s new health and each customer's journey
    row (a history row where its score changed), computed by the domain as scoring does, and
    the offsets of the batch's partitions."""
    profile = CustomerProfile()
    half_life = catalogue.policy.half_life_days
    stamp = received_ms if received_ms is not None else int(time.time() * 1000)
    health: dict[str, dict[str, TouchpointHealth]] = defaultdict(dict)
    scores: dict[str, float | None] = {}
    as_of: dict[str, datetime] = {}
    batches = []
    for begin in range(0, len(events), batch):
        chunk = events[begin : begin + batch]
        records = [
            UpsertRecord(topic, partition, offset, stamp)
            for partition, offset in positions[begin : begin + batch]
        ]
        pending: dict[str, list[Outcome]] = defaultdict(list)
        newest: dict[str, datetime] = {}
        for event in sorted(chunk, key=lambda e: (e.occurred_at, e.identity)):
            pending[event.customer_id].extend(evaluate(event, catalogue, profile))
            newest[event.customer_id] = event.occurred_at
        outcomes: list[Outcome] = []
        health_rows: list[tuple[str, str, TouchpointHealth]] = []
        journeys: list[JourneyRow] = []
        for customer, found in pending.items():
            # As the engine's _settle: a customer with no outcome and no health is skipped;
            # one whose score did not move gets a freshness row only (no history).
            if not found and not health[customer]:
                continue
            before = as_of.get(customer)
            at = max(before or newest[customer], newest[customer])
            applied = apply_outcomes(health[customer], {}, found, half_life_days=half_life)
            health[customer] = dict(applied.health)
            outcomes.extend(applied.recorded)
            touched = sorted({o.touchpoint for o in applied.recorded})
            health_rows.extend((customer, t, applied.health[t]) for t in touched)
            journey = assess(applied.health, catalogue, at)
            previous = scores.get(customer)
            if applied.recorded or journey.score != previous or before is None or at > before:
                journeys.append(
                    JourneyRow(
                        customer_id=customer,
                        score=journey.score,
                        band=journey.band,
                        weakest_touchpoint=journey.weakest_touchpoint,
                        as_of=at,
                        changed=journey.score != previous,
                    )
                )
            scores[customer], as_of[customer] = journey.score, at
        partitions = {r.partition for r in records}
        batches.append(
            UpsertBatch(
                events=len(chunk),
                rows=len(chunk)
                + len(outcomes)
                + len(health_rows)
                + len(journeys)
                + sum(j.changed for j in journeys)
                + len(partitions),
                records=records,
                claimed=list(zip(records, chunk, strict=True)),
                outcomes=outcomes,
                health=health_rows,
                journeys=journeys,
            )
        )
    return batches


async def write_upsert_batch(
    conn: asyncpg.Connection, group: str, batch: UpsertBatch, now: datetime
) -> None:
    """One batch's writes through scoring's store, in one transaction: the offsets locked
    and claimed, the events claimed, outcomes, health, journeys (and history), the offsets
    stored."""
    async with conn.transaction():
        await claim_batch(conn, group, batch.records)
        await claim_events(conn, batch.claimed)
        await write_outcomes(conn, batch.outcomes)
        await write_health(conn, batch.health, now)
        await write_journeys(conn, batch.journeys, now)
        await store_offsets(conn, group, batch.records)


# --- the run ---------------------------------------------------------------------------------


@dataclass
class ScoringRun:
    """One scoring process consuming the pre-filled topic from a fresh database."""

    events: int
    #: From the first committed batch seen to the last offset committed.
    wall_s: float
    cpu_s: dict[str, float]
    #: Then until the work the events owe is done too (outbox published, deadlines swept).
    tail_s: float
    cpu_with_tail_s: dict[str, float]
    #: Process start to the first committed batch seen (imports, migrations, group join).
    startup_s: float
    #: Each scoring process's peak resident set (VmHWM), by its name in ``cpu_s``.
    rss_bytes: dict[str, int | None]
    counts: dict[str, int]
    metrics: dict[str, float]
    #: Each one's peak resident set when it was ready, before its first record.
    ready_rss_bytes: dict[str, int | None] = field(default_factory=dict)

    @property
    def processes(self) -> list[str]:
        return list(self.rss_bytes)

    @property
    def peak_rss_bytes(self) -> int | None:
        return max((v for v in self.rss_bytes.values() if v), default=None)

    def scoring_cpu_s(self, spent: dict[str, float]) -> float:
        return sum(spent[name] for name in self.processes)

    @property
    def events_per_s(self) -> float:
        return self.events / self.wall_s

    @property
    def events_per_cpu_s(self) -> float:
        """Events per CPU-second of the scoring processes (with several: their sum, which is
        the mean events per CPU-second of one)."""
        return self.events / self.scoring_cpu_s(self.cpu_with_tail_s)

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "wall_s": self.wall_s,
            "events_per_s": self.events_per_s,
            "events_per_cpu_s": self.events_per_cpu_s,
            "events_per_cpu_s_until_committed": self.events / self.scoring_cpu_s(self.cpu_s),
            "processes": self.processes,
            "cpu_s": self.cpu_s,
            "cpu_s_per_event": per_unit(self.cpu_s, self.events),
            "cores": per_unit(self.cpu_s, self.wall_s),
            "tail_s": self.tail_s,
            "cpu_with_tail_s": self.cpu_with_tail_s,
            "startup_s": self.startup_s,
            "peak_rss_bytes": self.rss_bytes,
            "ready_rss_bytes": self.ready_rss_bytes,
            "counts": self.counts,
            "metrics": self.metrics,
        }


@dataclass
class UpsertRun:
    events: int
    rows: int
    batches: int
    wall_s: float
    cpu_s: dict[str, float]

    @property
    def events_per_s(self) -> float:
        return self.events / self.wall_s

    @property
    def events_per_cpu_s(self) -> float:
        return self.events / self.cpu_s["service"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "rows": self.rows,
            "batches": self.batches,
            "wall_s": self.wall_s,
            "events_per_s": self.events_per_s,
            "rows_per_s": self.rows / self.wall_s,
            "events_per_cpu_s": self.events_per_cpu_s,
            "cpu_s": self.cpu_s,
            "cpu_s_per_event": per_unit(self.cpu_s, self.events),
            "cores": per_unit(self.cpu_s, self.wall_s),
        }


@dataclass
class Pair:
    kcons: dict[str, Any]
    upsert: UpsertRun
    scoring: ScoringRun

    def as_dict(self) -> dict[str, Any]:
        return {
            "kcons": self.kcons,
            "upsert": self.upsert.as_dict(),
            "scoring": self.scoring.as_dict(),
        }


@dataclass
class Paced:
    """The open loop: latency per event from its scheduled send to its visible commit."""

    offered_per_s: float
    window_s: float
    sent: int
    measured: int
    #: Measured events whose commit was seen inside the window.
    committed_in_window: int
    incomplete: int
    latencies_s: list[float]
    #: Latency of the events due in each quarter of the window: a backlog shows as growth.
    by_quarter: list[dict[str, float]]
    max_send_lag_s: float
    metric_buckets: list[tuple[float, float]]
    cpu_s: dict[str, float]
    polls: int
    warmup_s: float = 0.0
    #: Every event sent (warm-up included) whose commit was seen inside the window: the rate
    #: scoring sustained, backlog or not.
    committed_all_in_window: int = 0
    #: Events due by the window's opening / closing whose commit had not been seen by then.
    backlog_at_open: int = 0
    backlog_at_close: int = 0
    #: From the window's end until every event sent was seen committed (NaN: not within
    #: the drain time).
    drained_s: float = math.nan
    kafka: dict[str, Any] = field(default_factory=dict)

    @property
    def achieved_per_s(self) -> float:
        return self.committed_in_window / self.window_s

    @property
    def sustained_per_s(self) -> float:
        return self.committed_all_in_window / self.window_s

    @property
    def backlog_growth_per_s(self) -> float:
        return (self.backlog_at_close - self.backlog_at_open) / self.window_s

    def metric_ms(self, q: float) -> float:
        return histogram_quantile(q, self.metric_buckets) * 1000

    def as_dict(self) -> dict[str, Any]:
        return {
            "offered_per_s": self.offered_per_s,
            "achieved_per_s": self.achieved_per_s,
            "sustained_per_s": self.sustained_per_s,
            "backlog_at_open": self.backlog_at_open,
            "backlog_at_close": self.backlog_at_close,
            "backlog_growth_per_s": self.backlog_growth_per_s,
            "drained_s": self.drained_s,
            "warmup_s": self.warmup_s,
            "window_s": self.window_s,
            "sent": self.sent,
            "measured": self.measured,
            "committed_in_window": self.committed_in_window,
            "incomplete": self.incomplete,
            "latency_db": latency_summary(self.latencies_s),
            "latency_db_by_quarter": self.by_quarter,
            "latency_metric": {
                "count": self.metric_buckets[-1][1] if self.metric_buckets else 0.0,
                "p50_ms": self.metric_ms(0.5),
                "p99_ms": self.metric_ms(0.99),
                "buckets": [
                    ["+Inf" if math.isinf(upper) else upper, count]
                    for upper, count in self.metric_buckets
                ],
            },
            "poll_interval_ms": LATENCY_POLL_S * 1000,
            "polls": self.polls,
            "max_send_lag_ms": self.max_send_lag_s * 1000,
            "cpu_s": self.cpu_s,
            "cpu_s_per_event": per_unit(self.cpu_s, self.measured),
            "cores": per_unit(self.cpu_s, self.window_s),
            "kafka_e2e": self.kafka,
        }


@dataclass
class Probe:
    """Scoring's memory against the number of customers it touched (one event each)."""

    customers: int
    touched: int
    wall_s: float
    ready_rss_bytes: int | None
    peak_rss_bytes: int | None
    #: (events committed = customers touched, resident bytes) at each poll.
    samples: list[tuple[int, int]]
    #: TOUCHPULSE_SCORING_WINDOW_OUTCOMES: what bounds scoring's in-memory state.
    window_outcomes: int
    #: Python heap per outcome held in a window (tracemalloc, in this process).
    outcome_bytes: float

    @property
    def bytes_per_customer(self) -> float:
        """The slope of resident memory against customers touched (least squares over the
        samples of the second half of the run, once start-up allocations have settled)."""
        half = [(c, r) for c, r in self.samples if c >= self.customers / 2]
        if len(half) < 2:
            return math.nan
        mean_c = statistics.fmean(c for c, _ in half)
        mean_r = statistics.fmean(r for _, r in half)
        spread = sum((c - mean_c) ** 2 for c, _ in half)
        if spread <= 0:
            return math.nan
        return sum((c - mean_c) * (r - mean_r) for c, r in half) / spread

    def rss_at(self, customers: int) -> float:
        """Peak resident memory at ``customers`` customers: measured where the probe reached
        them, else extrapolated linearly from its slope (never below what it measured)."""
        peak = float(self.peak_rss_bytes or 0)
        slope = self.bytes_per_customer
        if customers <= self.touched or not math.isfinite(slope):
            return peak
        return peak + max(slope, 0.0) * (customers - self.touched)

    @property
    def bound_bytes(self) -> float:
        """What the window setting allows: resident memory at ready plus every window
        outcome it may hold."""
        return float(self.ready_rss_bytes or 0) + self.window_outcomes * self.outcome_bytes

    def as_dict(self) -> dict[str, Any]:
        return {
            "customers": self.customers,
            "customers_touched": self.touched,
            "wall_s": self.wall_s,
            "events_per_s": self.customers / self.wall_s,
            "ready_rss_bytes": self.ready_rss_bytes,
            "peak_rss_bytes": self.peak_rss_bytes,
            "bytes_per_customer": self.bytes_per_customer,
            "stated_customers": PROBE_STATED_CUSTOMERS,
            "rss_at_stated_bytes": self.rss_at(PROBE_STATED_CUSTOMERS),
            "extrapolated": self.touched < PROBE_STATED_CUSTOMERS,
            "window_outcomes": self.window_outcomes,
            "outcome_bytes": self.outcome_bytes,
            "bound_bytes": self.bound_bytes,
            "samples": self.samples,
        }


def probe_events(customers: int, *, now: datetime, seed: int = SEED + 7) -> list[ExperienceEventV1]:
    """One page view for each of ``customers`` customers (ids ``P-``), over the last day."""
    rng = Random(seed)
    kind = KINDS["page.viewed"]
    step = timedelta(days=1) / max(customers, 1)
    start = (now - timedelta(days=1)).replace(microsecond=0)
    return [
        EVENT_ADAPTER.validate_python(_document(rng, kind, f"P-{n:07d}", start + step * n))
        for n in range(customers)
    ]


def outcome_bytes(events: Sequence[ExperienceEventV1], catalogue: Catalogue) -> float:
    """Python heap per outcome in a kept explanation window, at its largest: an outcome read
    back from PostgreSQL (``outcome_from_row``: every string and time its own object, as
    asyncpg decodes them). Measured with tracemalloc over up to 20,000 outcomes the domain
    built from ``events``."""
    profile = CustomerProfile()
    judged: list[Outcome] = []
    for event in events:
        judged.extend(evaluate(event, catalogue, profile))
        if len(judged) >= 20_000:
            break

    def fresh(text: str) -> str:
        return text.encode().decode()

    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        held = [
            outcome_from_row(
                {
                    "outcome_key": fresh(o.outcome_key),
                    "customer_id": fresh(o.customer_id),
                    "promise_id": fresh(o.promise_id),
                    "catalogue_version": fresh(o.catalogue_version),
                    "touchpoint": fresh(o.touchpoint),
                    "occurred_at": datetime.fromtimestamp(o.occurred_at.timestamp(), UTC),
                    "expected": orjson.dumps(
                        {"op": o.expected.op, "target": o.expected.target, "unit": o.expected.unit}
                    ),
                    "actual": orjson.dumps(o.actual),
                    "gap": float(o.gap),
                    "met": o.met,
                    "score": float(o.score),
                    "weight": float(o.weight),
                    "severity": fresh(o.severity),
                    "event_ids": [fresh(i) for i in o.event_ids],
                    "opened_at": None,
                }
            )
            for o in judged
        ]
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return (after - before) / len(held) if held else math.nan


def resident_bytes(pid: int) -> int | None:
    """The process's resident set now (VmRSS), or None if it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@dataclass
class Bench:
    plan: Plan
    settings: Settings
    logs: Path
    bootstrap: str
    site: Site
    kafka_pid: int | None
    postgres_pid: int | None
    topics: Topics
    suffix: str
    corpus: Corpus
    positions: list[tuple[int, int]]
    catalogue: Catalogue
    runner: asyncio.Runner
    exit_stack: contextlib.ExitStack
    databases: int = 0
    tool_runs: int = 0
    warnings: list[str] = field(default_factory=list)

    # --- helpers ---------------------------------------------------------------------------

    def meter(self, **pids: int) -> CpuMeter:
        if self.kafka_pid is not None:
            pids["kafka"] = self.kafka_pid
        trees = {"postgres": self.postgres_pid} if self.postgres_pid is not None else {}
        return CpuMeter(pids, trees, kernel=True)

    def _check_other(self, what: str, cores: float) -> None:
        check_other(self.warnings, what, cores)

    def new_database(self, what: str) -> str:
        """A fresh, migrated database on the benchmark's server; dropped by :meth:`drop`."""
        self.databases += 1
        return self.site.new_database(None, f"bench_{what}_{self.suffix}_{self.databases}", say)

    def drop(self, url: str) -> None:
        self.site.drop_database(url)

    # --- K_cons ----------------------------------------------------------------------------

    def tool(self, name: str, main_class: str, args: Sequence[str]) -> tuple[str, dict[str, Any]]:
        """Run one of Kafka's tools to completion; its output, wall time and CPU."""
        self.tool_runs += 1
        output, run = run_kafka_tool(
            self.settings,
            self.logs,
            f"{name}-{self.tool_runs}",
            main_class,
            args,
            meter=self.meter(),
        )
        self._check_other(main_class, run["cpu_s"][OTHER] / run["wall_s_incl_jvm_start"])
        return output, run

    def kcons(self, index: int) -> dict[str, Any]:
        """Kafka's ConsumerPerformance on the pre-filled topic, the scorer's consumer settings."""
        config = self.logs / "consumer-performance.properties"
        config.write_text(
            "isolation.level=read_committed\n"
            f"max.poll.records={self.settings.scoring_max_batch}\n"
            "fetch.max.wait.ms=50\n"
        )
        output, run = self.tool(
            "consumer-performance",
            "ConsumerPerformance",
            [
                "--bootstrap-server",
                self.bootstrap,
                "--topic",
                self.topics.events,
                "--messages",
                str(self.plan.events),
                "--group",
                f"bench-kcons-{self.suffix}-{index}",
                "--consumer.config",
                str(config),
                "--timeout",
                "60000",
            ],
        )
        found = parse_consumer_performance(output)
        consumed = int(found["data.consumed.in.nMsg"])
        if consumed < self.plan.events:
            raise BenchError(f"ConsumerPerformance read {consumed} of {self.plan.events} records")
        return {
            "records": consumed,
            "records_per_s": found["fetch.nMsg.sec"],
            "records_per_s_incl_join": found["nMsg.sec"],
            "fetch_ms": found["fetch.time.ms"],
            "rebalance_ms": found["rebalance.time.ms"],
            **run,
            "cpu_s_per_unit": per_unit(run["cpu_s"], consumed),
        }

    def kafka_e2e(self) -> dict[str, Any]:
        """Kafka's EndToEndLatency: produce one record (acks=all), consume it, repeat."""
        messages = self.plan.e2e_messages
        output, run = self.tool(
            "end-to-end-latency",
            "EndToEndLatency",
            [self.bootstrap, self.topics.e2e, str(messages), "all", str(self.corpus.record_size)],
        )
        avg = _E2E_AVG.search(output)
        percentiles = _E2E_PERCENTILES.search(output)
        if avg is None or percentiles is None:
            raise BenchError("EndToEndLatency printed no summary:\n" + output[-2000:])
        return {
            "messages": messages,
            "avg_ms": float(avg["avg"]),
            # The tool prints whole milliseconds, truncated: n stands for [n, n + 1) ms, and
            # its midpoint is the ceiling (0 would make every ratio infinite).
            "p50_ms": float(percentiles["p50"]) + 0.5,
            "p99_ms": float(percentiles["p99"]) + 0.5,
            "p999_ms": float(percentiles["p999"]) + 0.5,
            "printed_ms": {k: int(v) for k, v in percentiles.groupdict().items()},
            **run,
            "cpu_s_per_unit": per_unit(run["cpu_s"], messages),
        }

    # --- D_upsert --------------------------------------------------------------------------

    def upsert(self, batches: Sequence[UpsertBatch]) -> UpsertRun:
        url = self.new_database("upsert")
        try:
            return self.runner.run(self._upsert(url, batches))
        finally:
            self.drop(url)

    async def _upsert(self, url: str, batches: Sequence[UpsertBatch]) -> UpsertRun:
        group = f"bench-upsert-{self.suffix}"
        conn = await asyncpg.connect(url)
        try:
            meter = self.meter(service=os.getpid())
            gc.collect()
            before, started = meter.read(), clock()
            for batch in batches:
                await write_upsert_batch(conn, group, batch, datetime.now(UTC))
            wall_s = clock() - started
            cpu = CpuMeter.delta(before, meter.read())
        finally:
            await conn.close()
        self._check_other("D_upsert", cpu[OTHER] / wall_s)
        return UpsertRun(
            events=sum(b.events for b in batches),
            rows=sum(b.rows for b in batches),
            batches=len(batches),
            wall_s=wall_s,
            cpu_s=cpu,
        )

    # --- scoring ---------------------------------------------------------------------------

    def scoring_server(
        self, url: str, group: str, name: str = "scoring", *, events_topic: str | None = None
    ) -> Server:
        """``touchpulse-scoring`` on ``url`` in consumer group ``group``, reading the
        benchmark's events topic (or ``events_topic``)."""
        port = free_port()
        scoring = self.topics.settings(self.settings).model_copy(
            update={
                "kafka_bootstrap_servers": self.bootstrap,
                "database_url": url,
                "scoring_group_id": group,
                "scoring_metrics_port": port,
                "log_level": "WARNING",
                **({"events_topic": events_topic} if events_topic else {}),
            }
        )
        return Server(
            name,
            [str(Path(sys.executable).with_name("touchpulse-scoring"))],
            port=port,
            log_path=self.logs / f"{name}-{group}.log",
            env={**os.environ, **settings_env(scoring)},
            cwd=REPO,
            ready_path="/readyz",
        )

    def scoring(
        self,
        index: int,
        *,
        keep: bool,
        instances: int = 1,
        tag: str = "scoring",
        feed: Callable[[], Awaitable[object]] | None = None,
    ) -> tuple[ScoringRun, list[Server], str, str]:
        """Consume the pre-filled topic from a fresh database with ``instances`` scoring
        processes of one group (started side by side); they are stopped unless ``keep``
        (then the caller stops them, and drops the database).

        With ``feed``, the topic is filled by ``feed`` instead, once the processes are ready
        and their group is stable (every one holds its partitions): they all start on the
        whole backlog at once.
        """
        url = self.new_database(tag.replace("-", "_"))
        group = f"bench-{tag}-{self.suffix}-{index}"
        names = ["scoring"] if instances == 1 else [f"scoring-{i + 1}" for i in range(instances)]
        servers = [self.scoring_server(url, group, name) for name in names]

        def stop_all() -> None:
            for server in servers:
                server.stop()

        try:
            started = clock()
            for server in servers:
                server.launch()
            for server in servers:
                server.wait_ready()
            # What each process holds once ready, before its first record: the ceiling of
            # its peak memory over the run.
            ready = {s.name: peak_rss_bytes(s.pid) for s in servers}
            if feed is None:
                run = self.runner.run(self._consume(servers, url, group, started))
            else:
                run = self.runner.run(self._fed(servers, url, group, feed))
            run.ready_rss_bytes = ready
        except BaseException:
            stop_all()
            self.drop(url)
            raise
        if not keep:
            stop_all()
            self.drop(url)
        return run, servers, url, group

    async def _fed(
        self,
        servers: Sequence[Server],
        url: str,
        group: str,
        feed: Callable[[], Awaitable[object]],
    ) -> ScoringRun:
        await group_stable(self.bootstrap, group, len(servers))
        started = clock()
        run, _ = await asyncio.gather(self._consume(servers, url, group, started), feed())
        return run

    async def _consume(
        self,
        servers: Sequence[Server],
        url: str,
        group: str,
        started: float,
        *,
        topic: str | None = None,
        total: int | None = None,
        processed_before: int = 0,
        wait_owed: bool = True,
    ) -> ScoringRun:
        """From the first poll at which every process has committed a batch (start-up, group
        joins and the first rebalance left out) until every offset is committed; then (if
        ``wait_owed``) until the work the events owe is done.

        By default the benchmark's pre-filled topic; else ``total`` records of ``topic``,
        into a database that already held ``processed_before`` processed events."""
        total = self.plan.events if total is None else total
        topic = self.topics.events if topic is None else topic
        meter = self.meter(bench=os.getpid(), **{s.name: s.pid for s in servers})
        conn = await asyncpg.connect(url)
        try:
            first: tuple[float, int, dict[str, float]] | None = None
            deadline = clock() + SCORING_DRAIN_S
            while True:
                committed = int(await conn.fetchval(_COMMITTED, group, topic))
                now, cpu = clock(), meter.read()
                if first is None and committed > 0 and await all_consuming(servers):
                    first = (now, committed, cpu)
                if committed >= total:
                    break
                if now > deadline:
                    raise BenchError(
                        f"scoring committed {committed} of {total} records in "
                        f"{SCORING_DRAIN_S:.0f} s; see {servers[0].log_path}"
                    )
                await asyncio.sleep(THROUGHPUT_POLL_S)
            if first is None or first[1] >= total:
                # No batch seen before the last one (polls are THROUGHPUT_POLL_S apart).
                raise BenchError(
                    f"the topic was drained before every one of {len(servers)} scoring "
                    "processes had been seen committing a batch: too few events to measure"
                )
            t0, committed0, cpu0 = first
            done, cpu_done = now, cpu
            quiet_by = clock() + (QUIET_S if wait_owed else 0.0)
            while True:
                owed = int(await conn.fetchval(_OWED))
                if owed == 0 or clock() > quiet_by:
                    break
                await asyncio.sleep(THROUGHPUT_POLL_S)
            quiet, cpu_quiet = clock(), meter.read()
            if owed and wait_owed:
                self.warnings.append(f"scoring still owed {owed} outbox rows or sweeps")
            row = await conn.fetchrow(_COUNTS)
            assert row is not None
            counts = dict(row)
        finally:
            await conn.close()
        rss = {s.name: peak_rss_bytes(s.pid) for s in servers}
        metrics: dict[str, float] = defaultdict(float)
        for server in servers:
            for name, value in (await scrape_counters(server.url)).items():
                metrics[name] += value
        cpu_s = CpuMeter.delta(cpu0, cpu_done)
        what = "scoring" if len(servers) == 1 else f"scoring x{len(servers)}"
        self._check_other(what, cpu_s[OTHER] / (done - t0))
        if counts["processed"] != processed_before + total:
            self.warnings.append(
                f"{what} applied {counts['processed'] - processed_before} of {total} events"
            )
        return ScoringRun(
            events=total - committed0,
            wall_s=done - t0,
            cpu_s=cpu_s,
            tail_s=quiet - done,
            cpu_with_tail_s=CpuMeter.delta(cpu0, cpu_quiet),
            startup_s=t0 - started,
            rss_bytes=rss,
            counts={k: int(v) for k, v in counts.items()},
            metrics=dict(metrics),
        )

    # --- memory: many customers, one event each -------------------------------------------

    def memory_probe(self, customers: int) -> Probe:
        """``customers`` customers with one event each (a page view: one outcome), consumed
        by a fresh scoring process on a fresh database; its resident memory sampled as it
        commits them."""
        events = probe_events(customers, now=datetime.now(UTC))
        say(f"memory probe: pre-filling {self.topics.probe} with {customers:,} customers")
        self.runner.run(
            prefill(
                self.bootstrap,
                self.topics.probe,
                events,
                linger_ms=self.settings.ingest_linger_ms,
            )
        )
        del events
        url = self.new_database("probe")
        group = f"bench-probe-{self.suffix}"
        server = self.scoring_server(url, group, "scoring-probe", events_topic=self.topics.probe)
        say(f"memory probe: scoring {customers:,} customers, one event each")
        try:
            server.start()
            ready = peak_rss_bytes(server.pid)
            return self.runner.run(self._probe(server, url, group, customers, ready))
        finally:
            server.stop()
            self.drop(url)

    async def _probe(
        self, server: Server, url: str, group: str, customers: int, ready: int | None
    ) -> Probe:
        conn = await asyncpg.connect(url)
        samples: list[tuple[int, int]] = []
        started = clock()
        try:
            deadline = clock() + SCORING_DRAIN_S
            while True:
                committed = int(await conn.fetchval(_COMMITTED, group, self.topics.probe))
                rss = resident_bytes(server.pid)
                if committed > 0 and rss is not None:
                    samples.append((committed, rss))
                if committed >= customers:
                    break
                if clock() > deadline:
                    raise BenchError(
                        f"the memory probe committed {committed} of {customers} records in "
                        f"{SCORING_DRAIN_S:.0f} s; see {server.log_path}"
                    )
                await asyncio.sleep(THROUGHPUT_POLL_S)
            wall_s = clock() - started
            touched = int(
                await conn.fetchval("SELECT count(DISTINCT customer_id) FROM processed_event")
            )
        finally:
            await conn.close()
        return Probe(
            customers=customers,
            touched=touched,
            wall_s=wall_s,
            ready_rss_bytes=ready,
            peak_rss_bytes=peak_rss_bytes(server.pid),
            samples=samples,
            window_outcomes=self.settings.scoring_window_outcomes,
            outcome_bytes=outcome_bytes(self.corpus.filled, self.catalogue),
        )

    # --- latency ---------------------------------------------------------------------------

    def paced(
        self, server: Server, url: str, group: str, *, loop: Loop, records: list[KafkaRecord]
    ) -> Paced:
        return self.runner.run(self._paced(server, url, group, loop, records))

    async def _paced(
        self, server: Server, url: str, group: str, loop: Loop, records: list[KafkaRecord]
    ) -> Paced:
        rate_per_s = loop.rate_per_s
        topic = self.topics.events
        total = loop.events
        # Keeping up is expected at the target's rate and below; above it, a backlog is what
        # is measured, not a fault.
        keeps_up = rate_per_s <= self.plan.rate_per_s
        if len(records) < total:
            raise BenchError(f"the corpus holds {len(records)} paced events, not {total}")
        producer = new_producer(self.bootstrap, self.settings.ingest_linger_ms)
        await producer.start()
        conn = await asyncpg.connect(url)
        meter = self.meter(scoring=server.pid, bench=os.getpid())
        snapshots: list[tuple[float, dict[int, int]]] = []
        polling = asyncio.Event()
        polling.set()

        async def poll() -> None:
            while polling.is_set():
                asked = clock()
                rows = await conn.fetch(_OFFSETS, group, topic)
                # Seen by now at the latest: a conservative time for every commit in it.
                snapshots.append((clock(), {r["partition"]: r["next_offset"] for r in rows}))
                await asyncio.sleep(max(0.0, LATENCY_POLL_S - (clock() - asked)))

        # This process's own full collections would stall the producer and the poller.
        gc.collect()
        gc.freeze()
        poller = asyncio.create_task(poll())
        try:
            start = clock() + 0.1
            opens = start + loop.warmup_s
            closes = opens + loop.duration_s
            wall_at_start = time.time() + (start - clock())
            window: dict[str, dict[str, float]] = {}
            buckets: dict[str, list[tuple[float, float]]] = {}

            async def mark(when: float, name: str) -> None:
                await asyncio.sleep(max(0.0, when - clock()))
                window[name] = meter.read()
                buckets[name] = await scrape_histogram(server.url)

            marks = [
                asyncio.create_task(mark(opens, "opens")),
                asyncio.create_task(mark(closes, "closes")),
            ]
            sends: list[tuple[float, asyncio.Future[Any]]] = []
            max_lag = 0.0
            i = 0
            while i < total:
                wait = start + i / rate_per_s - clock()
                if wait > 0:
                    # At least a millisecond: the loop's timers have millisecond steps, and
                    # shorter sleeps return at once, which would spin on a core.
                    await asyncio.sleep(max(wait, 0.001))
                # Everything due by now, each stamped with its own due time.
                while i < total and (due := start + i / rate_per_s) <= (now := clock()):
                    max_lag = max(max_lag, now - due)
                    record = records[i]
                    received = datetime.fromtimestamp(wall_at_start + (due - start), UTC)
                    headers = [
                        (name, format_received_at(received).encode())
                        if name == HEADER_RECEIVED_AT
                        else (name, value)
                        for name, value in record.headers
                    ]
                    future = await producer.send(
                        topic, record.value, key=record.key, headers=headers
                    )
                    sends.append((due, future))
                    i += 1
            metadata = await asyncio.gather(*(f for _, f in sends))
            await asyncio.gather(*marks)
            # Until every event sent is committed (or the drain time is up).
            last: dict[int, int] = {}
            for m in metadata:
                last[m.partition] = max(last.get(m.partition, 0), m.offset + 1)
            drain_until = clock() + LATENCY_DRAIN_S
            drained_at = math.nan
            while clock() < drain_until:
                newest = snapshots[-1][1] if snapshots else {}
                if all(newest.get(p, 0) >= n for p, n in last.items()):
                    drained_at = snapshots[-1][0]
                    break
                await asyncio.sleep(LATENCY_POLL_S)
            after = await scrape_histogram(server.url)
        finally:
            polling.clear()
            with contextlib.suppress(Exception):
                await poller
            gc.unfreeze()
            await conn.close()
            await producer.stop()
        del records[:total]  # sent: the next open loop sends fresh events

        measured = [
            (m.partition, m.offset, due)
            for (due, _), m in zip(sends, metadata, strict=True)
            if opens <= due < closes
        ]
        seen = commit_latencies(measured, snapshots)
        latencies = sorted(lat for _, lat, _ in seen)
        # Every event sent, warm-up included: the rate sustained and the backlog.
        everything = commit_latencies(
            [(m.partition, m.offset, due) for (due, _), m in zip(sends, metadata, strict=True)],
            snapshots,
        )

        def backlog(at: float) -> int:
            due = sum(d <= at for d, _ in sends)
            return due - sum(d <= at and seen_at <= at for d, _, seen_at in everything)

        cpu_s = CpuMeter.delta(window["opens"], window["closes"])
        self._check_other(f"open loop at {rate_per_s:,.0f}/s", cpu_s[OTHER] / loop.duration_s)
        metric = [(upper, count - dict(buckets["opens"]).get(upper, 0.0)) for upper, count in after]
        incomplete = len(measured) - len(latencies)
        if incomplete and keeps_up:
            self.warnings.append(
                f"open loop at {rate_per_s:,.0f}/s: {incomplete} of {len(measured)} events "
                "never committed"
            )
        quarter = loop.duration_s / 4
        quarters = [
            latency_summary(
                sorted(lat for sent_at, lat, _ in seen if q <= (sent_at - opens) / quarter < q + 1)
            )
            for q in range(4)
        ]
        return Paced(
            offered_per_s=rate_per_s,
            window_s=loop.duration_s,
            sent=len(sends),
            measured=len(measured),
            committed_in_window=sum(opens <= seen_at <= closes for _, _, seen_at in seen),
            incomplete=incomplete,
            latencies_s=latencies,
            by_quarter=quarters,
            max_send_lag_s=max_lag,
            metric_buckets=metric,
            cpu_s=cpu_s,
            polls=len(snapshots),
            warmup_s=loop.warmup_s,
            committed_all_in_window=sum(opens <= seen_at <= closes for _, _, seen_at in everything),
            backlog_at_open=backlog(opens),
            backlog_at_close=backlog(closes),
            drained_s=drained_at - closes,
        )


def commit_latencies(
    sent: Sequence[tuple[int, int, float]],
    snapshots: Sequence[tuple[float, dict[int, int]]],
) -> list[tuple[float, float, float]]:
    """For each ``(partition, offset, due time)`` seen committed: its due time, its latency
    and when it was seen, from the first snapshot of the committed offsets that covers it.

    Offsets commit in order per partition, so one pass over the snapshots per partition
    finds them all.
    """
    by_partition: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for partition, offset, due in sent:
        by_partition[partition].append((offset, due))
    seen: list[tuple[float, float, float]] = []
    for partition, pending in by_partition.items():
        pending.sort()
        i = 0
        for seen_at, offsets in snapshots:
            committed = offsets.get(partition, 0)
            while i < len(pending) and pending[i][0] < committed:
                seen.append((pending[i][1], seen_at - pending[i][1], seen_at))
                i += 1
    return seen


def parse_consumer_performance(output: str) -> dict[str, float]:
    """ConsumerPerformance's summary: its header line and the line of values after it."""
    header = _KCONS_HEADER.search(output)
    if header is None:
        raise BenchError("ConsumerPerformance printed no summary:\n" + output[-2000:])
    names = [n.strip() for n in header.group(0).split(",")]
    lines = output[header.end() :].strip().splitlines()
    values = [v.strip() for v in lines[0].split(",")] if lines else []
    if len(values) != len(names):
        raise BenchError("ConsumerPerformance's summary does not parse:\n" + output[-2000:])
    return {
        n: float(v)
        for n, v in zip(names, values, strict=True)
        if n not in {"start.time", "end.time"}
    }


async def _metrics_text(base_url: str) -> str:
    async with httpx.AsyncClient(timeout=5.0) as client:
        response = await client.get(base_url + "/metrics")
        response.raise_for_status()
        return response.text


async def scrape_histogram(base_url: str) -> list[tuple[float, float]]:
    """Scoring's event-to-health histogram: (upper bound, cumulative count), +Inf last."""
    text = await _metrics_text(base_url)
    for family in text_string_to_metric_families(text):
        if family.name == "touchpulse_scoring_event_to_health_seconds":
            found = [
                (float(s.labels["le"]), float(s.value))
                for s in family.samples
                if s.name.endswith("_bucket")
            ]
            return sorted(found)
    raise BenchError("scoring's /metrics has no event-to-health histogram")


async def group_stable(bootstrap: str, group: str, members: int) -> None:
    """Wait until the consumer group is stable with ``members`` members (each holding its
    share of the partitions); :data:`GROUP_SETTLE_S` at most."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        deadline = clock() + GROUP_SETTLE_S
        while True:
            described = await admin.describe_consumer_groups([group])
            # DescribeGroups v0+: (error, group, state, protocol type, protocol, members, ...)
            found = [g for response in described for g in response.groups if g[1] == group]
            if found and found[0][2] == "Stable" and len(found[0][5]) == members:
                return
            if clock() > deadline:
                raise BenchError(
                    f"consumer group {group} did not settle with {members} members in "
                    f"{GROUP_SETTLE_S:.0f} s: {found}"
                )
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def all_consuming(servers: Sequence[Server]) -> bool:
    """Whether every scoring process has handled a batch (one alone: it committed, enough)."""
    if len(servers) == 1:
        return True
    for server in servers:
        if (await scrape_counters(server.url)).get("batch_records_count", 0.0) <= 0:
            return False
    return True


async def scrape_counters(base_url: str) -> dict[str, float]:
    """Scoring's own account of the run: events by result, outcomes, interventions."""
    text = await _metrics_text(base_url)
    found: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "touchpulse_scoring_events_total":
                found[f"events_{sample.labels['result']}"] += sample.value
            elif sample.name == "touchpulse_scoring_outcomes_total":
                found[f"outcomes_{sample.labels['result']}"] += sample.value
            elif sample.name in {
                "touchpulse_scoring_interventions_opened_total",
                "touchpulse_scoring_deadlines_expired_total",
                "touchpulse_scoring_outbox_published_total",
                "touchpulse_scoring_batch_records_count",
            }:
                found[sample.name.removeprefix("touchpulse_scoring_")] += sample.value
    return dict(found)


@dataclass
class Measured:
    """Everything the scoring stage measured."""

    pairs: list[Pair]
    #: The open loops in the order they ran: the target's rate, the lower one, the high one.
    loops: list[Paced]
    probe: Probe | None

    @property
    def paced(self) -> Paced:
        return self.loops[0]

    @property
    def lower(self) -> Paced:
        return self.loops[1]

    @property
    def high(self) -> Paced | None:
        return self.loops[2] if len(self.loops) > 2 else None


def measure(bench: Bench) -> Measured:
    plan = bench.plan
    batches = upsert_batches(
        bench.corpus.filled,
        bench.positions,
        catalogue=bench.catalogue,
        topic=bench.topics.events,
        batch=bench.settings.scoring_max_batch,
    )
    pairs: list[Pair] = []
    kept: tuple[Server, str, str] | None = None
    for index in range(plan.pairs):
        last = index == plan.pairs - 1
        say(f"pair {index + 1}/{plan.pairs}: K_cons (ConsumerPerformance)")
        kcons = bench.kcons(index)
        say(f"pair {index + 1}/{plan.pairs}: D_upsert ({len(batches)} batches)")
        upsert = bench.upsert(batches)
        say(f"pair {index + 1}/{plan.pairs}: scoring consumes {plan.events:,} events")
        run, servers, url, group = bench.scoring(index, keep=last)
        if last:
            server = servers[0]
            kept = (server, url, group)
            # Stopped first, then (where it must be) its database dropped.
            if bench.site.shared or not bench.site.postgres.local:
                bench.exit_stack.callback(
                    cleanup,
                    f"database {url.rpartition('/')[2]}",
                    functools.partial(bench.drop, url),
                    say,
                )
            bench.exit_stack.callback(server.stop)
        pairs.append(Pair(kcons, upsert, run))
    assert kept is not None
    server, url, group = kept
    paced = []
    records = list(bench.corpus.paced)
    for loop in plan.loops:
        say(
            f"open loop at {loop.rate_per_s:,.0f} events/s for "
            f"{loop.warmup_s + loop.duration_s:.0f} s ({loop.warmup_s:.0f} s warm-up), "
            "scoring caught up"
        )
        paced.append(bench.paced(server, url, group, loop=loop, records=records))
    server.stop()  # idle from here: its background rounds would count as "other"
    say(f"K_e2e (EndToEndLatency, {plan.e2e_messages:,} round trips)")
    paced[0].kafka = bench.kafka_e2e()
    probe = bench.memory_probe(plan.probe_customers) if plan.probe_customers > 0 else None
    return Measured(pairs, paced, probe)


# --- figures ---------------------------------------------------------------------------------


def figures(found: Measured) -> dict[str, Figure]:
    def med(values: Sequence[float]) -> float:
        return statistics.median(values)

    pairs, paced, lower, high = found.pairs, found.paced, found.lower, found.high
    scoring = [p.scoring for p in pairs]
    per_cpu = med([s.events_per_cpu_s for s in scoring])
    per_s = med([s.events_per_s for s in scoring])
    per_cpu_ratio = Spread.of(
        ratio(p.scoring.events_per_cpu_s, p.upsert.events_per_cpu_s) for p in pairs
    )
    per_s_ratio = Spread.of(ratio(p.scoring.events_per_s, p.upsert.events_per_s) for p in pairs)
    db = latency_summary(paced.latencies_s)
    db_lower = latency_summary(lower.latencies_s)
    db_high = latency_summary(high.latencies_s if high is not None else [])
    kafka = paced.kafka
    p99_met = db["p99_ms"] <= TARGET_P99_MS
    p99_target = f"<= {TARGET_P99_MS:.0f} ms at {TARGET_RATE:,.0f}/s"
    at_target = paced.offered_per_s >= TARGET_RATE

    def latency(
        label: str, value: float, ceiling_label: str, ceiling: float, **target: Any
    ) -> Figure:
        return Figure(
            label, "ms", value, ceiling_label, ceiling, Spread.of([ratio(value, ceiling)]), **target
        )

    def us_per_event(run: ScoringRun | UpsertRun, process: str) -> float:
        return run.cpu_s[process] / run.events * 1e6

    scoring_us = [us_per_event(p.scoring, "scoring") for p in pairs]
    upsert_us = [us_per_event(p.upsert, "service") for p in pairs]
    postgres_us = [us_per_event(p.scoring, "postgres") for p in pairs]
    upsert_postgres_us = [us_per_event(p.upsert, "postgres") for p in pairs]
    rss = [
        (
            float(p.scoring.peak_rss_bytes or 0),
            float(max((v for v in p.scoring.ready_rss_bytes.values() if v), default=0)),
        )
        for p in pairs
    ]
    rate = f"at {paced.offered_per_s:,.0f}/s"
    high_rate = f"at {high.offered_per_s:,.0f}/s" if high is not None else "(not run)"
    high_offered = high.offered_per_s if high is not None else math.nan
    high_sustained = high.sustained_per_s if high is not None else math.nan
    probe = found.probe
    stated = f"{PROBE_STATED_CUSTOMERS:,}"
    mib = 2**20
    return {
        "events_per_cpu_s_vs_upsert": Figure(
            "events per CPU-second of scoring",
            "events/CPU-s",
            per_cpu,
            "D_upsert events per CPU-second of its loop",
            med([p.upsert.events_per_cpu_s for p in pairs]),
            per_cpu_ratio,
            f">= {TARGET_PER_CPU_S_VS_UPSERT} x D_upsert",
            per_cpu_ratio.median >= TARGET_PER_CPU_S_VS_UPSERT,
        ),
        "events_per_s_vs_upsert": Figure(
            "events/s committed by scoring",
            "events/s",
            per_s,
            "D_upsert events/s",
            med([p.upsert.events_per_s for p in pairs]),
            per_s_ratio,
            f">= {TARGET_PER_S_VS_UPSERT} x D_upsert",
            per_s_ratio.median >= TARGET_PER_S_VS_UPSERT,
        ),
        "events_per_s_vs_kafka": Figure(
            "events/s committed by scoring",
            "events/s",
            per_s,
            "K_cons records/s (ConsumerPerformance)",
            med([p.kcons["records_per_s"] for p in pairs]),
            Spread.of(ratio(p.scoring.events_per_s, p.kcons["records_per_s"]) for p in pairs),
        ),
        "scoring_us_per_event_vs_upsert": Figure(
            "scoring CPU per event (pre-filled topic)",
            "µs/event",
            med(scoring_us),
            "D_upsert loop CPU per event",
            med(upsert_us),
            Spread.of(ratio(a, b) for a, b in zip(scoring_us, upsert_us, strict=True)),
            f"<= {TARGET_SCORING_US_PER_EVENT:.0f} µs",
            med(scoring_us) <= TARGET_SCORING_US_PER_EVENT,
        ),
        "postgres_us_per_event_vs_upsert": Figure(
            "PostgreSQL CPU per event scored",
            "µs/event",
            med(postgres_us),
            "PostgreSQL CPU per event under D_upsert",
            med(upsert_postgres_us),
            Spread.of(ratio(a, b) for a, b in zip(postgres_us, upsert_postgres_us, strict=True)),
            f"<= {TARGET_POSTGRES_US_PER_EVENT:.0f} µs",
            med(postgres_us) <= TARGET_POSTGRES_US_PER_EVENT,
        ),
        "rate_at_offered": Figure(
            "events/s committed (open loop)",
            "events/s",
            paced.achieved_per_s,
            "offered rate",
            paced.offered_per_s,
            Spread.of([ratio(paced.achieved_per_s, paced.offered_per_s)]),
        ),
        "p50_vs_kafka": latency(
            f"event-to-health p50 {rate}", db["p50_ms"], "K_e2e p50", kafka["p50_ms"]
        ),
        "p99_vs_kafka": latency(
            f"event-to-health p99 {rate}",
            db["p99_ms"],
            "K_e2e p99",
            kafka["p99_ms"],
            target=p99_target,
            met=p99_met if at_target else None,
        ),
        "max_vs_kafka": latency(
            f"event-to-health max {rate}", db["max_ms"], "K_e2e p99.9", kafka["p999_ms"]
        ),
        "lower_rate_p99_vs_kafka": latency(
            f"event-to-health p99 at {lower.offered_per_s:,.0f}/s",
            db_lower["p99_ms"],
            "K_e2e p99",
            kafka["p99_ms"],
        ),
        "high_rate_at_offered": Figure(
            f"events/s committed (open loop {high_rate})",
            "events/s",
            high_sustained,
            "offered rate",
            high_offered,
            Spread.of([ratio(high_sustained, high_offered)]),
        ),
        "high_rate_p50_vs_kafka": latency(
            f"event-to-health p50 {high_rate}", db_high["p50_ms"], "K_e2e p50", kafka["p50_ms"]
        ),
        "high_rate_p99_vs_kafka": latency(
            f"event-to-health p99 {high_rate}", db_high["p99_ms"], "K_e2e p99", kafka["p99_ms"]
        ),
        "metric_p50_vs_db": latency(
            "scoring's histogram p50", paced.metric_ms(0.5), "event-to-health p50", db["p50_ms"]
        ),
        "metric_p99_vs_db": latency(
            "scoring's histogram p99", paced.metric_ms(0.99), "event-to-health p99", db["p99_ms"]
        ),
        "peak_rss_mib": Figure(
            "peak RSS of scoring (VmHWM, pre-filled topic)",
            "MiB",
            max(peak for peak, _ in rss) / mib,
            "scoring's peak RSS when ready (nothing consumed)",
            max(ready for _, ready in rss) / mib,
            Spread.of(ratio(peak, ready) for peak, ready in rss),
        ),
        "customers_touched": Figure(
            "customers scoring touched (pre-filled topic)",
            "customers",
            float(med([s.counts["customers"] for s in scoring])),
            "customers in the corpus' key space",
            float(CUSTOMERS),
            Spread.of(ratio(s.counts["customers"], CUSTOMERS) for s in scoring),
        ),
        "rss_at_1m_customers_mib": Figure(
            f"peak RSS of scoring at {stated} customers"
            + (
                f" (extrapolated from {probe.touched:,})"
                if probe is not None and probe.touched < PROBE_STATED_CUSTOMERS
                else ""
            ),
            "MiB",
            probe.rss_at(PROBE_STATED_CUSTOMERS) / mib if probe is not None else math.nan,
            "bound of TOUCHPULSE_SCORING_WINDOW_OUTCOMES (RSS when ready + window)",
            probe.bound_bytes / mib if probe is not None else math.nan,
            Spread.of(
                [ratio(probe.rss_at(PROBE_STATED_CUSTOMERS), probe.bound_bytes)]
                if probe is not None
                else []
            ),
        ),
    }


def figures_printed(found: dict[str, dict[str, Any]]) -> str:
    return figure_table(found, FIGURE_KEYS)


#: Columns of the CPU table: the process under test, then the servers and this process.
CPU_COLUMNS = (
    "service",
    "scoring",
    "postgres",
    "kafka",
    "bench",
    "tool_incl_jvm_start",
    KERNEL_IRQ,
)


def cpu_profile(found: Measured) -> dict[str, Any]:
    """Median CPU microseconds per event (or record) and cores busy, per phase and process."""
    pairs, paced = found.pairs, found.paced

    def summarise(
        runs: Sequence[tuple[dict[str, float], float, float]], unit: str
    ) -> dict[str, Any]:
        names = runs[0][0].keys()
        return {
            "unit": unit,
            "us_per_unit": {
                n: statistics.median(c[n] / u for c, u, _ in runs) * 1e6 for n in names
            },
            "cores": {n: statistics.median(c[n] / s for c, _, s in runs) for n in names},
        }

    profile = {
        "scoring (pre-filled topic)": summarise(
            [(p.scoring.cpu_s, p.scoring.events, p.scoring.wall_s) for p in pairs], "event"
        ),
        "scoring incl. tail": summarise(
            [
                (p.scoring.cpu_with_tail_s, p.scoring.events, p.scoring.wall_s + p.scoring.tail_s)
                for p in pairs
            ],
            "event",
        ),
        "D_upsert": summarise(
            [(p.upsert.cpu_s, p.upsert.events, p.upsert.wall_s) for p in pairs], "event"
        ),
        "K_cons": summarise(
            [
                (p.kcons["cpu_s"], p.kcons["records"], p.kcons["wall_s_incl_jvm_start"])
                for p in pairs
            ],
            "record",
        ),
    }
    for loop in found.loops:
        profile[f"scoring (open loop {loop.offered_per_s:,.0f}/s)"] = summarise(
            [(loop.cpu_s, max(loop.committed_all_in_window, 1), loop.window_s)], "event"
        )
    profile["K_e2e"] = summarise(
        [(paced.kafka["cpu_s"], paced.kafka["messages"], paced.kafka["wall_s_incl_jvm_start"])],
        "record",
    )
    return profile


def cpu_table(profile: dict[str, Any]) -> str:
    rows = [[phase, *cpu_cells(data, CPU_COLUMNS)] for phase, data in profile.items()]
    header = [
        "phase",
        "per",
        "D_upsert loop",
        "scoring",
        "postgres (all)",
        "kafka broker",
        "bench process",
        "Kafka tool",
        "kernel irq",
        "other cores",
    ]
    return table(header, rows)


# --- setting up, tearing down, reporting -----------------------------------------------------


say = sayer("bench-scoring")


def prepare(
    plan: Plan,
    settings: Settings,
    site: Site,
    exit_stack: contextlib.ExitStack,
    *,
    stage: str = "scoring",
    fill: bool = True,
) -> Bench:
    """Topics ``bench-<stage>-<id>.*`` on ``site``'s broker, the corpus, the events topic
    pre-filled (unless not ``fill``): a :class:`Bench` ready to measure."""
    kafka, runner = site.kafka, site.runner
    suffix = uuid.uuid4().hex[:10]
    topics = Topics.named(suffix, prefix=f"bench-{stage}")
    runner.run(create_topics(settings, kafka.address, topics))
    site.remove_topics_later(exit_stack, topics.all(), say)
    catalogue = load_catalogue_file(REPO / settings.promise_catalogue)
    say(f"building the corpus: {plan.events + plan.paced_events:,} events")
    corpus = build_corpus(plan, catalogue, datetime.now(UTC))
    positions: list[tuple[int, int]] = []
    if fill:
        say(f"pre-filling {topics.events} with {plan.events:,} events")
        positions = runner.run(
            prefill(
                kafka.address, topics.events, corpus.filled, linger_ms=settings.ingest_linger_ms
            )
        )
    return Bench(
        plan=plan,
        settings=settings,
        logs=site.logs(stage),
        bootstrap=kafka.address,
        site=site,
        kafka_pid=kafka.pid,
        postgres_pid=site.postgres.pid,
        topics=topics,
        suffix=suffix,
        corpus=corpus,
        positions=positions,
        catalogue=catalogue,
        runner=runner,
        exit_stack=exit_stack,
    )


def scoring_versions(settings: Settings, site: Site, catalogue: Catalogue) -> dict[str, str]:
    kafka, postgres = site.kafka, site.postgres
    pg_version = site.runner.run(postgres_version(postgres.address))
    return {
        **versions(PACKAGES),
        "kafka": settings.kafka_version
        if kafka.local
        else f"external (tools {settings.kafka_version})",
        "postgresql": pg_version if postgres.local else f"external {pg_version}",
        "java": java_version(),
        "catalogue": catalogue.version,
    }


def run(plan: Plan, settings: Settings, site: Site | None = None) -> dict[str, Any]:
    """The scoring benchmark on ``site``'s broker and database server (servers of its own,
    started and stopped here, without one)."""
    started = datetime.now(UTC)
    with contextlib.ExitStack() as exit_stack:
        if site is None:
            site = exit_stack.enter_context(open_site(settings, say))
        kafka, postgres = site.kafka, site.postgres
        bench = prepare(plan, settings, site, exit_stack)
        corpus, logs = bench.corpus, bench.logs
        measured = measure(bench)
        pairs, paced, lower, high = measured.pairs, measured.paced, measured.lower, measured.high
        found = figures(measured)
        last = pairs[-1].scoring
        rss: dict[str, int | None] = {
            "scoring": max((p.scoring.peak_rss_bytes or 0) for p in pairs)
        }
        if measured.probe is not None:
            rss["scoring-probe"] = measured.probe.peak_rss_bytes
        if kafka.pid is not None:
            rss["kafka"] = peak_rss_bytes(kafka.pid)
        return {
            "benchmark": "scoring",
            "mode": plan.name,
            "started_at": started.isoformat(),
            "finished_at": datetime.now(UTC).isoformat(),
            "machine": machine(),
            "versions": scoring_versions(settings, site, bench.catalogue),
            "settings": {
                "kafka": "local" if kafka.local else "external",
                "postgresql": "local" if postgres.local else "external",
                "partitions": settings.events_partitions,
                "scoring_max_batch": settings.scoring_max_batch,
                "producer_linger_ms": settings.ingest_linger_ms,
                "corpus": {
                    "events": plan.events,
                    "paced_events": len(corpus.paced),
                    "customers": CUSTOMERS,
                    "span_days": SPAN.days,
                    "record_value_bytes": corpus.value_bytes,
                    "record_key_bytes": corpus.key_bytes,
                    "record_header_bytes": corpus.header_bytes,
                    "measure_outcomes": corpus.measure_outcomes,
                    "deadlines_opened": corpus.deadlines_opened,
                    "deadline_ends": corpus.deadline_ends,
                },
                "plan": asdict(plan),
                "open_loop_rates": [loop.rate_per_s for loop in plan.loops],
                "window_outcomes": settings.scoring_window_outcomes,
                "throughput_poll_ms": THROUGHPUT_POLL_S * 1000,
                "latency_poll_ms": LATENCY_POLL_S * 1000,
            },
            "figures": {key: found[key].as_dict() for key in FIGURE_KEYS},
            "targets": {
                "events_per_s_vs_upsert": {
                    "min": TARGET_PER_S_VS_UPSERT,
                    "met": found["events_per_s_vs_upsert"].met,
                },
                "events_per_cpu_s_vs_upsert": {
                    "min": TARGET_PER_CPU_S_VS_UPSERT,
                    "met": found["events_per_cpu_s_vs_upsert"].met,
                },
                "scoring_us_per_event": {
                    "max": TARGET_SCORING_US_PER_EVENT,
                    "met": found["scoring_us_per_event_vs_upsert"].met,
                },
                "postgres_us_per_event": {
                    "max": TARGET_POSTGRES_US_PER_EVENT,
                    "met": found["postgres_us_per_event_vs_upsert"].met,
                },
                "p99_ms": {
                    "max": TARGET_P99_MS,
                    "at_rate": TARGET_RATE,
                    "met": found["p99_vs_kafka"].met,
                },
            },
            "cpu": cpu_profile(measured),
            "peak_rss_bytes": rss,
            "work": {"counts": last.counts, "metrics": last.metrics},
            "pairs": [p.as_dict() for p in pairs],
            "open_loop": paced.as_dict(),
            "open_loop_lower_rate": lower.as_dict(),
            "open_loop_high_rate": high.as_dict() if high is not None else None,
            "memory_probe": measured.probe.as_dict() if measured.probe is not None else None,
            "notes": [
                SHARED_CORES_NOTE.format(nproc=os.cpu_count()),
                *memory_notes(measured.probe, settings.scoring_window_outcomes),
            ],
            "warnings": bench.warnings,
            "logs": str(logs),
        }


def memory_notes(probe: Probe | None, window_outcomes: int) -> list[str]:
    """What bounds scoring's memory, and how the figure at a million customers was found."""
    if probe is None:
        return []
    slope = probe.bytes_per_customer
    measured = probe.touched >= PROBE_STATED_CUSTOMERS
    return [
        f"Scoring's in-memory state is bounded by TOUCHPULSE_SCORING_WINDOW_OUTCOMES = "
        f"{window_outcomes:,} outcomes of explanation windows (about "
        f"{probe.outcome_bytes:,.0f} B each as read back from PostgreSQL: at most "
        f"{window_outcomes * probe.outcome_bytes / 2**20:,.0f} MiB over the RSS when ready). "
        f"Memory probe: {probe.touched:,} customers with one event each, peak RSS "
        f"{(probe.peak_rss_bytes or 0) / 2**20:,.0f} MiB (ready: "
        f"{(probe.ready_rss_bytes or 0) / 2**20:,.0f} MiB), slope over its second half "
        f"{slope:,.1f} B per customer; "
        + (
            f"the {PROBE_STATED_CUSTOMERS:,}-customer figure is measured."
            if measured
            else f"the {PROBE_STATED_CUSTOMERS:,}-customer figure is extrapolated from it "
            "(linearly, slope clipped at 0), not measured: run python -m tests.bench.scoring "
            f"--probe-customers {PROBE_STATED_CUSTOMERS} to measure it."
        )
    ]


def report(result: dict[str, Any]) -> str:
    corpus = result["settings"]["corpus"]
    mach = result["machine"]
    work = result["work"]["counts"]
    lines = [
        f"Touchpulse scoring benchmark ({result['mode']}), {result['started_at']}",
        f"machine: {mach['nproc']} cores, {mach['memory_bytes'] / 2**30:.1f} GiB memory, "
        f"{mach['cpu_model']}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()),
        f"corpus: {corpus['events']:,} events pre-filled over {corpus['customers']:,} customers "
        f"({corpus['measure_outcomes']:,} measure outcomes, {corpus['deadlines_opened']:,} "
        f"deadlines opened, {corpus['deadline_ends']:,} ended); value "
        f"{corpus['record_value_bytes']:.0f} B, key {corpus['record_key_bytes']:.0f} B, headers "
        f"{corpus['record_header_bytes']:.0f} B; {result['settings']['partitions']} partitions; "
        f"batches of {result['settings']['scoring_max_batch']}",
        f"work per scoring run: {work['processed']:,} events applied, {work['outcomes']:,} "
        f"outcomes ({work['broken']:,} broken, {work['missed_deadlines']:,} deadlines missed), "
        f"{work['journeys']:,} journeys ({work['red_journeys']:,} red), "
        f"{work['interventions']:,} interventions",
        result["notes"][0],
        "",
        figures_printed(result["figures"]),
        "",
        "event-to-health p50 / p99 (ms) of the events due in each quarter of the open loop's "
        "window (growth = a backlog):",
    ]
    for key in ("open_loop", "open_loop_lower_rate", "open_loop_high_rate"):
        loop = result.get(key)
        if loop is None:
            continue
        quarters = ", ".join(
            f"{q['p50_ms']:.0f} / {q['p99_ms']:.0f}" for q in loop["latency_db_by_quarter"]
        )
        lines.append(
            f"  {loop['offered_per_s']:,.0f}/s: {quarters}; sustained "
            f"{loop['sustained_per_s']:,.0f}/s, backlog {loop['backlog_at_open']:,} -> "
            f"{loop['backlog_at_close']:,} events over the window; the generator was at most "
            f"{loop['max_send_lag_ms']:.1f} ms late; {loop['incomplete']} never committed"
        )
    lines += result["notes"][1:]
    lines += [
        "",
        "CPU microseconds per event or record (cores busy), median over pairs; postgres = the "
        "postmaster and all its children; other = the rest of the machine:",
    ]
    return close_report(lines, cpu_table(result["cpu"]), result)


# --- a profile of scoring (--profile) ------------------------------------------------------

#: Where scoring's time goes, by the file a function lives in (first match wins).
PROFILE_AREAS = (
    ("touchpulse_scoring/domain", "scoring domain (pure)"),
    ("touchpulse_scoring/store", "scoring store (SQL arguments, rows)"),
    ("touchpulse_scoring/engine", "scoring engine"),
    ("touchpulse_scoring/outbox", "outbox publisher"),
    ("touchpulse_scoring/", "scoring, other"),
    ("touchpulse_shared/contract", "record decoding (contract)"),
    ("pydantic", "pydantic"),
    ("asyncpg", "asyncpg"),
    ("aiokafka", "aiokafka"),
    ("kafka", "aiokafka"),
    ("prometheus_client", "prometheus_client"),
    ("structlog", "structlog"),
    ("asyncio", "asyncio event loop"),
    ("selectors", "asyncio event loop"),
    ("socket", "asyncio event loop"),
    ("<frozen abc>", "isinstance() on ABCs"),
    ("_abc_instancecheck", "isinstance() on ABCs"),
    ("json/", "stdlib json"),
)


def profile(plan: Plan, settings: Settings, *, dump: Path | None = None, top: int = 25) -> str:
    """cProfile of the scoring service, in this process, over the pre-filled topic.

    The same service as ``touchpulse-scoring`` (consumer, sweep, outbox publisher) on the
    standard asyncio loop, as ``touchpulse-scoring`` runs it; the profile covers the first
    committed batch to the last, start-up left out. cProfile slows Python code more than C
    code, so shares are indicative.
    """
    started = datetime.now(UTC)
    with contextlib.ExitStack() as exit_stack:
        stack = exit_stack.enter_context(LocalStack(settings))
        kafka, postgres = stack.kafka(), stack.postgres()
        suffix = uuid.uuid4().hex[:10]
        topics = Topics.named(suffix)
        events = build_events(plan.events, now=started.replace(microsecond=0))
        asyncio.run(create_topics(settings, kafka.address, topics))
        if not kafka.local:
            exit_stack.callback(
                cleanup,
                f"topics {topics.all()}",
                lambda: asyncio.run(delete_topics(kafka.address, topics.all())),
                say,
            )
        say(f"pre-filling {topics.events} with {plan.events:,} events")
        asyncio.run(
            prefill(kafka.address, topics.events, events, linger_ms=settings.ingest_linger_ms)
        )
        name = f"bench_scoring_{suffix}_profile"
        url = asyncio.run(create_database(postgres.address, name))
        if not postgres.local:
            exit_stack.callback(
                cleanup,
                f"database {name}",
                lambda: asyncio.run(drop_database(postgres.address, name)),
                say,
            )
        group = f"bench-profile-{suffix}"
        service_settings = topics.settings(settings).model_copy(
            update={
                "kafka_bootstrap_servers": kafka.address,
                "database_url": url,
                "scoring_group_id": group,
                "scoring_metrics_port": free_port(),
                "log_level": "WARNING",
            }
        )
        # The default (wall) timer: a CPU timer costs a system call per event and distorts
        # more than it corrects. Time spent waiting in epoll is left out of the shares.
        profiler = cProfile.Profile()

        batches: list[int] = []

        async def consume() -> tuple[int, float]:
            service = ScoringService(service_settings)
            task = asyncio.create_task(service.run())
            conn = await asyncpg.connect(url)
            first: tuple[int, float] | None = None
            try:
                while (committed := int(await conn.fetchval(_COMMITTED, group, topics.events))) < (
                    plan.events
                ):
                    if first is None and committed > 0:
                        first = (committed, clock())
                        profiler.enable()
                    await asyncio.sleep(THROUGHPUT_POLL_S)
                profiler.disable()
                if service.runner is not None:
                    batches.append(service.runner.batches)
            finally:
                service.stopping.set()
                await conn.close()
                await task
            if first is None:
                raise BenchError("the first committed batch was not seen: the topic is too small")
            return plan.events - first[0], clock() - first[1]

        say(f"scoring {plan.events:,} events in this process under cProfile")
        counted, wall_s = asyncio.run(consume())
    stats = pstats.Stats(profiler)
    if dump is not None:
        dump.parent.mkdir(parents=True, exist_ok=True)
        stats.dump_stats(dump)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    waiting = {key: entry for key, entry in raw.items() if "epoll" in key[2]}
    working = {key: entry for key, entry in raw.items() if key not in waiting}
    total = sum(entry[2] for entry in working.values())
    areas: dict[str, float] = defaultdict(float)
    for (filename, _, function), entry in working.items():
        where = f"{filename} {function}" if filename == "~" else filename
        area = next((a for key, a in PROFILE_AREAS if key in where), "other")
        areas[area] += entry[2]
    lines = [
        f"scoring under cProfile: {counted:,} events in {wall_s:.1f} s "
        f"({counted / wall_s:,.0f} events/s with the profiler's overhead), "
        f"{sum(e[2] for e in waiting.values()):.2f} s of it waiting in epoll; "
        f"{sum(batches):,} batch transactions, {plan.events / max(1, sum(batches)):,.0f} "
        "records each on average; the rest, by area (own time; isinstance() on ABCs is "
        "asyncpg encoding array elements):",
        table(
            ["area", "share of own time"],
            [[a, f"{t / total:.1%}"] for a, t in sorted(areas.items(), key=lambda i: -i[1])],
        ),
        "",
        f"top {top} functions by own time:",
    ]
    ranked = sorted(working.items(), key=lambda item: -item[1][2])[:top]
    lines.append(
        table(
            ["function", "calls", "own s", "share", "per event µs"],
            [
                [
                    f"{Path(filename).name}:{line} {function}",
                    f"{entry[1]:,}",
                    f"{entry[2]:.2f}",
                    f"{entry[2] / total:.1%}",
                    f"{entry[2] / counted * 1e6:.1f}",
                ]
                for (filename, line, function), entry in ranked
            ],
        )
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = arguments(
        "python -m tests.bench.scoring",
        __doc__,
        quick="a small topic, one pair, 5 s paced",
        output="scoring",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead: profile scoring in this process (cProfile) over the pre-filled topic",
    )
    parser.add_argument(
        "--probe-customers",
        type=int,
        metavar="N",
        help=f"customers of the memory probe, one event each (default {FULL.probe_customers:,}"
        f", quick {QUICK.probe_customers:,}; {PROBE_STATED_CUSTOMERS:,} measures the figure "
        "stated at that many instead of extrapolating it: several minutes on 2 cores)",
    )
    args = parser.parse_args(argv)

    def body() -> int:
        settings = bench_settings()
        plan = QUICK if args.quick else FULL
        if args.probe_customers is not None:
            plan = dataclasses.replace(plan, probe_customers=args.probe_customers)
        if args.profile:
            dump = settings.state_dir / "bench" / f"scoring-profile-{utc_stamp()}.pstats"
            print(profile(plan, settings, dump=dump))
            print(f"\nwrote {dump} (python -m pstats {dump})")
            return 0
        publish(run(plan, settings), args.output, settings, "scoring", report)
        return 0

    return guarded(say, body)


if __name__ == "__main__":
    sys.exit(main())

"""A rich customer built through scoring's own engine, at fixed times, so that what the api
answers about it is the same bytes on every run.

The engine is driven as the consumer drives it (``Engine.handle`` per batch, ``Engine.sweep``
for deadlines that ran out) in one transaction per batch, with the clock fixed per batch:
outcomes across many touchpoints, breaches normal and critical, deadlines kept, late and
missed, outcomes superseded by late arrivals, more outcomes than an explanation looks at,
a history point per batch that moved the score, and an open intervention.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from tests.scoring.pipeline.ledger import CATALOGUE, EngineRecord
from touchpulse_scoring.engine import Engine, Source, Topics
from touchpulse_shared.contract import EVENT_ADAPTER, encode_record

# What other tests take from here (CATALOGUE: the one the corpus is judged by).
__all__ = [
    "CALM",
    "CATALOGUE",
    "PROFILE_ONLY",
    "READ_AT",
    "RICH",
    "START",
    "build",
    "corpus",
    "score",
]

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
#: The api's clock: a few days after the last event.
READ_AT = START + timedelta(days=48)
RICH = "G-rich"
CALM = "G-calm"
PROFILE_ONLY = "G-profile-only"
GROUP, TOPIC = "golden", "golden.events"


def _engine(now: datetime) -> Engine:
    return Engine(
        catalogue=lambda: CATALOGUE,
        topics=Topics(health="h", interventions="i", dead_letters="d"),
        source=Source(group=GROUP, topic=TOPIC, partitions=lambda: 1),
        clock=lambda: now,
    )


def _shape(kind: str, rng: random.Random) -> tuple[str, str, dict[str, Any]]:
    shapes: dict[str, tuple[str, str, dict[str, Any]]] = {
        "call": (
            "call_centre",
            "call.answered",
            {
                "wait_seconds": rng.choice([10, 25, 25, 45, 90, 700]),
                "first_contact_resolution": rng.random() < 0.9,
            },
        ),
        "invoice": (
            "billing",
            "invoice.issued",
            {"invoice_correct": rng.random() < 0.7, "days_after_delivery": rng.choice([1, 4, 20])},
        ),
        "survey": (
            "survey",
            "survey.answered",
            {"csat": rng.choice([3, 4, 5, 5]), "nps": rng.choice([3, 6, 8, 10])},
        ),
        "page": ("web", "page.viewed", {"load_seconds": rng.choice([0.8, 1.9, 1.9, 3.4, 6.1])}),
        "app": ("app", "session.ended", {"crashed": rng.random() < 0.2}),
        "switch": (
            "switchboard",
            "call.transferred",
            {"transfer_seconds": rng.choice([5, 30, 80]), "transfers": rng.choice([1, 1, 2, 4])},
        ),
        "message": ("communication", "message.answered", {"response_hours": rng.choice([2, 30])}),
        "case": (
            "customer_service",
            "case.resolved",
            {"resolution_hours": rng.choice([6, 40, 90])},
        ),
    }
    return shapes[kind]


def _events(customer: str, seed: int, count: int, step: timedelta) -> list[dict[str, Any]]:
    """``count`` events of one customer, ``step`` apart from START, with orders whose
    deliveries come on time, late or never, and complaints acknowledged or not."""
    rng = random.Random(seed)
    kinds = ["call", "invoice", "survey", "page", "app", "switch", "message", "case"]
    events: list[dict[str, Any]] = []
    for n in range(count):
        at = START + n * step
        base = {"source": "golden", "customer_id": customer, "occurred_at": at.isoformat()}
        if n % 11 == 5:
            order = f"{customer}-order-{n}"
            events.append(
                {
                    **base,
                    "event_id": f"{customer}-{n}",
                    "touchpoint": "sales",
                    "type": "order.placed",
                    "journey_id": order,
                    "measures": {"price_matches_quote": rng.random() < 0.8},
                }
            )
            # On time, late (after the sweep recorded the miss: a real gap supersedes it),
            # or never.
            late = rng.choice([10, 30, 70, None, None])
            if late is not None:
                events.append(
                    {
                        **base,
                        "event_id": f"{customer}-{n}-delivered",
                        "occurred_at": (at + timedelta(hours=late)).isoformat(),
                        "touchpoint": "delivery",
                        "type": "delivery.completed",
                        "journey_id": order,
                        "measures": {"damaged": rng.random() < 0.1, "all_items_delivered": True},
                    }
                )
            continue
        if n % 17 == 8:
            case = f"{customer}-complaint-{n}"
            events.append(
                {
                    **base,
                    "event_id": f"{customer}-{n}",
                    "touchpoint": "customer_service",
                    "type": "complaint.received",
                    "journey_id": case,
                    "measures": {},
                }
            )
            if rng.random() < 0.5:
                events.append(
                    {
                        **base,
                        "event_id": f"{customer}-{n}-ack",
                        "occurred_at": (at + timedelta(hours=rng.choice([2, 40]))).isoformat(),
                        "touchpoint": "customer_service",
                        "type": "complaint.acknowledged",
                        "journey_id": case,
                        "measures": {},
                    }
                )
            continue
        touchpoint, event_type, measures = _shape(rng.choice(kinds), rng)
        if n % 23 == 0:
            # Twins: the same breach twice at the very same instant, so their impacts tie
            # and the explanation orders them by key.
            touchpoint, event_type, measures = "web", "page.viewed", {"load_seconds": 4.0}
            events.append(
                {
                    **base,
                    "event_id": f"{customer}-{n}-twin",
                    "touchpoint": touchpoint,
                    "type": event_type,
                    "measures": measures,
                }
            )
        events.append(
            {
                **base,
                "event_id": f"{customer}-{n}",
                "touchpoint": touchpoint,
                "type": event_type,
                "measures": measures,
            }
        )
    return events


def corpus() -> list[dict[str, Any]]:
    rich = _events(RICH, seed=14, count=300, step=timedelta(hours=3, minutes=20))
    # A critical breach late in the story: the intervention it opens stays open.
    rich.append(
        {
            "event_id": f"{RICH}-critical",
            "source": "golden",
            "customer_id": RICH,
            "touchpoint": "survey",
            "type": "survey.answered",
            "occurred_at": (START + timedelta(days=40, minutes=7)).isoformat(),
            "measures": {"csat": 1, "nps": 0},
        }
    )
    calm = [
        {
            "event_id": f"{CALM}-{n}",
            "source": "golden",
            "customer_id": CALM,
            "touchpoint": "web",
            "type": "page.viewed",
            "occurred_at": (START + timedelta(days=2 * n, hours=1)).isoformat(),
            "measures": {"load_seconds": 1.2},
        }
        for n in range(6)
    ]
    return sorted(rich + calm, key=lambda e: (e["occurred_at"], e["event_id"]))


async def build(url: str) -> None:
    """Score the corpus into the (migrated, empty) database at ``url``."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            """
            INSERT INTO customer_profile
                (customer_id, segment, customer_since, value, reach, created_at, updated_at)
            VALUES ($1, 'premium', $3, 4.0, 1200.0, $4, $4),
                   ($2, 'standard', NULL, 1.0, 0.0, $4, $4)
            """,
            RICH,
            PROFILE_ONLY,
            (START - timedelta(days=20)).date(),
            START - timedelta(days=1),
        )
        await score(conn, corpus())
    finally:
        await conn.close()


async def score(
    conn: asyncpg.Connection,
    events: list[dict[str, Any]],
    *,
    offset: int = 0,
    engine_at: Callable[[datetime, int], Engine] | None = None,
) -> int:
    """Score ``events`` (in order) as the consumer and the sweep would: batches of 13 in a
    transaction each, each batch at its newest event time plus two minutes, then the
    deadlines that ran out by then; the offsets from ``offset`` on. The next offset.

    ``engine_at(now, n)`` gives the engine of the ``n``-th batch, its clock at ``now``
    (default: a new engine per batch; long-lived ones keep state between batches)."""
    pick = engine_at or (lambda now, _: _engine(now))
    batch_size = 13
    for n, first in enumerate(range(0, len(events), batch_size)):
        batch = events[first : first + batch_size]
        last = max(datetime.fromisoformat(e["occurred_at"]) for e in batch)
        now = last + timedelta(minutes=2)
        records = []
        for e in batch:
            encoded = encode_record(
                EVENT_ADAPTER.validate_python(e), producer="ingest", received_at=now
            )
            records.append(
                EngineRecord(TOPIC, 0, offset, encoded.key, encoded.value, encoded.headers)
            )
            offset += 1
        engine = pick(now, n)
        async with conn.transaction():
            await engine.handle(conn, records)
            # What the consumer records with the batch: applied up to here.
            await conn.execute(
                """
                INSERT INTO consumer_offset
                    (consumer_group, topic, partition, next_offset, watermark)
                VALUES ($1, $2, 0, $3, $4)
                ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET
                    next_offset = EXCLUDED.next_offset, watermark = EXCLUDED.watermark
                """,
                GROUP,
                TOPIC,
                offset,
                now,
            )
        async with conn.transaction():
            # Deadlines that ran out by now, as the service's sweep loop finds them.
            await engine.sweep(conn)
    return offset

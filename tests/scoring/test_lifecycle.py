"""The lifecycle on the real PostgreSQL: what the pruning loop removes, when, and that nothing
anyone reads changes because of it.

Every round is driven with an explicit ``now`` (the loop passes the wall clock): no sleeps,
years simulated in seconds. Customers are scored through scoring's own engine, one
transaction per batch as the consumer runs it, with the clock fixed per batch.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

from tests.scoring.pipeline.ledger import EngineRecord
from touchpulse_api.app import build_app
from touchpulse_api.metrics import ApiMetrics
from touchpulse_api.webhooks import WebhookDispatcher
from touchpulse_scoring.domain import EXPLAIN_WINDOW, Catalogue, load_catalogue_file
from touchpulse_scoring.domain.triggers import NO_GUARD
from touchpulse_scoring.engine import Engine, Source, Topics
from touchpulse_scoring.lifecycle import (
    HISTORY_DEFAULT,
    Pruned,
    Terms,
    horizons,
    prune_round,
)
from touchpulse_scoring.store import load_state
from touchpulse_shared.auth import Scope, create_key
from touchpulse_shared.contract import EVENT_ADAPTER, encode_record
from touchpulse_shared.db import Conn
from touchpulse_shared.db.migrate import migrate_url
from touchpulse_shared.settings import Settings

pytestmark = pytest.mark.postgres

CATALOGUE = load_catalogue_file("deploy/promises.yaml")
GROUP, TOPIC = "lifecycle", "lifecycle.events"
ADD_POINT = (
    "INSERT INTO journey_health_history (customer_id, at, score, band) VALUES ($1, $2, $3, 'x')"
)
HOUR, DAY = timedelta(hours=1), timedelta(days=1)


@pytest.fixture
async def db(fresh_database: str) -> AsyncIterator[asyncpg.Pool]:
    await migrate_url(fresh_database)
    pool = await asyncpg.create_pool(fresh_database, min_size=1, max_size=3)
    assert pool is not None
    yield pool
    await pool.close()


@pytest.fixture
def terms(base_settings: Settings) -> Terms:
    """The shipped settings' terms, for the consumer group and topic the tests score on."""
    return dataclasses.replace(Terms.from_settings(base_settings), group=GROUP, events_topic=TOPIC)


async def rounds(
    pool: asyncpg.Pool, now: datetime, terms: Terms, catalogue: Catalogue = CATALOGUE
) -> Pruned:
    """Rounds at ``now`` until one leaves no work behind, as the loop runs them."""
    total = Pruned()
    for _ in range(1000):
        pruned = await prune_round(
            pool, now=now, terms=terms, policy=catalogue.policy.interventions
        )
        total.rows.update(pruned.rows)
        total.partitions.update(pruned.partitions)
        if not pruned.more:
            return total
    raise AssertionError("the rounds never ran out of work")


# --- scoring through the engine -----------------------------------------------------------


class Scorer:
    """Feeds events to the engine as the consumer does: a transaction per batch, offsets and
    the partition's watermark stored with it, then the deadline sweep."""

    def __init__(self, pool: asyncpg.Pool, catalogue: Catalogue = CATALOGUE) -> None:
        self.pool = pool
        self.catalogue = catalogue
        self.offset = 0

    def engine(self, now: datetime) -> Engine:
        return Engine(
            catalogue=lambda: self.catalogue,
            topics=Topics(health="h", interventions="i", dead_letters="d"),
            source=Source(group=GROUP, topic=TOPIC, partitions=lambda: 1),
            clock=lambda: now,
        )

    def records(self, events: Sequence[dict[str, Any]], now: datetime) -> list[EngineRecord]:
        records = []
        for event in events:
            encoded = encode_record(
                EVENT_ADAPTER.validate_python(event), producer="ingest", received_at=now
            )
            records.append(
                EngineRecord(TOPIC, 0, self.offset, encoded.key, encoded.value, encoded.headers)
            )
            self.offset += 1
        return records

    async def score(self, conn: Conn, events: Sequence[dict[str, Any]], now: datetime) -> None:
        async with conn.transaction():
            await self.engine(now).handle(conn, list(self.records(events, now)))
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
                self.offset,
                now,
            )
        async with conn.transaction():
            await self.engine(now).sweep(conn)

    async def batch(self, events: Sequence[dict[str, Any]], now: datetime) -> None:
        async with self.pool.acquire() as conn:
            await self.score(conn, events, now)


Shape = tuple[str, str, dict[str, Any]]


def event(
    customer: str, event_id: str, at: datetime, shape: Shape, *, journey: str | None = None
) -> dict[str, Any]:
    """A native event: ``shape`` is (touchpoint, type, measures)."""
    touchpoint, kind, measures = shape
    doc: dict[str, Any] = {
        "event_id": event_id,
        "source": "lifecycle",
        "customer_id": customer,
        "touchpoint": touchpoint,
        "type": kind,
        "occurred_at": at.isoformat(),
        "measures": measures,
    }
    if journey is not None:
        doc["journey_id"] = journey
    return doc


def story(
    customer: str, start: datetime, count: int, step: timedelta, seed: int
) -> list[dict[str, Any]]:
    """A long relationship: calls, invoices, surveys, pages, app sessions, messages, cases,
    orders whose deliveries come on time, late or never, and complaints acknowledged or not."""
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    for n in range(count):
        at = start + n * step
        name = f"{customer}-{seed}-{n}"
        if n % 9 == 4:
            order = f"{name}-order"
            events.append(
                event(
                    customer,
                    name,
                    at,
                    ("sales", "order.placed", {"price_matches_quote": rng.random() < 0.8}),
                    journey=order,
                )
            )
            late = rng.choice([10, 30, 70, None])
            if late is not None:
                events.append(
                    event(
                        customer,
                        f"{name}-delivered",
                        at + timedelta(hours=late),
                        (
                            "delivery",
                            "delivery.completed",
                            {"damaged": rng.random() < 0.1, "all_items_delivered": True},
                        ),
                        journey=order,
                    )
                )
            continue
        if n % 13 == 7:
            case = f"{name}-complaint"
            events.append(
                event(
                    customer,
                    name,
                    at,
                    ("customer_service", "complaint.received", {}),
                    journey=case,
                )
            )
            if rng.random() < 0.5:
                events.append(
                    event(
                        customer,
                        f"{name}-ack",
                        at + timedelta(hours=rng.choice([2, 40])),
                        ("customer_service", "complaint.acknowledged", {}),
                        journey=case,
                    )
                )
            continue
        shapes: list[Shape] = [
            (
                "call_centre",
                "call.answered",
                {
                    "wait_seconds": rng.choice([10, 25, 45, 90, 700]),
                    "first_contact_resolution": rng.random() < 0.9,
                },
            ),
            (
                "billing",
                "invoice.issued",
                {
                    "invoice_correct": rng.random() < 0.7,
                    "days_after_delivery": rng.choice([1, 4, 20]),
                },
            ),
            (
                "survey",
                "survey.answered",
                {"csat": rng.choice([3, 4, 5, 5]), "nps": rng.choice([3, 6, 8, 10])},
            ),
            ("web", "page.viewed", {"load_seconds": rng.choice([0.8, 1.9, 3.4, 6.1])}),
            ("app", "session.ended", {"crashed": rng.random() < 0.2}),
            ("communication", "message.answered", {"response_hours": rng.choice([2, 30])}),
        ]
        events.append(event(customer, name, at, rng.choice(shapes)))
    return sorted(events, key=lambda e: (e["occurred_at"], e["event_id"]))


async def resolve_open(conn: Conn, customer: str, at: datetime) -> bool:
    """What the api's acknowledge and resolve write: the case closes at ``at``."""
    status = await conn.execute(
        """
        UPDATE intervention SET state = 'resolved', acknowledged_at = $2, assignee = 'ops',
            resolved_at = $2, outcome_note = 'called back', closed_at = $2, updated_at = $2,
            health_at_resolve = (SELECT score FROM journey_health WHERE customer_id = $1)
        WHERE customer_id = $1 AND state IN ('open', 'acknowledged')
        """,
        customer,
        at,
    )
    return status != "UPDATE 0"


async def probe(
    pool: asyncpg.Pool,
    scorer: Scorer,
    customer: str,
    events: Sequence[dict[str, Any]],
    now: datetime,
) -> dict[str, Any]:
    """What one more batch (and the sweep after it) writes about ``customer``, rolled back:
    health, outcomes, interventions with their triggers and gaps, webhook and topic records —
    the explanation and the triggers at work on the stored state."""
    offset = scorer.offset
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            started = await conn.fetchval("SELECT now()")
            kafka_mark = await conn.fetchval("SELECT coalesce(max(id), 0) FROM kafka_outbox")
            webhook_mark = await conn.fetchval("SELECT coalesce(max(id), 0) FROM webhook_outbox")
            await scorer.engine(now).handle(conn, list(scorer.records(events, now)))
            await scorer.engine(now).sweep(conn)
            seen = {
                "outcomes": await conn.fetch(
                    """
                    SELECT outcome_key, promise_id, occurred_at, expected, actual, gap, met, score,
                           weight, severity, event_ids, opened_at
                    FROM outcome WHERE customer_id = $1 AND recorded_at >= $2 ORDER BY 1
                    """,
                    customer,
                    started,
                ),
                "touchpoints": await conn.fetch(
                    "SELECT * FROM touchpoint_health WHERE customer_id = $1 ORDER BY touchpoint",
                    customer,
                ),
                "journey": await conn.fetch(
                    "SELECT * FROM journey_health WHERE customer_id = $1", customer
                ),
                "interventions": await conn.fetch(
                    "SELECT * FROM intervention WHERE customer_id = $1 ORDER BY opened_at", customer
                ),
                "kafka": await conn.fetch(
                    "SELECT topic, key, value, headers FROM kafka_outbox WHERE id > $1 ORDER BY id",
                    kafka_mark,
                ),
                "webhooks": await conn.fetch(
                    """
                    SELECT kind, intervention_id, payload FROM webhook_outbox
                    WHERE id > $1 AND customer_id = $2 ORDER BY id
                    """,
                    webhook_mark,
                    customer,
                ),
            }
        finally:
            await tx.rollback()
            scorer.offset = offset
    return {name: [dict(r) for r in rows] for name, rows in seen.items()}


@dataclass
class Reads:
    """What the api answers about a customer, at a fixed clock."""

    health: dict[str, Any]
    trend: list[dict[str, Any]]
    gaps: dict[str, Any]


async def api_reads(settings: Settings, url: str, customer: str, at: datetime) -> Reads:
    app = build_app(
        settings.model_copy(
            update={
                "database_url": url,
                "auth_cache_s": 0.0,
                "api_rate_limit_per_s": 1_000_000.0,
                "api_rate_limit_burst": 1_000_000.0,
            }
        ),
        clock=lambda: at,
    )
    async with app.router.lifespan_context(app):
        key, _ = await create_key(
            app.state.api.pool, name="lifecycle", scopes=[Scope.HEALTH_READ], now=at
        )
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
            base_url="http://api",
            headers={"Authorization": f"Bearer {key}"},
        ) as client:
            health = await client.get(f"/v1/customers/{customer}/health?trend_days=365")
            gaps = await client.get(f"/v1/customers/{customer}/gaps?limit={EXPLAIN_WINDOW}")
    assert health.status_code == 200, health.text
    assert gaps.status_code == 200, gaps.text
    body = orjson.loads(health.content)
    trend = body.pop("trend")
    return Reads(health=body, trend=trend, gaps=orjson.loads(gaps.content))


def _day(at: str) -> str:
    return datetime.fromisoformat(at).astimezone(UTC).date().isoformat()


# --- the rich customer: nothing anyone reads moves ------------------------------------------

RICH = "L-rich"


async def test_pruning_changes_no_health_explanation_or_trigger_of_a_rich_customer(
    db: asyncpg.Pool, fresh_database: str, base_settings: Settings, terms: Terms
) -> None:
    """Fourteen months of a customer's journey (orders delivered on time, late and never,
    complaints, breaches of every kind, cases opened and resolved), then the pruning: the
    health read (score, touchpoints, explanation), the newest gaps and what the next batch
    decides (health, outcomes, the intervention with its triggers and gaps, the records for
    webhooks and topics) are what they were; the trend keeps every point of its last 30
    days and the last and highest of each older day. Pruning did remove most of the old."""
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - DAY
    start = end - timedelta(days=420)
    # Every 18 hours for the first seven months, with a busy spell of 40 days of an event
    # every 4 hours (days of several history points each, long past full resolution), then
    # quiet: an event every 4 days. The explanation's 200 newest outcomes so reach back into
    # the busy months, past what the triggers read: the window, not the age, keeps them.
    events = story(RICH, start, count=300, step=timedelta(hours=18), seed=14)
    events += story(RICH, end - 250 * DAY, count=240, step=4 * HOUR, seed=15)
    events += story(RICH, end - 192 * DAY, count=48, step=4 * DAY, seed=16)
    scorer = Scorer(db)
    batches: dict[int, list[dict[str, Any]]] = {}
    for each in sorted(events, key=lambda e: (e["occurred_at"], e["event_id"])):
        # What arrived within the same six hours is scored as one batch.
        since = datetime.fromisoformat(each["occurred_at"]) - start
        batches.setdefault(int(since / (6 * HOUR)), []).append(each)
    next_close, last_close_done = start + timedelta(days=45), False
    for batch in batches.values():
        now = max(datetime.fromisoformat(e["occurred_at"]) for e in batch) + timedelta(minutes=2)
        await scorer.batch(batch, now)
        # Cases resolved along the way, and one two days before the next batch: its
        # reopen guard reads the history since that close.
        last_close = not last_close_done and now >= end - 2 * DAY
        if now >= next_close or last_close:
            async with db.acquire() as conn:
                await resolve_open(conn, RICH, now + timedelta(minutes=1))
            next_close, last_close_done = now + timedelta(days=45), last_close_done or last_close
    read_at = end + HOUR
    at = end + timedelta(minutes=30)
    next_batch = [
        event(RICH, "probe-page", at, ("web", "page.viewed", {"load_seconds": 6.1})),
        event(
            RICH,
            "probe-invoice",
            at,
            ("billing", "invoice.issued", {"invoice_correct": False, "days_after_delivery": 20}),
        ),
        event(
            RICH,
            "probe-call",
            at,
            (
                "call_centre",
                "call.answered",
                {"wait_seconds": 10, "first_contact_resolution": True},
            ),
        ),
        event(
            RICH,
            "probe-order",
            at - 3 * DAY,
            ("sales", "order.placed", {"price_matches_quote": True}),
            journey="probe-order",
        ),
    ]
    async with db.acquire() as conn:
        stored_before = await conn.fetchval(
            "SELECT count(*) FROM outcome WHERE customer_id = $1", RICH
        )
        history_before = await conn.fetchval(
            "SELECT count(*) FROM journey_health_history WHERE customer_id = $1", RICH
        )
        closed = await conn.fetchval(
            "SELECT count(*) FROM intervention WHERE customer_id = $1 AND state = 'resolved'", RICH
        )
    assert stored_before > 2 * EXPLAIN_WINDOW, stored_before
    assert closed >= 3, closed
    async with db.acquire() as conn:
        cut = await horizons(conn, now=read_at, terms=terms, policy=CATALOGUE.policy.interventions)
        edge = await conn.fetchval(
            """
            SELECT occurred_at FROM outcome WHERE customer_id = $1
            ORDER BY occurred_at DESC, outcome_key COLLATE "C" DESC OFFSET $2 LIMIT 1
            """,
            RICH,
            EXPLAIN_WINDOW - 1,
        )
    assert edge < cut.outcomes_before, "the window should reach past the age bound"

    before = await api_reads(base_settings, fresh_database, RICH, read_at)
    decided_before = await probe(db, scorer, RICH, next_batch, at + timedelta(minutes=2))

    pruned = await rounds(db, read_at, terms)

    after = await api_reads(base_settings, fresh_database, RICH, read_at)
    decided_after = await probe(db, scorer, RICH, next_batch, at + timedelta(minutes=2))
    async with db.acquire() as conn:
        kept = await conn.fetch(
            """
            SELECT outcome_key, occurred_at, opened_at, actual = 'null'::jsonb AS absent,
                   row_number() OVER (
                       ORDER BY occurred_at DESC, outcome_key COLLATE "C" DESC) AS rank
            FROM outcome WHERE customer_id = $1
            """,
            RICH,
        )
    # The pruning removed what the rules let go ...
    assert pruned.rows["outcome"] > stored_before // 3, pruned
    assert pruned.rows["journey_health_history"] > history_before // 4, pruned
    assert pruned.rows["deadline"] > 0, pruned
    for row in kept:
        assert (
            row["rank"] <= EXPLAIN_WINDOW
            or row["absent"]
            or max(row["occurred_at"], row["opened_at"] or row["occurred_at"])
            >= cut.outcomes_before
        ), dict(row)
    # ... and nothing anyone reads moved.
    assert after.health == before.health
    assert after.gaps == before.gaps
    assert decided_after == decided_before
    assert decided_before["outcomes"], decided_before
    assert decided_before["kafka"], decided_before
    # The trend: every point of the full-resolution days, the last and highest of older ones.
    full_since = cut.full_since.isoformat()
    recent_before = [p for p in before.trend if datetime.fromisoformat(p["at"]) >= cut.full_since]
    recent_after = [p for p in after.trend if datetime.fromisoformat(p["at"]) >= cut.full_since]
    assert recent_after == recent_before, full_since
    older_before = [p for p in before.trend if p not in recent_before]
    older_after = [p for p in after.trend if p not in recent_after]
    assert all(p in older_before for p in older_after)
    assert len(older_after) < len(older_before)
    by_day: dict[str, list[dict[str, Any]]] = {}
    for point in older_before:
        by_day.setdefault(_day(point["at"]), []).append(point)
    kept_days = Counter(_day(p["at"]) for p in older_after)
    for day, points in by_day.items():
        assert points[-1] in older_after, day  # the last of the day
        best = max(p["score"] for p in points if p["score"] is not None)
        assert best in [p["score"] for p in older_after if _day(p["at"]) == day], day
        assert kept_days[day] <= 4, day  # two per side of a close at most


# --- on schedule ----------------------------------------------------------------------------

NOW = datetime(2029, 6, 15, 12, 0, tzinfo=UTC)
#: The reopen guard's question: the best health since the close.
GUARD = "SELECT max(score) FROM journey_health_history WHERE customer_id = 'H-closed' AND at > $1"


async def _insert_processed(conn: Conn, rows: Sequence[tuple[str, datetime]]) -> None:
    await conn.executemany(
        """
        INSERT INTO processed_event (source, event_id, customer_id, topic, partition, "offset",
            processed_at)
        VALUES ('lifecycle', $1, 'S-1', $3, 0, 0, $2)
        """,
        [(event_id, at, TOPIC) for event_id, at in rows],
    )


async def _watermarks(conn: Conn, *marks: datetime | None) -> None:
    await conn.execute("DELETE FROM consumer_offset")
    await conn.executemany(
        """
        INSERT INTO consumer_offset (consumer_group, topic, partition, next_offset, watermark)
        VALUES ($1, $2, $3, 1, $4)
        """,
        [(GROUP, TOPIC, partition, mark) for partition, mark in enumerate(marks)],
    )


async def _remaining(conn: Conn, query: str, *args: object) -> set[str]:
    return {r[0] for r in await conn.fetch(query, *args)}


async def test_the_dedupe_window_runs_back_from_the_slowest_partition(
    db: asyncpg.Pool, base_settings: Settings, terms: Terms
) -> None:
    window = timedelta(hours=base_settings.scoring_dedupe_window_hours)
    async with db.acquire() as conn:
        await _insert_processed(
            conn,
            [
                ("beyond", NOW - window - 2 * HOUR),
                ("lagging", NOW - window - 2 * DAY),
                ("inside", NOW - window + timedelta(minutes=30)),
                ("fresh", NOW - HOUR),
            ],
        )
        await _watermarks(conn, NOW, None)
    # A partition whose watermark is unknown holds everything back.
    assert (await rounds(db, NOW, terms)).rows["processed_event"] == 0
    async with db.acquire() as conn:
        await _watermarks(conn, NOW, NOW - 3 * DAY)
    # A partition three days behind: a retry still waiting there must find its first copy.
    assert (await rounds(db, NOW, terms)).rows["processed_event"] == 0
    async with db.acquire() as conn:
        await _watermarks(conn, NOW, NOW - DAY)
    await rounds(db, NOW, terms)
    async with db.acquire() as conn:
        assert await _remaining(conn, "SELECT event_id FROM processed_event") == {
            "inside",
            "fresh",
            "beyond",
        }
        await _watermarks(conn, NOW, NOW)
    pruned = await rounds(db, NOW, terms)
    assert pruned.rows["processed_event"] == 1
    async with db.acquire() as conn:
        assert await _remaining(conn, "SELECT event_id FROM processed_event") == {"inside", "fresh"}


async def test_old_outcomes_deadlines_and_orphans_go_once_a_day_and_what_is_needed_stays(
    db: asyncpg.Pool, terms: Terms
) -> None:
    """260 outcomes, one a day: the 200 newest stay (the explanation's window), and of the
    older ones the standing breaches by absence and the one whose deadline opened recently;
    a customer with 50 old outcomes keeps them all. Fulfilled deadlines and orphan
    fulfilments older than any event that can still come go; expired and open deadlines
    stay. The pass runs once a day: what turns prunable meanwhile waits for the next."""
    async with db.acquire() as conn:
        cut = await horizons(conn, now=NOW, terms=terms, policy=CATALOGUE.policy.interventions)
        # Outcomes 156 to 199 days old are past the age bound: the window keeps them.
        assert NOW - EXPLAIN_WINDOW * DAY < cut.outcomes_before < NOW - 150 * DAY, cut

        async def outcome(
            customer: str,
            key: str,
            at: datetime,
            *,
            absent: bool = False,
            opened: datetime | None = None,
        ) -> None:
            await conn.execute(
                """
                INSERT INTO outcome (customer_id, outcome_key, promise_id, catalogue_version,
                    touchpoint, occurred_at, expected, actual, gap, met, score, weight, severity,
                    event_ids, opened_at)
                VALUES ($1, $2, 'p', 'v', 'web', $3, '{"op": "<=", "target": 1, "unit": "s"}',
                        $4::jsonb, 1, false, 0, 1, 'normal', ARRAY['e'], $5)
                """,
                customer,
                key,
                at,
                "null" if absent else "2.0",
                opened,
            )

        for customer in ("S-out", "S-few"):
            await conn.execute(
                """
                INSERT INTO journey_health (customer_id, score, as_of, updated_at)
                VALUES ($1, 50, $2, $2)
                """,
                customer,
                NOW,
            )
        for day in range(260):
            old = day >= EXPLAIN_WINDOW
            await outcome(
                "S-out",
                f"o-{day:03d}",
                NOW - day * DAY,
                absent=old and day % 10 == 0,
                opened=NOW - 100 * DAY if day == 255 else None,
            )
        for day in range(50):
            await outcome("S-few", f"o-{day:03d}", NOW - (300 + day) * DAY)

        async def deadline(
            journey: str, state: str, opened: datetime, closed: datetime | None
        ) -> None:
            # Open: due in a day (an open deadline long past due would hold outcomes back to
            # its due time: the sweep reads breaches from there when it expires it).
            due = NOW + DAY if state == "open" else opened + 2 * DAY
            await conn.execute(
                """
                INSERT INTO deadline (customer_id, promise_id, journey_key, opened_at, due_at,
                    opening_event_ids, catalogue_version, touchpoint, tolerance_hours, weight,
                    breach_weight, severity, state, closed_at)
                VALUES ('S-out', 'delivery-within-48h', $1, $2, $3, ARRAY['e'], 'v',
                        'delivery', 24, 2, 1, 'normal', $4, $5)
                """,
                journey,
                opened,
                due,
                state,
                closed,
            )

        await deadline("fulfilled-old", "fulfilled", NOW - 300 * DAY, NOW - 299 * DAY)
        await deadline("fulfilled-recent", "fulfilled", NOW - 300 * DAY, NOW - 10 * DAY)
        await deadline("expired-old", "expired", NOW - 300 * DAY, NOW - 298 * DAY)
        await deadline("open-old", "open", NOW - 300 * DAY, None)
        await conn.executemany(
            """
            INSERT INTO early_fulfilment
                (customer_id, promise_id, journey_key, occurred_at, event_ref)
            VALUES ($1, 'delivery-within-48h', $2, $3, 'lifecycle/x')
            """,
            [
                ("S-nobody", "orphan-old", NOW - 200 * DAY),
                ("S-nobody", "orphan-recent", NOW - 10 * DAY),
            ],
        )

    pruned = await rounds(db, NOW, terms)

    expected_out = (
        {f"o-{d:03d}" for d in range(EXPLAIN_WINDOW)}
        | {f"o-{d:03d}" for d in range(EXPLAIN_WINDOW, 260) if d % 10 == 0}
        | {"o-255"}
    )
    async with db.acquire() as conn:
        assert (
            await _remaining(conn, "SELECT outcome_key FROM outcome WHERE customer_id = 'S-out'")
            == expected_out
        )
        assert (
            len(
                await _remaining(
                    conn, "SELECT outcome_key FROM outcome WHERE customer_id = 'S-few'"
                )
            )
            == 50
        )
        assert await _remaining(conn, "SELECT journey_key FROM deadline") == {
            "fulfilled-recent",
            "expired-old",
            "open-old",
        }
        assert await _remaining(conn, "SELECT journey_key FROM early_fulfilment") == {
            "orphan-recent"
        }
    assert pruned.rows["outcome"] == 60 - 6 - 1
    assert pruned.rows["deadline"] == 1
    assert pruned.rows["early_fulfilment"] == 1

    # Prunable rows that appear after today's pass wait for tomorrow's.
    async with db.acquire() as conn:
        await outcome("S-out", "o-late", NOW - 400 * DAY)
        await conn.execute(
            """
            INSERT INTO early_fulfilment
                (customer_id, promise_id, journey_key, occurred_at, event_ref)
            VALUES ('S-nobody', 'delivery-within-48h', 'orphan-late', $1, 'lifecycle/y')
            """,
            NOW - 300 * DAY,
        )
    later = await rounds(db, NOW + HOUR, terms)
    assert later.rows["outcome"] == later.rows["early_fulfilment"] == 0
    tomorrow = await rounds(db, NOW + 25 * HOUR, terms)
    assert tomorrow.rows["outcome"] == 1
    assert tomorrow.rows["early_fulfilment"] == 1


async def test_history_is_downsampled_past_its_full_days_and_dropped_by_the_month(
    db: asyncpg.Pool, terms: Terms
) -> None:
    """Months are created ahead (rows the default partition caught moved in), months wholly
    past the horizon dropped whole; an old day keeps its last and highest points on each side
    of the customer's last close; recent days keep every point."""
    old_day = (NOW - 40 * DAY).replace(hour=0)
    recent_day = (NOW - 10 * DAY).replace(hour=0)
    close = old_day + 12 * HOUR
    points = {
        "H-peak": [
            (old_day + 8 * HOUR, 50.0),
            (old_day + 10 * HOUR, 70.0),
            (old_day + 14 * HOUR, 65.0),
            (old_day + 20 * HOUR, 40.0),
        ]
        + [(recent_day + h * HOUR, 50.0 + h) for h in (1, 5, 9)],
        # Closed at noon of the old day: the afternoon's best (62) is what its reopen
        # guard asks for, though the morning was higher.
        "H-closed": [
            (old_day + 8 * HOUR, 80.0),
            (old_day + 10 * HOUR, 60.0),
            (old_day + 13 * HOUR, 62.0),
            (old_day + 15 * HOUR, 55.0),
            (old_day + 20 * HOUR, 45.0),
        ],
        "H-ancient": [(NOW - 500 * DAY, 30.0), (NOW - 390 * DAY, 31.0)],
    }
    async with db.acquire() as conn:
        await conn.executemany(
            ADD_POINT,
            [(customer, at, score) for customer, rows in points.items() for at, score in rows],
        )
        # Nothing covers 2029 yet: the rows wait in the default partition.
        assert await conn.fetchval(f"SELECT count(*) FROM {HISTORY_DEFAULT}") == 14  # noqa: S608
        await conn.execute(
            """
            INSERT INTO intervention (intervention_id, customer_id, state, triggers, gaps, actions,
                priority, threshold, health_at_open, opened_at, acknowledged_at, resolved_at,
                health_at_resolve, closed_at, updated_at)
            VALUES ('iv-1', 'H-closed', 'resolved', '[]', '[]', '{}', 1, 50, 30, $1, $1, $2, 30,
                    $2, $2)
            """,
            close - DAY,
            close,
        )
        guard_before = await conn.fetchval(
            GUARD,
            close,
        )

    pruned = await rounds(db, NOW, terms)

    async with db.acquire() as conn:
        left = {
            (r["customer_id"], r["at"], r["score"])
            for r in await conn.fetch("SELECT customer_id, at, score FROM journey_health_history")
        }
        parts = {
            r["relname"]: r["bound"]
            for r in await conn.fetch(
                """
                SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound
                FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent = 'journey_health_history'::regclass
                """
            )
        }
        in_default = await conn.fetchval(f"SELECT count(*) FROM {HISTORY_DEFAULT}")  # noqa: S608
        guard_after = await conn.fetchval(
            GUARD,
            close,
        )
    wanted = {("H-peak", old_day + 10 * HOUR, 70.0), ("H-peak", old_day + 20 * HOUR, 40.0)}
    wanted |= {("H-peak", recent_day + h * HOUR, 50.0 + h) for h in (1, 5, 9)}
    wanted |= {
        ("H-closed", old_day + 8 * HOUR, 80.0),
        ("H-closed", old_day + 10 * HOUR, 60.0),
        ("H-closed", old_day + 13 * HOUR, 62.0),
        ("H-closed", old_day + 20 * HOUR, 45.0),
    }
    # The ancient points: one in a month past the horizon (dropped with it), one within it.
    wanted |= {("H-ancient", NOW - 390 * DAY, 31.0)}
    assert left == wanted
    assert guard_after == guard_before == 62.0
    assert in_default == 0
    assert "journey_health_history_legacy" not in parts  # its months are past the horizon
    months = sorted(name for name in parts if name.startswith("journey_health_history_p"))
    assert months[-1] == f"journey_health_history_p{NOW.year}{NOW.month + 2:02d}"
    horizon = NOW - timedelta(days=terms.history_keep.days)
    assert months[0] == f"journey_health_history_p{horizon.year}{horizon.month:02d}"
    assert pruned.partitions["journey_health_history"] >= 1
    # Downsampled: two of the peak day, one of the close day; the ancient point in no month.
    assert pruned.rows["journey_health_history"] == 2 + 1 + 1


# --- the idempotency promise ------------------------------------------------------------------


async def test_a_retry_inside_the_dedupe_window_is_a_duplicate_and_one_beyond_it_still_counts_once(
    db: asyncpg.Pool, base_settings: Settings, terms: Terms
) -> None:
    """The engine scores an event; 13 days later (the partitions applied up to then) the
    pruning keeps its dedupe row and a retry is a duplicate: the row still names the first
    copy's offset. Past the window the row is gone and a retry is recorded again — and the
    standing outcome under its key absorbs it, so health does not move either way."""
    window = timedelta(hours=base_settings.scoring_dedupe_window_hours)
    assert window >= timedelta(hours=base_settings.events_retention_hours) + DAY
    first = datetime.now(UTC)
    scorer = Scorer(db)
    original = event(
        "R-1",
        "r-1",
        first - HOUR,
        ("call_centre", "call.answered", {"wait_seconds": 700, "first_contact_resolution": False}),
    )
    await scorer.batch([original], first)

    async def state() -> tuple[Any, ...]:
        async with db.acquire() as conn:
            dedupe = await conn.fetchrow(
                """
                SELECT "offset", processed_at FROM processed_event
                WHERE source = 'lifecycle' AND event_id = 'r-1'
                """
            )
            health = await conn.fetch(
                """
                SELECT touchpoint, s, w, t_ref, outcomes FROM touchpoint_health
                WHERE customer_id = 'R-1'
                """
            )
            journey = await conn.fetchval(
                "SELECT score FROM journey_health WHERE customer_id = 'R-1'"
            )
            outcomes = await conn.fetchval("SELECT count(*) FROM outcome WHERE customer_id = 'R-1'")
        return (
            (None if dedupe is None else dict(dedupe)),
            [dict(r) for r in health],
            journey,
            outcomes,
        )

    dedupe, health, journey, outcomes = await state()
    assert dedupe is not None
    assert dedupe["offset"] == 0
    assert outcomes == 2

    inside = first + window - DAY
    async with db.acquire() as conn:
        await _watermarks(conn, inside)
    await rounds(db, inside, terms)
    assert (await state())[0] == dedupe, "the pruning took a row inside the window"
    await scorer.batch([original], inside)  # the retry, at offset 1
    assert await state() == (dedupe, health, journey, outcomes)

    beyond = first + window + DAY
    async with db.acquire() as conn:
        await _watermarks(conn, beyond)
    assert (await rounds(db, beyond, terms)).rows["processed_event"] == 1
    assert (await state())[0] is None
    await scorer.batch([original], beyond)  # recorded afresh: at offset 2
    again = await state()
    assert again[0] is not None
    assert again[0]["offset"] == 2
    assert again[1:] == (health, journey, outcomes)


# --- the reopen guard ---------------------------------------------------------------------------


async def test_downsampled_history_keeps_the_reopen_guards_answer(
    db: asyncpg.Pool, terms: Terms
) -> None:
    """With a cooldown of 120 days, whether a new case may open 60 days after the last one
    closed rests on the history since the close: health back to threshold + margin (60)? One
    customer reached 65 mid-morning of one day and ended it at 42; the other's close fell at
    noon of a day whose morning read 70 and whose afternoon reached 62. Both days are long
    past full resolution. Three breaches of one promise in an hour then open a new case for
    both, before the pruning and after it — keeping only the last of a day, or the highest
    of a day across the close, would have held both back."""
    document = CATALOGUE.policy.interventions.model_copy(update={"cooldown_days": 120.0})
    catalogue = dataclasses.replace(
        CATALOGUE, policy=CATALOGUE.policy.model_copy(update={"interventions": document})
    )
    close = (NOW - 60 * DAY).replace(hour=12)
    peak_day = (close + 10 * DAY).replace(hour=0)
    async with db.acquire() as conn:
        for customer in ("G-peak", "G-noon"):
            await conn.execute(
                """
                INSERT INTO intervention (intervention_id, customer_id, state, triggers, gaps,
                    actions, priority, threshold, health_at_open, opened_at, acknowledged_at,
                    assignee, resolved_at, outcome_note, health_at_resolve, closed_at, updated_at)
                VALUES ($1, $2, 'resolved', '[]', '[]', '{}', 5, 50, 30, $3, $3, 'ops', $4,
                        'called', 30, $4, $4)
                """,
                f"iv-{customer}",
                customer,
                close - 2 * DAY,
                close,
            )
            # Below the line every few hours since a week before the close ...
            await conn.executemany(
                ADD_POINT,
                [
                    (customer, close - 7 * DAY + n * 5 * HOUR, 40.0 + n % 7)
                    for n in range(int(66 * 24 / 5))
                ],
            )
        await conn.executemany(
            ADD_POINT,
            [
                ("G-peak", peak_day + 9 * HOUR + timedelta(minutes=7), 65.0),
                ("G-peak", peak_day + 18 * HOUR + timedelta(minutes=7), 42.0),
                ("G-noon", close - 4 * HOUR + timedelta(minutes=7), 70.0),
                ("G-noon", close + HOUR + timedelta(minutes=7), 62.0),
                ("G-noon", close + 8 * HOUR + timedelta(minutes=7), 45.0),
            ],
        )
    scorer = Scorer(db, catalogue)

    def breaches(customer: str) -> list[dict[str, Any]]:
        return [
            event(
                customer,
                f"{customer}-{n}",
                NOW - timedelta(minutes=50 - 10 * n),
                ("web", "page.viewed", {"load_seconds": 6.1}),
            )
            for n in range(3)
        ]

    async def decisions() -> dict[str, Any]:
        found = {}
        for customer in ("G-peak", "G-noon"):
            seen = await probe(db, scorer, customer, breaches(customer), NOW)
            found[customer] = seen["interventions"]
        return found

    before = await decisions()
    pruned = await rounds(db, NOW, terms, catalogue)
    after = await decisions()

    assert pruned.rows["journey_health_history"] > 100, pruned
    assert after == before
    for customer, interventions in before.items():
        states = [iv["state"] for iv in interventions]
        assert states == ["resolved", "open"], (customer, states)
        reasons = orjson.loads(interventions[-1]["triggers"])
        assert [t["kind"] for t in reasons] == ["repeated_breach"], reasons
    async with db.acquire() as conn:
        best = {
            r["customer_id"]: r["best"]
            for r in await conn.fetch(
                """
                SELECT customer_id, max(score) AS best FROM journey_health_history
                WHERE at > $1 GROUP BY customer_id
                """,
                close,
            )
        }
    assert best == {"G-peak": 65.0, "G-noon": 62.0}


# --- the outboxes ---------------------------------------------------------------------------


async def test_finished_webhook_deliveries_leave_after_their_retention_with_their_attempts(
    db: asyncpg.Pool, base_settings: Settings
) -> None:
    """The other half of the outboxes' lifecycle (docs/scoring.md, "Lifecycle"): outbox rows
    leave when they are published or fanned out; a delivery, once delivered, failed or
    forbidden, stays in the log 30 days and then goes with its attempts, by the api's
    dispatcher. A pending one stays however old."""
    subscription = "wh_" + "a" * 26
    async with db.acquire() as conn:
        await conn.execute(
            """
            INSERT INTO webhook_subscription (id, url, kinds, nonce, created_at, updated_at)
            VALUES ($1, 'https://crm.example/hook', ARRAY['intervention.opened'], $2, $3, $3)
            """,
            subscription,
            bytes(16),
            NOW - 100 * DAY,
        )
        deliveries = [
            ("old-delivered", "delivered", NOW - 31 * DAY),
            ("old-failed", "failed", NOW - 40 * DAY),
            ("old-pending", "pending", NOW - 40 * DAY),
            ("recent-delivered", "delivered", NOW - 29 * DAY),
        ]
        for n, (delivery, state, created) in enumerate(deliveries):
            await conn.execute(
                """
                INSERT INTO webhook_delivery (id, subscription_id, outbox_id, kind,
                    intervention_id, customer_id, payload, event_at, state, next_attempt_at,
                    give_up_at, created_at)
                VALUES ($1, $2, $3, 'intervention.opened', 'iv', 'W-1', '{}', $4, $5, $6,
                        $4::timestamptz + interval '3 days', $4)
                """,
                delivery,
                subscription,
                n,
                created,
                state,
                created if state == "pending" else None,
            )
            await conn.execute(
                """
                INSERT INTO webhook_attempt
                    (delivery_id, attempt, attempted_at, status, duration_ms)
                VALUES ($1, 1, $2, 200, 12)
                """,
                delivery,
                created,
            )
    dispatcher = WebhookDispatcher(
        db, base_settings, ApiMetrics(CollectorRegistry()), clock=lambda: NOW
    )
    try:
        assert await dispatcher.prune() == 2
    finally:
        await dispatcher.aclose()
    async with db.acquire() as conn:
        assert await _remaining(conn, "SELECT id FROM webhook_delivery") == {
            "old-pending",
            "recent-delivered",
        }
        assert await _remaining(conn, "SELECT delivery_id FROM webhook_attempt") == {
            "old-pending",
            "recent-delivered",
        }


async def test_the_reopen_guard_is_read_from_the_newest_closed_case(db: asyncpg.Pool) -> None:
    """A customer with a year of closed cases: the guard is the newest one's, and so is
    "recovered since": health went back above the line after each older close, never after
    the newest. A customer whose newest case expired is recovered by definition."""
    closes = [NOW - (300 - 60 * n) * DAY for n in range(5)]  # the newest 60 days ago
    async with db.acquire() as conn:
        for n, close in enumerate(closes):
            for customer, state in (("R-resolved", "resolved"), ("R-expired", "expired")):
                last = n == len(closes) - 1
                await conn.execute(
                    """
                    INSERT INTO intervention (intervention_id, customer_id, state, triggers,
                        gaps, actions, priority, threshold, health_at_open, opened_at,
                        resolved_at, health_at_resolve, closed_at, updated_at)
                    VALUES ($1, $2, $3, '[]', '[]', '{}', 5, 50, 30, $4, $5, $6, $4, $4)
                    """,
                    f"iv-{customer}-{n}",
                    customer,
                    state if last else "resolved",
                    close,
                    close if state == "resolved" or not last else None,
                    30.0 + n,
                )
                await conn.execute(ADD_POINT, customer, close - DAY, 35.0)
                # Back above the line + margin after every close but the newest.
                score = 45.0 if last else 80.0
                await conn.execute(ADD_POINT, customer, close + 10 * DAY, score)
        states = await load_state(
            conn,
            ["R-resolved", "R-expired", "R-none"],
            deadline_refs=(),
            breach_window_start=NOW - 30 * DAY,
            recovery_margin=10.0,
        )
    resolved = states["R-resolved"].guard
    assert (resolved.closed_at, resolved.health_at_close, resolved.recovered) == (
        closes[-1],
        34.0,
        False,
    )
    expired = states["R-expired"].guard
    assert (expired.closed_at, expired.recovered) == (closes[-1], True)
    assert states["R-none"].guard == NO_GUARD

"""Scoring end to end on the real broker and database: state equals a recomputation,
duplicates count once, poison goes to the dead-letter topic, deadlines fire by themselves."""

from __future__ import annotations

import asyncio
import math
import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from tests.scoring.pipeline.conftest import SETTLE_S, Pipeline, running_scoring
from tests.scoring.pipeline.ledger import CATALOGUE, START, make_event, recompute
from touchpulse_shared.contract import EVENT_ADAPTER, ExperienceEventV1, encode_record


async def test_state_equals_a_recomputation_and_duplicates_count_once(pipeline: Pipeline) -> None:
    rng = random.Random(7)
    customers = [f"C-{i}" for i in range(15)]
    events = [
        make_event(
            n,
            rng.choice(customers),
            START + timedelta(minutes=17 * n),
            rng.choice(["call", "invoice", "survey", "delivery"]),
            rng,
        )
        for n in range(240)
    ]
    duplicates = rng.sample(events, 40)  # a client retrying: same (source, event_id)
    mixed = events + duplicates
    rng.shuffle(mixed)  # arrival order is not event order
    async with running_scoring(pipeline.settings):
        await pipeline.produce(mixed)
        await pipeline.wait_for("SELECT count(*) FROM processed_event", len(events))
        await pipeline.wait_for(
            "SELECT coalesce(sum(next_offset), 0) FROM consumer_offset", len(mixed)
        )

    outcomes = await pipeline.fetch("SELECT * FROM outcome")
    # Each event stands behind its outcomes exactly once.
    behind: dict[str, int] = defaultdict(int)
    for o in outcomes:
        for ref in o["event_ids"]:
            behind[ref] += 1
    per_event = {f"test-source/{e.event_id}" for e in events}
    assert set(behind) == per_event
    rows = await pipeline.fetch("SELECT * FROM journey_health")
    journeys = {r["customer_id"]: r["score"] for r in rows}
    expected = recompute(outcomes, {r["customer_id"]: r["as_of"] for r in rows})
    assert set(journeys) == set(expected)
    for customer, score in expected.items():
        assert score is not None
        assert math.isclose(journeys[customer], score, rel_tol=1e-9, abs_tol=1e-9), customer
    as_of = {
        r["customer_id"]: r["as_of"] for r in await pipeline.fetch("SELECT * FROM journey_health")
    }
    for customer in expected:
        assert as_of[customer] == max(e.occurred_at for e in events if e.customer_id == customer)


async def test_poison_records_go_to_the_dead_letter_topic_and_good_ones_apply(
    pipeline: Pipeline,
) -> None:
    rng = random.Random(3)
    good = [
        make_event(n, f"P-{n % 3}", START + timedelta(minutes=n), "call", rng) for n in range(12)
    ]
    valid = encode_record(good[0], producer="ingest", received_at=START)
    unknown_touchpoint = make_event(100, "P-9", START, "call", rng).model_copy(
        update={"touchpoint": "hologram"}
    )
    wrong_kind = make_event(101, "P-9", START, "call", rng).model_copy(
        update={"measures": {"wait_seconds": True}}
    )
    poison = [
        (b"P-1", b"\x00\xffnot json at all", valid.headers),
        (b"P-1", valid.value, []),  # a foreign producer: no Touchpulse headers
        encode_record_parts(unknown_touchpoint),
        encode_record_parts(wrong_kind),
    ]
    async with running_scoring(pipeline.settings):
        await pipeline.produce(good, raw=poison)
        # The wrong-kind record is refused before it is recorded as processed (the
        # catalogue check ingest also applies), so its corrected resend would be scored.
        await pipeline.wait_for("SELECT count(*) FROM processed_event", len(good))
        await pipeline.wait_for(
            "SELECT count(*) FROM kafka_outbox WHERE topic = $1",
            0,
            pipeline.settings.dead_letter_topic,
        )
        scored = await pipeline.fetch("SELECT customer_id FROM journey_health ORDER BY 1")
        assert [r["customer_id"] for r in scored] == ["P-0", "P-1", "P-2"]

    reasons = await _dead_letter_reasons(pipeline, 4)
    assert sorted(reasons) == sorted(
        ["not_json", "foreign_producer", "unknown_touchpoint", "wrong_measure_kind"]
    )


def encode_record_parts(event: ExperienceEventV1) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    record = encode_record(event, producer="ingest", received_at=START)
    return record.key, record.value, record.headers


async def _dead_letter_reasons(pipeline: Pipeline, count: int) -> list[str]:
    consumer = AIOKafkaConsumer(
        pipeline.settings.dead_letter_topic,
        bootstrap_servers=pipeline.settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    reasons: list[str] = []
    try:
        async with asyncio.timeout(SETTLE_S):
            while len(reasons) < count:
                for batch in (await consumer.getmany(timeout_ms=300)).values():
                    for record in batch:
                        headers = dict(record.headers)
                        assert (
                            headers["touchpulse-dlq-topic"]
                            == pipeline.settings.events_topic.encode()
                        )
                        assert int(headers["touchpulse-dlq-offset"]) >= 0
                        reasons.append(headers["touchpulse-dlq-reason"].decode())
    finally:
        await consumer.stop()
    return reasons


async def test_a_deadline_that_passes_breaches_and_a_late_delivery_records_the_real_gap(
    pipeline: Pipeline,
) -> None:
    now = [START]
    order = EVENT_ADAPTER.validate_python(
        {
            "event_id": "o-1",
            "source": "shop",
            "customer_id": "D-1",
            "touchpoint": "sales",
            "type": "order.placed",
            "occurred_at": START,
            "journey_id": "order-1",
            "measures": {"price_matches_quote": True},
        }
    )
    async with running_scoring(pipeline.settings, clock=lambda: now[0]):
        await pipeline.produce([order])
        await pipeline.wait_for("SELECT count(*) FROM deadline WHERE state = 'open'", 1)
        before = await pipeline.fetchval(
            "SELECT score FROM journey_health WHERE customer_id = 'D-1'"
        )
        # One kept promise (weight 2) beside the neutral prior (0.8, weight 2): 90, not 100.
        prior = CATALOGUE.policy.prior.for_touchpoint("sales")
        assert before == pytest.approx(100 * (2 + prior.weight * prior.score) / (2 + prior.weight))

        now[0] = START + timedelta(hours=60)  # 12 h past the 48 h promise, no delivery event
        await pipeline.wait_for("SELECT count(*) FROM deadline WHERE state = 'expired'", 1)
        breach = (
            await pipeline.fetch("SELECT * FROM outcome WHERE promise_id = 'delivery-within-48h'")
        )[0]
        assert orjson.loads(breach["actual"]) is None
        assert breach["met"] is False
        assert breach["score"] == 0.0
        after = await pipeline.fetchval(
            "SELECT score FROM journey_health WHERE customer_id = 'D-1'"
        )
        assert isinstance(after, float)
        assert after < 100.0, "the breach moved health with no event"

        delivered = EVENT_ADAPTER.validate_python(
            {
                "event_id": "d-1",
                "source": "carrier",
                "customer_id": "D-1",
                "touchpoint": "delivery",
                "type": "delivery.completed",
                "occurred_at": START + timedelta(hours=72),
                "journey_id": "order-1",
                "measures": {"damaged": False},
            }
        )
        await pipeline.produce([delivered])
        await pipeline.wait_for("SELECT count(*) FROM deadline WHERE state = 'fulfilled'", 1)
        late = await pipeline.fetch(
            "SELECT * FROM outcome WHERE promise_id = 'delivery-within-48h'"
        )
        assert len(late) == 1, "the late delivery superseded the breach by absence"
        assert late[0]["gap"] == 24.0  # hours past the promise
        assert orjson.loads(late[0]["actual"]) == 72.0
        assert math.isclose(late[0]["score"], 0.5)  # 24 h late of a 48 h tolerance


async def test_an_event_dead_lettered_while_judged_leaves_the_customers_health_alone(
    pipeline: Pipeline,
) -> None:
    """Health is read at the newest event time *applied*: an event refused while judged (a
    due_at that is not a time) must not move it — once, it moved it to the wall clock."""
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    call = make_event(1, "E-1", at, "call", random.Random(5))
    bad = EVENT_ADAPTER.validate_python(
        {
            "event_id": "promise-bad",
            "source": "delivery-prod",
            "customer_id": "E-1",
            "touchpoint": "delivery",
            "type": "delivery.promised",
            "occurred_at": at + timedelta(hours=1),
            "journey_id": "order-1",
            "attributes": {"due_at": "tomorrow-ish"},
        }
    )
    async with running_scoring(pipeline.settings):
        await pipeline.produce([call])
        await pipeline.wait_for("SELECT count(*) FROM journey_health", 1)
        before = await pipeline.fetch("SELECT score, as_of FROM journey_health")
        history = await pipeline.fetchval("SELECT count(*) FROM journey_health_history")
        await pipeline.produce([bad])
        await pipeline.wait_for("SELECT coalesce(sum(next_offset), 0) FROM consumer_offset", 2)
    after = await pipeline.fetch("SELECT score, as_of FROM journey_health")
    assert [tuple(r) for r in after] == [tuple(r) for r in before] == [(before[0]["score"], at)]
    assert await pipeline.fetchval("SELECT count(*) FROM journey_health_history") == history

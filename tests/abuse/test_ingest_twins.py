"""Every ingest rule has its scoring twin: a record that breaks one, written straight onto the
events topic, is dead-lettered with the rule's reason and changes no state; and a dead
letter, corrected and replayed from the dead-letter topic with the same ``(source,
event_id)``, is applied (docs/event-contract.md, "Ingest rules and their scoring twins").

The contract's twin (``decode_record``) is covered by test_poison.py and the catalogue's
(``check_event``) by tests/scoring/pipeline/test_catalogue_refusals.py; this file covers the
time window and the replay of dead letters, including one refused while judged (a
``due_at`` that is not a time), whose processed row once stayed behind and made the
corrected replay a "duplicate".
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.scoring.pipeline.conftest import (  # the fixture is re-used here by name
    SETTLE_S,
    Pipeline,
    pipeline,  # noqa: F401
    pipeline_settings,  # noqa: F401
    running_scoring,
)
from tests.scoring.pipeline.ledger import make_event
from touchpulse_shared.contract import EVENT_ADAPTER, ExperienceEventV1, encode_record

Headers = list[tuple[str, bytes]]


async def _send(
    producer: AIOKafkaProducer,
    topic: str,
    event: ExperienceEventV1,
    *,
    producer_name: str = "ingest",
    received_at: datetime | None = None,
    timestamp: datetime | None = None,
) -> tuple[int, int]:
    record = encode_record(
        event, producer=producer_name, received_at=received_at or datetime.now(UTC)
    )
    meta = await (
        await producer.send(
            topic,
            record.value,
            key=record.key,
            headers=record.headers,
            timestamp_ms=None if timestamp is None else int(timestamp.timestamp() * 1000),
        )
    )
    return meta.partition, meta.offset


async def _dead_letters(pipeline: Pipeline, count: int) -> list[Any]:  # noqa: F811
    """The first ``count`` dead letters, as consumed records."""
    consumer = AIOKafkaConsumer(
        pipeline.settings.dead_letter_topic,
        bootstrap_servers=pipeline.settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: list[Any] = []
    try:
        async with asyncio.timeout(SETTLE_S):
            while len(found) < count:
                for batch in (await consumer.getmany(timeout_ms=300)).values():
                    found.extend(batch)
    finally:
        await consumer.stop()
    return found


def _where(record: Any) -> tuple[int, int]:
    headers = dict(record.headers)
    return int(headers["touchpulse-dlq-partition"]), int(headers["touchpulse-dlq-offset"])


async def test_the_time_window_twin_dead_letters_and_changes_no_state(
    pipeline: Pipeline,  # noqa: F811
) -> None:
    settings = pipeline.settings
    skew = timedelta(seconds=settings.ingest_max_clock_skew_s)
    max_age = timedelta(hours=settings.ingest_max_event_age_hours)
    rng = random.Random(5)
    now = datetime.now(UTC).replace(microsecond=0)
    year_2999 = datetime(2999, 1, 1, tzinfo=UTC)

    def event(customer: str, at: datetime) -> ExperienceEventV1:
        return make_event(0, customer, at, "call", rng).model_copy(
            update={"event_id": f"w-{customer}"}
        )

    good = [event(f"W-ok-{n}", now - timedelta(hours=n)) for n in range(3)]
    # Right at the bounds ingest accepts (the bounds themselves are accepted).
    edge_future = event("W-edge-future", now + skew)
    edge_past = event("W-edge-past", now - max_age)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    await producer.start()
    try:
        async with running_scoring(settings):
            topic = settings.events_topic
            refused = {
                # The regression: applied, it anchored the customer's as_of at 2999.
                await _send(producer, topic, event("W-2999", year_2999)): "in year 2999",
                await _send(
                    producer,
                    topic,
                    event("W-ahead", now + skew + timedelta(seconds=1)),
                    received_at=now,
                ): "a second beyond the clock skew",
                await _send(
                    producer,
                    topic,
                    event("W-old", now - max_age - timedelta(seconds=1)),
                    received_at=now,
                ): "a second older than the age limit",
                # A receipt time moved along with the event: later than the record's own
                # timestamp, so it cannot be true.
                await _send(
                    producer, topic, event("W-forged", year_2999), received_at=year_2999
                ): "a forged receipt time",
                # Another producer: judged at the record's timestamp (the broker's bound).
                await _send(
                    producer, topic, event("W-foreign", year_2999), producer_name="backfill"
                ): "another producer's record in 2999",
            }
            for item in (*good, edge_future, edge_past):
                await _send(producer, topic, item, received_at=now)
            applied = len(good) + 2
            await pipeline.wait_for("SELECT count(*) FROM processed_event", applied)
            dead = await _dead_letters(pipeline, len(refused))
            await pipeline.wait_for(
                "SELECT coalesce(sum(next_offset), 0) FROM consumer_offset", applied + len(refused)
            )
    finally:
        await producer.stop()

    reasons = {_where(r): dict(r.headers)["touchpulse-dlq-reason"].decode() for r in dead}
    assert {refused[w]: reasons.get(w) for w in refused} == dict.fromkeys(
        refused.values(), "time_window"
    )
    # No state at all for the refused customers: no processed row, health, outcome.
    for table in ("processed_event", "journey_health", "outcome", "touchpoint_health"):
        rows = await pipeline.fetch(
            f"SELECT DISTINCT customer_id FROM {table} ORDER BY 1"  # noqa: S608
        )
        touched = {r["customer_id"] for r in rows}
        assert touched <= {e.customer_id for e in (*good, edge_future, edge_past)}, table
    latest = await pipeline.fetchval("SELECT max(as_of) FROM journey_health")
    assert isinstance(latest, datetime)
    assert latest <= now + skew


async def test_a_dead_letter_corrected_and_replayed_from_the_dlq_is_applied(
    pipeline: Pipeline,  # noqa: F811
) -> None:
    settings = pipeline.settings
    now = datetime.now(UTC).replace(microsecond=0)
    promised = EVENT_ADAPTER.validate_python(
        {
            "event_id": "promise-1",
            "source": "delivery-prod",
            "customer_id": "D-1",
            "touchpoint": "delivery",
            "type": "delivery.promised",
            "occurred_at": now - timedelta(hours=3),
            "journey_id": "order-1",
            # Only scoring can tell: not a time (refused while judged, after the dedupe).
            "attributes": {"due_at": "tomorrow-ish"},
        }
    )
    typo = make_event(0, "D-2", datetime(2999, 1, 1, tzinfo=UTC), "call", random.Random(3))
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    await producer.start()
    try:
        async with running_scoring(settings):
            await _send(producer, settings.events_topic, promised)
            await _send(producer, settings.events_topic, typo)
            dead = await _dead_letters(pipeline, 2)
            reasons = sorted(dict(r.headers)["touchpulse-dlq-reason"].decode() for r in dead)
            assert reasons == ["bad_due_at", "time_window"]
            await pipeline.wait_for("SELECT coalesce(sum(next_offset), 0) FROM consumer_offset", 2)
            assert await pipeline.fetchval("SELECT count(*) FROM processed_event") == 0
            # The operator fixes each dead letter and replays it: same key, same source and
            # event id, the original headers without the dead-letter ones.
            for record in dead:
                value = orjson.loads(record.value)
                if value["event_id"] == promised.event_id:
                    value["attributes"]["due_at"] = (now + timedelta(days=1)).isoformat()
                else:
                    value["occurred_at"] = (now - timedelta(minutes=5)).isoformat()
                headers = [(n, v) for n, v in record.headers if not n.startswith("touchpulse-dlq-")]
                await (
                    await producer.send(
                        settings.events_topic, orjson.dumps(value), key=record.key, headers=headers
                    )
                )
            await pipeline.wait_for("SELECT count(*) FROM processed_event", 2)
            await pipeline.wait_for(
                "SELECT count(*) FROM deadline WHERE customer_id = 'D-1' AND state = 'open'", 1
            )
            await pipeline.wait_for(
                "SELECT count(*) FROM journey_health WHERE customer_id = 'D-2'", 1
            )
    finally:
        await producer.stop()
    processed = await pipeline.fetch("SELECT source, event_id FROM processed_event ORDER BY 2")
    assert [(r["source"], r["event_id"]) for r in processed] == [
        (typo.source, typo.event_id),
        (promised.source, promised.event_id),
    ]

"""The back-test's topic reader on a real topic: the window by time and by count, records
no service could read counted, and nothing committed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from touchpulse_scoring.backtest.topic import TopicReadError, read_events
from touchpulse_shared.contract import EVENT_ADAPTER, encode_record

WRITTEN = datetime(2026, 11, 20, 12, tzinfo=UTC)


async def _produce(bootstrap: str, topic: str) -> None:
    """Ten events written an hour apart (the broker's timestamps say so), and one record
    that is not an event."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for n in range(10):
            event = EVENT_ADAPTER.validate_python(
                {
                    "event_id": f"e-{n}",
                    "source": "pbx",
                    "customer_id": f"c-{n % 4}",
                    "touchpoint": "call_centre",
                    "type": "call.answered",
                    "occurred_at": WRITTEN + timedelta(hours=n),
                    "measures": {"wait_seconds": 30},
                }
            )
            record = encode_record(event, producer="ingest", received_at=WRITTEN)
            at = WRITTEN + timedelta(hours=n)
            await producer.send_and_wait(
                topic,
                record.value,
                key=record.key,
                headers=record.headers,
                timestamp_ms=int(at.timestamp() * 1000),
            )
        await producer.send_and_wait(
            topic, b"not json", key=b"c-0", timestamp_ms=int(WRITTEN.timestamp() * 1000)
        )
    finally:
        await producer.stop()


async def test_the_window_by_time_and_by_count(
    kafka_bootstrap: str, topic: str, kafka_admin: AIOKafkaAdminClient
) -> None:
    await _produce(kafka_bootstrap, topic)
    groups_before = await kafka_admin.list_consumer_groups()

    everything = await read_events(kafka_bootstrap, topic)
    assert everything.records == 11
    assert sorted(e.event_id for e, _ in everything.events) == [f"e-{n}" for n in range(10)]
    assert sum(everything.undecodable.values()) == 1
    assert everything.partitions == 3

    recent = await read_events(kafka_bootstrap, topic, since=WRITTEN + timedelta(hours=6))
    assert sorted(e.event_id for e, _ in recent.events) == ["e-6", "e-7", "e-8", "e-9"]

    capped = await read_events(kafka_bootstrap, topic, max_records=5)
    assert capped.records + capped.truncated == 11
    assert 4 <= capped.records <= 5  # the newest of each partition, in proportion
    kept = {int(e.event_id[2:]) for e, _ in capped.events}
    # A customer's events share a partition, in the order written: what is left out of a
    # partition is its oldest, so a kept event's later ones of the same customer are kept.
    for n in kept:
        assert all(later in kept for later in range(n + 4, 10, 4)), (n, kept)

    assert await kafka_admin.list_consumer_groups() == groups_before

    with pytest.raises(TopicReadError):
        await read_events(kafka_bootstrap, topic + "-missing")

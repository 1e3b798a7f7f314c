"""aiokafka against the real Kafka 4.x broker: the client behaviours Touchpulse relies on.

aiokafka's own CI does not test Kafka 4, so these pin down what the services need:
idempotent produce with acks=all, batched produce, and a consumer group that joins,
commits explicit offsets and resumes from them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

# Generous bound for a group join and the first fetch on a loaded 2-core machine.
WAIT_S = 30.0


def _producer(bootstrap: str) -> AIOKafkaProducer:
    # Every delivery setting spelled out: aiokafka's defaults (acks=1, no idempotence) are
    # not what "202 means the broker has it" needs.
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        request_timeout_ms=10_000,
    )


def _consumer(bootstrap: str, topic: str, group: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=100,
        isolation_level="read_committed",
    )


async def _take(consumer: AIOKafkaConsumer, count: int) -> list[Any]:
    # aiokafka ships no types: its ConsumerRecord is Any to mypy.
    records: list[Any] = []
    async with asyncio.timeout(WAIT_S):
        while len(records) < count:
            batch = await consumer.getmany(timeout_ms=500)
            for part in batch.values():
                records.extend(part)
    return records


async def test_idempotent_produce_with_acks_all_is_acknowledged_and_readable(
    kafka_bootstrap: str, topic: str
) -> None:
    producer = _producer(kafka_bootstrap)
    await producer.start()
    try:
        meta = await producer.send_and_wait(
            topic, b'{"n": 1}', key=b"customer-1", headers=[("content-type", b"application/json")]
        )
        assert meta.offset == 0
        # The broker handed this producer an id (sequence numbers are checked against it):
        # idempotence was really negotiated, not just asked for.
        assert producer._txn_manager.producer_id >= 0
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, meta.partition)
        consumer.assign([tp])
        (record,) = await _take(consumer, 1)
        assert record.key == b"customer-1"
        assert record.value == b'{"n": 1}'
        assert record.headers == (("content-type", b"application/json"),)
    finally:
        await consumer.stop()


async def test_same_key_lands_on_one_partition_in_order(kafka_bootstrap: str, topic: str) -> None:
    producer = _producer(kafka_bootstrap)
    await producer.start()
    try:
        metas = [
            await producer.send_and_wait(topic, str(i).encode(), key=b"customer-7")
            for i in range(5)
        ]
    finally:
        await producer.stop()
    assert len({m.partition for m in metas}) == 1
    assert [m.offset for m in metas] == list(range(metas[0].offset, metas[0].offset + 5))


async def test_batched_produce_is_one_request_per_partition(
    kafka_bootstrap: str, topic: str
) -> None:
    producer = _producer(kafka_bootstrap)
    await producer.start()
    try:
        batch = producer.create_batch()
        for i in range(50):
            assert batch.append(key=None, value=f"event-{i}".encode(), timestamp=None) is not None
        future = await producer.send_batch(batch, topic, partition=1)
        meta = await asyncio.wait_for(future, WAIT_S)
        assert meta.partition == 1
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 1)])
        records = await _take(consumer, 50)
        assert [r.value for r in records] == [f"event-{i}".encode() for i in range(50)]
    finally:
        await consumer.stop()


async def test_consumer_group_joins_commits_and_resumes(kafka_bootstrap: str, topic: str) -> None:
    producer = _producer(kafka_bootstrap)
    await producer.start()
    try:
        for i in range(10):
            await producer.send_and_wait(topic, f"{i}".encode(), key=b"one-customer")
    finally:
        await producer.stop()
    group = f"{topic}-group"

    first = _consumer(kafka_bootstrap, topic, group)
    await first.start()
    try:
        records = await _take(first, 10)
        assert first.assignment(), "the consumer joined the group and got partitions"
        # Process six, then commit exactly what was processed: last offset + 1.
        done = records[:6]
        last = done[-1]
        tp = TopicPartition(topic, last.partition)
        await first.commit({tp: last.offset + 1})
        assert await first.committed(tp) == last.offset + 1
    finally:
        await first.stop()

    second = _consumer(kafka_bootstrap, topic, group)
    await second.start()
    try:
        rest = await _take(second, 4)
        assert [r.value for r in rest] == [b"6", b"7", b"8", b"9"]
    finally:
        await second.stop()

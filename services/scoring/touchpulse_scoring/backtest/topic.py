"""The events a back-test re-judges: read from the events topic, and nothing else done to it.

Read-only by construction: the consumer has no group (so it cannot join one, and commits
nothing), partitions are assigned, not subscribed, and auto-commit is off. Live scoring's
positions, its group's lag and the topic are left exactly as they were.

The window is fixed when the read starts: from the first offset at or after ``since``
(``offsets_for_times``; from the beginning of what retention kept without it) up to the
end offsets at that moment, so events that arrive during a long read are not chased.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition

from touchpulse_shared.contract import ExperienceEventV1, RecordRejected, decode_record
from touchpulse_shared.kafka import records as kafka_records

# A header name that is not UTF-8 must reach decode_record (counted), not fail the fetch.
kafka_records.install()

#: Records per fetch: large enough that the fetch is not the back-test's bottleneck.
_BATCH = 5000
#: How long one fetch waits for records that the end offsets promise.
_FETCH_MS = 1000
#: A read that gets nothing for this long while records are still due has lost the broker.
STALL_S = 30.0

#: (records read, records in the window) now and then.
ReadProgress = Callable[[int, int], None]


class TopicReadError(RuntimeError):
    """The events cannot be read as asked (no such topic, the broker stopped answering)."""


@dataclass
class Retained:
    """The events of the window, each with when ingest received it (for erasures)."""

    events: list[tuple[ExperienceEventV1, datetime]] = field(default_factory=list)
    records: int = 0
    #: Records the contract refuses (live scoring dead-lettered them): reason -> count.
    undecodable: dict[str, int] = field(default_factory=dict)
    partitions: int = 0
    #: Records left out at the window's old end to keep within ``max_records``.
    truncated: int = 0


def _consumer(bootstrap_servers: str, request_timeout_ms: int) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_records=_BATCH,
        request_timeout_ms=request_timeout_ms,
    )


async def read_events(
    bootstrap_servers: str,
    topic: str,
    *,
    since: datetime | None = None,
    max_records: int | None = None,
    progress: ReadProgress | None = None,
    request_timeout_ms: int = 30_000,
) -> Retained:
    """The records of ``topic`` from ``since`` (or its beginning) to its end offsets now,
    decoded; with ``max_records``, only the newest that many (spread over partitions in
    proportion to what each holds)."""
    consumer = _consumer(bootstrap_servers, request_timeout_ms)
    await consumer.start()
    try:
        partitions = await _partitions(consumer, topic)
        consumer.assign(partitions)
        starts = await _starts(consumer, partitions, since)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        found = Retained(partitions=len(partitions))
        if max_records is not None:
            starts, found.truncated = _newest(starts, ends, max_records)
        for tp in partitions:
            consumer.seek(tp, starts[tp])
        await _read(consumer, starts, ends, found, progress)
        return found
    finally:
        await consumer.stop()


async def read_by_partition(
    bootstrap_servers: str,
    topic: str,
    *,
    since: datetime | None = None,
    progress: ReadProgress | None = None,
    request_timeout_ms: int = 30_000,
) -> AsyncIterator[tuple[int, int, Retained]]:
    """The same window as :func:`read_events`, one partition at a time: ``(index,
    partitions, its records)``. A partition holds every event of its customers (the key is
    the customer), so the caller can judge it and let it go before the next: memory is one
    partition's events, not the topic's. The end offsets are all taken before the first
    partition is read, so the window is the same as one read of the whole topic."""
    consumer = _consumer(bootstrap_servers, request_timeout_ms)
    await consumer.start()
    try:
        partitions = await _partitions(consumer, topic)
        consumer.assign(partitions)
        starts = await _starts(consumer, partitions, since)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        for index, tp in enumerate(partitions):
            consumer.assign([tp])
            consumer.seek(tp, starts[tp])
            found = Retained(partitions=1)
            await _read(consumer, {tp: starts[tp]}, {tp: ends[tp]}, found, progress)
            yield index, len(partitions), found
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    found = consumer.partitions_for_topic(topic)
    if not found:
        await consumer._client.force_metadata_update()
        found = consumer.partitions_for_topic(topic)
    if not found:
        raise TopicReadError(f"the events topic {topic} does not exist")
    return [TopicPartition(topic, p) for p in sorted(found)]


async def _starts(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], since: datetime | None
) -> dict[TopicPartition, int]:
    beginnings: dict[TopicPartition, int] = await consumer.beginning_offsets(partitions)
    if since is None:
        return beginnings
    ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
    at = await consumer.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in partitions})
    # No record at or after ``since`` on a partition: nothing of it is in the window.
    return {
        tp: ends[tp] if at.get(tp) is None else max(at[tp].offset, beginnings[tp])
        for tp in partitions
    }


def _newest(
    starts: dict[TopicPartition, int], ends: dict[TopicPartition, int], limit: int
) -> tuple[dict[TopicPartition, int], int]:
    total = sum(max(0, ends[tp] - starts[tp]) for tp in starts)
    if total <= limit:
        return starts, 0
    moved = {}
    for tp, start in starts.items():
        held = max(0, ends[tp] - start)
        moved[tp] = ends[tp] - (held * limit) // total
    return moved, total - sum(ends[tp] - moved[tp] for tp in moved)


async def _read(
    consumer: AIOKafkaConsumer,
    starts: dict[TopicPartition, int],
    ends: dict[TopicPartition, int],
    found: Retained,
    progress: ReadProgress | None,
) -> None:
    due = sum(max(0, ends[tp] - starts[tp]) for tp in starts)
    remaining = {tp for tp in starts if ends[tp] > starts[tp]}
    undecodable: dict[str, int] = {}
    last_record = time.monotonic()
    while remaining:
        batches = await consumer.getmany(*remaining, timeout_ms=_FETCH_MS, max_records=_BATCH)
        got = False
        for tp, part in batches.items():
            for record in part:
                if record.offset >= ends[tp]:
                    continue
                got = True
                found.records += 1
                try:
                    decoded = decode_record(record.key, record.value, list(record.headers or ()))
                except RecordRejected as exc:
                    reason = exc.reason.value
                    undecodable[reason] = undecodable.get(reason, 0) + 1
                    continue
                found.events.append((decoded.event, decoded.received_at))
        for tp in list(remaining):
            # A transaction marker or a compacted gap can end a partition without a record.
            if await consumer.position(tp) >= ends[tp]:
                remaining.discard(tp)
        now = time.monotonic()
        if got:
            last_record = now
        elif now - last_record > STALL_S:
            raise TopicReadError(
                f"no records for {STALL_S:g} s with {due - found.records} still due"
            )
        if progress is not None:
            progress(found.records, due)
    found.undecodable = dict(sorted(undecodable.items()))

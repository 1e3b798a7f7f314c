"""The scoring consumer: Kafka in, one PostgreSQL transaction per batch, offsets in both.

Order of operations for one batch (the exactly-once effect rests on it):

1. ``getmany`` hands out at most ``max_records`` records (raw bytes; decoding is per record
   so one poison record cannot fail the batch).
2. One PostgreSQL transaction: lock this group's offset rows of the batch's partitions,
   drop records below the stored next offset (already applied — a redelivery or a zombie),
   and if a partition's first record lies *beyond* it, the batch is refused and the
   partition rewound (records would otherwise be skipped); then dedupe on
   ``(source, event_id)``, write outcomes, health, deadlines, interventions and outbox rows,
   and store the next offsets.
3. Commit the transaction.
4. Commit the same offsets to Kafka — only a hint for tools and lag metrics: on assignment
   the position is restored from PostgreSQL, never from Kafka.

A database failure in 2-3 pauses the partitions, rewinds them to the batch's first offsets
and retries with backoff, so nothing is skipped and nothing is applied twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from touchpulse_scoring.store import (
    Rewind,
    claim_batch,
    mark_caught_up,
    skip_to,
    store_offsets,
    stored_offsets,
)
from touchpulse_shared.db import Conn

log = structlog.get_logger(__name__)

# Backoff while PostgreSQL is unreachable: quick first retries, then at most every 5 s.
_BACKOFF_START_S = 0.2
_BACKOFF_MAX_S = 5.0
_IDLE_MARK_S = 1.0


@dataclass
class Batch:
    """Records handed out by one ``getmany``, with what the database says about them."""

    records: list[Any]
    first_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    next_offsets: dict[TopicPartition, int] = field(default_factory=dict)


#: Applies a batch's records inside its transaction and returns what it did, which the
#: runner hands to ``on_batch`` once the transaction has committed.
BatchHandler = Callable[[Conn, list[Any]], Awaitable[Any]]


class _Positions(ConsumerRebalanceListener):  # type: ignore[misc]
    """Restores each assigned partition's position from PostgreSQL."""

    def __init__(self, runner: ConsumerRunner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # Let the batch in flight finish (its transaction decides); offsets live in the DB.
        async with self.runner.processing:
            log.info("scoring.partitions.revoked", partitions=len(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.runner.restore_positions(list(assigned))
        log.info("scoring.partitions.assigned", partitions=sorted(tp.partition for tp in assigned))


class ConsumerRunner:
    def __init__(
        self,
        *,
        consumer: AIOKafkaConsumer,
        pool: asyncpg.Pool,
        group: str,
        topic: str,
        handler: BatchHandler,
        max_records: int,
        on_batch: Callable[[int, float, Any], None] = lambda n, s, r: None,
        on_data_lost: Callable[[TopicPartition, int], None] = lambda tp, n: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.consumer = consumer
        self.pool = pool
        self.group = group
        self.topic = topic
        self.handler = handler
        self.max_records = max_records
        self.on_batch = on_batch
        self.on_data_lost = on_data_lost
        self.clock = clock
        self._last_idle_mark = 0.0
        self.processing = asyncio.Lock()
        self._pending_hint: dict[TopicPartition, int] = {}
        self._hinting: asyncio.Task[None] | None = None
        self.last_progress = time.monotonic()
        self.batches = 0

    def subscribe(self) -> None:
        self.consumer.subscribe([self.topic], listener=_Positions(self))

    async def restore_positions(self, partitions: list[TopicPartition]) -> None:
        if not partitions:
            return
        async with self.pool.acquire() as conn:
            stored = await stored_offsets(conn, self.group, partitions)
        for tp in partitions:
            if tp in stored:
                self.consumer.seek(tp, stored[tp])
            else:
                # Nothing applied yet from this partition: start at its beginning.
                await self.consumer.seek_to_beginning(tp)

    async def run(self, stopping: asyncio.Event) -> None:
        backoff = _BACKOFF_START_S
        while not stopping.is_set():
            self.last_progress = time.monotonic()
            batches = await self.consumer.getmany(timeout_ms=200, max_records=self.max_records)
            records = [r for part in batches.values() for r in part]
            if not records:
                await self._idle()
                continue
            started = time.perf_counter()
            try:
                async with self.processing:
                    result = await self._apply(records)
            except Rewind as exc:
                await self._rewind(exc.positions)
                continue
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("scoring.database.unavailable", error=str(exc), retry_in_s=backoff)
                await self._wait_for_database(records, backoff, stopping)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
                continue
            backoff = _BACKOFF_START_S
            self.batches += 1
            self.on_batch(len(records), time.perf_counter() - started, result)

    async def _idle(self) -> None:
        """Nothing fetched: partitions at their end are applied up to now (at most once a
        second, so an idle consumer does not write constantly)."""
        if time.monotonic() - self._last_idle_mark < _IDLE_MARK_S:
            return
        self._last_idle_mark = time.monotonic()
        caught_up = []
        for tp in self.consumer.assignment():
            end = self.consumer.highwater(tp)
            if end is not None and await self.consumer.position(tp) >= end:
                caught_up.append(tp)
        if not caught_up:
            return
        try:
            async with self.pool.acquire() as conn:
                await mark_caught_up(conn, self.group, caught_up, self.clock())
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            log.warning("scoring.watermark.failed", error=str(exc))

    async def _rewind(self, positions: Mapping[TopicPartition, int]) -> None:
        beginnings = await self.consumer.beginning_offsets(list(positions))
        for tp, stored in positions.items():
            start = beginnings.get(tp, 0)
            offset = stored
            if start > stored:
                # Retention deleted records before scoring applied them. Never silent: this
                # is reported as an incident, then consumption goes on from what exists.
                log.error(
                    "scoring.data_lost",
                    topic=tp.topic,
                    partition=tp.partition,
                    first_missing=stored,
                    first_available=start,
                    lost=start - stored,
                )
                self.on_data_lost(tp, start - stored)
                async with self.pool.acquire() as conn:
                    await skip_to(conn, self.group, tp, start)
                offset = start
            log.warning("scoring.batch.rewind", topic=tp.topic, partition=tp.partition, to=offset)
            self.consumer.seek(tp, offset)

    async def _apply(self, records: list[Any]) -> Any:
        async with self.pool.acquire() as conn:
            try:
                nexts, result = await self._apply_in_transaction(conn, records)
            except asyncpg.InvalidCachedStatementError as exc:
                # DDL (a migration) changed a table under a statement this connection had
                # prepared: the transaction was aborted, nothing of the batch applied, and
                # asyncpg dropped the connection's statement cache. Once more, on the same
                # connection, re-prepared; a second failure is an ordinary database error.
                log.warning(
                    "scoring.batch.statement_cache_invalidated",
                    error=str(exc),
                    records=len(records),
                )
                nexts, result = await self._apply_in_transaction(conn, records)
        self._hint(nexts)
        return result

    def _hint(self, nexts: dict[TopicPartition, int]) -> None:
        """After the database commit, tell Kafka the offsets too: a hint for lag tooling,
        never the source of truth, so the next batch does not wait for the broker's answer.
        One commit in flight at a time (a later one never overtaken by an earlier); offsets
        of batches that finish meanwhile are folded into the next."""
        self._pending_hint.update(nexts)
        if self._hinting is None or self._hinting.done():
            self._hinting = asyncio.create_task(self._send_hints())

    async def _send_hints(self) -> None:
        while self._pending_hint:
            offsets, self._pending_hint = self._pending_hint, {}
            try:
                await self.consumer.commit(offsets)
            except (CommitFailedError, KafkaError):
                pass  # a rebalance or a broker away: the next batch's hint covers it
            except Exception as exc:  # a hint never stops the consumer (e.g. while stopping)
                log.info("scoring.offsets_hint.failed", error=str(exc))
                return

    async def flush_hints(self) -> None:
        """Wait (briefly) for the last offsets hint, so Kafka's lag tooling sees the end."""
        if self._hinting is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._hinting), 5)

    async def _apply_in_transaction(
        self, conn: Conn, records: list[Any]
    ) -> tuple[dict[TopicPartition, int], Any]:
        async with conn.transaction():
            fresh = await claim_batch(conn, self.group, records)
            # Called even with nothing fresh, so what it reports is always this batch's.
            result = await self.handler(conn, fresh)
            return await store_offsets(conn, self.group, records), result

    async def _wait_for_database(
        self, records: list[Any], delay: float, stopping: asyncio.Event
    ) -> None:
        """Rewind the failed batch and pause fetching while the database is down."""
        firsts: dict[TopicPartition, int] = {}
        for record in records:
            firsts.setdefault(TopicPartition(record.topic, record.partition), record.offset)
        assigned = self.consumer.assignment()
        for tp, offset in firsts.items():
            if tp in assigned:
                self.consumer.seek(tp, offset)
        self.consumer.pause(*assigned)
        try:
            # getmany on paused partitions returns nothing but keeps this member in the group.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stopping.wait()
            await self.consumer.getmany(timeout_ms=0)
        finally:
            self.consumer.resume(*self.consumer.assignment())

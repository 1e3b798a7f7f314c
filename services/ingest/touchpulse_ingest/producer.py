"""The Kafka side of ingest: records are acknowledged by every in-sync replica, or not at all.

``EventProducer.produce`` returns only once the broker has acknowledged every record of a
request (``acks=all`` on an idempotent producer), and raises :class:`ProduceUnavailable`
when that did not happen within the bound. A 503 is therefore an *indeterminate* outcome:
the records may still arrive later, which is safe because ``(source, event_id)`` dedupes
them downstream when the client retries.

aiokafka cannot start while the broker is down and its sender task dies for good on a
fatal error (e.g. OutOfOrderSequenceNumber, aiokafka #1017), so the producer is owned by a
supervisor that (re)creates it in the background; requests meanwhile get a fast 503.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, OutOfOrderSequenceNumber

from touchpulse_shared.contract.record import KafkaRecord
from touchpulse_shared.kafka.partitioner import Partitioner

log = structlog.get_logger(__name__)

# How often the supervisor checks the producer, and waits before retrying a failed start.
SUPERVISE_INTERVAL_S = 1.0
# aiokafka's own bound for one request; our per-request bound is usually shorter.
REQUEST_TIMEOUT_MS = 10_000
# Bound on stopping a producer whose broker is gone (aiokafka #1101: stop() can hang).
STOP_TIMEOUT_S = 5.0
# Customer keys whose partition is remembered (~100 B each): a few MB at most.


class ProduceUnavailable(Exception):
    """Kafka did not acknowledge in time (or is not reachable): answer 503, client retries."""


class EventProducer:
    def __init__(
        self,
        *,
        bootstrap_servers: str,
        topic: str,
        linger_ms: int,
        client_id: str = "touchpulse-ingest",
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.linger_ms = linger_ms
        self.client_id = client_id
        self._producer: AIOKafkaProducer | None = None
        self._partitions: int | None = None
        self._partitioner: Partitioner | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._replaced = 0
        # A producer the broker refuses for good though its sender lives on (see produce).
        self._condemned: AIOKafkaProducer | None = None
        # Set while a live producer is installed; waited on by start-up and tests.
        self._started = asyncio.Event()

    @property
    def ready(self) -> bool:
        """A producer is started and its sender is alive."""
        return self._usable(self._producer)

    def _usable(self, producer: AIOKafkaProducer | None) -> bool:
        return producer is not None and producer is not self._condemned and _alive(producer)

    @property
    def replacements(self) -> int:
        return self._replaced

    def _new(self) -> AIOKafkaProducer:
        # Every delivery setting explicit: aiokafka's defaults (acks=1, no idempotence)
        # would let a 202 stand for an event a broker failure can still lose.
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=self.client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=self.linger_ms,
            # Loopback and LAN: compression costs more CPU than the bytes it saves.
            compression_type=None,
            request_timeout_ms=REQUEST_TIMEOUT_MS,
            max_batch_size=1024 * 1024,
        )

    async def start(self) -> None:
        """Start supervising; returns at once, even if Kafka is unreachable now."""
        self._supervisor = asyncio.create_task(self._supervise(), name="producer-supervisor")

    async def wait_ready(self) -> None:
        """Until a live producer is installed (bound it with ``asyncio.timeout``)."""
        await self._started.wait()

    async def _supervise(self) -> None:
        while True:
            if self._producer is not None and not self._usable(self._producer):
                log.warning("ingest.producer.dead", replacing=True)
                await self._discard()
                self._replaced += 1
            if self._producer is None:
                producer = self._new()
                try:
                    await producer.start()
                    self._partitions = len(await producer.partitions_for(self.topic))
                except (KafkaError, OSError) as exc:
                    log.warning("ingest.producer.start_failed", error=str(exc))
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(producer.stop(), STOP_TIMEOUT_S)
                else:
                    self._producer = producer
                    self._started.set()
                    log.info("ingest.producer.started", partitions=self._partitions)
            await asyncio.sleep(SUPERVISE_INTERVAL_S)

    async def _discard(self) -> None:
        producer, self._producer = self._producer, None
        self._started.clear()
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), STOP_TIMEOUT_S)

    async def stop(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        await self._discard()

    def partition_for(self, key: bytes) -> int:
        """Kafka's default partitioner (murmur2), so any client puts a customer in one place
        (cached; a new partition count starts a new cache)."""
        partitions = self._partitions
        if partitions is None:
            raise ProduceUnavailable("the producer has not started")
        if self._partitioner is None or self._partitioner.partitions != partitions:
            self._partitioner = Partitioner(partitions)
        return self._partitioner(key)

    async def produce(self, records: Sequence[KafkaRecord], *, within_s: float) -> None:
        """Return once Kafka acknowledged every record; else raise ProduceUnavailable."""
        producer = self._producer
        if producer is None or not self._usable(producer):
            raise ProduceUnavailable("Kafka is not reachable")
        try:
            async with asyncio.timeout(within_s):
                if len(records) == 1:
                    # Single events go through the accumulator, so concurrent requests share
                    # produce requests (linger) instead of each sending its own batch.
                    record = records[0]
                    future = await producer.send(
                        self.topic, record.value, key=record.key, headers=record.headers
                    )
                    await future
                else:
                    await asyncio.gather(*await self._send_batches(producer, records))
        except TimeoutError:
            raise ProduceUnavailable(f"Kafka did not acknowledge within {within_s:.1f} s") from None
        except KafkaError as exc:
            if isinstance(exc, OutOfOrderSequenceNumber):
                # The broker has lost this producer's sequence state (seen after a broker
                # restart with batches in flight) and refuses every later batch of it, while
                # aiokafka's sender may live on: only a new producer, with a new producer id,
                # gets past it. Found by the client's broker-restart test (tests/client).
                self._condemned = producer
            raise ProduceUnavailable(f"Kafka refused the records: {exc}") from exc

    async def _send_batches(
        self, producer: AIOKafkaProducer, records: Sequence[KafkaRecord]
    ) -> list[asyncio.Future[Any]]:
        # One batch per partition rather than one send per record: thousands of separate
        # awaits cost several times more CPU than a few batch appends (aiokafka #528).
        by_partition: dict[int, list[KafkaRecord]] = defaultdict(list)
        for record in records:
            by_partition[self.partition_for(record.key)].append(record)
        futures: list[asyncio.Future[Any]] = []
        for partition, group in by_partition.items():
            batch = producer.create_batch()
            for record in group:
                appended = batch.append(
                    key=record.key, value=record.value, timestamp=None, headers=record.headers
                )
                if appended is None:  # full: ship it and start the next one
                    futures.append(
                        await producer.send_batch(batch, self.topic, partition=partition)
                    )
                    batch = producer.create_batch()
                    batch.append(
                        key=record.key, value=record.value, timestamp=None, headers=record.headers
                    )
            futures.append(await producer.send_batch(batch, self.topic, partition=partition))
        return futures


def _alive(producer: AIOKafkaProducer) -> bool:
    # aiokafka's sender task ends only on a fatal error (or stop); after that every send
    # would fail, so the producer must be replaced.
    task = producer._sender.sender_task
    return task is not None and not task.done()

"""The scoring process: consumer, deadline sweep, outbox publisher, catalogue reloads and a
small HTTP endpoint for probes and metrics, all on one event loop.

Shutdown (SIGTERM or Ctrl-C) stops fetching, lets the batch in flight commit, leaves the
group, publishes what the outbox holds, and closes — bounded by ``STOP_TIMEOUT_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
import orjson
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from touchpulse_scoring import lifecycle
from touchpulse_scoring.catalogue_source import CatalogueSource
from touchpulse_scoring.consumer import ConsumerRunner
from touchpulse_scoring.engine import (
    Engine,
    Report,
    Source,
    TimeWindow,
    Topics,
    expire_interventions,
    record_follow_ups,
)
from touchpulse_scoring.metrics import ScoringMetrics
from touchpulse_scoring.outbox import publish_once
from touchpulse_scoring.state_figures import read_backlogs, read_state_figures
from touchpulse_scoring.store import record_catalogue
from touchpulse_shared.db.migrate import migrate_url
from touchpulse_shared.db.pool import create_pool
from touchpulse_shared.kafka.topics import DEAD_LETTER_MAX_MESSAGE_BYTES
from touchpulse_shared.loops import Loops, supervise
from touchpulse_shared.settings import Settings

log = structlog.get_logger(__name__)

STOP_TIMEOUT_S = 30.0
# Outbox rounds: fast while there is work, a short idle poll otherwise.
OUTBOX_IDLE_S = 0.1
LAG_INTERVAL_S = 5.0
CATALOGUE_CHECK_S = 2.0
# A loop that has not finished a round for this long is stuck (/healthz: 503). A round is
# bounded by its own timeouts (the outbox waits 10 s for Kafka's acknowledgements, a lock
# wait or a dead socket has none): generous against a slow round, far below "for good".
LOOP_STUCK_AFTER_S = {
    "outbox": 60.0,
    "deadline_sweep": 120.0,
    "expiry": 120.0,
    "follow_ups": 120.0,
    "state_gauges": 120.0,
    "consumer_lag": 120.0,
    "catalogue": 120.0,
    # Ticks every second; a pruning round is a few statements of at most 30 s each.
    "lifecycle": 300.0,
}


class ScoringService:
    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        mute_interventions: bool = False,
        loop_stuck_after_s: dict[str, float] | None = None,
    ) -> None:
        if settings.database_url is None or settings.kafka_bootstrap_servers is None:
            raise ValueError("scoring needs TOUCHPULSE_DATABASE_URL and Kafka bootstrap servers")
        self.settings = settings
        self.database_url = settings.database_url
        self.bootstrap = settings.kafka_bootstrap_servers
        self.catalogue = CatalogueSource(settings.promise_catalogue)
        self.metrics = ScoringMetrics(CollectorRegistry())
        self.metrics.catalogue.show(self.catalogue().version, self.catalogue.content_hash)
        #: The content hash last recorded in catalogue_version (None: not yet).
        self.recorded_hash: str | None = None
        self.engine = Engine(
            catalogue=self.catalogue,
            topics=Topics(
                health=settings.health_topic,
                interventions=settings.interventions_topic,
                dead_letters=settings.dead_letter_topic,
            ),
            source=Source(
                group=settings.scoring_group_id,
                topic=settings.events_topic,
                partitions=self._partition_count,
            ),
            clock=clock,
            window=TimeWindow.from_settings(settings),
            mute_interventions=mute_interventions,
            window_capacity=settings.scoring_window_outcomes,
        )
        self.stopping = asyncio.Event()
        self.runner: ConsumerRunner | None = None
        self.ready = asyncio.Event()
        self.loops = Loops()
        self.loop_stuck_after_s = {**LOOP_STUCK_AFTER_S, **(loop_stuck_after_s or {})}

    async def run(self) -> None:
        await migrate_url(self.database_url)
        # One named pool per role (application_name touchpulse-scoring/<role>): an operator
        # tells them apart in pg_stat_activity, and one role's stall cannot starve another.
        url = self.database_url
        pool = await create_pool(url, service="scoring", role="consumer", min_size=2, max_size=4)
        # The background loops' pools keep no statement cache: a migration that changes a
        # table must not fail their transactions ("cached statement plan is invalid"); the
        # consumer's hot path keeps its cache and handles that case (consumer._apply).
        outbox_pool = await create_pool(
            url, service="scoring", role="outbox", max_size=2, statement_cache_size=0
        )
        sweep_pool = await create_pool(
            url, service="scoring", role="sweep", max_size=2, statement_cache_size=0
        )
        gauges_pool = await create_pool(
            url, service="scoring", role="gauges", max_size=1, statement_cache_size=0
        )
        pools = [pool, outbox_pool, sweep_pool, gauges_pool]
        # Before ready: from then on the catalogue it judges by is in catalogue_version.
        await self._record_catalogue(sweep_pool)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.settings.scoring_group_id,
            client_id=f"touchpulse-scoring-{os.getpid()}",
            # Offsets live in PostgreSQL with the state; Kafka's are hints committed after.
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.settings.scoring_max_batch,
            # Low fetch wait: latency matters more than fewer, fuller fetches here.
            fetch_max_wait_ms=10,
            isolation_level="read_committed",
            session_timeout_ms=30_000,
            heartbeat_interval_ms=3_000,
            # A batch transaction takes well under a second; a minute means we are stuck.
            max_poll_interval_ms=60_000,
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            request_timeout_ms=10_000,
            # Dead letters carry whole records of up to the events topic's limit plus their
            # reason headers; the dead-letter topic takes up to twice that.
            max_request_size=DEAD_LETTER_MAX_MESSAGE_BYTES,
        )
        await consumer.start()
        await producer.start()
        runner = ConsumerRunner(
            consumer=consumer,
            pool=pool,
            group=self.settings.scoring_group_id,
            topic=self.settings.events_topic,
            handler=self.engine.handle,
            max_records=self.settings.scoring_max_batch,
            on_batch=self._on_batch,
            on_data_lost=lambda tp, n: self.metrics.data_lost.inc(n),
            clock=self.engine.clock,
        )
        self.runner = runner
        runner.subscribe()
        self.ready.set()
        sweep_every = self.settings.scoring_sweep_interval_s
        jobs: dict[str, tuple[float, Callable[[], Awaitable[object]]]] = {
            "outbox": (OUTBOX_IDLE_S, lambda: self._publish(outbox_pool, producer)),
            "deadline_sweep": (sweep_every, lambda: self._sweep(sweep_pool)),
            "expiry": (sweep_every, lambda: self._expire(sweep_pool)),
            "follow_ups": (sweep_every, lambda: self._follow_ups(sweep_pool)),
            "consumer_lag": (LAG_INTERVAL_S, lambda: self._lag(consumer)),
            "catalogue": (CATALOGUE_CHECK_S, lambda: self._reload(sweep_pool)),
            "state_gauges": (
                self.settings.scoring_state_metrics_interval_s,
                lambda: self._state(gauges_pool),
            ),
            "lifecycle": (
                lifecycle.TICK_S,
                lifecycle.lifecycle_job(
                    sweep_pool,
                    settings=self.settings,
                    catalogue=self.catalogue,
                    clock=self.engine.clock,
                    metrics=self.metrics,
                ),
            ),
        }
        for name in jobs:
            self.loops.register(name, self.loop_stuck_after_s[name])
        self.metrics.watch_loops(self.loops)
        background = [
            asyncio.create_task(
                supervise(self.loops, name, interval, job, stuck_after_s=0), name=name
            )
            for name, (interval, job) in jobs.items()
        ]
        try:
            await runner.run(self.stopping)
            await runner.flush_hints()
        finally:
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            with contextlib.suppress(Exception):
                async with asyncio.timeout(10):
                    await consumer.stop()  # leaves the group: partitions move at once
            with contextlib.suppress(Exception):
                async with asyncio.timeout(10):
                    while await publish_once(outbox_pool, producer, ack_within_s=5):
                        pass
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await producer.stop()
            for each in pools:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(5):
                        await each.close()

    def _on_batch(self, records: int, seconds: float, report: Report) -> None:
        metrics = self.metrics
        metrics.batch_records.observe(records)
        metrics.batch_duration.observe(seconds)
        metrics.events.labels("applied").inc(report.applied)
        metrics.events.labels("duplicate").inc(report.duplicates)
        metrics.events.labels("erased").inc(report.erased)
        metrics.events.labels("dead_letter").inc(len(report.dead_letters))
        for dead in report.dead_letters:
            metrics.dead_letters.labels(dead.reason).inc()
        if len(report.dead_letters) * 2 > records >= 20:
            metrics.dead_letter_floods.inc()
        for outcome in report.outcomes:
            result = "kept" if outcome.met else "broken"
            metrics.outcomes.labels(outcome.touchpoint, outcome.promise_id, result).inc()
        # Called after the commit: the health these events produced is visible from now on.
        committed = datetime.now(UTC)
        for received in report.received:
            metrics.event_to_health.observe(max((committed - received).total_seconds(), 0.0))
        metrics.interventions_opened.inc(len(report.opened))

    async def _publish(self, pool: asyncpg.Pool, producer: AIOKafkaProducer) -> bool:
        sent = await publish_once(pool, producer, ack_within_s=10)
        self.metrics.outbox_published.inc(sent)
        return sent > 0

    async def _sweep(self, pool: asyncpg.Pool) -> bool:
        async with pool.acquire() as conn, conn.transaction():
            report = await self.engine.sweep(conn)
        self.metrics.deadlines_expired.inc(len(report.outcomes))
        self.metrics.interventions_opened.inc(len(report.opened))
        return bool(report.outcomes)

    async def _expire(self, pool: asyncpg.Pool) -> bool:
        async with pool.acquire() as conn, conn.transaction():
            expired = await expire_interventions(
                conn, self.catalogue(), self.engine.clock(), self.settings.interventions_topic
            )
        self.metrics.interventions_expired.inc(expired)
        return expired > 0

    async def _follow_ups(self, pool: asyncpg.Pool) -> bool:
        async with pool.acquire() as conn, conn.transaction():
            followed = await record_follow_ups(conn, self.catalogue(), self.engine.clock())
        return followed > 0

    async def _lag(self, consumer: AIOKafkaConsumer) -> bool:
        assigned = list(consumer.assignment())
        lag: dict[int, int] = {}
        if assigned:
            ends = await consumer.end_offsets(assigned)
            for tp in assigned:
                position = await consumer.position(tp)
                lag[tp.partition] = max(ends[tp] - position, 0)
        self.metrics.set_lag(lag)
        return False

    async def _state(self, pool: asyncpg.Pool) -> bool:
        async with pool.acquire() as conn:
            figures = await read_state_figures(
                conn, now=self.engine.clock(), policy=self.catalogue().policy.interventions
            )
            backlogs = await read_backlogs(
                conn, now=self.engine.clock(), policy=self.catalogue().policy.interventions
            )
        self.metrics.set_state(figures, at=time.time())
        self.metrics.set_backlogs(backlogs)
        return False

    async def _reload(self, pool: asyncpg.Pool) -> bool:
        if self.catalogue.refresh():
            self.metrics.catalogue.show(self.catalogue().version, self.catalogue.content_hash)
        # Also when the reload was earlier and its recording failed: retried every round.
        if self.catalogue.content_hash != self.recorded_hash:
            await self._record_catalogue(pool)
        return False

    async def _record_catalogue(self, pool: asyncpg.Pool) -> None:
        """Keep the catalogue in effect in ``catalogue_version`` (a new period when it
        differs from the one recorded as current, by any member)."""
        catalogue, text, digest = self.catalogue(), self.catalogue.text, self.catalogue.content_hash
        async with pool.acquire() as conn, conn.transaction():
            recorded = await record_catalogue(
                conn,
                version=catalogue.version,
                content_hash=digest,
                content=text,
                now=self.engine.clock(),
            )
        self.recorded_hash = digest
        if recorded.version_reused:
            self.metrics.catalogue_version_reused.inc()
            log.warning(
                "scoring.catalogue.version_reused",
                version=catalogue.version,
                hash=digest,
                detail="an earlier catalogue with other content has this version string;"
                " outcomes naming it are ambiguous (change the version with every edit)",
            )
        if recorded.began:
            log.info("scoring.catalogue.recorded", version=catalogue.version, hash=digest)

    def _partition_count(self) -> int | None:
        if self.runner is None:
            return None
        partitions = self.runner.consumer.partitions_for_topic(self.settings.events_topic)
        return len(partitions) if partitions else None

    def healthy(self) -> bool:
        """Alive unless the consumer loop or a background loop stopped making progress
        (stuck, not just idle)."""
        return not self.stuck()

    def stuck(self) -> list[str]:
        """The loops that stopped finishing rounds: the consumer's and the background ones."""
        stuck = self.loops.stuck()
        runner = self.runner
        if runner is not None and (
            time.monotonic() - runner.last_progress >= self.settings.scoring_stuck_after_s
        ):
            stuck.insert(0, "consumer")
        return stuck

    def health_report(self) -> dict[str, object]:
        runner = self.runner
        consumer_age = None if runner is None else time.monotonic() - runner.last_progress
        stuck = self.stuck()
        return {
            "status": "stuck" if stuck else "alive",
            "stuck": stuck,
            "consumer": {
                "last_round_age_s": None if consumer_age is None else round(consumer_age, 3),
                "stuck_after_s": self.settings.scoring_stuck_after_s,
            },
            "loops": self.loops.report(),
        }

    def partitions(self) -> list[TopicPartition]:
        return [] if self.runner is None else list(self.runner.consumer.assignment())


async def serve_probes(service: ScoringService, host: str, port: int) -> asyncio.Server:
    """``/healthz``, ``/readyz`` and ``/metrics`` over a minimal HTTP/1.1 responder.

    No web framework: it must answer while the event loop is busy with batches and must not
    take over the process's signal handling.
    """

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                request = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
            path = request.split(b" ")[1].decode() if request.count(b" ") >= 2 else "/"
            if path == "/metrics":
                status, body, kind = (
                    200,
                    generate_latest(service.metrics.registry),
                    CONTENT_TYPE_LATEST,
                )
            elif path == "/healthz":
                report = service.health_report()
                status, body, kind = (
                    (503 if report["stuck"] else 200),
                    orjson.dumps(report),
                    "application/json",
                )
            elif path == "/readyz":
                ok = service.ready.is_set()
                status, body, kind = (
                    (200 if ok else 503),
                    orjson.dumps(
                        {
                            "status": "ready" if ok else "starting",
                            "catalogue_version": service.catalogue().version,
                            "catalogue_hash": service.catalogue.content_hash,
                        }
                    ),
                    "application/json",
                )
            else:
                status, body, kind = 404, b'{"status":"not found"}', "application/json"
            reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, OSError, IndexError, UnicodeDecodeError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)


async def main_async(settings: Settings) -> None:
    service = ScoringService(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.stopping.set)
    server = await serve_probes(service, settings.host, settings.scoring_metrics_port)
    try:
        await service.run()
    finally:
        server.close()
        await server.wait_closed()

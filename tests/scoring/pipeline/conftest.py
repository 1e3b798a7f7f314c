"""The scoring service in-process on the real broker and database, with its own topics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from tests.conftest import unique
from touchpulse_scoring.service import ScoringService
from touchpulse_shared.contract import ExperienceEventV1, encode_record
from touchpulse_shared.db.migrate import migrate_url
from touchpulse_shared.kafka.topics import ensure_topics, topic_specs
from touchpulse_shared.settings import Settings

# Bounds for a loaded 2-core machine; the waits end as soon as the state is there.
SETTLE_S = 60.0


@dataclass
class Pipeline:
    settings: Settings
    database_url: str

    async def produce(
        self,
        events: Sequence[ExperienceEventV1],
        *,
        raw: Sequence[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = (),
    ) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            acks="all",
            enable_idempotence=True,
        )
        await producer.start()
        try:
            futures = []
            for event in events:
                record = encode_record(event, producer="ingest", received_at=datetime.now(UTC))
                futures.append(
                    await producer.send(
                        self.settings.events_topic,
                        record.value,
                        key=record.key,
                        headers=record.headers,
                    )
                )
            for key, value, headers in raw:
                futures.append(
                    await producer.send(self.settings.events_topic, value, key=key, headers=headers)
                )
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    async def fetchval(self, query: str, *args: object) -> object:
        conn = await asyncpg.connect(self.database_url)
        try:
            return await conn.fetchval(query, *args)
        finally:
            await conn.close()

    async def fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.database_url)
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    async def wait_for(
        self, query: str, expected: object, *args: object, within_s: float = SETTLE_S
    ) -> None:
        """Poll the database until ``query`` returns ``expected`` (the state is the signal)."""
        last: object = None
        for _ in range(int(within_s / 0.1)):
            last = await self.fetchval(query, *args)
            if last == expected:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{query} gave {last!r}, not {expected!r}, within {within_s} s")


@pytest.fixture
async def pipeline_settings(kafka_bootstrap: str, fresh_database: str) -> AsyncIterator[Settings]:
    await migrate_url(fresh_database)
    run = unique("scoring")
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        database_url=fresh_database,
        events_topic=f"{run}.events",
        dead_letter_topic=f"{run}.dlq",
        health_topic=f"{run}.health",
        interventions_topic=f"{run}.interventions",
        profiles_topic=f"{run}.profiles",
        events_partitions=3,
        scoring_group_id=f"{run}-group",
        scoring_sweep_interval_s=0.2,
    )
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    specs = topic_specs(settings)
    await ensure_topics(admin, specs)
    yield settings
    await admin.delete_topics([s.name for s in specs])
    await admin.close()


@asynccontextmanager
async def running_scoring(
    settings: Settings, clock: Callable[[], datetime] | None = None
) -> AsyncIterator[ScoringService]:
    service = ScoringService(settings, clock=clock) if clock else ScoringService(settings)
    task = asyncio.create_task(service.run())
    try:
        async with asyncio.timeout(SETTLE_S):
            await service.ready.wait()
        yield service
    finally:
        service.stopping.set()
        async with asyncio.timeout(SETTLE_S):
            await task


@pytest.fixture
def pipeline(pipeline_settings: Settings) -> Pipeline:
    assert pipeline_settings.database_url is not None
    return Pipeline(pipeline_settings, pipeline_settings.database_url)

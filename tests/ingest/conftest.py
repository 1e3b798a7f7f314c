"""Ingest wired as in production (lifespan: PostgreSQL pool, supervised producer) on real
servers, driven in-process through its ASGI interface."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi import FastAPI

from touchpulse_ingest.app import Ingest, build_app
from touchpulse_shared.auth import Scope, create_key
from touchpulse_shared.db.migrate import migrate_url
from touchpulse_shared.settings import Settings

# Wall-clock bounds for readiness and reads on a loaded 2-core machine, not expectations.
READY_S = 30.0
READ_S = 30.0
SOURCE = "billing-prod"


@pytest.fixture
async def ingest_db(fresh_database: str) -> str:
    await migrate_url(fresh_database)
    return fresh_database


@pytest.fixture
def ingest_settings(kafka_bootstrap: str, ingest_db: str, topic: str) -> Settings:
    return Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        database_url=ingest_db,
        events_topic=topic,
        ingest_produce_timeout_ms=3000,
        auth_cache_s=0,  # revocation takes effect at once in tests
        ingest_max_body_bytes=256 * 1024,
        ingest_max_batch_items=100,
        rate_limit_events_per_s=100,
        rate_limit_burst=1000,
    )


@dataclass
class IngestClient:
    http: httpx.AsyncClient
    app: FastAPI
    settings: Settings
    key: str

    @property
    def ingest(self) -> Ingest:
        ingest: Ingest = self.app.state.ingest
        return ingest

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}


async def new_key(database_url: str, **spec: Any) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        spec.setdefault("name", "test")
        spec.setdefault("scopes", [Scope.EVENTS_WRITE])
        spec.setdefault("source", SOURCE)
        plaintext, _ = await create_key(conn, now=datetime.now(UTC), **spec)
        return plaintext
    finally:
        await conn.close()


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[IngestClient]:
    """The app with its lifespan entered and its producer connected."""
    app = build_app(settings)
    async with app.router.lifespan_context(app):
        ingest: Ingest = app.state.ingest
        async with asyncio.timeout(READY_S):
            await ingest.producer.wait_ready()
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as http:
            key = await new_key(settings.database_url or "")
            yield IngestClient(http, app, settings, key)


@pytest.fixture
async def client(ingest_settings: Settings) -> AsyncIterator[IngestClient]:
    async with running(ingest_settings) as running_client:
        yield running_client


async def read_topic(bootstrap: str, topic: str, count: int) -> list[Any]:
    """Exactly ``count`` records from every partition of ``topic``, from the beginning."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or await _partitions(consumer, topic)
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        records: list[Any] = []
        async with asyncio.timeout(READ_S):
            while len(records) < count:
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    records.extend(batch)
        # Anything beyond what was expected would be a duplicate or a stray: look briefly.
        for batch in (await consumer.getmany(timeout_ms=300)).values():
            records.extend(batch)
        return records
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()
    found: set[int] = consumer.partitions_for_topic(topic) or set()
    return found


EventFactory = Callable[..., dict[str, Any]]


@pytest.fixture
def make_event() -> EventFactory:
    counter = iter(range(1_000_000))

    def factory(**overrides: Any) -> dict[str, Any]:
        event: dict[str, Any] = {
            "event_id": f"evt-{next(counter)}",
            "source": SOURCE,
            "customer_id": "cust-42",
            "touchpoint": "billing",
            "type": "invoice.issued",
            "occurred_at": datetime.now(UTC).isoformat(),
            "measures": {"invoice_correct": False, "days_late": 3},
            "attributes": {"invoice": "INV-1"},
        }
        event.update(overrides)
        return event

    return factory

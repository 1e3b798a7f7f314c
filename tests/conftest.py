"""Session-wide real servers, and per-test resources on them.

Kafka and PostgreSQL are started once per session by the same :class:`LocalStack` that
``make run`` uses, and only when a test asks for them; ``KAFKA_BOOTSTRAP_SERVERS`` and
``TOUCHPULSE_DATABASE_URL`` point the suite at existing servers instead. Every test gets
its own topics and its own database, so tests never see each other's data.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from touchpulse_shared.auth import Scope, create_key
from touchpulse_shared.settings import Settings, load_settings
from touchpulse_shared.stack.local import LocalStack


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def local_stack(base_settings: Settings) -> Iterator[LocalStack]:
    stack = LocalStack(base_settings)
    yield stack
    stack.close()


@pytest.fixture(scope="session")
def kafka_bootstrap(local_stack: LocalStack) -> str:
    return local_stack.kafka().address


@pytest.fixture(scope="session")
def database_url(local_stack: LocalStack) -> str:
    return local_stack.postgres().address


async def writer_and_crm_keys(database_url: str, *, source: str, name: str) -> tuple[str, str]:
    """An events:write key for ``source`` and a CRM key (health:read, interventions:write,
    admin): what a touchpoint system and a CRM integration each hold."""
    conn = await asyncpg.connect(database_url)
    try:
        now = datetime.now(UTC)
        events, _ = await create_key(
            conn, name=f"{name} events", scopes=[Scope.EVENTS_WRITE], source=source, now=now
        )
        crm, _ = await create_key(
            conn,
            name=f"{name} crm",
            scopes=[Scope.HEALTH_READ, Scope.INTERVENTIONS_WRITE, Scope.ADMIN],
            now=now,
        )
        return events, crm
    finally:
        await conn.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def kafka_admin(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    yield admin
    await admin.close()


@pytest.fixture
async def topic(kafka_admin: AIOKafkaAdminClient) -> AsyncIterator[str]:
    """A fresh three-partition topic, deleted after the test."""
    name = unique("test")
    response = await kafka_admin.create_topics([NewTopic(name, 3, 1)])
    assert response.topic_errors[0][1] == 0, response.topic_errors
    yield name
    await kafka_admin.delete_topics([name])


@pytest.fixture
async def fresh_database(database_url: str) -> AsyncIterator[str]:
    """The URL of a new, empty database, dropped after the test."""
    async for url in _new_database(database_url):
        yield url


@pytest.fixture
async def other_fresh_database(database_url: str) -> AsyncIterator[str]:
    """A second new, empty database, for tests that compare two runs."""
    async for url in _new_database(database_url):
        yield url


async def _new_database(database_url: str) -> AsyncIterator[str]:
    base, _, _ = database_url.rpartition("/")
    name = unique("test").replace("-", "_")
    admin = await asyncpg.connect(f"{base}/postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield f"{base}/{name}"
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()

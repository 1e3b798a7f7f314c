"""With Kafka down, ingest answers 503 within its bound, never 202, and recovers by itself.

The broker here is this test's own, so stopping it disturbs no other test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.ingest.conftest import EventFactory, IngestClient, read_topic, running
from touchpulse_shared.db.migrate import migrate_url
from touchpulse_shared.settings import Settings
from touchpulse_shared.stack.kafka import LocalKafka, kafka_libs
from touchpulse_shared.stack.local import new_run_dir
from touchpulse_shared.stack.postgres import LocalPostgres

# The service's bound is 2 s; the rest is slack for the event loop and a busy machine.
BOUND_S = 2.0
SLACK_S = 1.5
RECOVERY_S = 60.0


@pytest.fixture
def own_broker(base_settings: Settings) -> Iterator[LocalKafka]:
    broker = LocalKafka(
        libs=kafka_libs(base_settings.cache_dir, base_settings.kafka_version),
        workdir=new_run_dir(base_settings.state_dir) / "kafka",
    )
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
async def client_on_own_broker(
    own_broker: LocalKafka, ingest_db: str
) -> AsyncIterator[IngestClient]:
    admin = AIOKafkaAdminClient(bootstrap_servers=own_broker.bootstrap_servers)
    await admin.start()
    await admin.create_topics([NewTopic("events", 3, 1)])
    await admin.close()
    settings = Settings(
        kafka_bootstrap_servers=own_broker.bootstrap_servers,
        database_url=ingest_db,
        events_topic="events",
        ingest_produce_timeout_ms=int(BOUND_S * 1000),
        auth_cache_s=0,
    )
    async with running(settings) as client:
        yield client


async def test_broker_down_gives_503_within_the_bound_then_recovers(
    client_on_own_broker: IngestClient, own_broker: LocalKafka, make_event: EventFactory
) -> None:
    client = client_on_own_broker
    first = make_event(customer_id="before")
    assert (
        await client.http.post("/v1/events", json=first, headers=client.auth())
    ).status_code == 202

    own_broker.kill()
    down: list[tuple[int, float, str | None]] = []
    for i in range(6):
        single = client.http.post(
            "/v1/events", json=make_event(customer_id=f"down-{i}"), headers=client.auth()
        )
        batch = client.http.post(
            "/v1/events/batch",
            json={"events": [make_event(customer_id=f"down-b{i}-{j}") for j in range(20)]},
            headers=client.auth(),
        )
        for request in (single, batch):
            started = time.monotonic()
            response = await request
            down.append(
                (
                    response.status_code,
                    time.monotonic() - started,
                    response.headers.get("retry-after"),
                )
            )
    assert {status for status, _, _ in down} == {503}, down
    assert max(elapsed for _, elapsed, _ in down) < BOUND_S + SLACK_S, down
    assert all(retry is not None and int(retry) >= 1 for _, _, retry in down)

    own_broker.restart()
    # Recovery without restarting ingest: the same app accepts again once Kafka is back.
    after = make_event(customer_id="after")
    deadline = time.monotonic() + RECOVERY_S
    status = 0
    while time.monotonic() < deadline:
        status = (
            await client.http.post("/v1/events", json=after, headers=client.auth())
        ).status_code
        if status == 202:
            break
        assert status == 503
        await asyncio.sleep(0.5)  # a client's retry pace, not a readiness guess
    assert status == 202

    records = await read_topic(own_broker.bootstrap_servers, "events", 2)
    keys = {r.key for r in records}
    assert {b"before", b"after"} <= keys


async def test_a_dead_producer_is_replaced(client: IngestClient, make_event: EventFactory) -> None:
    producer = client.ingest.producer._producer
    assert producer is not None
    # What a fatal error (e.g. OutOfOrderSequenceNumber) does to aiokafka: the sender task ends.
    producer._sender.sender_task.cancel()
    # A client retrying at its own pace sees 503s until the supervisor has replaced it.
    statuses = []
    for _ in range(int(RECOVERY_S / 0.2)):
        response = await client.http.post("/v1/events", json=make_event(), headers=client.auth())
        statuses.append(response.status_code)
        if response.status_code == 202:
            break
        await asyncio.sleep(0.2)
    assert statuses[-1] == 202, statuses
    assert set(statuses[:-1]) <= {503}
    assert client.ingest.producer.replacements == 1


async def test_key_store_down_is_a_503_not_a_500(
    base_settings: Settings, kafka_bootstrap: str, topic: str, make_event: EventFactory
) -> None:
    server = LocalPostgres(workdir=new_run_dir(base_settings.state_dir) / "postgres")
    server.start()
    try:
        await migrate_url(server.url)
        settings = Settings(
            kafka_bootstrap_servers=kafka_bootstrap,
            database_url=server.url,
            events_topic=topic,
            auth_cache_s=0,
        )
        async with running(settings) as client:
            assert (
                await client.http.post("/v1/events", json=make_event(), headers=client.auth())
            ).status_code == 202
            server.stop()
            response = await client.http.post(
                "/v1/events", json=make_event(), headers=client.auth()
            )
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"]
    finally:
        server.stop()

"""The simulator through the real ingest: paced, accounted for item by item, in both formats,
and its customers' profiles through the real api."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import httpx
import pytest

from tests.ingest.conftest import IngestClient, new_key, read_topic
from touchpulse_api.app import build_app
from touchpulse_shared.auth import Scope
from touchpulse_shared.contract import decode_record
from touchpulse_shared.simulator import (
    Sent,
    Simulator,
    SimulatorConfig,
    post_paced,
    post_profiles,
)

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

SOURCE = "simulator"


async def authorised(client: IngestClient) -> httpx.AsyncClient:
    key = await new_key(client.settings.database_url or "", source=SOURCE)
    client.http.headers["Authorization"] = f"Bearer {key}"
    return client.http


def assert_coherent(sent: Sent) -> None:
    assert sent.posted == sent.accepted + sent.rejected + sent.unavailable
    assert sent.posted == sum(sent.by_touchpoint.values()) + sent.duplicates + sum(
        sent.bad.values()
    )
    assert sent.unavailable == 0, sent
    assert sent.bad_accepted == 0, sent
    assert sent.good_rejected == 0, sent
    # Every malformed item, and only those, refused with a per-item 422.
    assert sent.rejected == sum(sent.bad.values()) > 0
    assert sent.item_statuses == {422: sent.rejected}


@pytest.mark.parametrize("fmt", ["native", "cloudevents"])
async def test_a_run_is_paced_and_accounted_for_item_by_item(
    client: IngestClient, kafka_bootstrap: str, topic: str, fmt: str
) -> None:
    config = SimulatorConfig(
        seed=31,
        customers=30,
        bad_rate=0.08,
        duplicate_rate=0.05,
        out_of_order_rate=0.1,
        rate=50.0,
        format="cloudevents" if fmt == "cloudevents" else "native",
    )
    http = await authorised(client)
    simulator = Simulator(config, start=datetime.now(UTC))
    # Twelve seconds of the timeline, ten times as fast (within ingest's burst here).
    sent = await post_paced(http, simulator, rate=500.0, total=600, batch=25)
    assert sent.posted == 600
    assert_coherent(sent)
    assert sent.duplicates > 0
    assert sent.out_of_order > 0
    assert sent.statuses.keys() <= {202, 422}
    # Paced: 600 events at 500 per second take over a second, not one burst.
    assert sent.elapsed_s > 0.9
    # Ingest accepted duplicates like any retry; each is on the topic, with the same id.
    records = await read_topic(kafka_bootstrap, topic, sent.accepted)
    ids = [decode_record(r.key, r.value, r.headers).event.event_id for r in records]
    assert len(ids) == sent.accepted
    assert len(set(ids)) == sent.accepted - sent.duplicates


async def test_a_run_stops_at_its_duration_or_when_told(client: IngestClient) -> None:
    http = await authorised(client)
    config = SimulatorConfig(seed=32, customers=20, rate=50.0)
    began = time.monotonic()
    sent = await post_paced(http, Simulator(config, datetime.now(UTC)), rate=50.0, duration_s=1.5)
    assert 30 < sent.posted < 120, sent
    assert time.monotonic() - began < 10
    assert_coherent_or_clean(sent)

    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.5, stop.set)
    sent = await post_paced(http, Simulator(config, datetime.now(UTC)), rate=50.0, stop=stop)
    assert 0 < sent.posted < 80, sent
    assert sent.accepted > 0


def assert_coherent_or_clean(sent: Sent) -> None:
    assert sent.posted == sent.accepted + sent.rejected + sent.unavailable
    assert sent.unavailable == 0
    assert sent.good_rejected == 0


async def test_a_refused_key_stops_the_run(client: IngestClient) -> None:
    client.http.headers["Authorization"] = "Bearer tpk_nobody_0000"
    sent = await post_paced(
        client.http, Simulator(SimulatorConfig(rate=100.0), datetime.now(UTC)), rate=100.0
    )
    assert sent.stopped is not None
    assert "401" in sent.stopped
    assert sent.requests == 1
    assert sent.accepted == 0
    assert "stopped" in sent.summary()


async def test_profiles_go_through_the_real_api(client: IngestClient) -> None:
    settings = client.settings
    admin = await new_key(
        settings.database_url or "", scopes=[Scope.ADMIN, Scope.HEALTH_READ], source=None
    )
    simulator = Simulator(SimulatorConfig(seed=33, customers=12), datetime.now(UTC))
    app = build_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
            base_url="http://api",
            headers={"Authorization": f"Bearer {admin}"},
        ) as api,
    ):
        assert await post_profiles(api, simulator) == 12
        assert await post_profiles(api, simulator) == 12  # updates: 200, still written
        customer, profile = simulator.profiles()[5]
        stored = (await api.get(f"/v1/customers/{customer}/profile")).json()
        assert {k: stored[k] for k in profile} == profile

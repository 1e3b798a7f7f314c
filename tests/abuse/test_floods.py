"""One key floods far beyond its limit while another works at a modest rate: the flood gets
429 + Retry-After, the quiet key gets every request through. Latency of the quiet key is
printed (p50/p99) for the report, not asserted: the machine is shared."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import httpx
import pytest

from tests.abuse.conftest import SOURCE, Service, event, started
from touchpulse_shared.auth import Scope
from touchpulse_shared.settings import Settings

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

FLOOD_S = 4.0
FLOODERS = 6  # concurrent connections of the noisy tenant
QUIET_EVERY_S = 0.1  # the quiet tenant's pace: well under its limit


async def _flood(
    send: Callable[[int], Awaitable[httpx.Response]], until: float
) -> tuple[Counter[int], set[str]]:
    statuses: Counter[int] = Counter()
    retry_after: set[str] = set()

    async def one_connection(worker: int) -> None:
        n = 0
        while time.monotonic() < until:
            response = await send(worker * 1_000_000 + n)
            n += 1
            statuses[response.status_code] += 1
            if response.status_code == 429:
                retry_after.add(response.headers.get("retry-after", ""))

    await asyncio.gather(*(one_connection(w) for w in range(FLOODERS)))
    return statuses, retry_after


async def _quiet(
    send: Callable[[int], Awaitable[httpx.Response]], until: float
) -> tuple[Counter[int], list[float]]:
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    n = 0
    while time.monotonic() < until:
        started_at = time.perf_counter()
        response = await send(n)
        latencies.append(time.perf_counter() - started_at)
        statuses[response.status_code] += 1
        n += 1
        await asyncio.sleep(QUIET_EVERY_S)  # pacing, not a readiness wait
    return statuses, latencies


def _summary(name: str, latencies: list[float]) -> str:
    cuts = (
        statistics.quantiles(latencies, n=100, method="inclusive")
        if len(latencies) > 1
        else latencies * 99
    )
    return (
        f"{name}: {len(latencies)} requests, p50 {cuts[49] * 1000:.1f} ms, "
        f"p99 {cuts[98] * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
    )


async def test_a_flood_on_one_ingest_key_leaves_another_untouched(
    ingest_settings: Settings,
) -> None:
    settings = ingest_settings.model_copy(
        update={"rate_limit_events_per_s": 20.0, "rate_limit_burst": 20.0}
    )
    async with started("ingest", settings) as ingest:
        noisy = Service.bearer(await ingest.keys.make("noisy", [Scope.EVENTS_WRITE], source=SOURCE))
        calm = Service.bearer(await ingest.keys.make("calm", [Scope.EVENTS_WRITE], source=SOURCE))

        async def flood(n: int) -> httpx.Response:
            return await ingest.http.post("/v1/events", json=event(n), headers=noisy)

        async def quiet(n: int) -> httpx.Response:
            return await ingest.http.post(
                "/v1/events", json=event(n, event_id=f"calm-{n}"), headers=calm
            )

        until = time.monotonic() + FLOOD_S
        (flooded, retry_after), (calm_statuses, latencies) = await asyncio.gather(
            _flood(flood, until), _quiet(quiet, until)
        )
    print(f"ingest flood: {dict(flooded)}; quiet key: {dict(calm_statuses)}")
    print(_summary("ingest quiet key", latencies))
    assert flooded[429] > flooded[202], flooded  # far beyond its limit
    assert set(flooded) <= {202, 429}, flooded
    assert all(value.isdigit() and int(value) >= 1 for value in retry_after), retry_after
    assert set(calm_statuses) == {202}, calm_statuses
    assert calm_statuses[202] >= 10


async def test_a_flood_on_one_api_key_leaves_another_untouched(api_settings: Settings) -> None:
    settings = api_settings.model_copy(
        update={"api_rate_limit_per_s": 20.0, "api_rate_limit_burst": 40.0}
    )
    async with started("api", settings) as api:
        noisy = Service.bearer(await api.keys.make("noisy", [Scope.HEALTH_READ]))
        calm = Service.bearer(await api.keys.make("calm", [Scope.HEALTH_READ]))

        async def flood(n: int) -> httpx.Response:
            return await api.http.get(f"/v1/customers/C-{n % 50}/health", headers=noisy)

        async def quiet(n: int) -> httpx.Response:
            return await api.http.get(f"/v1/customers/C-{n % 50}/health", headers=calm)

        until = time.monotonic() + FLOOD_S
        (flooded, retry_after), (calm_statuses, latencies) = await asyncio.gather(
            _flood(flood, until), _quiet(quiet, until)
        )
    print(f"api flood: {dict(flooded)}; quiet key: {dict(calm_statuses)}")
    print(_summary("api quiet key", latencies))
    assert flooded[429] > 0, flooded
    assert all(status in (200, 404, 429) for status in flooded), flooded
    assert all(value.isdigit() and int(value) >= 1 for value in retry_after), retry_after
    assert 429 not in calm_statuses, calm_statuses
    assert all(status in (200, 404) for status in calm_statuses), calm_statuses

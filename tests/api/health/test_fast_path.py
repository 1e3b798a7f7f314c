"""The health read's fast path (touchpulse_api/fastpath.py) answers exactly as FastAPI's route.

Two apps over the same rich customers' database: the production app, and the same app with
the fast path taken out, so every request there goes through FastAPI's router, dependency
and validation. Each request is sent to both and the answers compared: status, headers and
body bytes, for every answer the route can give (200 for rich, calm and profile-only
customers, 404, 401 in its three forms, 403, 422 for a bad ``trend_days``, 429 with its
Retry-After, 503 for a lost database session and for a key store out of reach). A counter
on the fast path's inner app proves which requests the fast path answered itself and which
it left to FastAPI, so the comparison cannot pass by both apps taking the same (FastAPI)
path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as AsgiScope

from tests.api.health.rich import CALM, PROFILE_ONLY, READ_AT, RICH, build
from touchpulse_api.app import build_app
from touchpulse_api.fastpath import HealthFastPath, trend_days
from touchpulse_shared.auth import Scope, create_key
from touchpulse_shared.db.migrate import migrate_url
from touchpulse_shared.settings import Settings

pytestmark = pytest.mark.postgres

HEALTH_TEMPLATE = "/v1/customers/{customer_id}/health"
REQUEST_ID = "fast-path-test-1"


class _Counting:
    """The app behind the fast path, counting the requests that reach it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.calls = 0

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        self.calls += 1
        await self.app(scope, receive, send)


def _fast_path_of(app: FastAPI) -> HealthFastPath:
    """The fast path inside the app's built middleware stack (each middleware's ``app``
    is the next one in)."""
    layer: object = app.middleware_stack
    while layer is not None and not isinstance(layer, HealthFastPath):
        layer = getattr(layer, "app", None)
    assert isinstance(layer, HealthFastPath), "the app has no health fast path"
    return layer


@dataclass
class Pair:
    fast: FastAPI
    slow: FastAPI
    behind_fast: _Counting
    keys: dict[Scope, str]

    async def both(
        self, path: str, headers: dict[str, str] | None = None
    ) -> tuple[httpx.Response, httpx.Response]:
        sent = {"X-Request-ID": REQUEST_ID, **(headers or {})}
        answers = []
        for app in (self.fast, self.slow):
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                base_url="http://api",
            ) as client:
                answers.append(await client.get(path, headers=sent))
        return answers[0], answers[1]


def _same(fast: httpx.Response, slow: httpx.Response, what: str) -> None:
    assert fast.status_code == slow.status_code, (what, fast.text, slow.text)
    assert fast.headers.multi_items() == slow.headers.multi_items(), what
    assert fast.content == slow.content, what


#: Opens a pair whose keys may make this many requests per second, and this many at once.
Opened = Callable[[float, float], Awaitable[Pair]]


@pytest.fixture
async def open_pair(base_settings: Settings, fresh_database: str) -> AsyncIterator[Opened]:
    """Opens the two apps (lifespans started) over the rich customers' database."""
    await migrate_url(fresh_database)
    await build(fresh_database)
    async with AsyncExitStack() as stack:

        async def opened(per_s: float, burst: float) -> Pair:
            settings = base_settings.model_copy(
                update={
                    "database_url": fresh_database,
                    "auth_cache_s": 0.0,
                    "api_rate_limit_per_s": per_s,
                    "api_rate_limit_burst": burst,
                }
            )
            fast = build_app(settings, clock=lambda: READ_AT)
            slow = build_app(settings, clock=lambda: READ_AT)
            # Before the first request builds the middleware stack: FastAPI alone.
            slow.user_middleware = [
                m
                for m in slow.user_middleware
                if m.cls is not HealthFastPath  # type: ignore[comparison-overlap]
            ]
            for app in (fast, slow):
                await stack.enter_async_context(app.router.lifespan_context(app))
            pool = fast.state.api.pool
            keys = {
                scope: (await create_key(pool, name=scope, scopes=[Scope(scope)], now=READ_AT))[0]
                for scope in (Scope.HEALTH_READ, Scope.INTERVENTIONS_WRITE)
            }
            # Build the fast app's stack, then count what gets past its fast path.
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=fast), base_url="http://api"
            ) as client:
                assert (await client.get("/healthz")).status_code == 200
            fast_path = _fast_path_of(fast)
            behind = _Counting(fast_path.app)
            fast_path.app = behind
            return Pair(fast, slow, behind, keys)

        yield opened


async def test_the_fast_path_answers_as_fastapi_does(open_pair: Opened) -> None:
    pair = await open_pair(1_000_000.0, 1_000_000.0)
    reader = {"Authorization": f"Bearer {pair.keys[Scope.HEALTH_READ]}"}
    # (path, headers, status, answered by the fast path)
    cases: list[tuple[str, dict[str, str], int, bool]] = [
        (f"/v1/customers/{RICH}/health", reader, 200, True),
        (f"/v1/customers/{RICH}/health?trend_days=365", reader, 200, True),
        (f"/v1/customers/{RICH}/health?trend_days=1", reader, 200, True),
        (f"/v1/customers/{RICH}/health?trend_days=30&other=x", reader, 200, True),
        (f"/v1/customers/{RICH}/health?trend%5Fdays=7", reader, 200, True),
        (f"/v1/customers/{CALM}/health", reader, 200, True),
        (f"/v1/customers/{PROFILE_ONLY}/health", reader, 200, True),
        ("/v1/customers/G-nobody/health", reader, 404, True),
        ("/v1/customers/G%20n%C3%B6body/health", reader, 404, True),
        (f"/v1/customers/{RICH}/health", {}, 401, True),
        (f"/v1/customers/{RICH}/health", {"Authorization": "Basic eDp5"}, 401, True),
        (f"/v1/customers/{RICH}/health", {"Authorization": "Bearer tpk_nope_nope"}, 401, True),
        (
            f"/v1/customers/{RICH}/health",
            {"Authorization": f"Bearer {pair.keys[Scope.INTERVENTIONS_WRITE]}"},
            403,
            True,
        ),
        # Left to FastAPI: its validation (and the key checked before it, once).
        (f"/v1/customers/{RICH}/health?trend_days=0", reader, 422, False),
        (f"/v1/customers/{RICH}/health?trend_days=366", reader, 422, False),
        (f"/v1/customers/{RICH}/health?trend_days=abc", reader, 422, False),
        (f"/v1/customers/{RICH}/health?trend_days=", reader, 422, False),
        (f"/v1/customers/{RICH}/health?trend_days=0", {}, 401, False),
        (f"/v1/customers/{RICH}/health?trend_days=007", reader, 200, False),
        (f"/v1/customers/{RICH}/health?trend_days=5&trend_days=9", reader, 200, False),
        (f"/v1/customers/{RICH}/health/", reader, 307, False),  # the slash redirect
        ("/v1/customers//health", reader, 404, False),
    ]
    for path, headers, status, fast in cases:
        before = pair.behind_fast.calls
        answer, reference = await pair.both(path, headers)
        _same(answer, reference, path)
        assert answer.status_code == status, (path, answer.text)
        assert pair.behind_fast.calls == before + (0 if fast else 1), (path, "fast path?")
        if status in (401,):
            assert answer.headers["www-authenticate"] == 'Bearer realm="touchpulse"'


async def test_the_fast_path_limits_the_rate_as_fastapi_does(open_pair: Opened) -> None:
    # Two requests of burst, then nothing for a thousand seconds.
    pair = await open_pair(0.001, 2.0)
    reader = {"Authorization": f"Bearer {pair.keys[Scope.HEALTH_READ]}"}
    for status in (200, 200, 429, 429):
        answer, reference = await pair.both(f"/v1/customers/{CALM}/health", reader)
        _same(answer, reference, str(status))
        assert answer.status_code == status, answer.text
    assert answer.headers["retry-after"] == "1000"
    assert pair.behind_fast.calls == 0


async def test_the_fast_path_answers_503_as_fastapi_does(open_pair: Opened) -> None:
    """The database gone: first the read's pool (the session-lost 503), then the pool the
    keys are checked on (the key store's 503); each app's own pools are closed."""
    pair = await open_pair(1_000_000.0, 1_000_000.0)
    reader = {"Authorization": f"Bearer {pair.keys[Scope.HEALTH_READ]}"}
    path = f"/v1/customers/{RICH}/health"
    for closing, detail in (
        ("reads", "The database session was lost; retry later"),
        ("pool", "API keys cannot be checked right now; retry later"),
    ):
        for app in (pair.fast, pair.slow):
            await getattr(app.state.api, closing).close()
        answer, reference = await pair.both(path, reader)
        _same(answer, reference, closing)
        assert answer.status_code == 503, answer.text
        assert answer.json()["detail"] == detail
        assert "retry-after" in answer.headers
    assert pair.behind_fast.calls == 0


async def test_the_fast_path_keeps_the_request_id_and_metrics(open_pair: Opened) -> None:
    pair = await open_pair(1_000_000.0, 1_000_000.0)
    reader = {"Authorization": f"Bearer {pair.keys[Scope.HEALTH_READ]}"}
    metrics = pair.fast.state.api.metrics
    registry = metrics.registry

    def count(status: str) -> float:
        labels = {"route": HEALTH_TEMPLATE, "status": status}
        return registry.get_sample_value("touchpulse_api_requests_total", labels) or 0.0

    def timed() -> float:
        labels = {"route": HEALTH_TEMPLATE}
        name = "touchpulse_api_request_duration_seconds_count"
        return registry.get_sample_value(name, labels) or 0.0

    for headers, status in ((reader, "200"), ({}, "401")):
        counted, durations = count(status), timed()
        answer, _ = await pair.both(f"/v1/customers/{RICH}/health", headers)
        assert answer.status_code == int(status)
        assert answer.headers["x-request-id"] == REQUEST_ID
        assert count(status) == counted + 1
        assert timed() == durations + 1
    assert pair.behind_fast.calls == 0
    # A request without an id gets a new one, from the middleware around the fast path.
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=pair.fast), base_url="http://api", headers=reader
    ) as client:
        first = await client.get(f"/v1/customers/{CALM}/health")
        second = await client.get(f"/v1/customers/{CALM}/health")
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


def test_trend_days_taken_only_in_its_plain_form() -> None:
    assert trend_days(b"") == 30
    assert trend_days(b"other=1") == 30
    assert trend_days(b"trend_days=1") == 1
    assert trend_days(b"trend_days=365&x=y") == 365
    assert trend_days(b"trend%5Fdays=12") == 12
    for refused in (
        b"trend_days=0",
        b"trend_days=366",
        b"trend_days=",
        b"trend_days=+5",
        b"trend_days=05",
        b"trend_days=5.0",
        b"trend_days=%205",
        b"trend_days=1&trend_days=2",
        b"trend_days=1000",
    ):
        assert trend_days(refused) is None, refused

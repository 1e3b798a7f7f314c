"""Background loops: each one stalled is reported (``/healthz`` 503 naming it, its round age
growing on ``/metrics``) and recovers when released; a failing round never ends a loop; the
backlog waiting for a loop is exported with its age (issue 13, defect 3).

The stalls are real: a lock held on the tables a loop reads, in the real database.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import asyncpg
import httpx
import pytest

import touchpulse_api.app as api_app
from tests.scoring.pipeline.conftest import SETTLE_S, Pipeline
from touchpulse_api.app import build_app
from touchpulse_scoring.service import LOOP_STUCK_AFTER_S, ScoringService, serve_probes
from touchpulse_shared.settings import Settings

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

STUCK_S = 2.0
DB_LOOPS = ["deadline_sweep", "expiry", "follow_ups", "outbox", "state_gauges"]


@asynccontextmanager
async def scoring(settings: Settings) -> AsyncIterator[tuple[ScoringService, str]]:
    service = ScoringService(
        settings.model_copy(update={"scoring_state_metrics_interval_s": 0.3}),
        loop_stuck_after_s=dict.fromkeys(LOOP_STUCK_AFTER_S, STUCK_S),
    )
    server = await serve_probes(service, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    task = asyncio.create_task(service.run())
    try:
        async with asyncio.timeout(SETTLE_S):
            await service.ready.wait()
        yield service, f"http://127.0.0.1:{port}"
    finally:
        service.stopping.set()
        async with asyncio.timeout(SETTLE_S):
            await task
        server.close()


async def _until(check: Callable[[], Awaitable[bool]], within_s: float = SETTLE_S) -> None:
    """Poll the real state until ``check`` holds (fails on the bound)."""
    for _ in range(int(within_s / 0.1)):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{check.__name__} did not hold within {within_s} s")


def _sample(metrics: str, name: str, loop: str) -> float | None:
    found = re.search(rf'^{name}{{loop="{loop}"}} (\S+)$', metrics, re.M)
    return None if found is None else float(found.group(1))


async def test_each_stalled_scoring_loop_is_reported_and_recovers(pipeline: Pipeline) -> None:
    async with (
        scoring(pipeline.settings) as (_service, url),
        httpx.AsyncClient(base_url=url) as http,
    ):

        async def all_rounds() -> bool:
            loops = (await http.get("/healthz")).json()["loops"]
            return all(loops[name]["rounds"] > 0 for name in DB_LOOPS)

        await _until(all_rounds)
        assert (await http.get("/healthz")).status_code == 200
        # Every table these loops read, locked: their rounds block (a real stall).
        holder = await asyncpg.connect(pipeline.database_url)
        tx = holder.transaction()
        await tx.start()
        await holder.execute(
            "LOCK TABLE kafka_outbox, deadline, intervention, journey_health"
            " IN ACCESS EXCLUSIVE MODE"
        )
        try:

            async def reported() -> bool:
                answer = await http.get("/healthz")
                return answer.status_code == 503 and set(DB_LOOPS) <= set(answer.json()["stuck"])

            await _until(reported)
            metrics = (await http.get("/metrics")).text
            for name in DB_LOOPS:
                age = _sample(metrics, "touchpulse_scoring_loop_last_round_age_seconds", name)
                assert age is not None, name
                assert age > STUCK_S, (name, age)
        finally:
            await tx.rollback()
            await holder.close()

        async def healthy() -> bool:
            return (await http.get("/healthz")).status_code == 200

        await _until(healthy)


async def test_a_failing_outbox_round_never_ends_the_publisher(pipeline: Pipeline) -> None:
    """A row the publisher cannot send (malformed headers) fails its rounds: counted,
    logged, shown as backlog with its age; once it is gone, the loop publishes again. The
    old loop caught only database and Kafka errors and ended for good, silently."""
    async with (
        scoring(pipeline.settings) as (_service, url),
        httpx.AsyncClient(base_url=url) as http,
    ):
        conn = await asyncpg.connect(pipeline.database_url)
        try:
            poison = await conn.fetchval(
                "INSERT INTO kafka_outbox (topic, key, value, headers, created_at)"
                " VALUES ($1, 'k', 'v', '[[\"lonely\"]]', now() - interval '10 minutes')"
                " RETURNING id",
                pipeline.settings.health_topic,
            )

            async def failing_and_visible() -> bool:
                metrics = (await http.get("/metrics")).text
                errors = _sample(metrics, "touchpulse_scoring_loop_errors_total", "outbox")
                items = _sample(metrics, "touchpulse_scoring_loop_backlog_items", "outbox")
                age = _sample(metrics, "touchpulse_scoring_loop_backlog_age_seconds", "outbox")
                return bool(errors) and bool(items) and (age or 0) >= 600

            await _until(failing_and_visible)
            report = (await http.get("/healthz")).json()["loops"]["outbox"]
            assert report["consecutive_errors"] > 0
            assert "ValueError" in report["last_error"]
            await conn.execute("DELETE FROM kafka_outbox WHERE id = $1", poison)
            sent = await conn.fetchval(
                "INSERT INTO kafka_outbox (topic, key, value) VALUES ($1, 'k', 'v') RETURNING id",
                pipeline.settings.health_topic,
            )

            async def published() -> bool:
                return not await conn.fetchval("SELECT 1 FROM kafka_outbox WHERE id = $1", sent)

            await _until(published)
        finally:
            await conn.close()


async def test_a_stalled_webhook_dispatcher_is_reported_and_recovers(
    pipeline_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api_app, "DISPATCHER_STUCK_AFTER_S", STUCK_S)
    assert pipeline_settings.database_url is not None
    app = build_app(pipeline_settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http,
    ):

        async def rounds() -> bool:
            answer = (await http.get("/healthz")).json()
            return bool(answer["loops"]["webhook_dispatcher"]["rounds"])

        await _until(rounds)
        holder = await asyncpg.connect(pipeline_settings.database_url)
        tx = holder.transaction()
        await tx.start()
        await holder.execute("LOCK TABLE webhook_outbox IN ACCESS EXCLUSIVE MODE")
        try:

            async def reported() -> bool:
                answer = await http.get("/healthz")
                return answer.status_code == 503 and answer.json()["stuck"] == [
                    "webhook_dispatcher"
                ]

            await _until(reported)
            metrics = (await http.get("/metrics")).text
            age = _sample(
                metrics, "touchpulse_api_loop_last_round_age_seconds", "webhook_dispatcher"
            )
            assert age is not None
            assert age > STUCK_S
        finally:
            await tx.rollback()
            await holder.close()

        async def healthy() -> bool:
            return (await http.get("/healthz")).status_code == 200

        await _until(healthy)

"""The whole pipeline in one test process: events posted to ingest, scored through the real
broker into the real database, and read back through the api."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from tests.ingest.conftest import IngestClient, running
from tests.scoring.pipeline.conftest import (  # the fixture is re-used here by name
    Pipeline,
    pipeline_settings,  # noqa: F401
    running_scoring,
)
from touchpulse_api.app import build_app
from touchpulse_shared.auth import Scope, create_key
from touchpulse_shared.settings import Settings

NOW = datetime.now(UTC).replace(microsecond=0)


@dataclass
class World:
    ingest: IngestClient
    api: httpx.AsyncClient
    app: FastAPI
    pipeline: Pipeline
    keys: dict[str, str]

    def as_(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}

    async def post(self, events: list[dict[str, Any]]) -> None:
        response = await self.ingest.http.post(
            "/v1/events/batch", json={"events": events}, headers=self.ingest.auth()
        )
        assert response.status_code == 202, response.text
        assert response.json()["rejected"] == 0, response.text


def event(n: int, customer: str, kind: str, minutes_ago: int, **measures: Any) -> dict[str, Any]:
    touchpoint, event_type = {
        "call": ("call_centre", "call.answered"),
        "survey": ("survey", "survey.answered"),
        "invoice": ("billing", "invoice.issued"),
    }[kind]
    return {
        "event_id": f"api-{n}",
        "source": "billing-prod",
        "customer_id": customer,
        "touchpoint": touchpoint,
        "type": event_type,
        "occurred_at": (NOW - timedelta(minutes=minutes_ago)).isoformat(),
        "measures": measures,
    }


async def _key(url: str, name: str, scopes: list[Scope], source: str | None = None) -> str:
    conn = await asyncpg.connect(url)
    try:
        key, _ = await create_key(conn, name=name, scopes=scopes, source=source, now=NOW)
        return key
    finally:
        await conn.close()


@pytest.fixture
async def world(pipeline_settings: Settings) -> AsyncIterator[World]:  # noqa: F811
    settings = pipeline_settings.model_copy(
        update={"auth_cache_s": 0, "rate_limit_events_per_s": 10_000.0, "api_max_page_size": 50}
    )
    url = settings.database_url or ""
    async with AsyncExitStack() as stack:
        ingest = await stack.enter_async_context(running(settings))
        await stack.enter_async_context(running_scoring(settings))
        app = build_app(settings)
        await stack.enter_async_context(app.router.lifespan_context(app))
        api = await stack.enter_async_context(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                base_url="http://api",
            )
        )
        keys = {
            "reader": await _key(url, "reader", [Scope.HEALTH_READ]),
            "agent": await _key(url, "agent", [Scope.INTERVENTIONS_WRITE]),
            "admin": await _key(url, "admin", [Scope.ADMIN]),
            "writer": await _key(url, "writer", [Scope.EVENTS_WRITE], source="billing-prod"),
            "crm": await _key(
                url, "crm", [Scope.HEALTH_READ, Scope.INTERVENTIONS_WRITE, Scope.ADMIN]
            ),
        }
        yield World(ingest, api, app, Pipeline(settings, url), keys)


async def scored(world: World, events: int) -> None:
    """Until scoring has applied ``events`` events (the database is the signal)."""
    await world.pipeline.wait_for("SELECT count(*) FROM processed_event", events)

"""The api over the rich customers' database, at the golden clock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from tests.api.health.rich import READ_AT, build
from touchpulse_api.app import build_app
from touchpulse_shared.auth import Scope, create_key
from touchpulse_shared.db.migrate import migrate_url
from touchpulse_shared.settings import Settings


@pytest.fixture
async def health_app(base_settings: Settings, fresh_database: str) -> AsyncIterator[FastAPI]:
    """The api (lifespan started) over a database holding the rich customers."""
    await migrate_url(fresh_database)
    await build(fresh_database)
    settings = base_settings.model_copy(
        update={
            "database_url": fresh_database,
            "auth_cache_s": 0.0,
            "api_rate_limit_per_s": 1_000_000.0,
            "api_rate_limit_burst": 1_000_000.0,
        }
    )
    app = build_app(settings, clock=lambda: READ_AT)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def api(health_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A health:read client of :func:`health_app`."""
    key, _ = await create_key(
        health_app.state.api.pool, name="golden", scopes=[Scope.HEALTH_READ], now=READ_AT
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=health_app, raise_app_exceptions=False),
        base_url="http://api",
        headers={"Authorization": f"Bearer {key}"},
    ) as client:
        yield client

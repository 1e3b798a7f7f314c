"""The health read answers with the same bytes as stored: a rich customer scored through the
engine at fixed times, read through the api at a fixed clock.

The files under ``golden/`` are the answers the six-query read gave before the read became
one query; they keep any later change to the read (or to what scoring stores) honest. A
change that is meant to alter the answer regenerates them with
``UPDATE_GOLDEN=1`` and says why in its commit.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.api.health.rich import CALM, PROFILE_ONLY, READ_AT, RICH, build
from touchpulse_api.app import build_app
from touchpulse_shared.auth import Scope, create_key
from touchpulse_shared.db.migrate import migrate_url
from touchpulse_shared.settings import Settings

pytestmark = pytest.mark.postgres

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"

# name -> (path and query, status)
CASES = {
    "rich": (f"/v1/customers/{RICH}/health", 200),
    "rich-trend-365": (f"/v1/customers/{RICH}/health?trend_days=365", 200),
    "rich-trend-1": (f"/v1/customers/{RICH}/health?trend_days=1", 200),
    "calm": (f"/v1/customers/{CALM}/health", 200),
    "profile-only": (f"/v1/customers/{PROFILE_ONLY}/health", 200),
    "unknown": ("/v1/customers/G-nobody/health", 404),
}


@pytest.fixture
async def api(base_settings: Settings, fresh_database: str) -> AsyncIterator[httpx.AsyncClient]:
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
        key, _ = await create_key(
            app.state.api.pool, name="golden", scopes=[Scope.HEALTH_READ], now=READ_AT
        )
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
            base_url="http://api",
            headers={"Authorization": f"Bearer {key}"},
        ) as client:
            yield client


async def test_health_answers_are_the_stored_bytes(api: httpx.AsyncClient) -> None:
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
    for name, (path, status) in CASES.items():
        response = await api.get(path)
        assert response.status_code == status, (name, response.text)
        stored = GOLDEN / f"{name}.json"
        if UPDATE:
            stored.write_bytes(response.content)
            continue
        assert stored.exists(), f"{stored} is missing: run with UPDATE_GOLDEN=1"
        golden = stored.read_bytes()
        # Values first, for a readable difference; then the bytes themselves.
        assert orjson.loads(response.content) == orjson.loads(golden), name
        assert response.content == golden, name


async def test_the_rich_customer_is_rich(api: httpx.AsyncClient) -> None:
    """What the golden answer covers, so a change to the corpus cannot thin it unnoticed."""
    health = (await api.get(f"/v1/customers/{RICH}/health?trend_days=365")).json()
    assert health["open_intervention_id"] is not None
    assert len(health["touchpoints"]) >= 8
    assert sum(t["outcomes"] for t in health["touchpoints"].values()) > 200
    assert len(health["explanation"]) == 20
    assert {e["severity"] for e in health["explanation"]} == {"normal", "critical"}
    assert any(e["actual"] is None for e in health["explanation"]), "a deadline missed"
    assert len(health["trend"]) > 20
    calm = (await api.get(f"/v1/customers/{CALM}/health")).json()
    assert calm["explanation"] == []
    assert calm["open_intervention_id"] is None
    profile_only = (await api.get(f"/v1/customers/{PROFILE_ONLY}/health")).json()
    assert profile_only["score"] is None
    assert profile_only["touchpoints"] == {}

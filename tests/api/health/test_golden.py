"""The health read answers with the same bytes as stored: a rich customer scored through the
engine at fixed times, read through the api at a fixed clock.

The files under ``golden/`` are the answers the six-query read gave before the read became
one query; they keep any later change to the read (or to what scoring stores) honest. A
change that is meant to alter the answer regenerates them with
``UPDATE_GOLDEN=1`` and says why in its commit.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import orjson
import pytest

from tests.api.health.rich import CALM, PROFILE_ONLY, RICH

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

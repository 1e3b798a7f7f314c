"""The health explanation kept between reads in the api process: served again only while the
journey row is at the revision it was computed at and the catalogue is the one it was
computed with, and then the same bytes.

Each test compares with a read through a context keeping nothing (computed from the
database as it is), and fails when the check it is named for is dropped: the revision
(scoring writing the customer again; erasure and re-creation) or the catalogue (a reload).
"""

from __future__ import annotations

import gc
import os
import shutil
import tracemalloc
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from tests.api.health.rich import CALM, PROFILE_ONLY, READ_AT, RICH, START, score
from touchpulse_api import queries
from touchpulse_api.explanations import Derived, ExplanationCache
from touchpulse_api.promises.terms import older_catalogues
from touchpulse_api.routes.customers import _derived
from touchpulse_scoring.catalogue_source import CatalogueSource
from touchpulse_scoring.domain import explain, load_catalogue_file
from touchpulse_shared.auth import Scope, create_key

pytestmark = pytest.mark.postgres

HEALTH = f"/v1/customers/{RICH}/health"
CATALOGUE_FILE = Path("deploy/promises.yaml")


@pytest.fixture
def explained(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The customers the health route ran ``explain()`` for, in order."""
    calls: list[str] = []

    def counting(states: Any, outcomes: Any, catalogue: Any, at: Any) -> Any:
        found = explain(states, outcomes, catalogue, at)
        calls.append(next((e.outcome.customer_id for e in found), "?"))
        return found

    monkeypatch.setattr("touchpulse_api.routes.customers.explain", counting)
    return calls


async def _uncached(app: FastAPI, api: httpx.AsyncClient, path: str) -> httpx.Response:
    """``path`` read by the same app keeping no explanations: computed from the database."""
    context = app.state.api
    kept, context.explanations = context.explanations, ExplanationCache(0)
    try:
        return await api.get(path)
    finally:
        context.explanations = kept


def _event(n: int, at_hours: float, **measures: Any) -> dict[str, Any]:
    """A call of the rich customer ``at_hours`` after START, answered as ``measures`` say."""
    return {
        "event_id": f"{RICH}-kept-{n}",
        "source": "golden",
        "customer_id": RICH,
        "touchpoint": "call_centre",
        "type": "call.answered",
        "occurred_at": (START + timedelta(hours=at_hours)).isoformat(),
        "measures": measures,
    }


async def _score(url: str, events: list[dict[str, Any]], offset: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await score(conn, events, offset=offset)
    finally:
        await conn.close()


async def test_a_second_read_is_kept_and_the_same_bytes(
    health_app: FastAPI, api: httpx.AsyncClient, explained: list[str]
) -> None:
    cache = health_app.state.api.explanations
    first = await api.get(HEALTH)
    assert first.status_code == 200, first.text
    assert explained == [RICH]
    assert (cache.hits, cache.misses) == (0, 1)
    for path in (HEALTH, f"{HEALTH}?trend_days=365", HEALTH):
        again = await api.get(path)
        assert again.status_code == 200, again.text
        if path == HEALTH:
            assert again.content == first.content
    # Served from the entry: explain() not run again, and what a read keeping nothing says.
    assert explained == [RICH]
    assert (cache.hits, cache.misses) == (3, 1)
    assert (await _uncached(health_app, api, HEALTH)).content == first.content
    # A customer known only from a profile (no journey row: read at the api's clock) and a
    # calm one: neither is a hit on a row it has not got, and both answer as uncached.
    for customer in (PROFILE_ONLY, CALM, PROFILE_ONLY, CALM):
        path = f"/v1/customers/{customer}/health"
        assert (await api.get(path)).content == (await _uncached(health_app, api, path)).content
    assert len(cache) == 2  # RICH and CALM; never the one without a journey row


async def test_scoring_the_customer_again_recomputes(
    health_app: FastAPI, api: httpx.AsyncClient, fresh_database: str, explained: list[str]
) -> None:
    before = await api.get(HEALTH)
    assert (await api.get(HEALTH)).content == before.content
    assert len(explained) == 1
    # A breach days after the corpus (before the api's clock), through scoring's engine:
    # the journey row, the touchpoint states and the window move in one transaction.
    await _score(
        fresh_database,
        [_event(1, 47 * 24, wait_seconds=900, first_contact_resolution=False)],
        10_000,
    )
    after = await api.get(HEALTH)
    assert after.status_code == 200, after.text
    assert len(explained) == 2, "the kept explanation was served after the row changed"
    assert after.content == (await _uncached(health_app, api, HEALTH)).content
    assert after.json()["explanation"] != before.json()["explanation"]
    # And the new entry is the one served from now on.
    assert (await api.get(HEALTH)).content == after.content
    assert health_app.state.api.explanations.hits == 2


async def test_erasure_and_recreation_do_not_serve_the_old_entry(
    health_app: FastAPI, api: httpx.AsyncClient, fresh_database: str
) -> None:
    before = await api.get(HEALTH)
    assert before.json()["explanation"]
    admin, _ = await create_key(
        health_app.state.api.pool, name="admin", scopes=[Scope.ADMIN], now=READ_AT
    )
    erased = await api.delete(f"/v1/customers/{RICH}", headers={"Authorization": f"Bearer {admin}"})
    assert erased.status_code == 200, erased.text
    # The customer comes back after the erasure (events received after it are scored)
    # before this process reads them again (a read in between, a 404, would drop the
    # entry): a new journey row, with a revision the kept entry does not name.
    await _score(
        fresh_database,
        [
            _event(2, 48 * 24 + 1, wait_seconds=700, first_contact_resolution=False),
            _event(3, 48 * 24 + 2, wait_seconds=20, first_contact_resolution=True),
        ],
        20_000,
    )
    after = await api.get(HEALTH)
    assert after.status_code == 200, after.text
    assert after.content == (await _uncached(health_app, api, HEALTH)).content
    # Only what the new call broke (its wait and its resolution): nothing from before.
    assert {tuple(e["event_ids"]) for e in after.json()["explanation"]} == {
        (f"golden/{RICH}-kept-2",)
    }
    assert after.json()["explanation"] != before.json()["explanation"]
    erased = await api.delete(f"/v1/customers/{RICH}", headers={"Authorization": f"Bearer {admin}"})
    assert erased.status_code == 200, erased.text
    assert (await api.get(HEALTH)).status_code == 404


def _edit_catalogue(path: Path, *, version: str | None, delivery_importance: str) -> None:
    text = path.read_text(encoding="utf-8")
    if version is not None:
        text = text.replace('version: "2026.12.2"', f'version: "{version}"', 1)
    text = text.replace("  delivery: 1.5 ", f"  delivery: {delivery_importance} ", 1)
    path.write_text(text, encoding="utf-8")
    # A new mtime whatever the file system's clock resolution: the reload's trigger.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10_000_000))


@pytest.mark.parametrize("version", ["2026.12.99", None], ids=["new-version", "same-version"])
async def test_a_catalogue_reload_recomputes(
    health_app: FastAPI, api: httpx.AsyncClient, tmp_path: Path, version: str | None
) -> None:
    catalogue = tmp_path / "promises.yaml"
    shutil.copyfile(CATALOGUE_FILE, catalogue)
    assert 'version: "2026.12.2"' in catalogue.read_text(encoding="utf-8")
    context = health_app.state.api
    context.catalogue = CatalogueSource(catalogue)
    before = await api.get(HEALTH)
    assert (await api.get(HEALTH)).content == before.content
    assert context.explanations.hits == 1
    # Delivery weighs twice what it did: every impact on the mean part moves. A reload with
    # the version unchanged (an edit nobody versioned) is a new catalogue all the same.
    _edit_catalogue(catalogue, version=version, delivery_importance="3.0")
    reloaded = load_catalogue_file(catalogue)
    assert reloaded.touchpoints["delivery"] == 3.0
    after = await api.get(HEALTH)
    assert context.catalogue().touchpoints["delivery"] == 3.0
    assert after.content == (await _uncached(health_app, api, HEALTH)).content
    assert after.json()["explanation"] != before.json()["explanation"]
    assert context.explanations.hits == 1


def test_the_cache_is_bounded_and_least_recently_used_goes_first() -> None:
    catalogue = load_catalogue_file(CATALOGUE_FILE)
    parts = Derived(figures=b"", explanation=b"")
    cache = ExplanationCache(2)
    for customer in ("a", "b"):
        assert cache.get(customer, catalogue) is None
        cache.put(customer, "1", catalogue, parts)
    assert cache.get("a", catalogue) is not None
    cache.hit("a")  # a read served from a: b is now the least recently used
    cache.put("c", "1", catalogue, parts)
    assert len(cache) == 2
    assert cache.get("b", catalogue) is None
    assert cache.get("a", catalogue) is not None
    # A read answered from an entry that left while it waited for PostgreSQL.
    cache.hit("b")
    assert cache.hits == 2
    assert len(cache) == 2
    # Nothing kept without a journey row, nor computed with a catalogue since replaced.
    cache.put("d", None, catalogue, parts)
    assert cache.get("d", catalogue) is None
    other = load_catalogue_file(CATALOGUE_FILE)
    assert cache.get("a", other) is None
    cache.put("a", "1", catalogue, parts)
    assert cache.get("a", other) is None
    # Capacity 0 keeps nothing.
    none = ExplanationCache(0)
    assert none.get("a", catalogue) is None
    none.put("a", "1", catalogue, parts)
    assert none.get("a", catalogue) is None


async def test_a_kept_entry_is_the_answer_s_bytes(
    health_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """The rich customer's kept parts (20 explanations, 8 touchpoints) take under 12 kB: the
    default capacity (docs/api.md) rests on it. Kept as models they took 43 kB."""
    context = health_app.state.api
    catalogue = context.catalogue()
    async with context.read_pool.acquire() as conn:
        read = await queries.read_health(conn, RICH, trend_since=READ_AT - timedelta(days=30))
    assert read is not None
    assert read.states is not None
    assert read.breaches is not None
    assert read.as_of is not None
    older = await older_catalogues(context, read.breaches, catalogue)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [
            _derived(read.states, read.breaches, catalogue, read.as_of, older) for _ in range(20)
        ]
        gc.collect()
        per_entry = (tracemalloc.get_traced_memory()[0] - before) / len(kept)
    finally:
        tracemalloc.stop()
    assert per_entry < 12_000, per_entry
    # And what is kept is the answer's own JSON: the very bytes a read writes.
    answer = (await _uncached(health_app, api, HEALTH)).content
    assert kept[0].figures in answer
    assert kept[0].explanation in answer
    assert b'"explanation":[{' in kept[0].explanation

"""Who may post: the key, its scope, its source and its touchpoints."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest

from tests.ingest.conftest import SOURCE, EventFactory, IngestClient, new_key
from touchpulse_shared.auth import Scope, parse_key, revoke_key


async def _post(client: IngestClient, event: dict[str, object], headers: dict[str, str]) -> int:
    response = await client.http.post("/v1/events", json=event, headers=headers)
    assert (
        response.headers["content-type"] == "application/problem+json"
        or response.status_code == 202
    )
    return response.status_code


async def test_no_key_is_a_401_with_a_challenge(
    client: IngestClient, make_event: EventFactory
) -> None:
    response = await client.http.post("/v1/events", json=make_event())
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header",
    [
        "Bearer ",
        "Bearer garbage",
        "Basic dXNlcjpwYXNz",
        "Bearer tpk_aaaaaaaaaaaa_" + "A" * 43,
        "x" * 5000,
    ],
)
async def test_a_garbage_key_is_a_401(
    client: IngestClient, make_event: EventFactory, header: str
) -> None:
    assert await _post(client, make_event(), {"Authorization": header}) == 401


async def test_a_key_with_a_wrong_secret_is_a_401(
    client: IngestClient, make_event: EventFactory
) -> None:
    parsed = parse_key(client.key)
    assert parsed is not None
    key_id, secret = parsed
    forged = f"tpk_{key_id}_{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}"
    assert await _post(client, make_event(), {"Authorization": f"Bearer {forged}"}) == 401


async def test_the_x_api_key_header_is_accepted(
    client: IngestClient, make_event: EventFactory
) -> None:
    assert await _post(client, make_event(), {"X-API-Key": client.key}) == 202


async def test_a_revoked_key_is_a_401(client: IngestClient, make_event: EventFactory) -> None:
    key = await new_key(client.settings.database_url or "")
    assert await _post(client, make_event(), client.auth(key)) == 202
    parsed = parse_key(key)
    assert parsed is not None
    conn = await asyncpg.connect(client.settings.database_url)
    try:
        assert await revoke_key(conn, parsed[0], now=datetime.now(UTC))
    finally:
        await conn.close()
    assert await _post(client, make_event(), client.auth(key)) == 401


async def test_a_key_without_events_write_is_a_403(
    client: IngestClient, make_event: EventFactory
) -> None:
    key = await new_key(client.settings.database_url or "", scopes=[Scope.HEALTH_READ], source=None)
    assert await _post(client, make_event(), client.auth(key)) == 403


async def test_an_event_of_another_source_is_a_403(
    client: IngestClient, make_event: EventFactory
) -> None:
    assert await _post(client, make_event(source="web-prod"), client.auth()) == 403


async def test_a_key_limited_to_touchpoints_refuses_the_others(
    client: IngestClient, make_event: EventFactory
) -> None:
    key = await new_key(client.settings.database_url or "", touchpoints=["delivery"])
    assert (
        await _post(
            client, make_event(touchpoint="delivery", type="delivery.completed"), client.auth(key)
        )
        == 202
    )
    assert await _post(client, make_event(touchpoint="billing"), client.auth(key)) == 403


async def test_in_a_batch_foreign_events_are_refused_by_index(
    client: IngestClient, make_event: EventFactory
) -> None:
    events = [make_event(), make_event(source="web-prod"), make_event()]
    response = await client.http.post(
        "/v1/events/batch", json={"events": events}, headers=client.auth()
    )
    assert response.status_code == 202
    items = response.json()["items"]
    assert [i["status"] for i in items] == ["accepted", "rejected", "accepted"]
    assert items[1]["http_status"] == 403


async def test_the_database_holds_no_plaintext_key(client: IngestClient) -> None:
    parsed = parse_key(client.key)
    assert parsed is not None
    conn = await asyncpg.connect(client.settings.database_url)
    try:
        rows = await conn.fetch("SELECT * FROM api_key")
    finally:
        await conn.close()
    dump = repr([dict(r) for r in rows])
    assert client.key not in dump
    assert parsed[1] not in dump
    assert parsed[1].encode() not in b"".join(
        v for r in rows for v in r.values() if isinstance(v, bytes)
    )


async def test_over_the_rate_limit_is_a_429_with_retry_after(
    client: IngestClient, make_event: EventFactory
) -> None:
    burst = int(client.settings.rate_limit_burst)
    per_batch = client.settings.ingest_max_batch_items
    statuses = []
    for _ in range(burst // per_batch + 2):
        events = [make_event() for _ in range(per_batch)]
        response = await client.http.post(
            "/v1/events/batch", json={"events": events}, headers=client.auth()
        )
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert int(response.headers["retry-after"]) >= 1
            break
    assert statuses[-1] == 429, statuses
    # Another key is a separate tenant of the limiter and still gets through.
    other = await new_key(client.settings.database_url or "", name="other", source=SOURCE)
    assert await _post(client, make_event(), client.auth(other)) == 202

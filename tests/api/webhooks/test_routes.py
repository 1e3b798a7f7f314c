"""``/v1/webhooks`` through FastAPI with real keys: admin only, the secret shown once and
readable nowhere after (no response, no database column), forbidden URLs refused, the
delivery log and re-sending."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from standardwebhooks import Webhook

from tests.api.webhooks.conftest import Answer, Clock, Receiver, deliveries, outbox
from touchpulse_api.context import ApiContext
from touchpulse_api.metrics import ApiMetrics
from touchpulse_api.webhooks import WebhookDispatcher, router
from touchpulse_scoring.catalogue_source import CatalogueSource
from touchpulse_shared.auth import KeyVerifier, Scope, create_key
from touchpulse_shared.http.app import install_problem_docs, install_problem_handlers
from touchpulse_shared.ratelimit import RateLimiter
from touchpulse_shared.settings import Settings

Make = Callable[..., WebhookDispatcher]
CATALOGUE = Path(__file__).resolve().parents[3] / "deploy" / "promises.yaml"


@dataclass
class Api:
    http: httpx.AsyncClient
    admin: dict[str, str]
    reader: dict[str, str]
    settings: Settings


async def _key(pool: asyncpg.Pool, scopes: list[Scope]) -> dict[str, str]:
    plaintext, _ = await create_key(pool, name="test", scopes=scopes, now=datetime.now(UTC))
    return {"Authorization": f"Bearer {plaintext}"}


def build(settings: Settings, pool: asyncpg.Pool, clock: Clock) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)
    install_problem_docs(app)
    app.include_router(router)
    app.state.api = ApiContext(
        settings=settings,
        pool=pool,
        verifier=KeyVerifier(pool, cache_ttl_s=0),
        limiter=RateLimiter(settings.api_rate_limit_per_s, settings.api_rate_limit_burst),
        metrics=ApiMetrics(CollectorRegistry()),
        catalogue=CatalogueSource(CATALOGUE),
        clock=clock,
    )
    return app


@pytest.fixture
async def api(pool: asyncpg.Pool, settings: Settings, clock: Clock) -> AsyncIterator[Api]:
    settings = settings.model_copy(update={"api_max_page_size": 3})
    transport = httpx.ASGITransport(app=build(settings, pool, clock))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        yield Api(
            http,
            await _key(pool, [Scope.ADMIN]),
            await _key(pool, [Scope.HEALTH_READ, Scope.INTERVENTIONS_WRITE]),
            settings,
        )


async def _create(api: Api, url: str, **fields: Any) -> dict[str, Any]:
    body = {"url": url, "kinds": ["intervention.opened"], **fields}
    response = await api.http.post("/v1/webhooks", json=body, headers=api.admin)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def test_only_admin_keys_may_manage_webhooks(api: Api) -> None:
    body = {"url": "https://93.184.216.34/h", "kinds": ["intervention.opened"]}
    assert (await api.http.get("/v1/webhooks")).status_code == 401
    assert (await api.http.post("/v1/webhooks", json=body)).status_code == 401
    refused = await api.http.post("/v1/webhooks", json=body, headers=api.reader)
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert (await api.http.get("/v1/webhooks", headers=api.reader)).status_code == 403


async def test_the_secret_is_shown_once_and_signs_the_deliveries(
    api: Api, pool: asyncpg.Pool, receiver: Receiver, make_dispatcher: Make
) -> None:
    created = await _create(
        api, receiver.url, kinds=["intervention.opened", "intervention.opened"], description="x"
    )
    assert created["kinds"] == ["intervention.opened"]
    assert created["enabled"] is True
    secret = created["secret"]
    assert secret.startswith("whsec_")

    one = await api.http.get(f"/v1/webhooks/{created['id']}", headers=api.admin)
    assert one.status_code == 200
    assert "secret" not in one.json()
    assert one.json() == {k: v for k, v in created.items() if k != "secret"}

    await outbox(pool)
    await make_dispatcher(settings=api.settings).run_once()
    [request] = receiver.requests
    Webhook(secret).verify(request.body, request.headers)


async def test_no_secret_is_readable_from_any_response_or_column_after_creation(
    api: Api, pool: asyncpg.Pool, receiver: Receiver, make_dispatcher: Make
) -> None:
    first = await _create(api, receiver.url)
    rotated = await api.http.post(f"/v1/webhooks/{first['id']}/rotate-secret", headers=api.admin)
    assert rotated.status_code == 200, rotated.text
    second = await _create(api, receiver.url, kinds=["intervention.expired"])
    secrets = [first["secret"], rotated.json()["secret"], second["secret"]]
    assert len(set(secrets)) == 3
    await outbox(pool, "intervention.opened")
    await outbox(pool, "intervention.expired")
    receiver.answer(Answer(503))
    await make_dispatcher(settings=api.settings).run_once()
    [delivery] = [r for r in await deliveries(pool) if r["state"] == "delivered"]

    # Every form a secret could take: as shown, its base64 part, the raw key in hex
    # (bytea as text) and in base64 without padding.
    needles = []
    for secret in secrets:
        raw = base64.b64decode(secret.removeprefix("whsec_"))
        needles += [secret, secret.removeprefix("whsec_"), raw.hex(), base64.b64encode(raw)[:40]]
    needles = [n.decode() if isinstance(n, bytes) else n for n in needles]

    responses = [
        await api.http.get("/v1/webhooks", headers=api.admin),
        await api.http.get(f"/v1/webhooks/{first['id']}", headers=api.admin),
        await api.http.get(f"/v1/webhooks/{first['id']}/deliveries", headers=api.admin),
        await api.http.get(f"/v1/webhooks/deliveries/{delivery['id']}", headers=api.admin),
        await api.http.patch(
            f"/v1/webhooks/{first['id']}", json={"description": "d"}, headers=api.admin
        ),
    ]
    for response in responses:
        assert response.status_code == 200, response.text
        for needle in needles:
            assert needle not in response.text

    columns = await pool.fetch(
        """
        SELECT table_name, column_name FROM information_schema.columns
        WHERE table_schema = 'public'
        """
    )
    assert len({c["table_name"] for c in columns}) > 10
    for column in columns:
        for needle in needles:
            found = await pool.fetchval(
                f'SELECT count(*) FROM "{column["table_name"]}" '  # noqa: S608 - catalogue names
                f'WHERE strpos(lower("{column["column_name"]}"::text), lower($1)) > 0',
                needle,
            )
            assert found == 0, f"{column['table_name']}.{column['column_name']} holds a secret"


async def test_a_rotated_secret_is_new_and_shown_once(api: Api) -> None:
    created = await _create(api, "https://93.184.216.34/h")
    response = await api.http.post(f"/v1/webhooks/{created['id']}/rotate-secret", headers=api.admin)
    assert response.status_code == 200
    body = response.json()
    assert body["secret"] != created["secret"]
    assert body["previous_secret_valid_until"]
    missing = await api.http.post("/v1/webhooks/wh_nope/rotate-secret", headers=api.admin)
    assert missing.status_code == 404


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/hook",
        "http://192.168.1.1/hook",
        "http://172.16.0.1/hook",
        "http://[fd00::1]/hook",
        "http://0.0.0.0/hook",
        "http://localhost/hook",
    ],
)
async def test_forbidden_targets_are_refused_naming_the_url_field(
    api: Api, pool: asyncpg.Pool, url: str
) -> None:
    strict = api.settings.model_copy(update={"webhook_allow_private_targets": False})
    app = build(strict, pool, Clock())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api"
    ) as http:
        body = {"url": url, "kinds": ["intervention.opened"]}
        response = await http.post("/v1/webhooks", json=body, headers=api.admin)
        assert response.status_code == 422, response.text
        [error] = response.json()["errors"]
        assert error["pointer"] == "/body/url"
        assert error["code"] == "forbidden_target"

        created = await _create(api, "https://93.184.216.34/h")
        patch = await http.patch(
            f"/v1/webhooks/{created['id']}", json={"url": url}, headers=api.admin
        )
        assert patch.status_code == 422
        assert patch.json()["errors"][0]["pointer"] == "/body/url"
    assert await pool.fetchval("SELECT count(*) FROM webhook_subscription WHERE url = $1", url) == 0


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"url": "ftp://x.example/h", "kinds": ["intervention.opened"]}, "/body/url"),
        ({"url": "https://u:p@93.184.216.34/h", "kinds": ["intervention.opened"]}, "/body/url"),
        ({"url": "https://93.184.216.34/h", "kinds": []}, "/body/kinds"),
        ({"url": "https://93.184.216.34/h", "kinds": ["health.changed"]}, "/body/kinds/0"),
        ({"url": "https://93.184.216.34/h"}, "/body/kinds"),
        (
            {"url": "https://93.184.216.34/h", "kinds": ["intervention.opened"], "enabled": 1},
            "/body/enabled",
        ),
        (
            {"url": "https://93.184.216.34/h", "kinds": ["intervention.opened"], "nonce": "x"},
            "/body/nonce",
        ),
        (
            {
                "url": "https://93.184.216.34/h",
                "kinds": ["intervention.opened"],
                "description": "a\x00",
            },
            "/body/description",
        ),
        (
            {
                "url": "https://93.184.216.34/h",
                "kinds": ["intervention.opened"],
                "description": "\ud800",
            },
            "/body/description",
        ),
        ({"url": "https://93.184.216.34/\ud800", "kinds": ["intervention.opened"]}, "/body/url"),
        ({"url": "https://93.184.216.34/\x00", "kinds": ["intervention.opened"]}, "/body/url"),
    ],
)
async def test_bad_fields_are_named(api: Api, body: dict[str, Any], pointer: str) -> None:
    # Encoded by hand: httpx refuses to encode a lone surrogate, a client may still send one.
    content = json.dumps(body)
    response = await api.http.post(
        "/v1/webhooks",
        content=content,
        headers={**api.admin, "content-type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert pointer in [e["pointer"] for e in response.json()["errors"]]


async def test_update_enable_and_delete(api: Api) -> None:
    created = await _create(api, "https://93.184.216.34/h")
    path = f"/v1/webhooks/{created['id']}"

    off = await api.http.patch(path, json={"enabled": False}, headers=api.admin)
    assert off.status_code == 200
    assert off.json()["enabled"] is False
    assert off.json()["disabled_reason"] == "disabled by an admin"

    on = await api.http.patch(
        path,
        json={"enabled": True, "kinds": ["intervention.expired", "intervention.resolved"]},
        headers=api.admin,
    )
    assert on.json()["enabled"] is True
    assert on.json()["disabled_reason"] is None
    assert on.json()["kinds"] == ["intervention.expired", "intervention.resolved"]
    assert on.json()["url"] == "https://93.184.216.34/h"

    null = await api.http.patch(path, json={"url": None}, headers=api.admin)
    assert null.status_code == 422
    extra = await api.http.patch(
        path, json={"created_at": "2020-01-01T00:00:00Z"}, headers=api.admin
    )
    assert extra.status_code == 422

    assert (await api.http.delete(path, headers=api.admin)).status_code == 204
    assert (await api.http.get(path, headers=api.admin)).status_code == 404
    assert (await api.http.delete(path, headers=api.admin)).status_code == 404
    assert (await api.http.patch(path, json={}, headers=api.admin)).status_code == 404
    for odd in ("wh_%00", "x" * 300, "%F0%9F%98%80"):
        answer = await api.http.get(f"/v1/webhooks/{odd}", headers=api.admin)
        assert answer.status_code == 404, odd
        answer = await api.http.get(f"/v1/webhooks/deliveries/{odd}", headers=api.admin)
        assert answer.status_code == 404, odd


async def test_subscriptions_are_listed_in_capped_pages(api: Api) -> None:
    made = [(await _create(api, f"https://93.184.216.34/{n}"))["id"] for n in range(5)]
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params = {"limit": 100} | ({"cursor": cursor} if cursor else {})
        page = await api.http.get("/v1/webhooks", params=params, headers=api.admin)
        assert page.status_code == 200
        assert len(page.json()["items"]) <= 3  # the server's cap
        seen += [s["id"] for s in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == made  # oldest first
    for bad in ("%%%", "WzFd", "WyJhIiwiYiJd"):  # garbage, [1], ["a","b"]
        answer = await api.http.get("/v1/webhooks", params={"cursor": bad}, headers=api.admin)
        assert answer.status_code == 400, bad


async def test_the_delivery_log_pages_newest_first_and_resends(
    *,
    api: Api,
    pool: asyncpg.Pool,
    receiver: Receiver,
    make_dispatcher: Make,
    clock: Clock,
) -> None:
    created = await _create(api, receiver.url)
    for n in range(5):
        await outbox(pool, intervention_id=f"iv-{n}")
    receiver.answer(Answer(503, body=b"busy"))
    dispatcher = make_dispatcher(settings=api.settings)
    await dispatcher.run_once()
    log_path = f"/v1/webhooks/{created['id']}/deliveries"

    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {"cursor": cursor} if cursor else {}
        page = await api.http.get(log_path, params=params, headers=api.admin)
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    rows = await deliveries(pool)
    assert [i["id"] for i in items] == [r["id"] for r in reversed(rows)]
    states = {i["id"]: i["state"] for i in items}
    assert sorted(states.values()) == ["delivered"] * 4 + ["pending"]
    pending = next(i for i in items if i["state"] == "pending")
    assert pending["last_error"] == "HTTP 503: busy"
    assert pending["attempts"] == 1

    only_pending = await api.http.get(log_path, params={"state": "pending"}, headers=api.admin)
    assert [i["id"] for i in only_pending.json()["items"]] == [pending["id"]]

    detail = await api.http.get(f"/v1/webhooks/deliveries/{pending['id']}", headers=api.admin)
    assert detail.status_code == 200
    assert detail.json()["payload"]["intervention_id"].startswith("iv-")
    assert [a["status"] for a in detail.json()["attempt_log"]] == [503]

    # Pending: it will be retried anyway.
    conflict = await api.http.post(
        f"/v1/webhooks/deliveries/{pending['id']}/resend", headers=api.admin
    )
    assert conflict.status_code == 409

    # A delivered one is sent again now, with the same webhook-id.
    done = next(i for i in items if i["state"] == "delivered")
    resent = await api.http.post(f"/v1/webhooks/deliveries/{done['id']}/resend", headers=api.admin)
    assert resent.status_code == 202, resent.text
    assert resent.json()["state"] == "pending"
    before = len(receiver.requests)
    await dispatcher.run_once()
    again = [r for r in receiver.requests[before:] if r.webhook_id == done["id"]]
    assert len(again) == 1
    assert (await api.http.get(f"/v1/webhooks/deliveries/{done['id']}", headers=api.admin)).json()[
        "state"
    ] == "delivered"

    # A disabled subscription's deliveries are not re-sent until it is enabled again.
    await api.http.patch(
        f"/v1/webhooks/{created['id']}", json={"enabled": False}, headers=api.admin
    )
    refused = await api.http.post(f"/v1/webhooks/deliveries/{done['id']}/resend", headers=api.admin)
    assert refused.status_code == 409
    missing = await api.http.post("/v1/webhooks/deliveries/msg_nope/resend", headers=api.admin)
    assert missing.status_code == 404
    assert (
        await api.http.get("/v1/webhooks/wh_nope/deliveries", headers=api.admin)
    ).status_code == 404
    for bad in ("YWJj", "WyJhIl0=", "W3RydWVd", "Wy0xXQ=="):  # abc, ["a"], [true], [-1]
        answer = await api.http.get(log_path, params={"cursor": bad}, headers=api.admin)
        assert answer.status_code == 400, bad


async def test_the_openapi_document_describes_every_route_with_examples(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    document = build(settings, pool, Clock()).openapi()
    paths = document["paths"]
    assert set(paths) == {
        "/v1/webhooks",
        "/v1/webhooks/{subscription_id}",
        "/v1/webhooks/{subscription_id}/deliveries",
        "/v1/webhooks/{subscription_id}/rotate-secret",
        "/v1/webhooks/deliveries/{delivery_id}",
        "/v1/webhooks/deliveries/{delivery_id}/resend",
    }
    schemas = document["components"]["schemas"]
    for name in ("WebhookCreate", "WebhookSubscriptionCreated", "WebhookDelivery"):
        assert schemas[name].get("examples"), name
    assert schemas["WebhookCreate"]["additionalProperties"] is False
    assert "secret" not in schemas["WebhookSubscription"]["properties"]
    create = paths["/v1/webhooks"]["post"]["responses"]
    assert {"201", "401", "403", "422"} <= set(create)

"""Every endpoint of ingest and the api, read from the running processes' OpenAPI documents,
against every kind of key: none, garbage, a malformed header, a revoked key, each single
scope, and writers bound to another source or other touchpoints. An endpoint added without
a row in REQUIRED fails here. Then: no secret readable from any response or column.

tests/api/endpoints/test_workflow.py has a hand-written matrix (none, garbage, four scopes,
no webhook routes); this one is complete by construction and adds revoked and malformed keys.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import asyncpg
import pytest

from tests.abuse.conftest import SOURCE, Service, event
from touchpulse_shared.auth import Scope, parse_key

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

# (method, path template) -> the scope it needs (several: any one of them); None: open to
# anyone.
REQUIRED: dict[tuple[str, str], Scope | tuple[Scope, ...] | None] = {
    ("GET", "/healthz"): None,
    ("GET", "/readyz"): None,
    ("POST", "/v1/events"): Scope.EVENTS_WRITE,
    ("POST", "/v1/events/batch"): Scope.EVENTS_WRITE,
    ("GET", "/v1/customers/{customer_id}/health"): Scope.HEALTH_READ,
    ("GET", "/v1/customers/{customer_id}/gaps"): Scope.HEALTH_READ,
    ("GET", "/v1/customers/at-risk"): Scope.HEALTH_READ,
    ("GET", "/v1/customers/{customer_id}/profile"): Scope.HEALTH_READ,
    ("PUT", "/v1/customers/{customer_id}/profile"): Scope.ADMIN,
    ("DELETE", "/v1/customers/{customer_id}"): Scope.ADMIN,
    ("GET", "/v1/interventions"): Scope.HEALTH_READ,
    ("GET", "/v1/interventions/{intervention_id}"): Scope.HEALTH_READ,
    ("POST", "/v1/interventions/{intervention_id}/acknowledge"): Scope.INTERVENTIONS_WRITE,
    ("POST", "/v1/interventions/{intervention_id}/resolve"): Scope.INTERVENTIONS_WRITE,
    ("POST", "/v1/interventions/{intervention_id}/notes"): Scope.INTERVENTIONS_WRITE,
    ("POST", "/v1/interventions/{intervention_id}/snooze"): Scope.INTERVENTIONS_WRITE,
    ("POST", "/v1/interventions/{intervention_id}/reassign"): Scope.INTERVENTIONS_WRITE,
    ("GET", "/v1/gaps"): Scope.HEALTH_READ,
    ("GET", "/v1/promises"): Scope.HEALTH_READ,
    ("GET", "/v1/promises/versions"): Scope.HEALTH_READ,
    ("POST", "/v1/promises/evaluate"): Scope.HEALTH_READ,
    ("GET", "/v1/keys"): Scope.ADMIN,
    ("POST", "/v1/keys"): Scope.ADMIN,
    ("DELETE", "/v1/keys/{key_id}"): Scope.ADMIN,
    # A touchpoint team's key reads its own source's feedback; an admin's every source's.
    ("GET", "/v1/sources/{source}/quality"): (Scope.ADMIN, Scope.EVENTS_WRITE),
    ("GET", "/v1/dead-letters"): (Scope.ADMIN, Scope.EVENTS_WRITE),
}
WEBHOOK_PREFIX = "/v1/webhooks"  # every webhook route is admin-only

PARAMS = {
    "customer_id": "C-matrix",
    "intervention_id": "iv-matrix",
    "key_id": "aaaaaaaaaaaa",
    "subscription_id": "wh_" + "a" * 26,
    "delivery_id": "msg_" + "0" * 32,
    "source": SOURCE,  # the matrix's writer key is bound to it
}
ALL_SCOPES = [Scope.HEALTH_READ, Scope.INTERVENTIONS_WRITE, Scope.ADMIN]


def needed(method: str, path: str) -> Scope | tuple[Scope, ...] | None:
    if path.startswith(WEBHOOK_PREFIX):
        return Scope.ADMIN
    assert (method, path) in REQUIRED, f"{method} {path} has no row in the matrix: add one"
    return REQUIRED[(method, path)]


async def operations(service: Service) -> list[tuple[str, str]]:
    document = (await service.http.get("/openapi.json")).json()
    found = [
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    ]
    assert found, "the OpenAPI document lists no operation"
    return found


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: PARAMS.get(m.group(1), "x"), path)


async def kinds(service: Service) -> dict[str, dict[str, str]]:
    """The callers: header sets by name; single-scope keys are named by their scope."""
    revoked = await service.keys.make("revoked", [*ALL_SCOPES, Scope.EVENTS_WRITE], source=SOURCE)
    await service.keys.revoke(revoked)
    callers = {
        "none": {},
        "garbage": {"Authorization": "Bearer tpk_garbage"},
        "garbage x-api-key": {"X-API-Key": "not-a-key"},
        "malformed scheme": {"Authorization": "Basic dXNlcjpwYXNz"},
        "malformed empty bearer": {"Authorization": "Bearer"},
        "revoked": Service.bearer(revoked),
    }
    for scope in ALL_SCOPES:
        callers[scope.value] = Service.bearer(await service.keys.make(scope.value, [scope]))
    key = await service.keys.make("writer", [Scope.EVENTS_WRITE], source=SOURCE)
    # Through the other header, so both ways of presenting a key are in the matrix.
    callers[Scope.EVENTS_WRITE.value] = {"X-API-Key": key}
    return callers


def body_for(method: str, path: str) -> Any:
    if path == "/v1/events":
        return event(1)
    if path == "/v1/events/batch":
        return {"events": [event(2)]}
    return {} if method in {"POST", "PUT", "PATCH"} else None


async def check_matrix(service: Service) -> list[str]:
    callers = await kinds(service)
    problems: list[str] = []
    for method, template in await operations(service):
        scope = needed(method, template)
        allowed = {s.value for s in ((scope,) if isinstance(scope, Scope) else scope or ())}
        path = concrete(template)
        for caller, headers in callers.items():
            response = await service.http.request(
                method, path, json=body_for(method, template), headers=headers
            )
            status = response.status_code
            where = f"{method} {template} as {caller}: {status}"
            if status >= 500:
                problems.append(f"{where} (server error) {response.text[:200]}")
            elif scope is None:
                if status in (401, 403):
                    problems.append(f"{where}, expected open")
            elif caller in {s.value for s in Scope}:
                if caller in allowed and status in (401, 403):
                    problems.append(f"{where}, expected allowed")
                if caller not in allowed and status != 403:
                    problems.append(f"{where}, expected 403")
            elif status != 401:
                problems.append(f"{where}, expected 401")
            elif not response.headers.get("www-authenticate", "").startswith("Bearer"):
                problems.append(f"{where} without a Bearer challenge")
    return problems


async def test_every_ingest_endpoint_against_every_kind_of_key(ingest: Service) -> None:
    problems = await check_matrix(ingest)
    assert problems == [], "\n".join(problems)
    # Writers bound elsewhere: another source, other touchpoints.
    other_source = await ingest.keys.make("web", [Scope.EVENTS_WRITE], source="web-prod")
    delivery_only = await ingest.keys.make(
        "delivery", [Scope.EVENTS_WRITE], source=SOURCE, touchpoints=["delivery"]
    )
    for key in (other_source, delivery_only):
        single = await ingest.http.post("/v1/events", json=event(3), headers=Service.bearer(key))
        assert single.status_code == 403, single.text
        batch = await ingest.http.post(
            "/v1/events/batch", json={"events": [event(4)]}, headers=Service.bearer(key)
        )
        assert batch.status_code == 422, batch.text  # no event accepted: each one says 403
        # The 422's items carry the status as "status" (the 202's as "http_status").
        items = batch.json()["items"]
        assert [i.get("http_status", i["status"]) for i in items] == [403], items


async def test_every_api_endpoint_against_every_kind_of_key(api: Service) -> None:
    problems = await check_matrix(api)
    assert problems == [], "\n".join(problems)
    await source_rule(api)


async def source_rule(api: Service) -> None:
    """The scope rule of the feedback routes: a touchpoint team's key reads its own source's
    quality and dead letters and is refused another's (existing or not), an admin reads all."""
    ours = Service.bearer(await api.keys.make("billing", [Scope.EVENTS_WRITE], source=SOURCE))
    theirs = Service.bearer(await api.keys.make("web", [Scope.EVENTS_WRITE], source="web-prod"))
    admin = Service.bearer(await api.keys.make("operator", [Scope.ADMIN]))
    own = [f"/v1/sources/{SOURCE}/quality", f"/v1/dead-letters?source={SOURCE}"]
    other = ["/v1/sources/web-prod/quality", "/v1/dead-letters?source=web-prod"]
    for key in (ours, theirs, admin):  # no source named: a bound key's own, an admin's all
        assert (await api.http.get("/v1/dead-letters", headers=key)).status_code == 200
    for path in own:
        assert (await api.http.get(path, headers=ours)).status_code == 200, path
        assert (await api.http.get(path, headers=theirs)).status_code == 403, path
        assert (await api.http.get(path, headers=admin)).status_code == 200, path
    for path in other:
        assert (await api.http.get(path, headers=ours)).status_code == 403, path
        assert (await api.http.get(path, headers=theirs)).status_code == 200, path


def _needles(secret: str) -> list[str]:
    """Every form a secret could be stored or shown in."""
    forms = [secret]
    parsed = parse_key(secret)
    if parsed is not None:
        forms.append(parsed[1])
        forms.append(parsed[1].encode().hex())
    if secret.startswith("whsec_"):
        raw = base64.b64decode(secret.removeprefix("whsec_"))
        forms += [secret.removeprefix("whsec_"), raw.hex(), base64.b64encode(raw).decode()[:40]]
    return forms


async def test_no_secret_is_readable_from_any_response_or_column(api: Service) -> None:
    admin = Service.bearer(await api.keys.make("admin", ALL_SCOPES))
    secrets = list(api.keys.made.values())
    made = await api.http.post(
        "/v1/keys", json={"name": "crm", "scopes": ["health:read"]}, headers=admin
    )
    assert made.status_code == 201, made.text
    secrets.append(made.json()["key"])
    writer = await api.http.post(
        "/v1/keys",
        json={"name": "w", "scopes": ["events:write"], "source": SOURCE},
        headers=admin,
    )
    assert writer.status_code == 201, writer.text
    secrets.append(writer.json()["key"])
    hook = await api.http.post(
        "/v1/webhooks",
        json={"url": "https://93.184.216.34/h", "kinds": ["intervention.opened"]},
        headers=admin,
    )
    assert hook.status_code == 201, hook.text
    secrets.append(hook.json()["secret"])
    rotated = await api.http.post(f"/v1/webhooks/{hook.json()['id']}/rotate-secret", headers=admin)
    assert rotated.status_code == 200, rotated.text
    secrets.append(rotated.json()["secret"])
    needles = [n for s in secrets for n in _needles(s)]

    PARAMS["subscription_id"] = hook.json()["id"]
    try:
        read = 0
        for method, template in await operations(api):
            if method != "GET":
                continue
            response = await api.http.get(concrete(template), headers=admin)
            assert response.status_code < 500, (template, response.text)
            read += 1
            for needle in needles:
                assert needle not in response.text, f"GET {template} shows a secret"
        for path in ("/metrics", "/openapi.json"):
            text = (await api.http.get(path)).text
            assert not any(n in text for n in needles), path
    finally:
        PARAMS["subscription_id"] = "wh_" + "a" * 26
    assert read > 10

    conn = await asyncpg.connect(api.settings.database_url)
    try:
        columns = await conn.fetch(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public'"
        )
        assert len({c["table_name"] for c in columns}) > 10
        for column in columns:
            for needle in needles:
                found = await conn.fetchval(
                    f'SELECT count(*) FROM "{column["table_name"]}" '  # noqa: S608 - catalogue names
                    f'WHERE strpos(lower("{column["column_name"]}"::text), lower($1)) > 0',
                    needle,
                )
                assert found == 0, f"{column['table_name']}.{column['column_name']} holds a secret"
    finally:
        await conn.close()

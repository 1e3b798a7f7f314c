"""Hand-made hostile requests against the real ingest and api processes, over real sockets.

Each must get a 4xx problem+json (naming the field where there is one), never a 5xx, and the
process must keep serving: /readyz is asked after every case. The server errors are counted
and the count must be 0; every verdict is printed for the report.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import orjson
import pytest

from tests.abuse.conftest import SOURCE, Service, event
from touchpulse_shared.auth import Scope

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

PROBLEM = "application/problem+json"
JSON = "application/json"
DEPTH = 10_000
MB = 1024 * 1024


@dataclass
class Case:
    name: str
    method: str
    path: str
    body: bytes | None = None
    content_type: str | None = JSON
    headers: dict[str, str] = field(default_factory=dict)
    #: The statuses this case may get (all 4xx); None: any 4xx.
    expect: tuple[int, ...] | None = None
    #: A JSON Pointer the problem's errors must name.
    pointer: str | None = None
    #: Accepted is a correct answer too (the input is odd but legal JSON).
    may_accept: bool = False
    #: Illegal HTTP: the server's protocol layer refuses it with a plain 400, before the app.
    protocol: bool = False


@dataclass
class Verdicts:
    lines: list[str] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)


def nested(depth: int, kind: str) -> bytes:
    opening, closing = ("[", "]") if kind == "array" else ('{"a":', "}")
    return opening.encode() * depth + b"1" + closing.encode() * depth


def native(**overrides: Any) -> bytes:
    return orjson.dumps(event(1, **overrides))


def with_raw(field_name: str, raw: bytes) -> bytes:
    """A valid event whose ``field_name`` is replaced by ``raw`` JSON text, byte for byte."""
    body = orjson.dumps(event(2, **{field_name: "__RAW__"}))
    return body.replace(b'"__RAW__"', raw)


def ingest_cases() -> list[Case]:
    batch_10k = orjson.dumps({"events": [event(n) for n in range(10_000)]})
    return [
        Case(
            "deep arrays in attributes",
            "POST",
            "/v1/events",
            with_raw("attributes", nested(DEPTH, "array")),
        ),
        Case(
            "deep objects in attributes",
            "POST",
            "/v1/events",
            with_raw("attributes", nested(DEPTH, "object")),
        ),
        Case(
            "deep arrays in measures",
            "POST",
            "/v1/events",
            with_raw("measures", nested(DEPTH, "array")),
        ),
        Case(
            "deep objects in measures",
            "POST",
            "/v1/events",
            with_raw("measures", nested(DEPTH, "object")),
        ),
        Case(
            "deep arrays as the batch",
            "POST",
            "/v1/events/batch",
            b'{"events":' + nested(DEPTH, "array") + b"}",
        ),
        Case(
            "shallow nesting in an attribute",
            "POST",
            "/v1/events",
            native(attributes={"a": {"b": [1]}}),
            pointer="/attributes/a",
        ),
        Case(
            "1 MB attribute string",
            "POST",
            "/v1/events",
            native(attributes={"note": "x" * MB}),
            expect=(422,),
            pointer="/attributes/note",
        ),
        Case(
            "1 MB customer id",
            "POST",
            "/v1/events",
            native(customer_id="c" * MB),
            expect=(422,),
            pointer="/customer_id",
        ),
        Case(
            "1 MB event id",
            "POST",
            "/v1/events",
            native(event_id="e" * MB),
            expect=(422,),
            pointer="/event_id",
        ),
        Case(
            "1 MB measure name", "POST", "/v1/events", native(measures={"m" * MB: 1}), expect=(422,)
        ),
        Case(
            "10 MB body with a length",
            "POST",
            "/v1/events/batch",
            b"[" + b" " * (10 * MB) + b"]",
            expect=(413,),
        ),
        Case(
            "10 MB single event",
            "POST",
            "/v1/events",
            native(attributes={"n": "y" * (10 * MB)}),
            expect=(413,),
        ),
        Case(
            "invalid UTF-8 in a string",
            "POST",
            "/v1/events",
            native().replace(b"cust-1", b"cust-\xff\xfe"),
            expect=(400,),
        ),
        Case(
            "invalid UTF-8 overlong NUL",
            "POST",
            "/v1/events",
            native().replace(b"INV-1", b"INV-\xc0\x80"),
            expect=(400,),
        ),
        Case(
            "lone surrogate escape",
            "POST",
            "/v1/events",
            native().replace(b"INV-1", b"INV-\\ud800"),
            expect=(400, 422),
        ),
        Case(
            "NaN measure",
            "POST",
            "/v1/events",
            with_raw("measures", b'{"wait_seconds":NaN}'),
            expect=(400, 422),
        ),
        Case(
            "Infinity measure",
            "POST",
            "/v1/events",
            with_raw("measures", b'{"wait_seconds":Infinity}'),
            expect=(400, 422),
        ),
        Case(
            "-Infinity measure",
            "POST",
            "/v1/events",
            with_raw("measures", b'{"wait_seconds":-Infinity}'),
            expect=(400, 422),
        ),
        Case(
            "1e400 overflows to infinity",
            "POST",
            "/v1/events",
            with_raw("measures", b'{"wait_seconds":1e400}'),
            expect=(400, 422),
            pointer="/measures/wait_seconds",
        ),
        Case(
            "a 400-digit integer measure",
            "POST",
            "/v1/events",
            with_raw("measures", b'{"wait_seconds":' + b"9" * 400 + b"}"),
            expect=(400, 422),
        ),
        Case(
            "NaN in a batch item",
            "POST",
            "/v1/events/batch",
            b'{"events":[' + with_raw("measures", b'{"x":NaN}') + b"]}",
            expect=(400, 422),
        ),
        Case("10,000 events in a batch", "POST", "/v1/events/batch", batch_10k, expect=(413,)),
        Case(
            "duplicate keys",
            "POST",
            "/v1/events",
            native()[:-1] + b',"customer_id":"cust-dup"}',
            may_accept=True,
        ),
        Case(
            "duplicate source key naming another source",
            "POST",
            "/v1/events",
            native()[:-1] + b',"source":"web-prod"}',
            expect=(403,),
        ),
        Case(
            "text/plain", "POST", "/v1/events", native(), content_type="text/plain", expect=(415,)
        ),
        Case("no content type", "POST", "/v1/events", native(), content_type=None, expect=(415,)),
        Case(
            "content type with junk parameters",
            "POST",
            "/v1/events",
            native(),
            content_type="application/xml; charset=\x01",
            expect=(400, 415),
            protocol=True,
        ),
        Case(
            "form encoded",
            "POST",
            "/v1/events/batch",
            b"events=1",
            content_type="application/x-www-form-urlencoded",
            expect=(415,),
        ),
        Case("empty body", "POST", "/v1/events", b"", expect=(400,)),
        Case("empty batch body", "POST", "/v1/events/batch", b"", expect=(400,)),
        Case("whitespace body", "POST", "/v1/events", b"   \n ", expect=(400,)),
        Case("JSON null", "POST", "/v1/events", b"null", expect=(400, 422)),
        Case("JSON string", "POST", "/v1/events", b'"event"', expect=(400, 422)),
        Case(
            "NUL in customer id",
            "POST",
            "/v1/events",
            native(customer_id="a\x00b"),
            expect=(422,),
            pointer="/customer_id",
        ),
        Case(
            "NUL in an attribute",
            "POST",
            "/v1/events",
            native(attributes={"note": "a\x00b"}),
            may_accept=True,
        ),
        Case(
            "NUL in an attribute name",
            "POST",
            "/v1/events",
            native(attributes={"a\x00b": "x"}),
            may_accept=True,
        ),
        Case("NUL in the path", "POST", "/v1/events%00", native(), expect=(400, 404)),
        Case("NUL in the query", "POST", "/v1/events?x=%00", native(), expect=(400,)),
        Case(
            "CloudEvent with deep data",
            "POST",
            "/v1/events",
            b'{"specversion":"1.0","id":"x","source":"billing-prod","type":"invoice.issued","customerid":"c","touchpoint":"billing","data":'
            + nested(DEPTH, "object")
            + b"}",
            content_type="application/cloudevents+json",
        ),
        Case(
            "CloudEvents batch of 10,000",
            "POST",
            "/v1/events",
            orjson.dumps([{"specversion": "1.0"}] * 10_000),
            content_type="application/cloudevents-batch+json",
            expect=(413,),
        ),
        Case(
            "binary CloudEvent with a 1 MB header",
            "POST",
            "/v1/events",
            b"{}",
            headers={"ce-id": "i" * MB},
            expect=(400, 413, 422, 431),
        ),
    ]


async def judge(service: Service, key: str, cases: list[Case], verdicts: Verdicts) -> None:
    for case in cases:
        headers = {**case.headers, **Service.bearer(key)}
        if case.content_type is not None:
            headers["content-type"] = case.content_type
        try:
            response = await service.http.request(
                case.method, case.path, content=case.body, headers=headers
            )
        except httpx.HTTPError as exc:
            # The server may close a connection it will not read (h11 limits): fine, as
            # long as it keeps serving, which is checked below.
            verdicts.lines.append(f"{case.name}: connection {type(exc).__name__}")
            assert await service.ready(), f"{case.name}: the service stopped serving"
            continue
        status = response.status_code
        verdicts.lines.append(f"{case.name}: {status}")
        if status >= 500:
            verdicts.server_errors.append(f"{case.name}: {status} {response.text[:300]}")
        elif status < 400 and not case.may_accept:
            verdicts.wrong.append(f"{case.name}: {status} accepted {response.text[:300]}")
        elif status >= 400:
            problem = response.headers.get("content-type") == PROBLEM
            if not problem and not (case.protocol and status == 400):
                verdicts.wrong.append(f"{case.name}: {status} not problem+json")
            elif case.expect is not None and status not in case.expect:
                verdicts.wrong.append(f"{case.name}: {status}, expected {case.expect}")
            elif case.pointer is not None:
                # The api names body fields with or without FastAPI's /body prefix.
                pointers = {p.removeprefix("/body") for p in _pointers(response.json())}
                if case.pointer.removeprefix("/body") not in pointers:
                    verdicts.wrong.append(f"{case.name}: names {pointers}, not {case.pointer}")
        assert await service.ready(), f"after {case.name!r} the service stopped serving"


def _pointers(body: dict[str, Any]) -> set[str]:
    found = {e.get("pointer") for e in body.get("errors", [])}
    for item in body.get("items", []):
        found |= {e.get("pointer") for e in item.get("errors", [])}
    return {p for p in found if p}


async def test_nasty_payloads_against_ingest_are_4xx_never_5xx(ingest: Service) -> None:
    key = await ingest.keys.make("nasty", [Scope.EVENTS_WRITE], source=SOURCE)
    verdicts = Verdicts()
    await judge(ingest, key, ingest_cases(), verdicts)
    await raw_socket_cases(ingest, key, "/v1/events", native(), verdicts)
    print("\n".join(["ingest verdicts:", *verdicts.lines]))  # the report's table
    assert verdicts.server_errors == [], verdicts.server_errors
    assert verdicts.wrong == [], verdicts.wrong
    # And it still does its job.
    good = await ingest.http.post("/v1/events", json=event(99), headers=Service.bearer(key))
    assert good.status_code == 202, good.text


def api_cases() -> list[Case]:
    profile = "/v1/customers/C-nasty/profile"
    return [
        Case(
            "profile: deep nesting", "PUT", profile, b'{"segment":' + nested(DEPTH, "array") + b"}"
        ),
        Case("profile: deep objects", "PUT", profile, nested(DEPTH, "object")),
        Case(
            "profile: 1 MB segment",
            "PUT",
            profile,
            orjson.dumps({"segment": "s" * MB}),
            expect=(422,),
            pointer="/body/segment",
        ),
        Case("profile: NaN value", "PUT", profile, b'{"value":NaN}', expect=(400, 422)),
        Case("profile: Infinity reach", "PUT", profile, b'{"reach":Infinity}', expect=(400, 422)),
        Case("profile: 1e400 value", "PUT", profile, b'{"value":1e400}', expect=(400, 422)),
        Case(
            "profile: invalid UTF-8",
            "PUT",
            profile,
            b'{"segment":"pre\xffmium"}',
            expect=(400, 422),
        ),
        Case(
            "profile: NUL in segment",
            "PUT",
            profile,
            b'{"segment":"pre\\u0000mium"}',
            expect=(422,),
            pointer="/body/segment",
        ),
        Case(
            "profile: lone surrogate", "PUT", profile, b'{"segment":"\\ud800"}', expect=(400, 422)
        ),
        Case("profile: empty body", "PUT", profile, b"", expect=(400, 422)),
        Case(
            "profile: text/plain",
            "PUT",
            profile,
            b'{"segment":"premium"}',
            content_type="text/plain",
            expect=(400, 415, 422),
        ),
        Case(
            "profile: duplicate keys",
            "PUT",
            profile,
            b'{"segment":"premium","segment":"standard"}',
            may_accept=True,
        ),
        Case(
            "profile: 10 MB body",
            "PUT",
            profile,
            b'{"segment":"' + b"s" * (10 * MB) + b'"}',
            expect=(413, 422),
        ),
        Case(
            "profile: NUL in the path", "PUT", "/v1/customers/C%00x/profile", b"{}", expect=(400,)
        ),
        Case(
            "keys: NUL in name",
            "POST",
            "/v1/keys",
            b'{"name":"a\\u0000b","scopes":["health:read"]}',
            expect=(422,),
            pointer="/body/name",
        ),
        Case(
            "keys: lone surrogate in name",
            "POST",
            "/v1/keys",
            b'{"name":"\\udc00","scopes":["health:read"]}',
            expect=(400, 422),
        ),
        Case(
            "keys: 1 MB name",
            "POST",
            "/v1/keys",
            orjson.dumps({"name": "n" * MB, "scopes": ["health:read"]}),
            expect=(422,),
            pointer="/body/name",
        ),
        Case(
            "keys: 10,000 scopes",
            "POST",
            "/v1/keys",
            orjson.dumps({"name": "n", "scopes": ["health:read"] * 10_000}),
            may_accept=True,
        ),
        Case(
            "keys: deep nesting",
            "POST",
            "/v1/keys",
            b'{"name":"n","scopes":' + nested(DEPTH, "array") + b"}",
            expect=(400, 422),
        ),
        Case(
            "keys: 10,000 touchpoints",
            "POST",
            "/v1/keys",
            orjson.dumps(
                {
                    "name": "n",
                    "scopes": ["events:write"],
                    "source": "s",
                    "touchpoints": [f"t{i}" for i in range(10_000)],
                }
            ),
            may_accept=True,
        ),
        Case(
            "webhooks: NUL in url",
            "POST",
            "/v1/webhooks",
            b'{"url":"https://93.184.216.34/\\u0000","kinds":["intervention.opened"]}',
            expect=(422,),
            pointer="/body/url",
        ),
        Case(
            "webhooks: lone surrogate in description",
            "POST",
            "/v1/webhooks",
            b'{"url":"https://93.184.216.34/h","kinds":["intervention.opened"],"description":"\\ud800"}',
            expect=(400, 422),
        ),
        Case(
            "webhooks: 1 MB url",
            "POST",
            "/v1/webhooks",
            orjson.dumps(
                {"url": "https://a.example/" + "a" * MB, "kinds": ["intervention.opened"]}
            ),
            expect=(422,),
            pointer="/body/url",
        ),
        Case(
            "webhooks: deep kinds",
            "POST",
            "/v1/webhooks",
            b'{"url":"https://93.184.216.34/h","kinds":' + nested(DEPTH, "array") + b"}",
            expect=(400, 422),
        ),
        Case(
            "webhooks: 10,000 kinds",
            "POST",
            "/v1/webhooks",
            orjson.dumps(
                {"url": "https://93.184.216.34/h", "kinds": ["intervention.opened"] * 10_000}
            ),
            may_accept=True,
        ),
        Case(
            "acknowledge: NUL in assignee",
            "POST",
            "/v1/interventions/x/acknowledge",
            b'{"assignee":"a\\u0000b"}',
            expect=(404, 422),
        ),
        Case(
            "resolve: 1 MB note",
            "POST",
            "/v1/interventions/x/resolve",
            orjson.dumps({"outcome_note": "n" * MB}),
            expect=(404, 422),
        ),
        Case(
            "gaps: absurd dates",
            "GET",
            "/v1/gaps?since=99999-01-01T00:00:00Z&until=-1",
            None,
            content_type=None,
            expect=(422,),
        ),
        Case(
            "gaps: a year 1 window",
            "GET",
            "/v1/gaps?since=0001-01-01T00:00:00Z&until=0001-01-01T00:00:01Z",
            None,
            content_type=None,
            may_accept=True,
        ),
        Case(
            "health: huge trend",
            "GET",
            "/v1/customers/C/health?trend_days=99999999999999999999",
            None,
            content_type=None,
            expect=(422,),
        ),
        Case(
            "at-risk: NaN below",
            "GET",
            "/v1/customers/at-risk?below=NaN",
            None,
            content_type=None,
            expect=(422,),
        ),
        Case(
            "at-risk: forged cursor",
            "GET",
            "/v1/customers/at-risk?cursor=" + "A" * 5000,
            None,
            content_type=None,
            expect=(400, 422),
        ),
        Case(
            "interventions: forged cursor",
            "GET",
            "/v1/interventions?cursor=%FF%FE",
            None,
            content_type=None,
            expect=(400, 422),
        ),
    ]


async def test_nasty_payloads_against_the_api_are_4xx_never_5xx(api: Service) -> None:
    key = await api.keys.make("nasty", [Scope.HEALTH_READ, Scope.INTERVENTIONS_WRITE, Scope.ADMIN])
    verdicts = Verdicts()
    await judge(api, key, api_cases(), verdicts)
    keys_body = orjson.dumps({"name": "raw", "scopes": ["health:read"]})
    await raw_socket_cases(api, key, "/v1/keys", keys_body, verdicts)
    print("\n".join(["api verdicts:", *verdicts.lines]))
    assert verdicts.server_errors == [], verdicts.server_errors
    assert verdicts.wrong == [], verdicts.wrong
    assert (await api.http.get("/v1/promises", headers=Service.bearer(key))).status_code == 200


@dataclass
class Raw:
    name: str
    request: bytes
    expect: tuple[int, ...]


async def raw_socket_cases(
    service: Service, key: str, path: str, body: bytes, verdicts: Verdicts
) -> None:
    """What no HTTP client library will send: NUL and control bytes in the request line and
    headers, overlong and countless headers, broken framing."""
    host = urlsplit(service.url).netloc
    auth = f"Authorization: Bearer {key}\r\n".encode()
    start = f"POST {path} HTTP/1.1\r\nHost: {host}\r\n".encode()
    length = f"Content-Length: {len(body)}\r\nContent-Type: application/json\r\n".encode()
    cases = [
        Raw(
            "NUL in a header value",
            start + auth + b"X-Note: a\x00b\r\n" + length + b"\r\n" + body,
            (400,),
        ),
        Raw(
            "NUL in the key",
            start + b"Authorization: Bearer tpk_\x00\r\n" + length + b"\r\n" + body,
            (400, 401),
        ),
        Raw(
            "NUL in the request target",
            f"POST {path}\x00 HTTP/1.1\r\nHost: {host}\r\n".encode()
            + auth
            + length
            + b"\r\n"
            + body,
            (400,),
        ),
        Raw(
            "a 100 KB header",
            start + auth + b"X-Big: " + b"b" * 100_000 + b"\r\n" + length + b"\r\n" + body,
            (400, 413, 431),
        ),
        Raw(
            "a 100 KB key",
            start + b"Authorization: Bearer " + b"k" * 100_000 + b"\r\n" + length + b"\r\n" + body,
            (400, 401, 431),
        ),
        Raw(
            "5,000 headers",
            start
            + auth
            + b"".join(f"X-H{i}: v\r\n".encode() for i in range(5_000))
            + length
            + b"\r\n"
            + body,
            (400, 413, 431, 201, 202),
        ),
        Raw(
            "a lying Content-Length",
            start
            + auth
            + b"Content-Length: 99999999999999999999\r\nContent-Type: application/json\r\n\r\n"
            + body,
            (400, 413),
        ),
        Raw(
            "a negative Content-Length",
            start + auth + b"Content-Length: -1\r\nContent-Type: application/json\r\n\r\n" + body,
            (400,),
        ),
        Raw(
            "two Content-Lengths",
            start + auth + b"Content-Length: 2\r\n" + length + b"\r\n" + body,
            (400,),
        ),
        Raw(
            "broken chunking",
            start
            + auth
            + b"Transfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
            + b"zz\r\n{}\r\n0\r\n\r\n",
            (400,),
        ),
        Raw(
            "control bytes in a header name",
            start + auth + b"X-\x01: v\r\n" + length + b"\r\n" + body,
            (400,),
        ),
        Raw(
            "Latin-1 key",
            start + b"Authorization: Bearer tpk_\xe9\xe9\r\n" + length + b"\r\n" + body,
            (400, 401),
        ),
    ]
    for case in cases:
        status = await _raw_status(service.url, case.request)
        verdicts.lines.append(f"raw {case.name}: {status}")
        if status is not None and status >= 500:
            verdicts.server_errors.append(f"raw {case.name}: {status}")
        elif status is not None and status not in case.expect:
            verdicts.wrong.append(f"raw {case.name}: {status}, expected {case.expect}")
        assert await service.ready(), f"after raw {case.name!r} the service stopped serving"


async def _raw_status(url: str, request: bytes) -> int | None:
    """The status the server answers, or None if it closed the connection without one."""
    parts = urlsplit(url)
    async with _connection(parts.hostname or "", parts.port or 80) as (reader, writer):
        try:
            writer.write(request)
            await writer.drain()
            writer.write_eof()
        except ConnectionError:
            pass  # it stopped reading: its answer (if any) is still there to read
        async with asyncio.timeout(30):
            line = await reader.readline()
    if not line:
        return None
    return int(line.split()[1])


@asynccontextmanager
async def _connection(
    host: str, port: int
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def _open_intervention(database_url: str, intervention_id: str, state: str) -> None:
    """An intervention as scoring would leave it, written straight to the table: the
    workflow's text fields only reach the database when one exists."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            """
            INSERT INTO intervention (intervention_id, customer_id, state, triggers, gaps,
                actions, priority, threshold, opened_at, acknowledged_at, assignee, updated_at)
            VALUES ($1, $2, $3, '[]', '[]', '{}', 1, 50, now(),
                CASE WHEN $3 = 'acknowledged' THEN now() END,
                CASE WHEN $3 = 'acknowledged' THEN 'agent' END, now())
            """,
            intervention_id,
            f"C-{intervention_id}",
            state,
        )
    finally:
        await conn.close()


@pytest.mark.parametrize(
    ("action", "state", "body", "pointer"),
    [
        ("acknowledge", "open", b'{"assignee":"a\\u0000b"}', "/assignee"),
        ("acknowledge", "open", b'{"assignee":"\\ud800"}', "/assignee"),
        ("resolve", "acknowledged", b'{"outcome_note":"done\\u0000"}', "/outcome_note"),
        ("resolve", "acknowledged", b'{"outcome_note":"\\udfff done"}', "/outcome_note"),
    ],
)
async def test_workflow_text_postgresql_cannot_store_is_a_422(
    api: Service, action: str, state: str, body: bytes, pointer: str
) -> None:
    assert api.settings.database_url is not None
    key = await api.keys.make("agent", [Scope.HEALTH_READ, Scope.INTERVENTIONS_WRITE])
    await _open_intervention(api.settings.database_url, "iv-nasty", state)
    response = await api.http.post(
        f"/v1/interventions/iv-nasty/{action}",
        content=body,
        headers={**Service.bearer(key), "content-type": JSON},
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    pointers = {p.removeprefix("/body") for p in _pointers(response.json())}
    assert pointer in pointers, response.text
    assert await api.ready()


# --- crafted input that found server errors, and requests the document and the behaviour
# --- disagreed on (issue 13, defect 6) ---------------------------------------------------

#: Cursors in the form the api used to issue (base64url of a JSON array, unsigned), with
#: values of the wrong type: each was a 500.
FORGED_VALUES: list[Any] = [
    ["abc", "x"],
    [[1], "x"],
    [None, "x"],
    [123, "x"],
    ["not-a-date", "x"],
    ["2024-01-01T00:00:00Z", 5],
    [5],
    ["wh_aaaaaaaaaaaaaaaaaaaaaaaaaa"],
    [],
]
LISTS = [
    "/v1/customers/at-risk",
    "/v1/interventions",
    "/v1/customers/C-1/gaps",
    "/v1/webhooks",
    "/v1/webhooks/wh_aaaaaaaaaaaaaaaaaaaaaaaaaa/deliveries",
]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


def forged_cursors() -> list[str]:
    cursors: list[str] = []
    for values in FORGED_VALUES:
        encoded = _b64(orjson.dumps(values))
        # The old form, the new form with a made-up tag, and with a kind in front.
        cursors += [encoded, encoded.rstrip("=") + "." + "A" * 22]
        cursors.append(_b64(orjson.dumps(["at-risk", *values])).rstrip("=") + "." + "B" * 22)
    return [*cursors, "%%%", "nonsense", "a.b", "." * 40]


def _names(response: httpx.Response, pointer: str) -> bool:
    return response.headers.get("content-type") == PROBLEM and pointer in _pointers(response.json())


@pytest.mark.parametrize("path", LISTS)
async def test_a_forged_cursor_is_a_400_naming_cursor(api: Service, path: str) -> None:
    key = await api.keys.make("lists", [Scope.HEALTH_READ, Scope.ADMIN])
    for cursor in forged_cursors():
        response = await api.http.get(path, params={"cursor": cursor}, headers=Service.bearer(key))
        assert response.status_code == 400, (cursor, response.text)
        assert _names(response, "/query/cursor"), (cursor, response.text)
    assert await api.ready()


async def test_cursors_are_signed_and_bound_to_their_list(api: Service) -> None:
    """A cursor the api issued pages on; the same cursor tampered with, or on another list,
    is refused: nobody but the api can make one."""
    assert api.settings.database_url is not None
    key = await api.keys.make("pages", [Scope.HEALTH_READ, Scope.ADMIN])
    headers = Service.bearer(key)
    for n in range(3):
        await _open_intervention(api.settings.database_url, f"iv-page-{n}", "open")
    first = await api.http.get("/v1/interventions", params={"limit": 1}, headers=headers)
    assert first.status_code == 200, first.text
    cursor = first.json()["next_cursor"]
    assert isinstance(cursor, str)
    second = await api.http.get(
        "/v1/interventions", params={"limit": 1, "cursor": cursor}, headers=headers
    )
    assert second.status_code == 200, second.text
    assert (
        second.json()["items"][0]["intervention_id"] != first.json()["items"][0]["intervention_id"]
    )
    payload, _, tag = cursor.partition(".")
    flipped = "A" if tag[-1] != "A" else "B"
    # The payload with a value changed (a higher priority) and the old tag; the tag altered.
    values = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    values[1] = 1_000_000.0
    changed = _b64(orjson.dumps(values)).rstrip("=") + "." + tag
    for bad in (changed, f"{payload}.{tag[:-1]}{flipped}", f"{payload}X.{tag}", payload):
        response = await api.http.get(
            "/v1/interventions", params={"limit": 1, "cursor": bad}, headers=headers
        )
        assert response.status_code == 400, (bad, response.text)
        assert _names(response, "/query/cursor"), response.text
    # A genuine cursor of one list means nothing on another.
    for other in ("/v1/customers/at-risk", "/v1/customers/C-1/gaps", "/v1/webhooks"):
        response = await api.http.get(other, params={"cursor": cursor}, headers=headers)
        assert response.status_code == 400, (other, response.text)
    assert await api.ready()


async def test_time_filters_take_rfc3339_date_times_only_and_the_whole_calendar(
    api: Service,
) -> None:
    key = await api.keys.make("times", [Scope.HEALTH_READ])
    headers = Service.bearer(key)
    for path in ("/v1/gaps", "/v1/customers/C-1/gaps"):
        for name, value in [
            ("since", "2024-01-01T00:00:00"),  # no offset: not RFC 3339
            ("until", "2024-01-01T00:00:00"),
            ("until", "0.5"),  # a number, which pydantic took for a Unix time
            ("since", "1700000000"),
            ("until", "2024-02-30T00:00:00Z"),
            ("since", "2024-01-01"),
        ]:
            response = await api.http.get(path, params={name: value}, headers=headers)
            assert response.status_code == 422, (path, name, value, response.text)
            assert _names(response, f"/query/{name}"), response.text
        # Two dates swapped: a client's slip, refused as the sources' quality read refuses it.
        inverted = {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}
        response = await api.http.get(path, params=inverted, headers=headers)
        assert response.status_code == 422, (path, response.text)
        assert _names(response, "/query/since"), response.text
        for params in [
            {"until": "0001-01-02T00:00:00Z"},  # the default window starts before year 1
            {"since": "0001-01-01T00:00:00+14:00"},  # before the first instant in UTC
            {"until": "9999-12-31T23:59:59-14:00"},  # after the last one
            {"since": "0001-01-01T00:00:00Z", "until": "9999-12-31T23:59:59.999999Z"},
            {"since": "2026-01-01T00:00:00.123456789+05:30"},
        ]:
            response = await api.http.get(path, params=params, headers=headers)
            assert response.status_code == 200, (path, params, response.text)
            assert response.json()["items"] == []
    assert await api.ready()


async def test_key_text_postgresql_cannot_store_and_conditional_rules_are_documented(
    api: Service,
) -> None:
    key = await api.keys.make("keys-admin", [Scope.ADMIN])
    headers = {**Service.bearer(key), "content-type": JSON}
    for body, pointer in [
        (b'{"name":"w","scopes":["events:write"],"source":"\\ud800"}', "/body/source"),
        (b'{"name":"w","scopes":["events:write"],"source":"a\\udfffb"}', "/body/source"),
        (b'{"name":"\\ud800","scopes":["health:read"]}', "/body/name"),
        (
            b'{"name":"w","scopes":["events:write"],"source":"s","touchpoints":["\\ud800"]}',
            "/body/touchpoints/0",
        ),
    ]:
        response = await api.http.post("/v1/keys", content=body, headers=headers)
        assert response.status_code == 422, (body, response.text)
        assert _names(response, pointer), (body, response.text)
    # An admin key bound to a source is refused, and the document says so: of the request's
    # two shapes, only the events:write one has a source that is not null.
    refused = await api.http.post(
        "/v1/keys", json={"name": "a", "scopes": ["admin"], "source": "crm"}, headers=headers
    )
    assert refused.status_code == 422, refused.text
    document = (await api.http.get("/openapi.json")).json()
    request = document["paths"]["/v1/keys"]["post"]["requestBody"]["content"][JSON]["schema"]
    shapes = _resolve(document, request)["oneOf"]
    assert {s["title"] for s in shapes} == {"EventsKeyIn", "ServiceKeyIn"}
    service = next(s for s in shapes if s["title"] == "ServiceKeyIn")
    assert service["properties"]["source"] == {"type": "null"}
    assert "events:write" not in service["properties"]["scopes"]["items"]["enum"]
    writer = next(s for s in shapes if s["title"] == "EventsKeyIn")
    assert "source" in writer["required"]
    assert writer["properties"]["scopes"]["contains"] == {"const": "events:write"}
    # The calling key cannot revoke itself (the fuzzer's stateful phase did, and tested
    # nothing but 401s after it); it still works afterwards.
    listed = await api.http.get("/v1/keys", headers=headers)
    own = next(k["key_id"] for k in listed.json() if k["name"] == "keys-admin")
    refused = await api.http.delete(f"/v1/keys/{own}", headers=headers)
    assert refused.status_code == 409, refused.text
    assert (await api.http.get("/v1/keys", headers=headers)).status_code == 200
    assert await api.ready()


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    found: dict[str, Any] = document
    for part in ref.removeprefix("#/").split("/"):
        found = found[part]
    return found


async def test_the_document_and_the_behaviour_agree(api: Service) -> None:
    """What Schemathesis found the document and the api disagreeing on, each way."""
    key = await api.keys.make("agree", [Scope.HEALTH_READ, Scope.ADMIN])
    headers = Service.bearer(key)
    document = (await api.http.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]

    # An empty cursor: the document now says a cursor has at least one character.
    empty = await api.http.get("/v1/interventions", params={"cursor": ""}, headers=headers)
    assert empty.status_code == 422, empty.text
    assert _names(empty, "/query/cursor"), empty.text
    listing = document["paths"]["/v1/interventions"]["get"]["parameters"]
    cursor = next(p for p in listing if p["name"] == "cursor")["schema"]
    strings = [s for s in cursor.get("anyOf", [cursor]) if s.get("type") == "string"]
    assert [s.get("minLength") for s in strings] == [1], cursor

    # enabled may be left out of a PATCH, but not null: no null in its schema.
    for name in ("url", "kinds", "enabled"):
        assert "null" not in str(schemas["WebhookUpdate"]["properties"][name]), name
    nulled = await api.http.patch(
        "/v1/webhooks/wh_aaaaaaaaaaaaaaaaaaaaaaaaaa", json={"enabled": None}, headers=headers
    )
    assert nulled.status_code == 422, nulled.text
    assert _names(nulled, "/body/enabled"), nulled.text

    # JSON types are what they say: true is no number, 0.0 no date.
    loose = await api.http.put(
        "/v1/customers/C-strict/profile",
        json={"value": True, "customer_since": 0.0},
        headers=headers,
    )
    assert loose.status_code == 422, loose.text
    assert _names(loose, "/body/value"), loose.text
    assert _names(loose, "/body/customer_since"), loose.text
    for body in ({"reach": "3"}, {"segment": 1}, {"customer_since": "2026-09-01T00:00:00Z"}):
        refused = await api.http.put("/v1/customers/C-strict/profile", json=body, headers=headers)
        assert refused.status_code == 422, (body, refused.text)
    fine = await api.http.put(
        "/v1/customers/C-strict/profile",
        json={"value": 3, "reach": 1500.5, "customer_since": "2026-09-01"},
        headers=headers,
    )
    assert fine.status_code == 201, fine.text

    # An undeclared method is a 405 listing every method the path serves.
    for method, path, allowed in [
        ("OPTIONS", "/v1/keys", "GET, POST"),
        ("TRACE", "/v1/webhooks/wh_aaaaaaaaaaaaaaaaaaaaaaaaaa", "DELETE, GET, PATCH"),
        ("DELETE", "/v1/customers/C-1/profile", "GET, PUT"),
        ("PUT", "/v1/interventions", "GET"),
        # What the document says of the most specific path: not DELETE /v1/customers/{id}.
        ("OPTIONS", "/v1/customers/at-risk", "GET"),
    ]:
        response = await api.http.request(method, path, headers=headers)
        assert response.status_code == 405, (method, path, response.text)
        assert response.headers.get("allow") == allowed, (method, path, response.headers)
        assert response.headers["content-type"] == PROBLEM
    assert await api.ready()


async def test_the_ingest_document_and_behaviour_agree(ingest: Service) -> None:
    """An empty batch is refused, and the document now says a batch holds an event; an
    undeclared method is a 405 whose Allow lists the path's methods."""
    key = await ingest.keys.make("agree", [Scope.EVENTS_WRITE], source=SOURCE)
    headers = Service.bearer(key)
    document = (await ingest.http.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    assert schemas["ExperienceEventBatchV1"]["properties"]["events"]["minItems"] == 1
    batch = document["paths"]["/v1/events/batch"]["post"]["requestBody"]["content"]
    assert batch["application/cloudevents-batch+json"]["schema"]["minItems"] == 1
    for content_type, body in [
        (JSON, b'{"events": []}'),
        ("application/cloudevents-batch+json", b"[]"),
    ]:
        empty = await ingest.http.post(
            "/v1/events/batch", content=body, headers={**headers, "content-type": content_type}
        )
        assert empty.status_code == 400, empty.text
    for method, path in [("TRACE", "/v1/events"), ("GET", "/v1/events/batch")]:
        response = await ingest.http.request(method, path, headers=headers)
        assert response.status_code == 405, response.text
        assert response.headers.get("allow") == "POST", response.headers
    assert await ingest.ready()

"""What every Touchpulse FastAPI app shares: problem+json for every error, request metrics."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from prometheus_client import Counter, Histogram
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from touchpulse_shared.contract.record import valid_request_id
from touchpulse_shared.http.problems import PROBLEM_JSON, Problem, field_errors


def install_problem_handlers(app: FastAPI) -> None:
    """Every error a client can see is RFC 9457 problem+json, 404s and 405s included."""

    @app.exception_handler(Problem)
    async def on_problem(request: Request, exc: Problem) -> Response:
        return exc.response(request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> Response:
        title = str(exc.detail)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette's Allow names the first route of the path only; a path served by
            # several routes (GET and POST /v1/keys) allows the methods of them all.
            headers["Allow"] = ", ".join(allowed_methods(request))
        return Problem(
            exc.status_code, f"http-{exc.status_code}", title, title, headers=headers
        ).response(request.url.path)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> Response:
        problem = Problem(
            422,
            "invalid-request",
            "Invalid Request",
            "The request is not valid",
            errors=field_errors(exc.errors()),
        )
        return problem.response(request.url.path)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")
_PARAMETER = re.compile(r"\\\{[^/]*?\\\}")


def allowed_methods(request: Request) -> list[str]:
    """The methods the path allows, as the OpenAPI document says: those of the most
    specific documented path template it fits (``/v1/customers/at-risk`` rather than
    ``/v1/customers/{customer_id}``). A path the document leaves out (``/metrics``) allows
    what the routes serve there."""
    path: str = request.scope.get("path", "")
    document: dict[str, Any] = request.app.openapi()
    best: tuple[int, list[str]] | None = None
    for template, operations in document.get("paths", {}).items():
        pattern = _PARAMETER.sub("[^/]+", re.escape(template))
        if re.fullmatch(pattern, path) is None:
            continue
        literal = len(_PARAMETER.sub("", re.escape(template)))
        methods = sorted(m.upper() for m in operations if m.upper() in _METHODS)
        if best is None or literal > best[0]:
            best = (literal, methods)
    if best is not None:
        return best[1]
    routes = request.app.router.routes
    return sorted(
        method
        for method in _METHODS
        if any(r.matches({**request.scope, "method": method})[0] is Match.FULL for r in routes)
    )


class RequestMetricsMiddleware:
    """Counts every request by route template and status, and times it (pure ASGI: cheap)."""

    def __init__(self, app: ASGIApp, requests: Counter, duration: Histogram) -> None:
        self.app = app
        self.requests = requests
        self.duration = duration
        # The labelled children by (template, status), so that a request costs no labels()
        # call (each validates its values and takes a lock; 3 % of the api's health read in
        # a profile). A metric hands out the same child for the same labels until they are
        # removed, and nothing removes these. Route templates and statuses are few.
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            # The router stored the matched route in this same scope dict.
            template = getattr(scope.get("route"), "path", "unmatched")
            children = self._children.get((template, status))
            if children is None:
                children = (
                    self.requests.labels(template, str(status)),
                    self.duration.labels(template),
                )
                self._children[(template, status)] = children
            children[0].inc()
            children[1].observe(time.perf_counter() - started)


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details; `errors` names every bad field by JSON Pointer",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "pointer": {"type": "string", "examples": ["/body/segment"]},
                    "detail": {"type": "string"},
                    "code": {"type": "string"},
                },
            },
        },
    },
    "additionalProperties": True,
}

PROBLEM_STATUSES = {
    400: "A malformed request: a body that is not JSON, a cursor this API did not issue, or "
    "a NUL character in the path or query",
    401: "No API key, or an unknown, revoked or malformed one",
    403: "The key lacks the scope this operation needs",
    404: "No such resource",
    409: "The request conflicts with the resource's state (e.g. an illegal transition)",
    413: "The body is over the size limit",
    415: "A content type this operation does not take",
    422: "The request is not valid; `errors` names each bad field",
    429: "Over the key's rate limit; retry after `Retry-After` seconds",
    503: "A dependency is unavailable; retry after `Retry-After` seconds",
}

# One plausible answer per status, as the handlers build them (slug, title, detail), so a
# generated client's documentation shows what a caller will actually read.
_EXAMPLES: dict[int, tuple[str, str, str]] = {
    400: ("invalid-cursor", "Bad Request", "The cursor is not one this API issued"),
    401: (
        "unauthenticated",
        "Unauthenticated",
        "The API key is not valid (unknown, revoked or malformed)",
    ),
    403: ("forbidden", "Forbidden", "This API key lacks the scope health:read"),
    404: ("not-found", "Not Found", "No such resource"),
    409: ("conflict", "Conflict", "The resource's state does not allow this"),
    413: ("too-large", "Payload Too Large", "The body exceeds the limit of 1048576 bytes"),
    415: (
        "unsupported-media-type",
        "Unsupported Media Type",
        "Send application/json or application/cloudevents+json",
    ),
    422: ("invalid-request", "Invalid Request", "The request is not valid"),
    429: (
        "rate-limited",
        "Too Many Requests",
        "This API key is over its limit of 50 requests per second",
    ),
    503: ("unavailable", "Service Unavailable", "A dependency is unavailable; retry later"),
}
_EXAMPLE_ERROR = {
    "pointer": "/query/limit",
    "detail": "Input should be greater than or equal to 1",
    "code": "greater_than_equal",
}
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def problem_example(status: int, instance: str = "/v1/…") -> dict[str, Any]:
    """A problem+json body as the handlers would write it for ``status``."""
    slug, title, detail = _EXAMPLES[status]
    body: dict[str, Any] = {
        "type": f"https://touchpulse.dev/problems/{slug}",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
    }
    if status == 422:
        body["errors"] = [dict(_EXAMPLE_ERROR)]
    return body


def problem_responses(
    *statuses: int, descriptions: Mapping[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """FastAPI ``responses=`` documenting the problem+json answers an operation can give,
    each with an example: ``@router.get(..., responses=problem_responses(401, 403, 404))``.

    List only the statuses the route (its dependencies included) can really return; the
    OpenAPI test (tests/test_openapi.py) holds every operation to that. ``descriptions``
    says, per status, what it means for this route (``{404: "No such customer"}``).
    """
    described = dict(descriptions or {})
    unknown = sorted({*statuses, *described} - PROBLEM_STATUSES.keys())
    if unknown:
        raise ValueError(f"no problem description for status {unknown}")
    return {
        status: {
            "description": described.get(status, PROBLEM_STATUSES[status]),
            "content": {PROBLEM_JSON: {"schema": _PROBLEM_REF, "example": problem_example(status)}},
        }
        for status in sorted(statuses)
    }


#: What every route behind an API key can answer: no key or a bad one, a key without the
#: scope, over the key's rate limit, the key store unreachable.
AUTHENTICATED = (401, 403, 429, 503)


def install_problem_docs(app: FastAPI, *, prefix: str = "/v1") -> None:
    """Complete the OpenAPI document of the operations under ``prefix``: the Problem schema
    the routes' ``problem_responses`` refer to, the API key scheme, and a 400 wherever a
    path or query parameter could carry the NUL character :class:`RejectNulMiddleware`
    refuses or a body could fail to parse as JSON. FastAPI's own 422 (its validation
    schema, not problem+json) is dropped: a route that can refuse its input says so with
    ``problem_responses(422)``."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas["Problem"] = PROBLEM_SCHEMA
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        document["components"]["securitySchemes"] = {
            "apiKey": {"type": "http", "scheme": "bearer", "description": "tpk_… API key"}
        }
        for path, operations in document.get("paths", {}).items():
            if not path.startswith(prefix):
                continue
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                fastapi_422 = responses.get("422", {}).get("content", {})
                if "application/json" in fastapi_422:
                    del responses["422"]
                # A body that is not JSON at all is FastAPI's 400 before any validation.
                malformed = operation.get("parameters") or "requestBody" in operation
                if malformed and "400" not in responses:
                    responses.update({str(s): r for s, r in problem_responses(400).items()})
                operation["security"] = [{"apiKey": []}]
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def readable_operation_id(route: APIRoute) -> str:
    """Operation ids from the route's function name (``customer_health``), not FastAPI's
    path-and-method mangling: stable across path changes and readable in a generated
    client. A route whose function name reads badly sets ``operation_id=`` itself."""
    return route.name


class RejectNulMiddleware:
    """400 for a NUL character in the path or query: PostgreSQL cannot store one in text,
    so it would otherwise surface as a server error deep in a query."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query: bytes = scope.get("query_string", b"")
            if "\x00" in scope.get("path", "") or b"%00" in query or b"\x00" in query:
                problem = Problem(
                    400,
                    "nul-character",
                    "Bad Request",
                    "A NUL character (%00) is not allowed in the path or query",
                )
                await problem.response(scope.get("path", "")).__call__(scope, receive, send)
                return
        await self.app(scope, receive, send)


REQUEST_ID_HEADER = "x-request-id"
#: The id of the request being served (RequestIdMiddleware), for code far from the request
#: (ingest's producer path puts it on each event's Kafka record).
current_request_id: ContextVar[str | None] = ContextVar("current_request_id", default=None)


class RequestIdMiddleware:
    """Every request gets an id: the caller's ``X-Request-ID`` when it is 1 to 128
    printable ASCII characters, else a new one. It is in the answer's ``X-Request-ID``, in
    every log line written while serving it (structlog's context) and in
    :data:`current_request_id`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next(
            (v for k, v in scope.get("headers", ()) if k == REQUEST_ID_HEADER.encode()), None
        )
        request_id = valid_request_id(given.decode("latin-1") if given else None)
        request_id = request_id or uuid.uuid4().hex
        echoed = (REQUEST_ID_HEADER.encode(), request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), echoed]
            await send(message)

        token = current_request_id.set(request_id)
        try:
            with structlog.contextvars.bound_contextvars(request_id=request_id):
                await self.app(scope, receive, send_with_id)
        finally:
            current_request_id.reset(token)

"""``GET /v1/customers/{customer_id}/health`` answered without FastAPI's per-request work.

The health read is the api's hot route. Through FastAPI, about half of its CPU went to the
machinery around the route rather than the read: matching the path against every route,
resolving the key-check dependency, validating the query, wrapping the answer (a quarter of
the api's profile was dependency resolution alone). :class:`HealthFastPath` sits ahead of
FastAPI's router, inside the request id, metrics and NUL middlewares, and answers the common
request itself with the very same pieces: :func:`admit` (key, scope, rate limit),
:func:`health_answer` (the route's own) and the app's own exception handlers.

Only a request whose answer cannot differ is taken: a GET whose path the health route's
own pattern matches, with no ``trend_days`` or one given once as a plain integer within its
bounds. Anything else (``trend_days`` out of range, repeated or spelled oddly, another
method, a trailing slash) goes on to FastAPI untouched, which answers as it always did: the
422 and 405 problems stay FastAPI's, and no key is checked (nor rate-limit token spent)
twice. The route stays declared in FastAPI for the OpenAPI document and for those requests.
The fast path's answers are held to the FastAPI path's, byte for byte and status by status,
by tests/api/health/test_fast_path.py.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette._utils import get_route_path
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as AsgiScope

from touchpulse_api.context import ApiContext, admit
from touchpulse_api.routes import customers
from touchpulse_shared.auth import Scope

#: ``trend_days`` as the fast path takes it: digits without sign, padding or leading zero
#: (FastAPI's validation accepts more spellings; those go to FastAPI).
_PLAIN_DAYS = re.compile(r"[1-9][0-9]{0,2}")
_DEFAULT_DAYS = 30
_MAX_DAYS = 365
_JSON_HEADER = (b"content-type", b"application/json")


def trend_days(query_string: bytes) -> int | None:
    """The ``trend_days`` the route would read from this query, when the fast path may
    answer it; None when FastAPI must (it would validate or refuse something unusual).

    The query is parsed as Starlette parses it (latin-1, blank values kept, percent
    escapes decoded); other parameters are ignored, as the route ignores them."""
    if not query_string:
        return _DEFAULT_DAYS
    given = [
        v
        for k, v in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
        if k == "trend_days"
    ]
    if not given:
        return _DEFAULT_DAYS
    if len(given) > 1 or _PLAIN_DAYS.fullmatch(given[0]) is None:
        return None
    days = int(given[0])
    return days if days <= _MAX_DAYS else None


class HealthFastPath:
    """Pure ASGI middleware answering the health read ahead of FastAPI's router.

    Mounted innermost of the app's own middlewares (``create_app`` adds it first), so the
    request id, the request metrics (it sets ``scope["route"]`` to the FastAPI route, the
    router's way, which names the metric's template) and the NUL check wrap it as they wrap
    the router."""

    def __init__(self, app: ASGIApp, *, api: FastAPI) -> None:
        self.app = app
        self.api = api
        self._route: APIRoute | None = None
        self._handlers: dict[type[BaseException], Any] | None = None

    def _health_route(self) -> APIRoute:
        # The route as declared on the customers router: the object FastAPI's router puts
        # in ``scope["route"]`` when it matches (the app includes that router unprefixed).
        if self._route is None:
            found = [
                r
                for r in customers.router.routes
                if isinstance(r, APIRoute) and r.endpoint is customers.customer_health
            ]
            if len(found) != 1:
                raise RuntimeError(f"expected one health route, found {len(found)}")
            self._route = found[0]
        return self._route

    def _handler(self, exc: Exception) -> Any:
        """The app's handler for ``exc``, found as Starlette's exception middleware finds
        it (the exception's classes in MRO order); None for an exception it leaves to the
        server-error middleware (a 500)."""
        if self._handlers is None:
            self._handlers = {
                key: handler
                for key, handler in self.api.exception_handlers.items()
                if isinstance(key, type) and key is not Exception
            }
        for cls in type(exc).__mro__:
            if cls in self._handlers:
                return self._handlers[cls]
        return None

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        route = self._health_route()
        # The route's own pattern on the path as Starlette's router computes it (root path
        # removed): whatever FastAPI would match here, the fast path matches too.
        match = route.path_regex.match(get_route_path(scope))
        days = None if match is None else trend_days(scope.get("query_string", b""))
        if match is None or days is None:
            await self.app(scope, receive, send)
            return
        customer_id = match.group("customer_id")
        # What the router puts in the scope on a match (the metrics read "route").
        scope.update(route=route, endpoint=route.endpoint, path_params={"customer_id": customer_id})
        request = Request(scope, receive)
        context: ApiContext = self.api.state.api
        try:
            await admit(request, context, Scope.HEALTH_READ)
            body = await customers.health_answer(customer_id, context, trend_days=days)
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None:
                raise
            response = await handler(request, exc)
            await response(scope, receive, send)
            return
        # The headers Starlette's Response writes for this body and media type, in its order.
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(body)).encode()), _JSON_HEADER],
            }
        )
        await send({"type": "http.response.body", "body": body})

"""What every Touchpulse FastAPI app shares: problem+json for every error, request metrics."""

from __future__ import annotations

import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import Counter, Histogram
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from touchpulse_shared.http.problems import Problem, field_errors


def install_problem_handlers(app: FastAPI) -> None:
    """Every error a client can see is RFC 9457 problem+json, 404s and 405s included."""

    @app.exception_handler(Problem)
    async def on_problem(request: Request, exc: Problem) -> Response:
        return exc.response(request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> Response:
        title = str(exc.detail)
        return Problem(exc.status_code, f"http-{exc.status_code}", title, title).response(
            request.url.path
        )

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


class RequestMetricsMiddleware:
    """Counts every request by route template and status, and times it (pure ASGI: cheap)."""

    def __init__(self, app: ASGIApp, requests: Counter, duration: Histogram) -> None:
        self.app = app
        self.requests = requests
        self.duration = duration

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
            self.requests.labels(template, str(status)).inc()
            self.duration.labels(template).observe(time.perf_counter() - started)

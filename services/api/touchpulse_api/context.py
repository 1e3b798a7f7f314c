"""What every API request needs, built once per process and reached through dependencies."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated

import asyncpg
from fastapi import Depends, Request

from touchpulse_api.explanations import ExplanationCache
from touchpulse_api.metrics import ApiMetrics
from touchpulse_scoring.catalogue_source import CatalogueSource
from touchpulse_shared.auth import KeyVerifier, Principal, Scope
from touchpulse_shared.http.access import authenticate
from touchpulse_shared.http.problems import Problem
from touchpulse_shared.ratelimit import RateLimiter
from touchpulse_shared.settings import Settings


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class ApiContext:
    settings: Settings
    pool: asyncpg.Pool
    verifier: KeyVerifier
    limiter: RateLimiter
    metrics: ApiMetrics
    catalogue: CatalogueSource
    clock: Callable[[], datetime] = utc_now
    monotonic: Callable[[], float] = time.monotonic
    #: Health explanations kept between reads (none unless given a capacity).
    explanations: ExplanationCache = field(default_factory=lambda: ExplanationCache(0))
    #: For single statements outside a transaction, with a statement cache (asyncpg
    #: re-prepares those by itself after a migration); ``pool`` when not given.
    reads: asyncpg.Pool | None = None

    @property
    def read_pool(self) -> asyncpg.Pool:
        return self.pool if self.reads is None else self.reads


async def _context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.api
    return context


ContextDep = Annotated[ApiContext, Depends(_context)]


async def admit(
    request: Request, context: ApiContext, scope: Scope | tuple[Scope, ...]
) -> Principal:
    """The caller's key has ``scope`` (or one of several; 401, 403, 503 as
    :func:`authenticate` says) and is within its rate limit (429 with ``Retry-After``)."""
    principal = await authenticate(request, context.verifier, scope, retry_after_s=5)
    wait = context.limiter.take(principal.key_id, 1, context.monotonic())
    if wait > 0:
        raise Problem(
            429,
            "rate-limited",
            "Too Many Requests",
            f"This API key is over its limit of {context.settings.api_rate_limit_per_s:g} "
            "requests per second",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
    return principal


# The dependencies below take the request alone and read the context from it rather than
# through ContextDep: a dependency of a dependency is a second resolution per request, and
# on a hot read FastAPI's resolving was as much as the check itself. A route's own
# dependencies are resolved before its parameters are validated, so the key is checked
# (401/403/429) before a bad query parameter is reported (422), as before.


def require(scope: Scope) -> Callable[..., object]:
    """A dependency: the caller's key has ``scope`` and is within its rate limit."""

    async def dependency(request: Request) -> Principal:
        return await admit(request, request.app.state.api, scope)

    return dependency


def admitted(scope: Scope) -> Callable[..., object]:
    """A dependency giving the route its :class:`ApiContext` once :func:`admit` passed: one
    dependency where ``ContextDep`` and a scope's would be two."""

    async def dependency(request: Request) -> ApiContext:
        context: ApiContext = request.app.state.api
        await admit(request, context, scope)
        return context

    return dependency


HealthReader = Annotated[Principal, Depends(require(Scope.HEALTH_READ))]
InterventionWriter = Annotated[Principal, Depends(require(Scope.INTERVENTIONS_WRITE))]
Admin = Annotated[Principal, Depends(require(Scope.ADMIN))]
#: The context of a request whose key may read health (the hot routes).
ReaderContext = Annotated[ApiContext, Depends(admitted(Scope.HEALTH_READ))]

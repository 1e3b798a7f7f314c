"""API-key access for the web services: who is calling, and may they do this?

401 for no key or a bad one (unknown, revoked, malformed), 403 for a key without the
scope, 503 when the key store cannot be asked (the caller is not at fault).
"""

from __future__ import annotations

import asyncpg
import structlog
from starlette.requests import Request

from touchpulse_shared.auth import KeyVerifier, Principal, Scope
from touchpulse_shared.http.problems import Problem

log = structlog.get_logger(__name__)


def presented_key(request: Request) -> str | None:
    """The key from ``Authorization: Bearer …`` or ``X-API-Key``; "" for a malformed header."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else ""
    return request.headers.get("x-api-key")


async def authenticate(
    request: Request,
    verifier: KeyVerifier,
    scope: Scope | tuple[Scope, ...],
    *,
    retry_after_s: int,
) -> Principal:
    """The caller's principal, holding ``scope`` (or, given several, any one of them)."""
    presented = presented_key(request)
    try:
        principal = await verifier.verify(presented)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        log.warning("auth.unavailable", error=str(exc))
        raise Problem(
            503,
            "unavailable",
            "Service Unavailable",
            "API keys cannot be checked right now; retry later",
            headers={"Retry-After": str(retry_after_s)},
        ) from None
    if principal is None:
        raise Problem(
            401,
            "unauthenticated",
            "Unauthenticated",
            "A valid API key is required: 'Authorization: Bearer <key>'"
            if presented is None
            else "The API key is not valid (unknown, revoked or malformed)",
            headers={"WWW-Authenticate": 'Bearer realm="touchpulse"'},
        )
    wanted = (scope,) if isinstance(scope, Scope) else scope
    if not any(principal.has(s) for s in wanted):
        raise Problem(
            403,
            "forbidden",
            "Forbidden",
            f"This API key lacks the scope {' or '.join(s.value for s in wanted)}",
        )
    return principal

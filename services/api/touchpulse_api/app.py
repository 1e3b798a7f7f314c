"""The API for CRM integrations and the people who act on customers.

Routes are thin: each authenticates (scope + per-key rate limit) through a dependency,
reads or writes PostgreSQL, and answers; every error is problem+json.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta

import asyncpg
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from touchpulse_api import desk, promises, sources, webhooks
from touchpulse_api.catalogue import current_catalogue
from touchpulse_api.context import ApiContext, ContextDep
from touchpulse_api.desk import sessions as desk_sessions
from touchpulse_api.explanations import ExplanationCache
from touchpulse_api.fastpath import HealthFastPath
from touchpulse_api.metrics import ApiMetrics
from touchpulse_api.routes import customers, erasure, interventions, keys, organisation
from touchpulse_scoring.catalogue_source import CatalogueSource
from touchpulse_shared.auth import KeyVerifier
from touchpulse_shared.db.migrate import migrate_url
from touchpulse_shared.db.pool import create_pool, keep_session
from touchpulse_shared.http.app import (
    RejectNulMiddleware,
    RequestIdMiddleware,
    RequestMetricsMiddleware,
    install_problem_docs,
    install_problem_handlers,
    readable_operation_id,
)
from touchpulse_shared.http.problems import Problem
from touchpulse_shared.loops import Loops, supervise
from touchpulse_shared.ratelimit import RateLimiter
from touchpulse_shared.settings import Settings

ROUTERS = (
    customers.router,
    erasure.router,
    interventions.router,
    organisation.router,
    promises.router,
    keys.router,
    webhooks.router,
    sources.router,
)
# The dispatcher finishes (or abandons, to retry later) a delivery in flight on shutdown.
DISPATCHER_STOP_S = 15.0
# The dispatcher finishes a round within its delivery timeout (10 s), or pauses up to 30 s
# after an error: two minutes without a round is stuck.
DISPATCHER_STUCK_AFTER_S = 120.0
# Dead desk sessions and old failed sign-ins are deleted every five minutes: they refuse
# nothing while they wait (find_session and throttled read by time), so the interval only
# bounds how long the rows linger. Three missed rounds is stuck.
DESK_CLEANUP_INTERVAL_S = 300.0
DESK_CLEANUP_STUCK_AFTER_S = 3 * DESK_CLEANUP_INTERVAL_S


def create_app(
    metrics: ApiMetrics,
    *,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
) -> FastAPI:
    """The routes; ``app.state.api`` must hold an :class:`ApiContext` before requests come."""
    app = FastAPI(
        title="Touchpulse API",
        version="1",
        summary="Customer journey health, expected-versus-actual gaps and the interventions "
        "they call for.",
        lifespan=lifespan,
        generate_unique_id_function=readable_operation_id,
    )
    # Added first, so innermost: the request id, metrics and NUL check wrap it as they wrap
    # the router (fastpath.py says what it answers and what it leaves to FastAPI).
    app.add_middleware(HealthFastPath, api=app)
    app.add_middleware(RejectNulMiddleware)
    app.add_middleware(
        RequestMetricsMiddleware, requests=metrics.requests, duration=metrics.request_duration
    )
    app.add_middleware(RequestIdMiddleware)
    for router in ROUTERS:
        app.include_router(router)
    desk.install(app)  # the people's pages under /desk (docs/desk.md)
    install_problem_handlers(app)

    @app.exception_handler(asyncpg.InterfaceError)
    @app.exception_handler(asyncpg.PostgresConnectionError)
    @app.exception_handler(asyncpg.exceptions.OperatorInterventionError)
    async def on_session_lost(request: Request, exc: Exception) -> Response:
        # The request's PostgreSQL session was lost (terminated, failover, restart): the
        # transaction did not happen; a retry on a fresh session will.
        return Problem(
            503,
            "unavailable",
            "Service Unavailable",
            "The database session was lost; retry later",
            headers={"Retry-After": "1"},
        ).response(request.url.path)

    install_problem_docs(app)

    @app.get(
        "/healthz",
        tags=["operations"],
        responses={503: {"description": "A background loop is stuck (named in `stuck`)"}},
    )
    async def healthz(request: Request) -> Response:
        """The process is alive, and its background loop (the webhook dispatcher) finishes
        rounds: 503 naming the loop when it stopped (stuck, not just idle)."""
        loops: Loops | None = getattr(request.app.state, "loops", None)
        stuck = [] if loops is None else loops.stuck()
        body: dict[str, object] = {"status": "stuck" if stuck else "alive"}
        if loops is not None:
            body |= {"stuck": stuck, "loops": loops.report()}
        return JSONResponse(body, status_code=503 if stuck else 200)

    @app.get(
        "/readyz",
        tags=["operations"],
        responses={503: {"description": "Not ready: PostgreSQL does not answer"}},
    )
    async def readyz(context: ContextDep) -> Response:
        """Ready when PostgreSQL answers; names the promise catalogue in effect."""
        catalogue = {
            "catalogue_version": current_catalogue(context).version,
            "catalogue_hash": context.catalogue.content_hash,
        }
        try:
            async with context.pool.acquire(timeout=2) as conn:
                await conn.fetchval("SELECT 1")
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            return JSONResponse(
                {"status": "not ready", "database": False, **catalogue}, status_code=503
            )
        return JSONResponse({"status": "ready", "database": True, **catalogue})

    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    async def prometheus(context: ContextDep) -> Response:
        catalogue = current_catalogue(context)
        context.metrics.catalogue.show(catalogue.version, context.catalogue.content_hash)
        return Response(generate_latest(context.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def build_app(
    settings: Settings, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> FastAPI:
    """The production wiring: migrations, a PostgreSQL pool, keys, limits, the catalogue."""
    if settings.database_url is None:
        raise ValueError("the api needs TOUCHPULSE_DATABASE_URL")
    database_url = settings.database_url
    metrics = ApiMetrics(CollectorRegistry())
    catalogue = CatalogueSource(settings.promise_catalogue)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await migrate_url(database_url)
        # No statement cache (here and for the dispatcher): a statement prepared before a
        # migration changed its table fails inside a transaction ("cached statement plan is
        # invalid"), a 500 per pooled connection; re-planning each query costs far less.
        # No reset query on release (keep_session says why that is safe here): a
        # request's connection goes back to the pool without a round trip of its own.
        pool = await create_pool(
            database_url,
            service="api",
            role="requests",
            min_size=2,
            max_size=10,
            statement_cache_size=0,
            reset=keep_session,
        )
        # The health read's own pool, with a statement cache: it is one statement outside
        # any transaction, which asyncpg re-prepares and retries by itself when a migration
        # changed a table under it, and re-planning it was most of PostgreSQL's time per
        # read (with the Parse round trip: 1.49 ms a read against 0.55 ms prepared).
        reads = await create_pool(
            database_url,
            service="api",
            role="reads",
            min_size=2,
            max_size=10,
            reset=keep_session,
        )
        # Its own pool: the dispatcher's sessions are named apart from the requests', and a
        # burst of requests cannot starve deliveries (nor the reverse).
        dispatcher_pool = await create_pool(
            database_url, service="api", role="webhooks", statement_cache_size=0
        )
        loops = Loops()
        dispatcher_state = loops.register("webhook_dispatcher", DISPATCHER_STUCK_AFTER_S)
        loops.register("desk_cleanup", DESK_CLEANUP_STUCK_AFTER_S)
        metrics.watch_loops(loops)
        app.state.loops = loops
        app.state.api = ApiContext(
            settings=settings,
            pool=pool,
            reads=reads,
            verifier=KeyVerifier(pool, cache_ttl_s=settings.auth_cache_s),
            limiter=RateLimiter(settings.api_rate_limit_per_s, settings.api_rate_limit_burst),
            metrics=metrics,
            catalogue=catalogue,
            clock=clock,
            explanations=ExplanationCache(settings.api_explanation_cache),
        )
        stopping = asyncio.Event()
        dispatcher = asyncio.create_task(
            webhooks.WebhookDispatcher(
                dispatcher_pool,
                settings,
                metrics,
                clock=clock,
                loop_state=dispatcher_state,
                on_error=lambda: metrics.loop_errors.labels("webhook_dispatcher").inc(),
            ).run(stopping),
            name="webhook-dispatcher",
        )

        async def desk_cleanup() -> int:
            async with pool.acquire() as conn:
                return await desk_sessions.prune(
                    conn,
                    now=clock(),
                    idle=timedelta(minutes=settings.desk_session_idle_minutes),
                    window=timedelta(minutes=settings.desk_signin_window_minutes),
                )

        cleanup = asyncio.create_task(
            supervise(
                loops,
                "desk_cleanup",
                DESK_CLEANUP_INTERVAL_S,
                desk_cleanup,
                stuck_after_s=DESK_CLEANUP_STUCK_AFTER_S,
            ),
            name="desk-cleanup",
        )
        try:
            yield
        finally:
            cleanup.cancel()  # between statements each delete is its own transaction
            with contextlib.suppress(asyncio.CancelledError):
                await cleanup
            stopping.set()
            try:
                async with asyncio.timeout(DISPATCHER_STOP_S):
                    await dispatcher
            except TimeoutError:
                dispatcher.cancel()  # a delivery in flight is retried: its lease expires
            await pool.close()
            await reads.close()
            await dispatcher_pool.close()

    return create_app(metrics, lifespan=lifespan)

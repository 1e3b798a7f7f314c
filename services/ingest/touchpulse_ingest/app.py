"""The ingest HTTP API: authenticate, read within limits, validate, produce, answer.

The request path, in order, with the status each step can give:
auth (401/403) → content type (415) → body within the size limit (413, checked before
parsing) → parse and validate (422, every bad field named by a JSON Pointer) → the key may
write this source and touchpoint (403) → the promise catalogue accepts it and occurred_at is
plausible (422, each problem named by its pointer) → rate limit (429 + Retry-After) → Kafka
acknowledged every record within the bound (202), or not (503 + Retry-After). Nothing a
client sends can produce a 5xx; only Kafka can.

The catalogue check is scoring's own (:func:`event_problems`, the pure domain function
scoring dead-letters by), on the same file re-read when it changes, so what ingest accepts
scoring can judge.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import asyncpg
import orjson
import structlog
from fastapi import Depends, FastAPI, Request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import TypeAdapter, ValidationError
from starlette.responses import JSONResponse, Response

from touchpulse_ingest.feedback import EdgeRejections
from touchpulse_ingest.metrics import IngestMetrics
from touchpulse_ingest.openapi import install_openapi
from touchpulse_ingest.producer import EventProducer, ProduceUnavailable
from touchpulse_scoring.catalogue_source import CatalogueSource
from touchpulse_scoring.domain.catalogue import Catalogue, EventProblem, event_problems
from touchpulse_scoring.domain.errors import CatalogueError, UnscorableReason
from touchpulse_shared.auth import KeyVerifier, Principal
from touchpulse_shared.auth import Scope as KeyScope
from touchpulse_shared.contract import (
    CONTENT_TYPE_CLOUDEVENT,
    CONTENT_TYPE_CLOUDEVENT_BATCH,
    CONTENT_TYPE_JSON,
    ExperienceEventBatchV1,
    ExperienceEventV1,
    InvalidBatch,
    ItemError,
    check_time_window,
    encode_records,
    from_batch,
    from_binary,
    media_type,
    parse_event_json,
    parse_native_batch,
    parse_structured,
    receipt_time,
)
from touchpulse_shared.db.pool import create_pool
from touchpulse_shared.http.access import authenticate
from touchpulse_shared.http.app import (
    RejectNulMiddleware,
    RequestIdMiddleware,
    RequestMetricsMiddleware,
    current_request_id,
    install_problem_handlers,
    readable_operation_id,
)
from touchpulse_shared.http.problems import Problem, field_errors, pointer
from touchpulse_shared.loops import Loops, supervise
from touchpulse_shared.ratelimit import RateLimiter
from touchpulse_shared.settings import Settings

log = structlog.get_logger(__name__)

PRODUCER_NAME = "ingest"
_BATCH_ADAPTER = TypeAdapter(ExperienceEventBatchV1)
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Ingest:
    """Everything a request needs, built once per process."""

    settings: Settings
    producer: EventProducer
    verifier: KeyVerifier
    limiter: RateLimiter
    metrics: IngestMetrics
    #: The promise catalogue: the tracking plan events are checked against.
    catalogue: CatalogueSource
    clock: Clock = utc_now
    monotonic: Callable[[], float] = time.monotonic
    #: Refusals per source, flushed to PostgreSQL for the source's owners (feedback.py).
    rejections: EdgeRejections | None = None

    def refused(
        self, principal: Principal, reason: str, touchpoint: str | None, count: int = 1
    ) -> None:
        """Count events refused for ``reason``: in the metrics and for the key's source."""
        for _ in range(count):
            self.metrics.rejected(reason, touchpoint)
        if self.rejections is not None:
            self.rejections.count(principal.source, reason, count)

    def current_catalogue(self) -> Catalogue:
        """The catalogue in effect: one stat() per request, a re-read when the file changed
        (an invalid edit is logged and the last good catalogue stays, as in scoring)."""
        self.catalogue.refresh()
        return self.catalogue()


async def _ingest(request: Request) -> Ingest:
    # async on purpose: FastAPI runs a plain-def dependency in a thread pool, a round trip
    # per request that showed up as a third of the single-event path's CPU.
    ingest: Ingest = request.app.state.ingest
    return ingest


IngestDep = Annotated[Ingest, Depends(_ingest)]


async def _principal(request: Request, ingest: IngestDep) -> Principal:
    return await authenticate(
        request,
        ingest.verifier,
        KeyScope.EVENTS_WRITE,
        retry_after_s=ingest.settings.ingest_retry_after_s,
    )


PrincipalDep = Annotated[Principal, Depends(_principal)]


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> Problem:
    return Problem(
        413, "too-large", "Payload Too Large", f"The body exceeds the limit of {limit} bytes"
    )


def _unsupported(content_type: str | None, allowed: Sequence[str]) -> Problem:
    return Problem(
        415,
        "unsupported-media-type",
        "Unsupported Media Type",
        f"Content-Type {content_type or '(none)'} is not accepted here; use one of "
        + ", ".join(allowed),
        headers={"Accept-Post": ", ".join(allowed)},
    )


def _invalid(detail: str, errors: list[dict[str, Any]]) -> Problem:
    return Problem(422, "invalid-event", "Invalid Event", detail, errors=errors)


@dataclass(frozen=True)
class Format:
    """Where the fields the catalogue and the clock judge sit in one item of a format."""

    #: What the client called occurred_at.
    time_field: str
    #: Where the measures are.
    measures: tuple[str, ...]

    def locate(self, problem: EventProblem) -> tuple[str, ...]:
        """The catalogue problem's field as this format names it."""
        if problem.field[0] == "measures":
            return (*self.measures, *problem.field[1:])
        return problem.field  # touchpoint and type are named alike in both formats


NATIVE = Format("occurred_at", ("measures",))
#: Binary mode reports its header attributes and body by the same names (see from_binary).
CLOUDEVENT = Format("time", ("data", "measures"))


@dataclass
class _Judged:
    """One event's verdict after validation, authorization, the catalogue and the clock."""

    accepted: list[ExperienceEventV1]
    rejected: list[dict[str, Any]]
    catalogue: Catalogue
    #: The instant the time window was judged at, stamped on the records as their receipt
    #: time (to the millisecond the header carries): scoring judges the window at it again.
    received_at: datetime


def _judge(
    ingest: Ingest,
    principal: Principal,
    items: Sequence[ExperienceEventV1 | ItemError],
    prefix: Sequence[str | int] | None,
    form: Format,
) -> _Judged:
    """Sort events into accepted and rejected.

    ``prefix`` locates batch items in the body (None for a single event); ``form`` says how
    the client's format names the fields judged here.
    """
    settings = ingest.settings
    catalogue = ingest.current_catalogue()
    now = receipt_time(ingest.clock())
    max_future = timedelta(seconds=settings.ingest_max_clock_skew_s)
    max_past = timedelta(hours=settings.ingest_max_event_age_hours)
    judged = _Judged([], [], catalogue, now)
    for index, item in enumerate(items):
        where = () if prefix is None else (*prefix, index)
        if isinstance(item, ItemError):
            judged.rejected.append(
                {"index": index, "status": 422, "errors": field_errors(item.errors, where)}
            )
            ingest.refused(principal, "invalid", None)
            continue
        refusal = principal.write_refusal(item.source, item.touchpoint)
        if refusal is not None:
            judged.rejected.append(
                {"index": index, "status": 403, "event_id": item.event_id, "detail": refusal}
            )
            ingest.refused(principal, "forbidden", item.touchpoint)
            continue
        problems = event_problems(item, catalogue)
        errors = [
            {
                "pointer": pointer((*where, *form.locate(problem))),
                "detail": problem.message,
                "code": problem.reason.value,
            }
            for problem in problems
        ]
        late = check_time_window(item, now=now, max_future=max_future, max_past=max_past)
        if late is not None:
            errors.append(
                {
                    "pointer": pointer((*where, form.time_field)),
                    "detail": late,
                    "code": "time_window",
                }
            )
        if errors:
            judged.rejected.append(
                {"index": index, "status": 422, "event_id": item.event_id, "errors": errors}
            )
            if problems:
                reason = problems[0].reason
                known = reason is not UnscorableReason.UNKNOWN_TOUCHPOINT
                ingest.refused(principal, reason.value, item.touchpoint if known else None)
            else:
                too_new = item.occurred_at > now
                ingest.refused(principal, "too_new" if too_new else "too_old", item.touchpoint)
            continue
        judged.accepted.append(item)
    return judged


async def _produce(
    ingest: Ingest,
    principal: Principal,
    events: Sequence[ExperienceEventV1],
    catalogue: Catalogue,
    received_at: datetime,
) -> None:
    """Rate-limit, then hand every event to Kafka and wait for all acknowledgements."""
    wait = ingest.limiter.take(principal.key_id, len(events), ingest.monotonic())
    if wait > 0:
        for event in events:
            ingest.refused(principal, "rate_limited", event.touchpoint)
        raise Problem(
            429,
            "rate-limited",
            "Too Many Requests",
            f"This API key is over its limit of {ingest.settings.rate_limit_events_per_s:g} "
            "events per second",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
    records = encode_records(
        events,
        producer=PRODUCER_NAME,
        received_at=received_at,
        # Followed into scoring's logs (dead letters name it).
        request_id=current_request_id.get(),
    )
    started = time.perf_counter()
    try:
        await ingest.producer.produce(
            records, within_s=ingest.settings.ingest_produce_timeout_ms / 1000
        )
    except ProduceUnavailable as exc:
        for event in events:
            ingest.refused(principal, "unavailable", event.touchpoint)
        log.warning("ingest.produce.unavailable", events=len(events), error=str(exc))
        raise Problem(
            503,
            "unavailable",
            "Service Unavailable",
            "The events were not confirmed as stored; retry with the same event ids "
            "(a retry of an event that did arrive is recognised as the same event)",
            headers={"Retry-After": str(ingest.settings.ingest_retry_after_s)},
        ) from None
    ingest.metrics.produce_duration.observe(time.perf_counter() - started)
    # One counter update per touchpoint, not per event: batches are the hot path.
    for touchpoint, count in Counter(e.touchpoint for e in events).items():
        ingest.metrics.events_accepted.labels(ingest.metrics.touchpoint(touchpoint)).inc(count)
    unmatched = Counter(
        (e.source, e.type) for e in events if not catalogue.matches_a_promise(e.touchpoint, e.type)
    )
    for (source, event_type), count in unmatched.items():
        ingest.metrics.unmatched(source, event_type, count)


async def _single(
    ingest: Ingest, principal: Principal, event: ExperienceEventV1, form: Format = NATIVE
) -> Response:
    judged = _judge(ingest, principal, [event], None, form)
    if judged.rejected:
        verdict = judged.rejected[0]
        if verdict["status"] == 403:
            raise Problem(403, "forbidden", "Forbidden", verdict["detail"])
        raise _invalid("The event is not acceptable", verdict["errors"])
    await _produce(ingest, principal, judged.accepted, judged.catalogue, judged.received_at)
    return JSONResponse(
        {"status": "accepted", "source": event.source, "event_id": event.event_id},
        status_code=202,
    )


async def _batch(
    ingest: Ingest,
    principal: Principal,
    items: Sequence[ExperienceEventV1 | ItemError],
    prefix: Sequence[str | int],
    form: Format = NATIVE,
) -> Response:
    ingest.metrics.batch_events.observe(len(items))
    judged = _judge(ingest, principal, items, prefix, form)
    # Rejected items read the same in a 202 and in a 422: "rejected" with the item's own
    # HTTP status beside it, so a client needs one parser for both answers.
    verdicts = {
        r["index"]: {**r, "status": "rejected", "http_status": r["status"]} for r in judged.rejected
    }
    if not judged.accepted:
        raise Problem(
            422 if items else 400,
            "invalid-batch",
            "No Event Accepted",
            "No event in the batch was acceptable" if items else "The batch is empty",
            extra={
                "accepted": 0,
                "rejected": len(judged.rejected),
                "items": [verdicts[i] for i in sorted(verdicts)],
            },
        )
    await _produce(ingest, principal, judged.accepted, judged.catalogue, judged.received_at)
    results = iter(judged.accepted)
    body_items = []
    for index in range(len(items)):
        if index in verdicts:
            body_items.append(verdicts[index])
        else:
            event = next(results)
            body_items.append({"index": index, "status": "accepted", "event_id": event.event_id})
    return Response(
        orjson.dumps(
            {
                "accepted": len(judged.accepted),
                "rejected": len(judged.rejected),
                "items": body_items,
            }
        ),
        status_code=202,
        media_type="application/json",
    )


def _batch_or_problem(
    parse: Callable[[], list[ExperienceEventV1 | ItemError]],
) -> list[ExperienceEventV1 | ItemError]:
    try:
        return parse()
    except InvalidBatch as exc:
        if exc.reason == "too_many_items":
            raise Problem(413, "too-many-events", "Too Many Events", exc.message) from None
        raise Problem(
            400 if exc.reason == "not_json" else 422, "invalid-batch", "Invalid Batch", exc.message
        ) from None


def _native_batch(body: bytes, max_items: int) -> Sequence[ExperienceEventV1 | ItemError]:
    """A native batch: one validation of the whole body when every item is good (the usual
    case, and ~30 % cheaper), item by item only to report which ones are not."""
    try:
        events = _BATCH_ADAPTER.validate_json(body).events
    except ValidationError:
        return _batch_or_problem(lambda: parse_native_batch(body, max_items=max_items))
    if len(events) > max_items:
        raise Problem(
            413,
            "too-many-events",
            "Too Many Events",
            f"The batch holds {len(events)} events; at most {max_items} are accepted",
        )
    return events


def _parse_one(
    ingest: Ingest, principal: Principal, parse: Callable[[], ExperienceEventV1]
) -> ExperienceEventV1:
    try:
        return parse()
    except ValidationError as exc:
        ingest.refused(principal, "invalid", None)
        errors = exc.errors(include_url=False)
        if len(errors) == 1 and errors[0]["type"] == "json_invalid":
            raise Problem(
                400,
                "malformed-json",
                "Malformed JSON",
                f"The body is not valid JSON: {errors[0]['msg']}",
            ) from None
        raise _invalid("The event is not valid", field_errors(errors)) from None


EVENT_TYPES = (CONTENT_TYPE_JSON, CONTENT_TYPE_CLOUDEVENT, CONTENT_TYPE_CLOUDEVENT_BATCH)
BATCH_TYPES = (CONTENT_TYPE_JSON, CONTENT_TYPE_CLOUDEVENT_BATCH)


def create_app(
    settings: Settings,
    metrics: IngestMetrics,
    *,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
) -> FastAPI:
    """The routes; ``app.state.ingest`` must hold an :class:`Ingest` before requests come."""
    app = FastAPI(
        title="Touchpulse ingest",
        version="1",
        summary="Customer-experience events from every touchpoint, into Kafka.",
        lifespan=lifespan,
        generate_unique_id_function=readable_operation_id,
    )
    app.add_middleware(RejectNulMiddleware)
    app.add_middleware(
        RequestMetricsMiddleware, requests=metrics.requests, duration=metrics.request_duration
    )
    # Outermost: every answer (a 400 of RejectNul's, a 404) carries the request's id.
    app.add_middleware(RequestIdMiddleware)
    install_openapi(app)
    max_items = settings.ingest_max_batch_items

    @app.post("/v1/events", status_code=202, tags=["events"], operation_id="post_event")
    async def post_event(request: Request, ingest: IngestDep, principal: PrincipalDep) -> Response:
        """One event: native JSON, or a CloudEvent in structured, binary or batch mode."""
        kind = _media_type(request, EVENT_TYPES)
        body = await read_body(request, ingest.settings.ingest_max_body_bytes)
        ingest.metrics.body_bytes.labels("/v1/events").observe(len(body))
        if kind == CONTENT_TYPE_CLOUDEVENT_BATCH:
            items = _batch_or_problem(lambda: from_batch(body, max_items=max_items))
            return await _batch(ingest, principal, items, (), CLOUDEVENT)
        if kind == CONTENT_TYPE_CLOUDEVENT:
            event = _parse_one(ingest, principal, lambda: parse_structured(body))
            return await _single(ingest, principal, event, CLOUDEVENT)
        if "ce-specversion" in request.headers:
            headers = {k: v for k, v in request.headers.items() if k.startswith("ce-")}
            event = _parse_one(ingest, principal, lambda: from_binary(headers, body))
            return await _single(ingest, principal, event, CLOUDEVENT)
        return await _single(
            ingest, principal, _parse_one(ingest, principal, lambda: parse_event_json(body))
        )

    @app.post("/v1/events/batch", status_code=202, tags=["events"], operation_id="post_event_batch")
    async def post_batch(request: Request, ingest: IngestDep, principal: PrincipalDep) -> Response:
        """Many events, each accepted or rejected on its own, reported by index."""
        kind = _media_type(request, BATCH_TYPES)
        body = await read_body(request, ingest.settings.ingest_max_body_bytes)
        ingest.metrics.body_bytes.labels("/v1/events/batch").observe(len(body))
        if kind == CONTENT_TYPE_CLOUDEVENT_BATCH:
            items = _batch_or_problem(lambda: from_batch(body, max_items=max_items))
            return await _batch(ingest, principal, items, (), CLOUDEVENT)
        return await _batch(ingest, principal, _native_batch(body, max_items), ("events",))

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "alive"}

    @app.get(
        "/readyz",
        tags=["operations"],
        responses={503: {"description": "Not ready: no Kafka producer connected"}},
    )
    async def readyz(ingest: IngestDep) -> Response:
        """Ready when a Kafka producer is connected: a load balancer may send traffic."""
        ready = ingest.producer.ready
        return JSONResponse(
            {
                "status": "ready" if ready else "not ready",
                "kafka_producer": ready,
                "catalogue_version": ingest.current_catalogue().version,
                "catalogue_hash": ingest.catalogue.content_hash,
            },
            status_code=200 if ready else 503,
        )

    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    async def prometheus(ingest: IngestDep) -> Response:
        ingest.metrics.producer_ready.set(1 if ingest.producer.ready else 0)
        ingest.metrics.producer_replaced(ingest.producer.replacements)
        ingest.metrics.catalogue_version(
            ingest.current_catalogue().version, ingest.catalogue.content_hash
        )
        return Response(generate_latest(ingest.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    install_problem_handlers(app)
    return app


def _media_type(request: Request, allowed: Sequence[str]) -> str:
    content_type = request.headers.get("content-type")
    kind = media_type(content_type) if content_type else ""
    if kind not in allowed:
        raise _unsupported(content_type, allowed)
    return kind


def load_catalogue(settings: Settings) -> CatalogueSource:
    """The promise catalogue ingest checks events against; without a valid one ingest does not
    start (:class:`CatalogueError`, one line per problem), as scoring does not."""
    path = settings.promise_catalogue
    try:
        return CatalogueSource(path)
    except OSError as exc:
        problems = [f"cannot be read: {exc.strerror or exc}"]
    except CatalogueError as exc:
        problems = list(exc.problems)
    raise CatalogueError(
        [f"the promise catalogue {path} (TOUCHPULSE_PROMISE_CATALOGUE) is unusable:", *problems]
    )


def build_app(settings: Settings, *, clock: Clock = utc_now) -> FastAPI:
    """The production wiring: a PostgreSQL pool for keys, a supervised Kafka producer and the
    promise catalogue (read here, so that a missing or invalid one stops the start)."""
    if settings.database_url is None or settings.kafka_bootstrap_servers is None:
        raise ValueError("ingest needs TOUCHPULSE_DATABASE_URL and Kafka bootstrap servers")
    database_url, bootstrap = settings.database_url, settings.kafka_bootstrap_servers
    catalogue = load_catalogue(settings)
    metrics = IngestMetrics(CollectorRegistry())
    metrics.catalogue_version(catalogue().version, catalogue.content_hash)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Small pool: ingest only reads API keys, and those are cached.
        pool = await create_pool(database_url, service="ingest", role="keys", max_size=4)
        # Its own session for the edge-rejection counts: a flush never takes a key read's.
        counts_pool = await create_pool(
            database_url, service="ingest", role="quality", min_size=0, max_size=1
        )
        rejections = EdgeRejections(clock)
        producer = EventProducer(
            bootstrap_servers=bootstrap,
            topic=settings.events_topic,
            linger_ms=settings.ingest_linger_ms,
        )
        await producer.start()
        app.state.ingest = Ingest(
            settings=settings,
            producer=producer,
            verifier=KeyVerifier(pool, cache_ttl_s=settings.auth_cache_s),
            limiter=RateLimiter(settings.rate_limit_events_per_s, settings.rate_limit_burst),
            metrics=metrics,
            catalogue=catalogue,
            clock=clock,
            rejections=rejections,
        )
        flusher = asyncio.create_task(
            supervise(
                Loops(),
                "edge_rejections",
                settings.ingest_quality_flush_s,
                lambda: rejections.flush(counts_pool),
                stuck_after_s=max(60.0, 10 * settings.ingest_quality_flush_s),
            ),
            name="edge-rejections",
        )
        try:
            yield
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            try:  # what was counted since the last flush, once more (bounded)
                async with asyncio.timeout(5):
                    await rejections.flush(counts_pool)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("ingest.quality.unflushed", error=str(exc))
            await producer.stop()
            await counts_pool.close()
            await pool.close()

    return create_app(settings, metrics, lifespan=lifespan)

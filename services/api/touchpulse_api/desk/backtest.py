"""The leads' back-test page: a candidate catalogue pasted or uploaded, validated, and
re-judged against the events on the topic, with the report as tables.

The same pure core as ``touchpulse catalogue backtest`` (``touchpulse_scoring.backtest``:
the core and its group-less topic reader; never scoring's storage), on a bounded window so
that it answers within one request: the last ``days`` (at most :data:`MAX_DAYS`) and, of
those, the newest :data:`MAX_EVENTS` events. Reads only: no consumer group, no offsets, no
row written; the profiles through the desk's own query. The judging runs in a worker
thread, so the event loop keeps serving other requests meanwhile.

A candidate that does not validate is shown back with every problem, by promise and field
(422). Everything printed from it goes through the templates' escaping: a promise id, a
version or a YAML key can hold markup, and is shown as text.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import structlog
from aiokafka.errors import KafkaError
from fastapi import APIRouter, Request
from starlette.datastructures import FormData, UploadFile
from starlette.responses import Response

from touchpulse_api.catalogue import current_catalogue
from touchpulse_api.context import ContextDep
from touchpulse_api.desk import queries
from touchpulse_api.desk.render import page
from touchpulse_api.desk.routes import LeadSession, base_values, posted
from touchpulse_api.desk.sessions import Session
from touchpulse_scoring.backtest.core import ALL_SEGMENTS, BANDS, BacktestReport, backtest
from touchpulse_scoring.backtest.topic import TopicReadError, read_events
from touchpulse_scoring.domain import CatalogueError, CatalogueProblem, parse_catalogue

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/desk", include_in_schema=False)

#: The window a lead may ask for, and the events of it re-judged at most (the newest): about
#: 3 s of one core at the back-test's measured speed, reading included.
MAX_DAYS = 30
DEFAULT_DAYS = 7
MAX_EVENTS = 50_000
#: Far above any real catalogue (the shipped one is about 25 KB).
MAX_CATALOGUE_BYTES = 1_000_000
#: The broker's answers, bounded: a stalled broker fails the request, not hangs it.
KAFKA_TIMEOUT_MS = 10_000


def _view(session: Session, status: int = 200, **values: Any) -> Response:
    values.setdefault("days", DEFAULT_DAYS)
    values.setdefault("text", "")
    values.setdefault("problems", ())
    values.setdefault("error", None)
    values.setdefault("report", None)
    return page(
        "backtest.html",
        base_values(
            session,
            max_days=MAX_DAYS,
            max_events=MAX_EVENTS,
            all_segments=ALL_SEGMENTS,
            bands=BANDS,
            **values,
        ),
        status=status,
    )


@router.get("/backtest")
async def backtest_form(session: LeadSession) -> Response:
    return _view(session)


async def _candidate(form: FormData) -> tuple[str, list[CatalogueProblem]]:
    """The candidate's text: the uploaded file when one was chosen, else the pasted text."""
    upload = form.get("file")
    if isinstance(upload, UploadFile) and upload.filename:
        raw = await upload.read(MAX_CATALOGUE_BYTES + 1)
        if len(raw) > MAX_CATALOGUE_BYTES:
            return "", [CatalogueProblem(f"is over {MAX_CATALOGUE_BYTES:,} bytes", field="file")]
        try:
            return raw.decode("utf-8"), []
        except UnicodeDecodeError:
            return "", [CatalogueProblem("is not UTF-8 text", field="file")]
    pasted = form.get("catalogue")
    text = pasted if isinstance(pasted, str) else ""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_CATALOGUE_BYTES:
        return "", [CatalogueProblem(f"is over {MAX_CATALOGUE_BYTES:,} bytes", field="catalogue")]
    if not text.strip():
        return "", [CatalogueProblem("paste a catalogue or choose a file", field="catalogue")]
    return text, []


def _days(form: FormData) -> tuple[int, list[CatalogueProblem]]:
    value = form.get("days")
    try:
        days = int(value) if isinstance(value, str) and value.strip() else DEFAULT_DAYS
    except ValueError:
        days = 0
    if not 1 <= days <= MAX_DAYS:
        return DEFAULT_DAYS, [
            CatalogueProblem(f"a whole number from 1 to {MAX_DAYS}", field="days")
        ]
    return days, []


@router.post("/backtest")
async def backtest_run(request: Request, context: ContextDep, session: LeadSession) -> Response:
    form = await posted(request, session)
    try:
        text, problems = await _candidate(form)
        days, wrong_days = _days(form)
    finally:
        await form.close()  # an upload's spooled file, now read
    problems += wrong_days
    shown = text if len(text) <= MAX_CATALOGUE_BYTES else ""
    if problems:
        return _view(session, 422, days=days, text=shown, problems=problems)
    try:
        candidate = parse_catalogue(text)
    except CatalogueError as exc:
        return _view(session, 422, days=days, text=shown, problems=exc.details)
    bootstrap = context.settings.kafka_bootstrap_servers
    if bootstrap is None:
        return _view(
            session, 503, days=days, text=shown, error="No Kafka broker is configured here."
        )
    live = current_catalogue(context)
    now = context.clock()
    try:
        retained = await read_events(
            bootstrap,
            context.settings.events_topic,
            since=now - timedelta(days=days),
            max_records=MAX_EVENTS,
            request_timeout_ms=KAFKA_TIMEOUT_MS,
        )
    except (TopicReadError, KafkaError, OSError) as exc:
        log.warning("desk.backtest.unreadable", error=str(exc))
        return _view(
            session,
            503,
            days=days,
            text=shown,
            error="The events topic cannot be read right now; try again in a minute.",
        )
    async with context.pool.acquire() as conn:
        profiles, erased = await queries.backtest_profiles(
            conn, {e.customer_id for e, _ in retained.events}
        )
    events = [
        e
        for e, received in retained.events
        if not (e.customer_id in erased and received <= erased[e.customer_id])
    ]
    report: BacktestReport = await asyncio.to_thread(
        backtest, events, profiles, live, candidate, now=now
    )
    log.info(
        "desk.backtest.run",
        by=session.person.login,
        candidate=candidate.version,
        events=report.events,
        changed=report.customers_changed,
    )
    return _view(
        session,
        days=days,
        text=shown,
        report=report,
        records=retained.records,
        truncated=retained.truncated,
        undecodable=sum(retained.undecodable.values()),
    )

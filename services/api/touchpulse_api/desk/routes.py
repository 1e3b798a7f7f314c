"""The desk's pages under /desk: sign-in, the queue and its live feed, the customer page,
the people (admin), the call list and the organisation view (leads).

Every page needs a live session (none: 303 to the sign-in page) of a role at least the
page's (less: 403). Every POST carries the session's CSRF token in the form field
``csrf_token`` (the sign-in form, before any session, a double-submit token from its own
cookie); a missing or wrong one is refused with 403 before anything is read or written.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import orjson
import structlog
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.staticfiles import StaticFiles

from touchpulse_api import queries as api_queries
from touchpulse_api import workflow
from touchpulse_api.catalogue import current_catalogue
from touchpulse_api.context import ApiContext, ContextDep
from touchpulse_api.desk import queries
from touchpulse_api.desk.render import STATIC, page, secure, trend_chart
from touchpulse_api.desk.sessions import (
    Session,
    clear_failures,
    find_session,
    open_session,
    record_failure,
    revoke_session,
    throttled,
)
from touchpulse_api.routes.customers import read_customer_health
from touchpulse_scoring.domain import Actor
from touchpulse_shared.http.problems import Problem
from touchpulse_shared.people import (
    InvalidPerson,
    Role,
    create_person,
    credentials,
    disable_by_id,
    find_person,
    list_people,
    needs_rehash,
    store_rehash,
    verify_password,
)

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/desk", include_in_schema=False)

SESSION_COOKIE = "touchpulse_desk"
SIGNIN_COOKIE = "touchpulse_desk_signin"
COOKIE_PATH = "/desk"
PAGE_SIZE = 50
# The live feed looks for a change this often: a new case shows within it, and a poll is
# two index lookups.
FEED_POLL_S = 2.0
# A comment line this often keeps proxies from closing a quiet stream.
FEED_HEARTBEAT_S = 15.0
# A stream ends after this long and the browser's EventSource reconnects (after the
# `retry` below): the reconnect re-checks the session, so a revoked or expired one stops
# receiving within this bound.
FEED_MAX_S = 300.0
FEED_RETRY_MS = 3000


class NotSignedIn(Exception):
    def __init__(self, target: str) -> None:
        self.target = target


class Forbidden(Exception):
    def __init__(self, session: Session | None, message: str) -> None:
        self.session = session
        self.message = message


def _context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.api
    return context


def _idle(context: ApiContext) -> timedelta:
    return timedelta(minutes=context.settings.desk_session_idle_minutes)


def signed_in(role: Role) -> Callable[..., object]:
    """A dependency: the request's live session, of ``role`` or above."""

    async def dependency(request: Request) -> Session:
        context = _context(request)
        token = request.cookies.get(SESSION_COOKIE)
        session = None
        if token:
            async with context.pool.acquire() as conn:
                session = await find_session(conn, token, now=context.clock(), idle=_idle(context))
        if session is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise NotSignedIn(target)
        if not session.person.role.at_least(role):
            # Admin is the top role: "and above" would name nobody.
            who = "admins" if role is Role.ADMIN else f"the {role.value} role and above"
            raise Forbidden(session, f"This page is for {who}.")
        return session

    return dependency


AgentSession = Annotated[Session, Depends(signed_in(Role.AGENT))]
LeadSession = Annotated[Session, Depends(signed_in(Role.LEAD))]
AdminSession = Annotated[Session, Depends(signed_in(Role.ADMIN))]


async def posted(request: Request, session: Session) -> FormData:
    """The form of a POST whose ``csrf_token`` is the session's; 403 otherwise."""
    form = await request.form()
    token = form.get("csrf_token")
    if not session.csrf_ok(token if isinstance(token, str) else None):
        raise Forbidden(
            session,
            "The form's security token is missing or out of date. Reload the page and try again.",
        )
    return form


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _secure_transport(request: Request, context: ApiContext) -> bool:
    if request.url.scheme == "https":
        return True
    # Only a proxy we were told about may say the browser's connection was TLS.
    return context.settings.desk_trust_forwarded_proto and (
        request.headers.get("x-forwarded-proto", "").split(",")[0].strip() == "https"
    )


def _set_cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="lax",
        secure=_secure_transport(request, _context(request)),
    )


def _safe_next(target: str | None) -> str:
    # Only a page of the desk itself: never another host ("//evil", "/\\evil").
    if target and target.startswith("/desk") and not target.startswith(("//", "/\\")):
        return target
    return "/desk"


def _base(session: Session | None, **values: Any) -> dict[str, Any]:
    return {"me": None if session is None else session.person, "session": session, **values}


# The admin's keys and webhooks pages (desk/admin.py) build on the same two helpers.
base_values = _base
form_text = _text


# --- sign-in ------------------------------------------------------------------------------


@router.get("/sign-in")
async def sign_in_page(request: Request, next: str | None = None) -> Response:
    token = request.cookies.get(SIGNIN_COOKIE) or secrets.token_urlsafe(32)
    response = page("sign_in.html", _base(None, csrf_token=token, next=_safe_next(next)))
    _set_cookie(response, request, SIGNIN_COOKIE, token, max_age=3600)
    return response


@router.post("/sign-in")
async def sign_in(request: Request, context: ContextDep) -> Response:
    form = await request.form()
    cookie = request.cookies.get(SIGNIN_COOKIE, "")
    field = _text(form, "csrf_token")
    if not cookie or not hmac.compare_digest(cookie.encode(), field.encode()):
        raise Forbidden(
            None,
            "The sign-in form's security token is missing or out of date. "
            "Reload the page and try again.",
        )
    login = _text(form, "login").lower()
    password = form.get("password")
    password = password if isinstance(password, str) else ""
    target = _safe_next(_text(form, "next"))
    address = request.client.host if request.client else "unknown"
    settings = context.settings
    window = timedelta(minutes=settings.desk_signin_window_minutes)
    now = context.clock()

    def refused(status: int, message: str) -> Response:
        return page(
            "sign_in.html",
            _base(None, csrf_token=cookie, next=target, error=message, login=login),
            status=status,
        )

    async with context.pool.acquire() as conn:
        if await throttled(
            conn,
            login=login,
            address=address,
            now=now,
            window=window,
            limit=settings.desk_signin_max_failures,
        ):
            log.warning("desk.signin.throttled", login=login, address=address)
            response = refused(
                429,
                "Too many failed sign-ins. Wait "
                f"{settings.desk_signin_window_minutes} minutes and try again.",
            )
            response.headers["Retry-After"] = str(settings.desk_signin_window_minutes * 60)
            return response
        found = await credentials(conn, login)
        # Argon2 takes tens of milliseconds of CPU: off the event loop.
        ok = await asyncio.to_thread(verify_password, None if found is None else found[1], password)
        if not ok or found is None or found[0].disabled_at is not None:
            await record_failure(conn, login=login, address=address, now=now)
            log.info("desk.signin.failed", login=login, address=address)
            return refused(401, "Wrong login or password.")
        person, stored = found
        await clear_failures(conn, login=login, now=now, window=window)
        if needs_rehash(stored):
            await store_rehash(conn, person.person_id, password)
        token, _ = await open_session(
            conn,
            person,
            now=now,
            absolute=timedelta(hours=settings.desk_session_absolute_hours),
            replaces=request.cookies.get(SESSION_COOKIE),
        )
    log.info("desk.signin", login=login, role=person.role.value)
    response = secure(RedirectResponse(target, status_code=303))
    _set_cookie(
        response,
        request,
        SESSION_COOKIE,
        token,
        max_age=settings.desk_session_absolute_hours * 3600,
    )
    response.delete_cookie(SIGNIN_COOKIE, path=COOKIE_PATH)
    return response


@router.post("/sign-out")
async def sign_out(request: Request, context: ContextDep, session: AgentSession) -> Response:
    await posted(request, session)
    async with context.pool.acquire() as conn:
        await revoke_session(conn, session.token_hash, now=context.clock())
    response = secure(RedirectResponse("/desk/sign-in", status_code=303))
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    return response


# --- the queue ----------------------------------------------------------------------------


def _queue_filter(
    scope: str = "all",
    segment: str | None = None,
    touchpoint: str | None = None,
    new: bool = False,
    overdue: bool = False,
) -> queries.QueueFilter:
    """The queue's filters from the query string (the page and its fragment take the same);
    an unknown scope shows all."""
    try:
        chosen = queries.Scope(scope)
    except ValueError:
        chosen = queries.Scope.ALL
    return queries.QueueFilter(
        scope=chosen,
        segment=segment or None,
        touchpoint=touchpoint or None,
        new_customers=new,
        overdue=overdue,
    )


QueueQuery = Annotated[queries.QueueFilter, Depends(_queue_filter)]
PageNo = Annotated[int, Query(alias="page", ge=1, le=10_000)]


async def _queue(
    context: ApiContext, session: Session, f: queries.QueueFilter, page_no: int
) -> dict[str, Any]:
    policy = current_catalogue(context).policy
    now = context.clock()
    new_since = (now - timedelta(days=policy.new_customer_days)).date()
    overdue_at = now - timedelta(hours=policy.interventions.acknowledge_within_hours)
    me = session.person.login
    async with context.pool.acquire() as conn:
        counts = await queries.queue_counts(
            conn, f, me=me, new_since=new_since, overdue_at=overdue_at, now=now
        )
        rows = await queries.queue_page(
            conn,
            f,
            me=me,
            new_since=new_since,
            overdue_at=overdue_at,
            now=now,
            offset=(page_no - 1) * PAGE_SIZE,
            limit=PAGE_SIZE + 1,
        )
        segments = await queries.segments(conn)
        cursor = await queries.queue_cursor(conn)
    cases = [
        {
            **dict(r),
            "gaps": orjson.loads(r["gaps"]),
            "why": _why(orjson.loads(r["gaps"])),
        }
        for r in rows[:PAGE_SIZE]
    ]
    return {
        "filter": f,
        "counts": counts,
        "cases": cases,
        "page_no": page_no,
        "more": len(rows) > PAGE_SIZE,
        "segments": segments,
        "touchpoints": sorted(current_catalogue(context).touchpoints),
        "cursor": cursor,
        "acknowledge_within_hours": policy.interventions.acknowledge_within_hours,
    }


def _why(gaps: list[dict[str, Any]]) -> str:
    """The one line that says why: the worst gap (critical first, then the lowest score)."""
    if not gaps:
        return "health below the threshold"
    worst = min(gaps, key=lambda g: (g.get("severity") != "critical", g.get("score", 1.0)))
    expected = worst.get("expected", {})
    actual = worst.get("actual")
    return (
        f"{worst.get('promise_id')} at {worst.get('touchpoint')}: expected "
        f"{expected.get('op', '')} {expected.get('target', '')} {expected.get('unit') or ''}"
        f", got {'nothing' if actual is None else actual}"
    ).replace("  ", " ")


@router.get("")
async def queue_page(
    *, context: ContextDep, session: AgentSession, f: QueueQuery, page_no: PageNo = 1
) -> Response:
    return page("queue.html", _base(session, **await _queue(context, session, f, page_no)))


@router.get("/queue/fragment")
async def queue_fragment(
    *, context: ContextDep, session: AgentSession, f: QueueQuery, page_no: PageNo = 1
) -> Response:
    """The queue's list and counts alone: what the page's script swaps in on a change."""
    return page("_queue_list.html", _base(session, **await _queue(context, session, f, page_no)))


@router.get("/events")
async def events(request: Request, context: ContextDep, session: AgentSession) -> Response:
    """Server-sent events: `queue` with a new cursor whenever a case opens, moves or closes
    (read from committed rows, so every api process sees every change)."""

    async def stream() -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        last_sent = started
        cursor: str | None = request.query_params.get("cursor")
        yield f"retry: {FEED_RETRY_MS}\n\n".encode()
        while loop.time() - started < FEED_MAX_S:
            async with context.pool.acquire() as conn:
                now_cursor = await queries.queue_cursor(conn)
            if now_cursor != cursor:
                cursor = now_cursor
                last_sent = loop.time()
                yield f"event: queue\ndata: {cursor}\n\n".encode()
            elif loop.time() - last_sent >= FEED_HEARTBEAT_S:
                last_sent = loop.time()
                yield b": still here\n\n"
            if await request.is_disconnected():
                return
            await asyncio.sleep(FEED_POLL_S)

    response = StreamingResponse(stream(), media_type="text/event-stream")
    response.headers["X-Accel-Buffering"] = "no"  # a proxy must pass events on at once
    return secure(response)


# --- the customer page --------------------------------------------------------------------

# The newest cases whose whole history (notes, who took, reassigned) the page shows.
HISTORY_CASES = 10
# What a person's move is called in "Kari took this case a moment ago".
_VERBS = {
    "intervention.acknowledged": "took",
    "intervention.noted": "added a note to",
    "intervention.snoozed": "snoozed",
    "intervention.reassigned": "reassigned",
    "intervention.resolved": "resolved",
}
# Every move, people's and scoring's, as the history lists them.
_HISTORY_VERBS = {
    "intervention.acknowledged": "took this case",
    "intervention.noted": "added a note",
    "intervention.snoozed": "snoozed this case",
    "intervention.reassigned": "reassigned this case",
    "intervention.resolved": "resolved this case",
    "intervention.opened": "opened this case",
    "intervention.attached": "added a broken promise to this case",
    "intervention.updated": "re-ranked this case",
    "intervention.expired": "closed this case unowned (expired)",
    "intervention.followed_up": "followed this case up",
}


async def _customer(
    context: ApiContext,
    session: Session,
    customer_id: str,
    *,
    message: str | None = None,
    status: int = 200,
) -> Response:
    try:
        # The REST read itself: the same health, band, evidence and explanation.
        health = await read_customer_health(customer_id, context, trend_days=30)
    except Problem as exc:
        if exc.status != 404:
            raise
        return page(
            "not_found.html",
            _base(session, what=f"No customer {customer_id} is known."),
            status=404,
        )
    policy = current_catalogue(context).policy
    async with context.pool.acquire() as conn:
        profile = await api_queries.read_profile(conn, customer_id)
        rows = await api_queries.list_interventions(
            conn,
            states=("open", "acknowledged", "resolved", "expired"),
            min_priority=None,
            customer_id=customer_id,
            after=None,
            limit=50,
        )
    interventions: list[dict[str, Any]] = sorted(
        ({**dict(r), "gaps": orjson.loads(r["gaps"]), "history": ()} for r in rows),
        key=lambda r: r["opened_at"],
        reverse=True,
    )
    for item in interventions[:HISTORY_CASES]:
        try:
            item["history"] = (await workflow.read(context, item["intervention_id"])).history
        except workflow.NotFound:
            continue  # erased between the two reads: shown without its history
    active = next((i for i in interventions if i["state"] in queries.ACTIVE), None)
    assignees: list[Any] = []
    if active is not None and session.person.role.at_least(Role.LEAD):
        # The reassign pick-list: people who can sign in now (the route refuses others).
        async with context.pool.acquire() as conn:
            assignees = [p for p in await list_people(conn) if p.disabled_at is None]
    chart = trend_chart(
        [(p.at, p.score) for p in health.trend], threshold=policy.interventions.threshold
    )
    return page(
        "customer.html",
        _base(
            session,
            customer_id=customer_id,
            health=health,
            chart=chart,
            profile=profile,
            interventions=interventions,
            active=active,
            assignees=assignees,
            outcomes=policy.interventions.resolution_categories,
            verbs=_HISTORY_VERBS,
            message=message,
        ),
        status=status,
    )


@router.get("/customers/{customer_id:path}")
async def customer_page(customer_id: str, context: ContextDep, session: AgentSession) -> Response:
    return await _customer(context, session, customer_id)


# --- acting -------------------------------------------------------------------------------


def _version(form: FormData) -> int | None:
    text = _text(form, "expected_version")
    return int(text) if text.isdigit() else None


def _until(form: FormData) -> datetime:
    """The snooze's end from a datetime-local field, read as UTC (the form says so)."""
    try:
        until = datetime.fromisoformat(_text(form, "until"))
    except ValueError:
        raise workflow.Invalid("until", "give a date and time") from None
    return until if until.tzinfo else until.replace(tzinfo=UTC)


# What each move needs, said when the case's state has no such move (the domain's rules:
# take from open; reassign and resolve from acknowledged; note and snooze while active).
_ALLOWED = {
    "take": "Only an open case can be taken",
    "reassign": "Only a taken case can be reassigned; take it first",
    "resolve": "Only a taken case can be resolved; take it first",
    "note": "Notes can only be added to an open or taken case",
    "snooze": "Only an open or taken case can be snoozed",
}


def _conflict_message(exc: workflow.Conflict, action: str) -> str:
    if not isinstance(exc, workflow.Stale) and action in _ALLOWED:
        # The page's version was current: nobody moved the case in between, the move
        # itself is not one this state has. Saying "it changed" would send them round in
        # a loop; say what is allowed instead.
        return f"{_ALLOWED[action]} (this case is {exc.state})."
    if exc.by is None:
        return f"This case changed a moment ago (it is {exc.state} now): look again and retry."
    verb = _VERBS.get(exc.by.kind, "changed")
    return f"{exc.by.actor.name} {verb} this case a moment ago. Look again before acting."


async def _move(
    context: ApiContext, session: Session, intervention_id: str, action: str, form: FormData
) -> workflow.Moved:
    actor = Actor.person(session.person.login, session.person.display_name)
    version = _version(form)
    if action == "take":
        return await workflow.take(context, intervention_id, actor, expected_version=version)
    if action == "note":
        return await workflow.add_note(
            context, intervention_id, actor, _text(form, "note"), expected_version=version
        )
    if action == "snooze":
        return await workflow.snooze(
            context, intervention_id, actor, _until(form), expected_version=version
        )
    if action == "reassign":
        if not session.person.role.at_least(Role.LEAD):
            raise Forbidden(session, "Reassigning a case is for leads.")
        # The pick-list offers active people only, but a form can be forged or stale: a
        # case given to a login nobody signs in with would sit unworked, so refuse it here.
        login = _text(form, "assignee")
        async with context.pool.acquire() as conn:
            person = await find_person(conn, login) if login else None
        if person is None or person.disabled_at is not None:
            raise workflow.Invalid(
                "assignee", f"{login or 'Nobody'} is not an active person: pick one from the list."
            )
        return await workflow.reassign(
            context, intervention_id, actor, person.login, expected_version=version
        )
    if action == "resolve":
        return await workflow.resolve(
            context,
            intervention_id,
            actor,
            category=_text(form, "outcome") or None,
            note=_text(form, "note"),
            expected_version=version,
        )
    raise workflow.NotFound(intervention_id)


@router.post("/interventions/{intervention_id}/{action}")
async def act(
    intervention_id: str,
    action: str,
    request: Request,
    context: ContextDep,
    session: AgentSession,
) -> Response:
    """Take, note, snooze, reassign (leads), resolve through the workflow, as the signed-in
    person, on the version the page showed (``expected_version``): a move someone else made
    in between is refused with who did it, never overwritten. Then back to the customer."""
    form = await posted(request, session)
    try:
        moved = await _move(context, session, intervention_id, action, form)
    except workflow.NotFound:
        return page("not_found.html", _base(session, what="No such case."), status=404)
    except (workflow.Conflict, workflow.Invalid) as exc:
        try:
            case = await workflow.read(context, intervention_id)
        except workflow.NotFound:
            return page("not_found.html", _base(session, what="No such case."), status=404)
        conflict = isinstance(exc, workflow.Conflict)
        return await _customer(
            context,
            session,
            case.intervention.customer_id,
            message=_conflict_message(exc, action)
            if isinstance(exc, workflow.Conflict)
            else exc.message,
            status=409 if conflict else 422,
        )
    log.info("desk.moved", action=action, by=session.person.login, intervention=intervention_id)
    target = f"/desk/customers/{quote(moved.intervention.customer_id, safe='')}"
    return secure(RedirectResponse(target, status_code=303))


# --- leads --------------------------------------------------------------------------------


@router.get("/call-list")
async def call_list(context: ContextDep, session: LeadSession) -> Response:
    async with context.pool.acquire() as conn:
        rows = await queries.call_list(conn, limit=PAGE_SIZE)
    calls = [{**dict(r), "why": _why(orjson.loads(r["gaps"]))} for r in rows]
    return page("call_list.html", _base(session, calls=calls))


@router.get("/organisation")
async def organisation(
    context: ContextDep,
    session: LeadSession,
    days: Annotated[int, Query(ge=1, le=365)] = 7,
) -> Response:
    until = context.clock()
    since = until - timedelta(days=days)
    async with context.pool.acquire() as conn:
        rows = await api_queries.organisation_gaps(conn, since=since, until=until)
        # The trend: the same figures over the window just before, as long as this one,
        # so a lead sees whether a promise is breaking more or less than it was.
        before = await api_queries.organisation_gaps(
            conn, since=since - (until - since), until=since
        )
        helped = await queries.actions_helped(conn, since=since, until=until)
    previous = {
        (r["touchpoint"], r["promise_id"]): r["breaches"] / r["events"]
        for r in before
        if r["events"]
    }
    weakest = sorted(
        (
            {
                **dict(r),
                "breach_rate": r["breaches"] / r["events"],
                "previous_rate": previous.get((r["touchpoint"], r["promise_id"])),
            }
            for r in rows
            if r["events"]
        ),
        key=lambda g: (-g["breach_rate"], -g["customers_affected"], g["promise_id"]),
    )
    return page(
        "organisation.html",
        _base(
            session,
            days=days,
            since=since,
            until=until,
            weakest=weakest,
            helped={
                by: [h for h in helped if h["by"] == by] for by in ("promise", "outcome", "both")
            },
        ),
    )


# --- people (admin) -----------------------------------------------------------------------


async def _people_page(
    context: ApiContext, session: Session, *, error: str | None = None, status: int = 200
) -> Response:
    async with context.pool.acquire() as conn:
        people = await list_people(conn)
    return page(
        "people.html",
        _base(session, people=people, roles=[r.value for r in Role], error=error),
        status=status,
    )


@router.get("/people")
async def people_page(context: ContextDep, session: AdminSession) -> Response:
    return await _people_page(context, session)


@router.post("/people")
async def people_create(request: Request, context: ContextDep, session: AdminSession) -> Response:
    form = await posted(request, session)
    role = _text(form, "role")
    password = form.get("password")
    try:
        async with context.pool.acquire() as conn:
            await create_person(
                conn,
                login=_text(form, "login"),
                display_name=_text(form, "display_name"),
                role=Role(role) if role in {r.value for r in Role} else Role.AGENT,
                password=password if isinstance(password, str) else "",
                now=context.clock(),
            )
    except InvalidPerson as exc:
        return await _people_page(context, session, error=exc.message, status=422)
    log.info("desk.person.created", by=session.person.login, role=role)
    return secure(RedirectResponse("/desk/people", status_code=303))


@router.post("/people/{person_id}/disable")
async def people_disable(
    person_id: int, request: Request, context: ContextDep, session: AdminSession
) -> Response:
    await posted(request, session)
    async with context.pool.acquire() as conn:
        person = await disable_by_id(conn, person_id, now=context.clock())
    if person is None:
        return page("not_found.html", _base(session, what="No such person."), status=404)
    log.info("desk.person.disabled", by=session.person.login, login=person.login)
    return secure(RedirectResponse("/desk/people", status_code=303))


# --- wiring -------------------------------------------------------------------------------


def install(app: FastAPI) -> None:
    """The desk's routes, its static files and its answers to no session (the sign-in
    page) and too little role or a bad CSRF token (403 page)."""
    app.include_router(router)
    app.mount("/desk/static", StaticFiles(directory=STATIC), name="desk-static")

    async def on_not_signed_in(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, NotSignedIn)  # noqa: S101 - registered for this class only
        return secure(
            RedirectResponse(f"/desk/sign-in?{urlencode({'next': exc.target})}", status_code=303)
        )

    async def on_forbidden(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Forbidden)  # noqa: S101 - registered for this class only
        return page("forbidden.html", _base(exc.session, message=exc.message), status=403)

    app.add_exception_handler(NotSignedIn, on_not_signed_in)
    app.add_exception_handler(Forbidden, on_forbidden)


__all__ = ["install", "router"]

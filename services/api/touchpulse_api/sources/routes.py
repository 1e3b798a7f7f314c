"""A source's quality over a window, and its dead letters: what a touchpoint team reads to
learn whether its events arrive and are usable.

Who may read what: an ``events:write`` key — what touchpoint teams hold — reads its own
source (the one it is bound to) and no other; an ``admin`` key reads every source, and dead
letters that name no usable source. Asking for another source with a bound key is a
``403``, whether that source exists or not: the answer does not depend on what exists, so
it reveals nothing, and it tells the caller the key is the problem. ``health:read`` keys
(CRM integrations) get ``403``: this is about producers, not customers.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from touchpulse_api import cursors
from touchpulse_api.context import ApiContext, admit
from touchpulse_api.models import UTC_MAX, UTC_MIN, Instant
from touchpulse_api.sources import store
from touchpulse_api.sources.models import (
    ByReason,
    ByType,
    DeadLetterOut,
    DeadLettersPage,
    SourceQuality,
)
from touchpulse_api.windows import require_ordered
from touchpulse_shared.auth import Principal, Scope
from touchpulse_shared.contract.events import IDENTIFIER_PATTERN, MAX_SOURCE_LENGTH
from touchpulse_shared.db.quality import hour_of
from touchpulse_shared.http.app import AUTHENTICATED, problem_responses
from touchpulse_shared.http.problems import Problem

router = APIRouter(prefix="/v1", tags=["sources"])

#: The window a quality read covers when it names no ``since``.
DEFAULT_WINDOW = timedelta(hours=24)
READERS = (Scope.ADMIN, Scope.EVENTS_WRITE)
_CURSOR = "dead-letters"
_FORBIDDEN = {
    403: "The key lacks events:write and admin, or is bound to another source than the one "
    "asked for"
}


async def _reader(request: Request) -> tuple[ApiContext, Principal]:
    context: ApiContext = request.app.state.api
    return context, await admit(request, context, READERS)


Reader = Annotated[tuple[ApiContext, Principal], Depends(_reader)]
SourceName = Annotated[
    str,
    Path(
        min_length=1,
        max_length=MAX_SOURCE_LENGTH,
        pattern=IDENTIFIER_PATTERN,
        description="the source, as events name it",
        examples=["billing-prod"],
    ),
]


def visible_source(principal: Principal, asked: str | None) -> str | None:
    """The source the caller may read given what it asked for (``None``: every source, for
    an admin key that named none); ``403`` for a bound key asking for another source."""
    if principal.has(Scope.ADMIN):
        return asked
    if principal.source is None:
        # validate_spec and the table's CHECK bind every events:write key: refuse, not allow all.
        raise Problem(403, "forbidden", "Forbidden", "This API key is not bound to a source")
    if asked is not None and asked != principal.source:
        raise Problem(
            403,
            "forbidden",
            "Forbidden",
            f"This API key may only read its own source '{principal.source}'",
        )
    return principal.source


def _ceil_hour(at: datetime) -> datetime:
    start = hour_of(at)
    if start == at:
        return at
    # The last hour of the calendar has no next hour: it ends the window as it is.
    return start + timedelta(hours=1) if UTC_MAX - start > timedelta(hours=1) else UTC_MAX


def _window(
    since: datetime | None, until: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    end = until or now
    start = since or (end - DEFAULT_WINDOW if end - UTC_MIN > DEFAULT_WINDOW else UTC_MIN)
    require_ordered(start, end)
    return hour_of(start), _ceil_hour(end)


def _by(rows: dict[str, int]) -> dict[str, int]:
    return dict(sorted(rows.items()))


@router.get(
    # :path, so a source with slashes (CloudEvents sources are URI references) sent as %2F
    # still reaches the route once the server has decoded the path.
    "/sources/{source:path}/quality",
    response_model=SourceQuality,
    operation_id="get_source_quality",
    summary="A source's quality over a window",
    responses=problem_responses(
        *AUTHENTICATED,
        422,
        descriptions={
            **_FORBIDDEN,
            422: "A source name, since or until that is not valid, or since after until",
        },
    ),
)
async def get_source_quality(
    *,
    reader: Reader,
    source: SourceName,
    since: Annotated[
        Instant | None,
        Query(description="default: 24 hours before until; rounded down to the hour"),
    ] = None,
    until: Annotated[
        Instant | None, Query(description="default: now; rounded up to the hour")
    ] = None,
) -> SourceQuality:
    """Over a window (by the hour ingest received the events; default the last 24 hours):
    events accepted, duplicates, events rejected at the edge by reason, records
    dead-lettered by reason, accepted events no promise uses by type, and when the newest
    accepted event was received. Edge rejections reach the counts within a few seconds
    (``TOUCHPULSE_INGEST_QUALITY_FLUSH_S``), the rest when scoring has applied the events.
    A source with nothing in the window reads all zeros."""
    context, principal = reader
    visible_source(principal, source)
    start, end = _window(since, until, context.clock())
    async with context.pool.acquire() as conn:
        rows = await store.quality_counts(conn, source=source, since=start, until=end)
        last = await store.last_event_at(conn, source=source, before=end)
    counts: dict[str, dict[str, int]] = {}
    for row in rows:
        counts.setdefault(row["kind"], {})[row["reason"]] = row["events"]
    rejected = counts.get("rejected", {})
    dead = counts.get("dead_lettered", {})
    unmatched = counts.get("unmatched", {})
    return SourceQuality(
        source=source,
        since=start,
        until=end,
        accepted=sum(counts.get("accepted", {}).values()),
        duplicates=sum(counts.get("duplicate", {}).values()),
        rejected=ByReason(total=sum(rejected.values()), by_reason=_by(rejected)),
        dead_lettered=ByReason(total=sum(dead.values()), by_reason=_by(dead)),
        unmatched=ByType(total=sum(unmatched.values()), by_type=_by(unmatched)),
        last_event_at=last,
    )


@router.get(
    "/dead-letters",
    response_model=DeadLettersPage,
    operation_id="list_dead_letters",
    summary="Recent dead letters, newest first",
    responses=problem_responses(
        400,
        *AUTHENTICATED,
        422,
        descriptions={
            400: "A cursor this API did not issue for this list",
            **_FORBIDDEN,
            422: "A source, reason, since or limit that is not valid",
        },
    ),
)
async def list_dead_letters(
    *,
    reader: Reader,
    source: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=MAX_SOURCE_LENGTH,
            pattern=IDENTIFIER_PATTERN,
            description="only this source's (a bound key: its own, the default)",
        ),
    ] = None,
    reason: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=64,
            pattern=r"^[a-z][a-z0-9_]*$",
            description="only this dead-letter reason, e.g. invalid_event",
        ),
    ] = None,
    since: Annotated[Instant | None, Query(description="only those dead-lettered since")] = None,
    cursor: cursors.Cursor = None,
    limit: Annotated[int, Query(ge=1)] = 50,
) -> DeadLettersPage:
    """The records scoring dead-lettered (kept ``TOUCHPULSE_SOURCE_DEAD_LETTER_KEEP_DAYS``),
    newest first, with the reason, the detail and the event id the record names. The
    records themselves stay on the dead-letter topic for replay."""
    context, principal = reader
    limit = min(limit, context.settings.api_max_page_size)
    after = cursors.decode_cursor(
        context.settings,
        _CURSOR,
        cursor,
        (cursors.instant, cursors.text, cursors.bigint, cursors.bigint),
    )
    visible = visible_source(principal, source)
    async with context.pool.acquire() as conn:
        rows = await store.list_dead_letters(
            conn,
            source=visible,
            reason=reason,
            since=since,
            after=None if after is None else (after[0], after[1], after[2], after[3]),
            limit=limit + 1,
        )
    more = len(rows) > limit
    rows = rows[:limit]
    return DeadLettersPage(
        items=[
            DeadLetterOut(
                topic=r["topic"],
                partition=r["partition"],
                offset=r["offset"],
                source=r["source"],
                reason=r["reason"],
                detail=r["detail"],
                event_id=r["event_id"],
                event_type=r["event_type"],
                dead_lettered_at=r["dead_lettered_at"],
            )
            for r in rows
        ],
        next_cursor=cursors.encode_cursor(
            context.settings,
            _CURSOR,
            [
                rows[-1]["dead_lettered_at"],
                rows[-1]["topic"],
                rows[-1]["partition"],
                rows[-1]["offset"],
            ],
        )
        if more
        else None,
    )

"""The promise catalogue's versions, and one event judged under any of them."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from touchpulse_api import cursors, queries
from touchpulse_api.context import ReaderContext
from touchpulse_api.models import ProfileIn
from touchpulse_api.promises import store
from touchpulse_api.promises.catalogues import catalogue_named
from touchpulse_api.promises.models import (
    CatalogueVersionOut,
    CatalogueVersionsPage,
    EvaluateIn,
    PreviewOut,
    ProfileUsed,
)
from touchpulse_api.promises.preview import (
    deadline_refs,
    judge_one,
    parse_event,
    refuse_what_ingest_would,
)
from touchpulse_scoring.domain import NO_PROFILE, CustomerProfile
from touchpulse_shared.db import Conn
from touchpulse_shared.http.app import AUTHENTICATED, problem_responses

router = APIRouter(prefix="/v1/promises", tags=["promises"])


@router.get(
    "/versions",
    response_model=CatalogueVersionsPage,
    operation_id="list_promise_versions",
    summary="Every promise catalogue that was in effect",
    responses=problem_responses(*AUTHENTICATED, 400, 422),
)
async def list_promise_versions(
    context: ReaderContext,
    cursor: cursors.Cursor = None,
    limit: Annotated[int, Query(ge=1)] = 50,
) -> CatalogueVersionsPage:
    """Each period a catalogue was in effect, newest first: its version, the sha256 of its
    text and when it came into and went out of effect (scoring records them as it loads
    catalogues). A catalogue put back after another is a period of its own."""
    limit = min(limit, context.settings.api_max_page_size)
    after = cursors.decode_cursor(
        context.settings, "promise-versions", cursor, (cursors.instant, cursors.bigint)
    )
    async with context.read_pool.acquire() as conn:
        rows = await store.list_versions(
            conn, after=None if after is None else (after[0], after[1]), limit=limit + 1
        )
    more = len(rows) > limit
    rows = rows[:limit]
    return CatalogueVersionsPage(
        items=[
            CatalogueVersionOut(
                version=r["version"],
                hash=r["content_hash"],
                came_into_effect=r["came_into_effect"],
                went_out_of_effect=r["went_out_of_effect"],
            )
            for r in rows
        ],
        next_cursor=cursors.encode_cursor(
            context.settings, "promise-versions", [rows[-1]["came_into_effect"], rows[-1]["id"]]
        )
        if more
        else None,
    )


async def _profile(
    conn: Conn, given: ProfileIn | None, customer_id: str
) -> tuple[CustomerProfile, Literal["given", "stored", "default"]]:
    if given is not None:
        profile = CustomerProfile(
            segment=given.segment,
            customer_since=given.customer_since,
            value=given.value,
            reach=given.reach,
        )
        return profile, "given"
    row = await queries.read_profile(conn, customer_id)
    if row is None:
        return NO_PROFILE, "default"
    stored = CustomerProfile(
        segment=row["segment"],
        customer_since=row["customer_since"],
        value=row["value"],
        reach=row["reach"],
    )
    return stored, "stored"


@router.post(
    "/evaluate",
    response_model=PreviewOut,
    operation_id="evaluate_promises",
    summary="Judge one event against the promises, storing nothing",
    responses=problem_responses(
        *AUTHENTICATED,
        400,
        409,
        422,
        descriptions={
            400: "The body is not JSON",
            409: "The stored catalogue version no longer validates under this release",
            422: "The body is not valid, the catalogue refuses the event as ingest would, or"
            " no catalogue with `version` is stored; `errors` names the field",
        },
    ),
)
async def evaluate_promises(body: EvaluateIn, context: ReaderContext) -> PreviewOut:
    """Which promises would judge this event, and how: expected versus actual, gap, score,
    weight, whether a breach would be critical; the deadline clocks it would start and the
    deadlines it would stop (judged against the clock scoring holds for the journey). Under
    the catalogue in effect, or a stored ``version``; for the given ``profile``, else the
    event's customer's stored one, else a standard customer. Nothing is written: no
    outcome, health, deadline or intervention."""
    event, cloud = parse_event(body.event)
    named = await catalogue_named(context, body.version, pointer="/body/version", status=422)
    catalogue = named.catalogue
    refuse_what_ingest_would(event, catalogue, cloud)
    async with context.read_pool.acquire() as conn:
        profile, source = await _profile(conn, body.profile, event.customer_id)
        # Read, not locked: what scoring would make of the event now, not a claim on it.
        deadlines, early = await store.standing_deadlines(
            conn, deadline_refs(event, catalogue, profile)
        )
    outcomes, opens, fulfils = judge_one(event, catalogue, profile, deadlines, early)
    note = None
    if not (outcomes or opens or fulfils):
        note = (
            f"No promise in catalogue {catalogue.version} judges {event.type} at"
            f" {event.touchpoint} with these measures: scoring would accept it and record no"
            " outcome"
        )
    return PreviewOut(
        catalogue_version=catalogue.version,
        catalogue_hash=named.content_hash,
        live=named.live,
        profile=ProfileUsed(
            segment=profile.segment, customer_since=profile.customer_since, source=source
        ),
        outcomes=outcomes,
        opens=opens,
        fulfils=fulfils,
        note=note,
    )

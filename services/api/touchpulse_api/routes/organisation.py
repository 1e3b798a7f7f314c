"""Organisation-wide views: the weakest links, and the promises in effect."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from touchpulse_api import queries
from touchpulse_api.context import ContextDep, HealthReader
from touchpulse_api.models import UTC_MIN, Instant, OrgGap, OrgGaps, PromisesOut
from touchpulse_api.promises.catalogues import catalogue_named
from touchpulse_api.promises.models import CatalogueVersionText
from touchpulse_api.windows import require_ordered
from touchpulse_shared.http.app import AUTHENTICATED, problem_responses

WINDOW = timedelta(days=7)

router = APIRouter(prefix="/v1", tags=["organisation"])


@router.get(
    "/gaps",
    response_model=OrgGaps,
    operation_id="get_organisation_gaps",
    responses=problem_responses(*AUTHENTICATED, 422),
)
async def organisation_gaps(
    context: ContextDep,
    _: HealthReader,
    since: Annotated[Instant | None, Query(description="default: 7 days before until")] = None,
    until: Annotated[Instant | None, Query(description="default: now")] = None,
) -> OrgGaps:
    """Per touchpoint and promise over a window (default the last 7 days): events, breach
    rate, median and p90 gap of the breaches, customers affected — weakest link first. A
    window that ends before it starts is refused (422 naming ``since``)."""
    until = until or context.clock()
    require_ordered(since, until)
    # At the start of the calendar the window is what there is of it.
    since = since or (until - WINDOW if until - UTC_MIN > WINDOW else UTC_MIN)
    async with context.pool.acquire() as conn:
        rows = await queries.organisation_gaps(conn, since=since, until=until)
    items = [
        OrgGap(
            touchpoint=r["touchpoint"],
            promise_id=r["promise_id"],
            events=r["events"],
            breaches=r["breaches"],
            breach_rate=r["breaches"] / r["events"],
            median_gap=r["median_gap"],
            p90_gap=r["p90_gap"],
            customers_affected=r["customers_affected"],
        )
        for r in rows
    ]
    items.sort(key=lambda g: (-g.breach_rate, -g.customers_affected, g.promise_id))
    return OrgGaps(since=since, until=until, items=items)


@router.get(
    "/promises",
    response_model=PromisesOut,
    responses=problem_responses(
        *AUTHENTICATED,
        404,
        409,
        422,
        descriptions={
            404: "No catalogue with this `version` was ever in effect",
            409: "The stored catalogue version no longer validates under this release",
        },
    ),
    operation_id="get_promises",
)
async def promises(
    context: ContextDep,
    _: HealthReader,
    version: Annotated[
        CatalogueVersionText | None,
        Query(description="a stored version (GET /v1/promises/versions); default: in effect"),
    ] = None,
) -> PromisesOut:
    """The promise catalogue in effect, with its version; or the catalogue ``version`` as
    it was while in effect (the terms outcomes naming that version were judged by)."""
    catalogue = (
        await catalogue_named(context, version, pointer="/query/version", status=404)
    ).catalogue
    return PromisesOut(
        version=catalogue.version,
        touchpoints=dict(catalogue.touchpoints),
        policy=catalogue.policy.model_dump(mode="json"),
        promises=[p.model_dump(mode="json", exclude_none=True) for p in catalogue.promises],
    )

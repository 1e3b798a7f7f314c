"""Customers: health with its explanation, gaps, the at-risk list, profiles, erasure."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Response

from touchpulse_api import cursors
from touchpulse_api.catalogue import current_catalogue
from touchpulse_api.context import Admin, ContextDep, HealthReader
from touchpulse_api.models import (
    AtRiskCustomer,
    AtRiskPage,
    CustomerHealth,
    Explanation,
    GapsPage,
    Instant,
    OutcomeOut,
    ProfileIn,
    ProfileOut,
    TouchpointHealthOut,
    TrendPoint,
)
from touchpulse_scoring.domain import (
    EXPLAIN_WINDOW,
    TouchpointHealth,
    assess,
    evidence,
    explain,
    touchpoint_values,
)
from touchpulse_scoring.outbox import insert_outbox
from touchpulse_scoring.profiles import from_row as profile_from_row
from touchpulse_scoring.profiles import profile_outbox_row
from touchpulse_scoring.store import lock_customers, outcome_from_row
from touchpulse_shared.http.problems import Problem

router = APIRouter(prefix="/v1/customers", tags=["customers"])


def outcome_out(row: Any) -> OutcomeOut:
    return OutcomeOut.model_validate(
        {
            "promise_id": row["promise_id"],
            "touchpoint": row["touchpoint"],
            "occurred_at": row["occurred_at"],
            "expected": orjson.loads(row["expected"]),
            "actual": orjson.loads(row["actual"]),
            "gap": row["gap"],
            "met": row["met"],
            "score": row["score"],
            "severity": row["severity"],
            "event_ids": list(row["event_ids"]),
            "catalogue_version": row["catalogue_version"],
        }
    )


@router.get("/{customer_id}/health", response_model=CustomerHealth)
async def customer_health(
    customer_id: str,
    context: ContextDep,
    _: HealthReader,
    trend_days: Annotated[int, Query(ge=1, le=365, description="days of history")] = 30,
) -> CustomerHealth:
    """Journey health, band, per-touchpoint health, trend, freshness and what moves it most."""
    catalogue = current_catalogue(context)
    async with context.pool.acquire() as conn:
        journey = await conn.fetchrow(
            "SELECT * FROM journey_health WHERE customer_id = $1", customer_id
        )
        if journey is None and not await conn.fetchval(
            "SELECT 1 FROM customer_profile WHERE customer_id = $1", customer_id
        ):
            raise Problem(404, "not-found", "Not Found", f"No customer {customer_id!r} is known")
        states = {
            r["touchpoint"]: TouchpointHealth(
                s=r["s"], w=r["w"], t_ref=r["t_ref"], outcomes=r["outcomes"]
            )
            for r in await conn.fetch(
                "SELECT * FROM touchpoint_health WHERE customer_id = $1", customer_id
            )
        }
        trend = await conn.fetch(
            """
            SELECT at, score FROM journey_health_history
            WHERE customer_id = $1 AND at >= $2 ORDER BY at
            """,
            customer_id,
            context.clock() - timedelta(days=trend_days),
        )
        recent = await conn.fetch(
            """
            SELECT * FROM outcome WHERE customer_id = $1
            ORDER BY occurred_at DESC, outcome_key DESC LIMIT $2
            """,
            customer_id,
            EXPLAIN_WINDOW,
        )
        open_id = await conn.fetchval(
            """
            SELECT intervention_id FROM intervention
            WHERE customer_id = $1 AND state IN ('open', 'acknowledged')
            """,
            customer_id,
        )
    policy = catalogue.policy
    # Read where scoring read it: at the customer's newest event time applied.
    at = context.clock() if journey is None else journey["as_of"]
    values = touchpoint_values(states, catalogue, at)
    journey_now = assess(states, catalogue, at)
    rows = {row["outcome_key"]: row for row in recent}
    explanation = [
        Explanation(**outcome_out(rows[e.outcome.outcome_key]).model_dump(), impact=e.impact)
        for e in explain(states, (outcome_from_row(r) for r in recent), catalogue, at)
    ]
    priors = sum(policy.prior.for_touchpoint(t).weight for t in journey_now.touchpoints)
    total = journey_now.evidence + priors
    return CustomerHealth(
        customer_id=customer_id,
        score=None if journey is None else journey["score"],
        band=None if journey is None else journey["band"],
        weakest_touchpoint=None if journey is None else journey["weakest_touchpoint"],
        evidence_weight=journey_now.evidence,
        confidence=journey_now.evidence / total if total > 0 else 0.0,
        touchpoints={
            t: TouchpointHealthOut(
                health=values[t],
                outcomes=s.outcomes,
                evidence_weight=evidence(s, at, half_life_days=policy.half_life_days),
            )
            for t, s in states.items()
        },
        as_of=None if journey is None else journey["as_of"],
        updated_at=None if journey is None else journey["updated_at"],
        trend=[TrendPoint(at=r["at"], score=r["score"]) for r in trend],
        explanation=explanation,
        open_intervention_id=open_id,
    )


@router.get("/{customer_id}/gaps", response_model=GapsPage)
async def customer_gaps(
    *,
    customer_id: str,
    context: ContextDep,
    _: HealthReader,
    touchpoint: str | None = None,
    promise: str | None = None,
    breaches_only: bool = False,
    since: Annotated[Instant | None, Query(description="outcomes at or after")] = None,
    until: Annotated[Instant | None, Query(description="outcomes before")] = None,
    cursor: cursors.Cursor = None,
    limit: Annotated[int, Query(ge=1)] = 50,
) -> GapsPage:
    """Expected versus actual per promise for one customer, newest first."""
    limit = min(limit, context.settings.api_max_page_size)
    after = cursors.decode_cursor(
        context.settings, "customer-gaps", cursor, (cursors.instant, cursors.text)
    )
    async with context.pool.acquire() as conn:
        rows = await conn.fetch(
            """
            SELECT * FROM outcome
            WHERE customer_id = $1
              AND ($2::text IS NULL OR touchpoint = $2)
              AND ($3::text IS NULL OR promise_id = $3)
              AND (NOT $4 OR NOT met)
              AND ($5::timestamptz IS NULL OR occurred_at >= $5)
              AND ($6::timestamptz IS NULL OR occurred_at < $6)
              AND ($7::timestamptz IS NULL OR (occurred_at, outcome_key) < ($7, $8))
            ORDER BY occurred_at DESC, outcome_key DESC
            LIMIT $9
            """,
            customer_id,
            touchpoint,
            promise,
            breaches_only,
            since,
            until,
            None if after is None else after[0],
            None if after is None else after[1],
            limit + 1,
        )
    more = len(rows) > limit
    rows = rows[:limit]
    return GapsPage(
        customer_id=customer_id,
        items=[outcome_out(r) for r in rows],
        next_cursor=cursors.encode_cursor(
            context.settings,
            "customer-gaps",
            [rows[-1]["occurred_at"], rows[-1]["outcome_key"]],
        )
        if more
        else None,
    )


@router.get("/at-risk", response_model=AtRiskPage, summary="At-risk customers")
async def at_risk(
    *,
    context: ContextDep,
    _: HealthReader,
    below: Annotated[float, Query(ge=0, le=100, description="health under this")] = 50.0,
    segment: str | None = None,
    touchpoint: str | None = Query(None, description="customers whose weakest link this is"),
    new_customers: bool | None = None,
    open_intervention: bool | None = None,
    cursor: cursors.Cursor = None,
    limit: Annotated[int, Query(ge=1)] = 50,
) -> AtRiskPage:
    """Customers who need action, highest priority first."""
    limit = min(limit, context.settings.api_max_page_size)
    after = cursors.decode_cursor(
        context.settings, "at-risk", cursor, (cursors.number, cursors.text)
    )
    policy = current_catalogue(context).policy
    now = context.clock()
    new_since = (now - timedelta(days=policy.new_customer_days)).date()
    async with context.pool.acquire() as conn:
        rows = await conn.fetch(
            """
            WITH candidates AS (
                SELECT j.customer_id, j.score, j.band, j.weakest_touchpoint, j.as_of,
                       coalesce(p.segment, 'standard') AS segment,
                       coalesce(p.customer_since >= $7, false) AS new_customer,
                       i.intervention_id,
                       coalesce(i.priority, greatest(0, $1 - j.score)
                           * coalesce(p.value, 1) * (1 + ln(1 + coalesce(p.reach, 0))))
                           AS priority
                FROM journey_health j
                LEFT JOIN customer_profile p USING (customer_id)
                LEFT JOIN intervention i
                  ON i.customer_id = j.customer_id AND i.state IN ('open', 'acknowledged')
                WHERE j.score < $1
            )
            SELECT * FROM candidates
            WHERE ($2::text IS NULL OR segment = $2)
              AND ($3::text IS NULL OR weakest_touchpoint = $3)
              AND ($4::bool IS NULL OR new_customer = $4)
              AND ($5::bool IS NULL OR (intervention_id IS NOT NULL) = $5)
              AND ($6::float8 IS NULL OR (priority, customer_id) < ($6, $8))
            ORDER BY priority DESC, customer_id DESC
            LIMIT $9
            """,
            below,
            segment,
            touchpoint,
            new_customers,
            open_intervention,
            None if after is None else after[0],
            new_since,
            None if after is None else after[1],
            limit + 1,
        )
    more = len(rows) > limit
    rows = rows[:limit]
    return AtRiskPage(
        items=[
            AtRiskCustomer(
                customer_id=r["customer_id"],
                score=r["score"],
                band=r["band"],
                weakest_touchpoint=r["weakest_touchpoint"],
                segment=r["segment"],
                new_customer=r["new_customer"],
                as_of=r["as_of"],
                open_intervention_id=r["intervention_id"],
                priority=r["priority"],
            )
            for r in rows
        ],
        next_cursor=cursors.encode_cursor(
            context.settings, "at-risk", [rows[-1]["priority"], rows[-1]["customer_id"]]
        )
        if more
        else None,
    )


@router.get("/{customer_id}/profile", response_model=ProfileOut)
async def get_profile(customer_id: str, context: ContextDep, _: HealthReader) -> ProfileOut:
    async with context.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT * FROM customer_profile WHERE customer_id = $1", customer_id
        )
    if row is None:
        raise Problem(404, "not-found", "Not Found", f"No profile for {customer_id!r}")
    return ProfileOut.model_validate(dict(row))


@router.put(
    "/{customer_id}/profile",
    response_model=ProfileOut,
    responses={201: {"model": ProfileOut, "description": "Created"}},
)
async def put_profile(
    customer_id: Annotated[str, Path(min_length=1, max_length=128)],
    profile: ProfileIn,
    context: ContextDep,
    _: Admin,
    response: Response,
) -> ProfileOut:
    """Create or replace what the CRM knows: segment, tenure, value and reach.

    The profile also goes to the compacted profiles topic (key: customer id) through the
    outbox, in the same transaction, so ``touchpulse-scoring replay`` rebuilds with it.
    """
    async with context.pool.acquire() as conn, conn.transaction():
        # Scoring's lock: a batch of this customer's events sees the profile before or
        # after this write, never beside it, and updated_at (the clock after the lock)
        # tells replay which of the customer's events were scored with it.
        await lock_customers(conn, [customer_id])
        row = await conn.fetchrow(
            """
            INSERT INTO customer_profile
                (customer_id, segment, customer_since, value, reach, updated_at)
            VALUES ($1, $2, $3, $4, $5, clock_timestamp())
            ON CONFLICT (customer_id) DO UPDATE SET
                segment = EXCLUDED.segment, customer_since = EXCLUDED.customer_since,
                value = EXCLUDED.value, reach = EXCLUDED.reach,
                updated_at = EXCLUDED.updated_at
            -- The same profile again (a CRM re-sending it) changes nothing, not even
            -- updated_at; its record goes out again all the same (the same value: a
            -- full re-sync puts profiles from before the topic existed on it).
            WHERE (customer_profile.segment, customer_profile.customer_since,
                   customer_profile.value, customer_profile.reach)
                  IS DISTINCT FROM
                  (EXCLUDED.segment, EXCLUDED.customer_since, EXCLUDED.value, EXCLUDED.reach)
            RETURNING *, (xmax = 0) AS created
            """,
            customer_id,
            profile.segment,
            profile.customer_since,
            profile.value,
            profile.reach,
        )
        if row is None:
            row = await conn.fetchrow(
                "SELECT *, false AS created FROM customer_profile WHERE customer_id = $1",
                customer_id,
            )
        assert row is not None  # noqa: S101 - inserted, updated, or there unchanged
        await insert_outbox(
            conn, [profile_outbox_row(context.settings.profiles_topic, profile_from_row(row))]
        )
    response.status_code = 201 if row["created"] else 200
    return ProfileOut.model_validate(dict(row))

"""Customers: health with its explanation, gaps, the at-risk list, profiles, erasure."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel

from touchpulse_api import cursors, queries
from touchpulse_api.catalogue import current_catalogue
from touchpulse_api.context import Admin, ApiContext, ContextDep, HealthReader, ReaderContext
from touchpulse_api.explanations import Derived
from touchpulse_api.models import (
    AtRiskCustomer,
    AtRiskPage,
    CustomerHealth,
    GapsPage,
    HealthExplanationPart,
    HealthFiguresPart,
    HealthRowPart,
    Instant,
    OutcomeOut,
    ProfileIn,
    ProfileOut,
)
from touchpulse_api.promises.terms import judged_by, older_catalogues
from touchpulse_api.windows import require_ordered
from touchpulse_scoring.domain import (
    Catalogue,
    Outcome,
    TouchpointHealth,
    assess,
    evidence,
    explain,
    touchpoint_values,
)
from touchpulse_shared.http.app import AUTHENTICATED, problem_responses
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


@router.get(
    "/{customer_id}/health",
    response_model=CustomerHealth,
    operation_id="get_customer_health",
    responses=problem_responses(
        *AUTHENTICATED, 404, 422, descriptions={404: "No such customer (never scored, or erased)"}
    ),
)
async def customer_health(
    customer_id: str,
    context: ReaderContext,
    trend_days: Annotated[int, Query(ge=1, le=365, description="days of history")] = 30,
) -> Response:
    """Journey health, band, per-touchpoint health, trend, freshness and what moves it most."""
    body = await health_answer(customer_id, context, trend_days=trend_days)
    return Response(body, media_type="application/json")


async def read_customer_health(
    customer_id: str, context: ApiContext, *, trend_days: int
) -> CustomerHealth:
    """The health answer of :func:`customer_health` as the model (the desk's customer page
    shows it); raises the 404 problem for a customer nobody knows."""
    body = await health_answer(customer_id, context, trend_days=trend_days)
    return CustomerHealth.model_validate_json(body)


# Where the kept parts go in the row part's JSON. Neither can occur inside a JSON string
# (a string's quotes are escaped), so the first occurrence is the member itself.
_AS_OF = b',"as_of":'
_OPEN_INTERVENTION = b',"open_intervention_id":'
_PARTS = (HealthRowPart, HealthFiguresPart, HealthExplanationPart)
if sorted(f for part in _PARTS for f in part.model_fields) != sorted(CustomerHealth.model_fields):
    # A member added to the answer must be placed by health_answer() too.
    raise RuntimeError("the health answer's parts do not cover CustomerHealth's fields")


async def health_answer(customer_id: str, context: ApiContext, *, trend_days: int) -> bytes:
    """The JSON of :class:`CustomerHealth` for the customer, bytes for bytes what
    ``CustomerHealth.model_dump_json(by_alias=True)`` writes; raises the 404 problem for a
    customer nobody knows.

    Written in parts: the row's members are validated and written on each read
    (:data:`HealthRowPart`); the members derived from the touchpoint states come as JSON
    already written (kept between reads, or computed now) and are put in their places."""
    catalogue = current_catalogue(context)
    now = context.clock()
    cache = context.explanations
    kept = cache.get(customer_id, catalogue)
    async with context.read_pool.acquire() as conn:
        read = await queries.read_health(
            conn,
            customer_id,
            trend_since=now - timedelta(days=trend_days),
            kept_revision=None if kept is None else kept.revision,
        )
    if read is None:
        cache.drop(customer_id)  # unknown now (erased): nothing kept for it is of use
        raise Problem(404, "not-found", "Not Found", f"No customer {customer_id!r} is known")
    if read.states is None or read.breaches is None:
        # The journey row is still at the kept entry's revision: nothing the parts below
        # derive from has changed (the states and breaches were not even sent).
        assert kept is not None  # noqa: S101 - only a revision passed can match
        cache.hit(customer_id)
        derived = kept.derived
    else:
        # Read where scoring read it: at the customer's newest event time applied.
        at = now if read.as_of is None else read.as_of
        older = await older_catalogues(context, read.breaches, catalogue)
        derived = _derived(read.states, read.breaches, catalogue, at, older)
        cache.put(customer_id, read.revision, catalogue, derived)
    return write_answer(
        {
            "customer_id": customer_id,
            "score": read.score,
            "band": read.band,
            "weakest_touchpoint": read.weakest_touchpoint,
            "as_of": read.as_of,
            "updated_at": read.updated_at,
            "trend": [{"at": t, "score": score} for t, score in read.trend],
            "open_intervention_id": read.open_intervention_id,
        },
        derived,
    )


def write_answer(row_members: Mapping[str, Any], derived: Derived) -> bytes:
    """The answer's JSON from the row's members (validated here, as :class:`HealthRowPart`)
    and the derived members' JSON: what ``CustomerHealth.model_dump_json(by_alias=True)``
    writes for the same members."""
    row = HealthRowPart.model_validate(row_members)
    written: bytes = HealthRowPart.__pydantic_serializer__.to_json(row, by_alias=True)
    figures_at = written.index(_AS_OF)
    explanation_at = written.index(_OPEN_INTERVENTION, figures_at)
    return b"".join(
        (
            written[:figures_at],
            derived.figures,
            written[figures_at:explanation_at],
            derived.explanation,
            written[explanation_at:],
        )
    )


def _members(part: BaseModel) -> bytes:
    """The part's JSON members, each preceded by a comma (the object's braces removed)."""
    written: bytes = type(part).__pydantic_serializer__.to_json(part, by_alias=True)
    return b"," + written[1:-1]


def _derived(
    states: Mapping[str, TouchpointHealth],
    breaches: list[Outcome],
    catalogue: Catalogue,
    at: datetime,
    older: Mapping[str, Catalogue],
) -> Derived:
    """What the answer computes from the touchpoint states and the window's breaches, read
    at ``at``: the same for the same journey row revision and catalogue. ``older`` holds the
    stored catalogues of breaches judged under another version (their terms are shown)."""
    policy = catalogue.policy
    values = touchpoint_values(states, catalogue, at)
    journey_now = assess(states, catalogue, at)
    priors = sum(policy.prior.for_touchpoint(t).weight for t in journey_now.touchpoints)
    total = journey_now.evidence + priors
    figures = HealthFiguresPart.model_validate(
        {
            "evidence_weight": journey_now.evidence,
            "confidence": journey_now.evidence / total if total > 0 else 0.0,
            "touchpoints": {
                t: {
                    "health": values[t],
                    "outcomes": s.outcomes,
                    "evidence_weight": evidence(s, at, half_life_days=policy.half_life_days),
                }
                for t, s in states.items()
            },
        }
    )
    explanation = HealthExplanationPart.model_validate(
        {
            "explanation": [
                {
                    "promise_id": o.promise_id,
                    "touchpoint": o.touchpoint,
                    "occurred_at": o.occurred_at,
                    "expected": {
                        "op": o.expected.op,
                        "target": o.expected.target,
                        "unit": o.expected.unit,
                    },
                    "actual": o.actual,
                    "gap": o.gap,
                    "met": o.met,
                    "score": o.score,
                    "severity": o.severity,
                    "event_ids": list(o.event_ids),
                    "catalogue_version": o.catalogue_version,
                    "impact": e.impact,
                    "judged_by": judged_by(o, catalogue, older),
                }
                for e in explain(states, breaches, catalogue, at)
                for o in (e.outcome,)
            ]
        }
    )
    return Derived(figures=_members(figures), explanation=_members(explanation))


@router.get(
    "/{customer_id}/gaps",
    response_model=GapsPage,
    operation_id="list_customer_gaps",
    responses=problem_responses(*AUTHENTICATED, 400, 422),
)
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
    require_ordered(since, until)
    limit = min(limit, context.settings.api_max_page_size)
    after = cursors.decode_cursor(
        context.settings, "customer-gaps", cursor, (cursors.instant, cursors.text)
    )
    async with context.pool.acquire() as conn:
        rows = await queries.customer_gaps(
            conn,
            customer_id,
            touchpoint=touchpoint,
            promise=promise,
            breaches_only=breaches_only,
            since=since,
            until=until,
            after=None if after is None else (after[0], after[1]),
            limit=limit + 1,
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


@router.get(
    "/at-risk",
    response_model=AtRiskPage,
    summary="At-risk customers",
    operation_id="list_at_risk_customers",
    responses=problem_responses(*AUTHENTICATED, 400, 422),
)
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
        rows = await queries.at_risk(
            conn,
            below=below,
            segment=segment,
            touchpoint=touchpoint,
            new_customers=new_customers,
            open_intervention=open_intervention,
            new_since=new_since,
            after=None if after is None else (after[0], after[1]),
            limit=limit + 1,
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


@router.get(
    "/{customer_id}/profile",
    response_model=ProfileOut,
    operation_id="get_customer_profile",
    responses=problem_responses(
        *AUTHENTICATED, 404, descriptions={404: "No profile for this customer"}
    ),
)
async def get_profile(customer_id: str, context: ContextDep, _: HealthReader) -> ProfileOut:
    """What the CRM told Touchpulse about the customer: segment, tenure, value and reach."""
    async with context.pool.acquire() as conn:
        row = await queries.read_profile(conn, customer_id)
    if row is None:
        raise Problem(404, "not-found", "Not Found", f"No profile for {customer_id!r}")
    return ProfileOut.model_validate(dict(row))


@router.put(
    "/{customer_id}/profile",
    response_model=ProfileOut,
    operation_id="put_customer_profile",
    responses={
        201: {"model": ProfileOut, "description": "Created"},
        **problem_responses(*AUTHENTICATED, 422),
    },
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
        row = await queries.write_profile(
            conn,
            customer_id,
            segment=profile.segment,
            customer_since=profile.customer_since,
            value=profile.value,
            reach=profile.reach,
            topic=context.settings.profiles_topic,
        )
    response.status_code = 201 if row["created"] else 200
    return ProfileOut.model_validate(dict(row))

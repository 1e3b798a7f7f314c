"""The intervention queue and its workflow over REST: acknowledge, note, snooze, reassign,
resolve, and whether it helped.

The moves themselves are :mod:`touchpulse_api.workflow`'s (the desk calls the same
functions); a route names its actor — the authenticated API key — and maps the workflow's
refusals to problem+json: 404, 409 (with who moved the case, when known) and 422 (with the
pointer of the body field at fault).
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from touchpulse_api import cursors, queries, workflow
from touchpulse_api.context import ApiContext, ContextDep, HealthReader, InterventionWriter
from touchpulse_api.models import (
    Acknowledge,
    AddNote,
    InterventionOut,
    InterventionsPage,
    Reassign,
    Resolve,
    Snooze,
)
from touchpulse_scoring.domain import Action, Actor, Intervention
from touchpulse_scoring.intervention_table import (
    action_json,
    actor_json,
    intervention_from_row,
    intervention_json,
)
from touchpulse_shared.auth import Principal
from touchpulse_shared.http.app import AUTHENTICATED, problem_responses
from touchpulse_shared.http.problems import Problem

router = APIRouter(prefix="/v1/interventions", tags=["interventions"])

State = Literal["open", "acknowledged", "resolved", "expired"]


def _out(
    intervention: Intervention,
    health_now: float | None,
    history: tuple[Action, ...] | None = None,
) -> InterventionOut:
    document: dict[str, Any] = intervention_json(intervention)
    document["follow_up_at"] = intervention.follow_up_at
    document["follow_up_health"] = intervention.follow_up_health
    if history is not None:
        document["history"] = [action_json(a) for a in history]
    return InterventionOut.model_validate({**document, "health_now": health_now})


@router.get(
    "",
    response_model=InterventionsPage,
    operation_id="list_interventions",
    responses=problem_responses(*AUTHENTICATED, 400, 422),
)
async def list_interventions(
    *,
    context: ContextDep,
    _: HealthReader,
    state: Annotated[list[State] | None, Query()] = None,
    min_priority: Annotated[float | None, Query(ge=0)] = None,
    customer_id: str | None = None,
    include_snoozed: Annotated[
        bool, Query(description="also list cases snoozed until a time still to come")
    ] = False,
    cursor: cursors.Cursor = None,
    limit: Annotated[int, Query(ge=1)] = 50,
) -> InterventionsPage:
    """Interventions by priority (highest first); by default those still open and not
    snoozed (a snoozed case is back in the list once its time has come)."""
    limit = min(limit, context.settings.api_max_page_size)
    after = cursors.decode_cursor(
        context.settings, "interventions", cursor, (cursors.number, cursors.text)
    )
    states = state or ["open", "acknowledged"]
    async with context.pool.acquire() as conn:
        rows = await queries.list_interventions(
            conn,
            states=states,
            min_priority=min_priority,
            customer_id=customer_id,
            awake_at=None if include_snoozed else context.clock(),
            after=None if after is None else (after[0], after[1]),
            limit=limit + 1,
        )
    more = len(rows) > limit
    rows = rows[:limit]
    return InterventionsPage(
        items=[_out(intervention_from_row(r), r["health_now"]) for r in rows],
        next_cursor=cursors.encode_cursor(
            context.settings,
            "interventions",
            [rows[-1]["priority"], rows[-1]["intervention_id"]],
        )
        if more
        else None,
    )


@router.get(
    "/{intervention_id}",
    response_model=InterventionOut,
    operation_id="get_intervention",
    responses=problem_responses(*AUTHENTICATED, 404),
)
async def get_intervention(
    intervention_id: str, context: ContextDep, _: HealthReader
) -> InterventionOut:
    """One intervention with the gaps that triggered it, the recommended actions and its
    history: every move with who made it."""
    try:
        case = await workflow.read(context, intervention_id)
    except workflow.NotFound as exc:
        raise Problem(404, "not-found", "Not Found", str(exc)) from None
    return _out(case.intervention, case.health, case.history)


def _actor(principal: Principal) -> Actor:
    # An integration acts under its key's name, never as a person.
    return Actor.api_key(principal.key_id, principal.name)


async def _act(
    context: ApiContext, move: Awaitable[workflow.Moved], fields: Mapping[str, str]
) -> InterventionOut:
    """Run a workflow move and answer with the case and its history, or the problem.

    ``fields`` maps the workflow's parameter names to the request body's, so a 422 points
    at the field the client sent."""
    try:
        moved = await move
    except workflow.NotFound as exc:
        raise Problem(404, "not-found", "Not Found", str(exc)) from None
    except workflow.Stale as exc:
        raise Problem(
            409,
            "changed-by-someone-else",
            "Conflict",
            str(exc),
            extra={
                "state": exc.state,
                "expected_version": exc.expected,
                "current_version": exc.current,
                **_by(exc.by),
            },
        ) from None
    except workflow.Conflict as exc:
        raise Problem(
            409,
            "illegal-transition",
            "Conflict",
            str(exc),
            extra={"state": exc.state, **_by(exc.by)},
        ) from None
    except workflow.Invalid as exc:
        field = fields.get(exc.field, exc.field)
        raise Problem(
            422,
            "invalid-request",
            "Invalid Request",
            f"{field}: {exc.message}",
            # The pointer as a request validation error spells it (from the request's
            # root), so a client reads both kinds of 422 the same way.
            errors=[{"pointer": f"/body/{field}", "detail": exc.message, "code": "invalid"}],
        ) from None
    try:
        case = await workflow.read(context, moved.intervention.intervention_id)
    except workflow.NotFound as exc:  # erased between the move and this read
        raise Problem(404, "not-found", "Not Found", str(exc)) from None
    return _out(case.intervention, case.health, case.history)


def _by(action: Action | None) -> dict[str, Any]:
    if action is None:
        return {"changed_by": None, "change": None}
    return {"changed_by": actor_json(action.actor), "change": action.kind}


@router.post(
    "/{intervention_id}/acknowledge",
    response_model=InterventionOut,
    operation_id="acknowledge_intervention",
    responses=problem_responses(*AUTHENTICATED, 404, 409, 422),
)
async def acknowledge_intervention(
    intervention_id: str, body: Acknowledge, context: ContextDep, key: InterventionWriter
) -> InterventionOut:
    """Someone owns it now. Only an open intervention can be acknowledged (else 409)."""
    return await _act(
        context,
        workflow.take(
            context,
            intervention_id,
            _actor(key),
            assignee=body.assignee,
            expected_version=body.expected_version,
        ),
        {},
    )


@router.post(
    "/{intervention_id}/notes",
    response_model=InterventionOut,
    operation_id="add_intervention_note",
    responses=problem_responses(*AUTHENTICATED, 404, 409, 422),
)
async def add_intervention_note(
    intervention_id: str, body: AddNote, context: ContextDep, key: InterventionWriter
) -> InterventionOut:
    """A note on an open or acknowledged intervention (else 409); it is kept in the
    history with the key that wrote it."""
    return await _act(
        context,
        workflow.add_note(
            context, intervention_id, _actor(key), body.text, expected_version=body.expected_version
        ),
        {},
    )


@router.post(
    "/{intervention_id}/snooze",
    response_model=InterventionOut,
    operation_id="snooze_intervention",
    responses=problem_responses(*AUTHENTICATED, 404, 409, 422),
)
async def snooze_intervention(
    intervention_id: str, body: Snooze, context: ContextDep, key: InterventionWriter
) -> InterventionOut:
    """Put an open or acknowledged intervention aside until a time in the future (422 for
    one in the past); the queue leaves it out until then. ``until: null`` wakes it."""
    return await _act(
        context,
        workflow.snooze(
            context,
            intervention_id,
            _actor(key),
            body.until,
            expected_version=body.expected_version,
        ),
        {},
    )


@router.post(
    "/{intervention_id}/reassign",
    response_model=InterventionOut,
    operation_id="reassign_intervention",
    responses=problem_responses(*AUTHENTICATED, 404, 409, 422),
)
async def reassign_intervention(
    intervention_id: str, body: Reassign, context: ContextDep, key: InterventionWriter
) -> InterventionOut:
    """Give an acknowledged intervention to someone else (409 unless acknowledged; 422 for
    its current assignee)."""
    return await _act(
        context,
        workflow.reassign(
            context,
            intervention_id,
            _actor(key),
            body.assignee,
            expected_version=body.expected_version,
        ),
        {},
    )


@router.post(
    "/{intervention_id}/resolve",
    response_model=InterventionOut,
    operation_id="resolve_intervention",
    responses=problem_responses(*AUTHENTICATED, 404, 409, 422),
)
async def resolve_intervention(
    intervention_id: str, body: Resolve, context: ContextDep, key: InterventionWriter
) -> InterventionOut:
    """Done, with a note on what was done and an outcome category from the catalogue
    policy (422 for one it does not list); health is recorded now and again later."""
    return await _act(
        context,
        workflow.resolve(
            context,
            intervention_id,
            _actor(key),
            category=body.outcome_category,
            note=body.outcome_note,
            expected_version=body.expected_version,
        ),
        {"note": "outcome_note", "category": "outcome_category"},
    )

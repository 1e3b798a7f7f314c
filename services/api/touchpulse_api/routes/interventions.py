"""The intervention queue and its workflow: acknowledge, resolve, and whether it helped."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from touchpulse_api import cursors, queries
from touchpulse_api.context import ApiContext, ContextDep, HealthReader, InterventionWriter
from touchpulse_api.models import Acknowledge, InterventionOut, InterventionsPage, Resolve
from touchpulse_scoring.domain import (
    IllegalTransition,
    Intervention,
    InvalidCommand,
    acknowledge,
    resolve,
)
from touchpulse_scoring.intervention_table import intervention_from_row, intervention_json
from touchpulse_shared.http.problems import Problem

router = APIRouter(prefix="/v1/interventions", tags=["interventions"])

State = Literal["open", "acknowledged", "resolved", "expired"]


def _out(intervention: Intervention, health_now: float | None) -> InterventionOut:
    document: dict[str, Any] = intervention_json(intervention)
    document["follow_up_at"] = intervention.follow_up_at
    document["follow_up_health"] = intervention.follow_up_health
    return InterventionOut.model_validate({**document, "health_now": health_now})


@router.get("", response_model=InterventionsPage)
async def list_interventions(
    *,
    context: ContextDep,
    _: HealthReader,
    state: Annotated[list[State] | None, Query()] = None,
    min_priority: Annotated[float | None, Query(ge=0)] = None,
    customer_id: str | None = None,
    cursor: cursors.Cursor = None,
    limit: Annotated[int, Query(ge=1)] = 50,
) -> InterventionsPage:
    """Interventions by priority (highest first); by default those still open."""
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


@router.get("/{intervention_id}", response_model=InterventionOut)
async def get_intervention(
    intervention_id: str, context: ContextDep, _: HealthReader
) -> InterventionOut:
    """One intervention with the gaps that triggered it and the recommended actions."""
    async with context.pool.acquire() as conn:
        row = await queries.read_intervention(conn, intervention_id)
    if row is None:
        raise Problem(404, "not-found", "Not Found", f"No intervention {intervention_id!r}")
    return _out(intervention_from_row(row), row["health_now"])


async def _change(
    context: ApiContext,
    intervention_id: str,
    kind: str,
    change: Any,
) -> InterventionOut:
    """Apply a workflow move under the customer's lock, with its outbox rows, atomically."""
    async with context.pool.acquire() as conn, conn.transaction():
        found = await queries.lock_intervention(conn, intervention_id)
        if found is None:
            raise Problem(404, "not-found", "Not Found", f"No intervention {intervention_id!r}")
        current, health = found
        try:
            updated: Intervention = change(current, health)
        except IllegalTransition as exc:
            raise Problem(409, "illegal-transition", "Conflict", str(exc)) from None
        except InvalidCommand as exc:
            raise Problem(
                422,
                "invalid-request",
                "Invalid Request",
                str(exc),
                errors=[{"pointer": f"/{exc.field}", "detail": str(exc), "code": "invalid"}],
            ) from None
        await queries.write_intervention_move(
            conn, context.settings.interventions_topic, kind, updated
        )
    return _out(updated, health)


@router.post("/{intervention_id}/acknowledge", response_model=InterventionOut)
async def acknowledge_intervention(
    intervention_id: str, body: Acknowledge, context: ContextDep, _: InterventionWriter
) -> InterventionOut:
    """Someone owns it now. Only an open intervention can be acknowledged (else 409)."""
    now = context.clock()
    result = await _change(
        context,
        intervention_id,
        "intervention.acknowledged",
        lambda iv, health: acknowledge(iv, now=now, assignee=body.assignee),
    )
    context.metrics.interventions_acknowledged.inc()
    context.metrics.time_to_acknowledge.observe(max((now - result.opened_at).total_seconds(), 0))
    return result


@router.post("/{intervention_id}/resolve", response_model=InterventionOut)
async def resolve_intervention(
    intervention_id: str, body: Resolve, context: ContextDep, _: InterventionWriter
) -> InterventionOut:
    """Done, with a note on what was done; health is recorded now and again later."""
    now = context.clock()
    result = await _change(
        context,
        intervention_id,
        "intervention.resolved",
        lambda iv, health: resolve(iv, now=now, note=body.outcome_note, health=health),
    )
    context.metrics.interventions_resolved.inc()
    return result

"""The intervention table: its row codec, its upsert and the announcements of every move.

Both services write ``intervention`` — scoring opens, attaches, re-ranks, expires and
follows up cases in its batches and sweeps; the api's workflow acknowledges, notes,
snoozes, reassigns and resolves them — and each move goes out the same four ways in the
mover's transaction: the row, an ``intervention_action`` history row naming its actor, a
``webhook_outbox`` event and an ``interventions.v1`` record (both carrying the actor). One
definition of all of it, so the two writers cannot drift apart. Scoring's moves are the
system's (:data:`SYSTEM_ACTOR`); a re-ranking (``intervention.updated``) asks nothing of
anyone and scoring announces it nowhere, so it stays out of the history too.

Who owns which field: the people's fields (state, assignee, acknowledgement, snooze,
resolution, version) change only through a move at or past the stored ``version``; scoring
moves never bump it, so a copy scoring read before a person's move cannot undo that move
(:func:`write_interventions`). Scoring's fields (triggers, gaps, actions, priority,
follow-up) are always its latest.

Why here: the codec turns rows into the pure domain's :class:`Intervention` (and back), so
it cannot live in ``touchpulse_shared`` without the shared package importing a service's
domain; and it is not scoring's batch storage (``store.py``), which the api must not reach.
A small module beside the domain that both import, holding only the table both write; the
import contracts in pyproject.toml allow the api this module and forbid it scoring's
storage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson

from touchpulse_scoring.domain import (
    SYSTEM_ACTOR,
    Action,
    Actor,
    ActorKind,
    Expected,
    Gap,
    Intervention,
    InterventionState,
    Trigger,
    TriggerKind,
)
from touchpulse_scoring.domain.interventions import DetailValue
from touchpulse_shared.db import Conn
from touchpulse_shared.db.outbox import OutboxRow, insert_outbox, outbox_row


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_UTC_Z).decode()


# --- rows -------------------------------------------------------------------------------


def _gap_json(gap: Gap) -> dict[str, Any]:
    return {
        "outcome_key": gap.outcome_key,
        "promise_id": gap.promise_id,
        "touchpoint": gap.touchpoint,
        "expected": {
            "op": gap.expected.op,
            "target": gap.expected.target,
            "unit": gap.expected.unit,
        },
        "actual": gap.actual,
        "gap": gap.gap,
        "score": gap.score,
        "severity": gap.severity,
        "occurred_at": gap.occurred_at,
        "event_ids": list(gap.event_ids),
        "action": gap.action,
    }


def _gap_from_json(data: Mapping[str, Any]) -> Gap:
    expected = data["expected"]
    return Gap(
        outcome_key=data["outcome_key"],
        promise_id=data["promise_id"],
        touchpoint=data["touchpoint"],
        expected=Expected(op=expected["op"], target=expected["target"], unit=expected["unit"]),
        actual=data["actual"],
        gap=data["gap"],
        score=data["score"],
        severity=data["severity"],
        occurred_at=datetime.fromisoformat(data["occurred_at"]),
        event_ids=tuple(data["event_ids"]),
        action=data["action"],
    )


def _triggers_json(intervention: Intervention) -> list[dict[str, Any]]:
    return [
        {"kind": t.kind.value, "detail": t.detail, "promise_id": t.promise_id}
        for t in intervention.triggers
    ]


def intervention_json(intervention: Intervention) -> dict[str, Any]:
    """The intervention as it travels: outbox, topic, webhooks, API."""
    return {
        "intervention_id": intervention.intervention_id,
        "customer_id": intervention.customer_id,
        "state": intervention.state.value,
        "triggers": _triggers_json(intervention),
        "gaps": [_gap_json(g) for g in intervention.gaps],
        "actions": list(intervention.actions),
        "priority": intervention.priority,
        "threshold": intervention.threshold,
        "health_at_open": intervention.health_at_open,
        "opened_at": intervention.opened_at,
        "updated_at": intervention.updated_at,
        "acknowledged_at": intervention.acknowledged_at,
        "assignee": intervention.assignee,
        "resolved_at": intervention.resolved_at,
        "outcome_note": intervention.outcome_note,
        "health_at_resolve": intervention.health_at_resolve,
        "outcome_category": intervention.outcome_category,
        "closed_at": intervention.closed_at,
        "snoozed_until": intervention.snoozed_until,
        "version": intervention.version,
    }


def actor_json(actor: Actor) -> dict[str, str]:
    return {"kind": actor.kind.value, "id": actor.id, "name": actor.name}


def action_json(action: Action) -> dict[str, Any]:
    """One history entry as it travels (API, webhooks, topic)."""
    return {
        "kind": action.kind,
        "at": action.at,
        "version": action.version,
        "actor": actor_json(action.actor),
        "detail": dict(action.detail),
    }


def _announced(action: Action, intervention: Intervention) -> dict[str, Any]:
    # The case after the move, and the move with its actor beside it: a receiver learns
    # who did it without a second call.
    return {
        **intervention_json(intervention),
        "actor": actor_json(action.actor),
        "detail": dict(action.detail),
    }


def system_action(kind: str, intervention: Intervention) -> Action:
    """Scoring's move as the history keeps it: the facts a reader of the case wants."""
    detail: dict[str, DetailValue] = {}
    if kind == "intervention.opened":
        detail = {"health": intervention.health_at_open, "priority": intervention.priority}
    elif kind == "intervention.attached":
        detail = {"priority": intervention.priority, "triggers": len(intervention.triggers)}
    elif kind == "intervention.followed_up":
        detail = {
            "health": intervention.follow_up_health,
            "health_at_resolve": intervention.health_at_resolve,
        }
    return Action(
        kind=kind,
        actor=SYSTEM_ACTOR,
        at=intervention.updated_at,
        version=intervention.version,
        detail=detail,
    )


def action_from_row(row: Any) -> Action:
    return Action(
        kind=row["kind"],
        actor=Actor(ActorKind(row["actor_kind"]), row["actor_id"], row["actor_name"]),
        at=row["at"],
        version=row["version"],
        detail=orjson.loads(row["detail"]),
    )


def intervention_from_row(row: Any) -> Intervention:
    return Intervention(
        intervention_id=row["intervention_id"],
        customer_id=row["customer_id"],
        state=InterventionState(row["state"]),
        triggers=tuple(
            Trigger(kind=TriggerKind(t["kind"]), detail=t["detail"], promise_id=t["promise_id"])
            for t in orjson.loads(row["triggers"])
        ),
        gaps=tuple(_gap_from_json(g) for g in orjson.loads(row["gaps"])),
        actions=tuple(row["actions"]),
        priority=row["priority"],
        threshold=row["threshold"],
        health_at_open=row["health_at_open"],
        opened_at=row["opened_at"],
        updated_at=row["updated_at"],
        acknowledged_at=row["acknowledged_at"],
        assignee=row["assignee"],
        resolved_at=row["resolved_at"],
        outcome_note=row["outcome_note"],
        health_at_resolve=row["health_at_resolve"],
        closed_at=row["closed_at"],
        follow_up_at=row["follow_up_at"],
        follow_up_health=row["follow_up_health"],
        outcome_category=row["outcome_category"],
        snoozed_until=row["snoozed_until"],
        version=row["version"],
    )


# --- reads ------------------------------------------------------------------------------


async def read_history(conn: Conn, intervention_id: str) -> list[Action]:
    """Every move on the case, oldest first."""
    rows = await conn.fetch(
        "SELECT * FROM intervention_action WHERE intervention_id = $1 ORDER BY id",
        intervention_id,
    )
    return [action_from_row(r) for r in rows]


async def first_action_after(conn: Conn, intervention_id: str, version: int) -> Action | None:
    """The first move by a person or key that took the case past ``version``: who to name
    when a move meant for that version is refused."""
    row = await conn.fetchrow(
        """
        SELECT * FROM intervention_action
        WHERE intervention_id = $1 AND version > $2 AND actor_kind <> 'system'
        ORDER BY id LIMIT 1
        """,
        intervention_id,
        version,
    )
    return None if row is None else action_from_row(row)


# --- writes -----------------------------------------------------------------------------


async def write_interventions(conn: Conn, interventions: Sequence[Intervention]) -> None:
    """Upsert interventions in one statement (a batch moves hundreds of cases: one round
    trip each was a third of a batch's statements). The last move of an id wins, as a
    sequence of upserts would; the opening's fields are never overwritten.

    The people's fields (state, acknowledgement, assignee, snooze, resolution, closing,
    version) are taken only from a copy at or past the stored version: both services lock
    the customer before they read and write a case, so today no copy is ever older, but a
    scoring copy that were (read before a person's move) must not undo that move. Scoring's
    fields always take the written value; ``updated_at`` never goes back."""
    latest = list({iv.intervention_id: iv for iv in interventions}.values())
    if not latest:
        return
    await conn.execute(
        """
        INSERT INTO intervention AS i (intervention_id, customer_id, state, triggers, gaps,
            actions, priority, threshold, health_at_open, opened_at, acknowledged_at,
            assignee, resolved_at, outcome_note, health_at_resolve, closed_at,
            follow_up_at, follow_up_health, updated_at, outcome_category, snoozed_until,
            version)
        SELECT id, c, st, tr::jsonb, g::jsonb,
               ARRAY(SELECT jsonb_array_elements_text(a::jsonb)), pr, th, ho, op, ack, asg,
               res, note, hr, cl, fu, fh, up, cat, sn, v
        FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                    $7::float8[], $8::float8[], $9::float8[], $10::timestamptz[],
                    $11::timestamptz[], $12::text[], $13::timestamptz[], $14::text[],
                    $15::float8[], $16::timestamptz[], $17::timestamptz[], $18::float8[],
                    $19::timestamptz[], $20::text[], $21::timestamptz[], $22::int4[])
             AS u(id, c, st, tr, g, a, pr, th, ho, op, ack, asg, res, note, hr, cl, fu, fh, up,
                  cat, sn, v)
        ON CONFLICT (intervention_id) DO UPDATE SET
            triggers = EXCLUDED.triggers, gaps = EXCLUDED.gaps,
            actions = EXCLUDED.actions, priority = EXCLUDED.priority,
            follow_up_at = EXCLUDED.follow_up_at,
            follow_up_health = EXCLUDED.follow_up_health,
            updated_at = greatest(i.updated_at, EXCLUDED.updated_at),
            (state, acknowledged_at, assignee, resolved_at, outcome_note, outcome_category,
             health_at_resolve, closed_at, snoozed_until, version) = (
                SELECT * FROM (
                    SELECT EXCLUDED.state, EXCLUDED.acknowledged_at, EXCLUDED.assignee,
                           EXCLUDED.resolved_at, EXCLUDED.outcome_note,
                           EXCLUDED.outcome_category, EXCLUDED.health_at_resolve,
                           EXCLUDED.closed_at, EXCLUDED.snoozed_until, EXCLUDED.version
                    WHERE EXCLUDED.version >= i.version
                    UNION ALL
                    SELECT i.state, i.acknowledged_at, i.assignee, i.resolved_at,
                           i.outcome_note, i.outcome_category, i.health_at_resolve,
                           i.closed_at, i.snoozed_until, i.version
                    WHERE EXCLUDED.version < i.version
                ) AS kept
            )
        """,
        [iv.intervention_id for iv in latest],
        [iv.customer_id for iv in latest],
        [iv.state.value for iv in latest],
        [_json(_triggers_json(iv)) for iv in latest],
        [_json([_gap_json(g) for g in iv.gaps]) for iv in latest],
        [_json(list(iv.actions)) for iv in latest],
        [iv.priority for iv in latest],
        [iv.threshold for iv in latest],
        [iv.health_at_open for iv in latest],
        [iv.opened_at for iv in latest],
        [iv.acknowledged_at for iv in latest],
        [iv.assignee for iv in latest],
        [iv.resolved_at for iv in latest],
        [iv.outcome_note for iv in latest],
        [iv.health_at_resolve for iv in latest],
        [iv.closed_at for iv in latest],
        [iv.follow_up_at for iv in latest],
        [iv.follow_up_health for iv in latest],
        [iv.updated_at for iv in latest],
        [iv.outcome_category for iv in latest],
        [iv.snoozed_until for iv in latest],
        [iv.version for iv in latest],
    )


async def write_webhook_events(conn: Conn, events: Sequence[tuple[str, Intervention]]) -> None:
    """Scoring's moves (the system's), announced and kept in the history, in order."""
    await write_actions(conn, [(system_action(kind, iv), iv) for kind, iv in events])


async def write_actions(conn: Conn, moves: Sequence[tuple[Action, Intervention]]) -> None:
    """The moves' webhook events and history rows, in the order given (ids follow it).

    The intervention rows must be written first in the same transaction: history rows
    reference them."""
    if not moves:
        return
    await conn.execute(
        """
        INSERT INTO webhook_outbox (kind, intervention_id, customer_id, payload)
        SELECT k, i, c, p::jsonb
        FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY
             AS u(k, i, c, p, n)
        ORDER BY n
        """,
        [action.kind for action, _ in moves],
        [iv.intervention_id for _, iv in moves],
        [iv.customer_id for _, iv in moves],
        [_json(_announced(action, iv)) for action, iv in moves],
    )
    await conn.execute(
        """
        INSERT INTO intervention_action (intervention_id, customer_id, kind, at, version,
            actor_kind, actor_id, actor_name, detail)
        SELECT i, c, k, a, v, ak, ai, an, d::jsonb
        FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::int4[],
                    $6::text[], $7::text[], $8::text[], $9::text[]) WITH ORDINALITY
             AS u(i, c, k, a, v, ak, ai, an, d, n)
        ORDER BY n
        """,
        [iv.intervention_id for _, iv in moves],
        [iv.customer_id for _, iv in moves],
        [action.kind for action, _ in moves],
        [action.at for action, _ in moves],
        [action.version for action, _ in moves],
        [action.actor.kind.value for action, _ in moves],
        [action.actor.id for action, _ in moves],
        [action.actor.name for action, _ in moves],
        [_json(dict(action.detail)) for action, _ in moves],
    )


def intervention_record(
    topic: str, kind: str, intervention: Intervention, action: Action | None = None
) -> OutboxRow:
    """The ``interventions.v1`` outbox row announcing one lifecycle move (scoring's when no
    ``action`` is given)."""
    move = action or system_action(kind, intervention)
    return outbox_row(
        topic,
        intervention.intervention_id.encode(),
        orjson.dumps({"kind": kind, **_announced(move, intervention)}, option=orjson.OPT_UTC_Z),
        [("content-type", b"application/json")],
    )


async def record_interventions(
    conn: Conn, topic: str, moves: Sequence[tuple[str, Intervention]]
) -> None:
    """Store scoring's lifecycle moves with their history, webhook and topic announcements,
    in the caller's transaction."""
    await record_actions(conn, topic, [(system_action(kind, iv), iv) for kind, iv in moves])


async def record_actions(
    conn: Conn, topic: str, moves: Sequence[tuple[Action, Intervention]]
) -> None:
    """Store moves with their history, webhook and topic announcements, in the caller's
    transaction: whoever moves an intervention (scoring, the sweep, the api) does all four."""
    await write_interventions(conn, [iv for _, iv in moves])
    await write_actions(conn, moves)
    await insert_outbox(
        conn, [intervention_record(topic, action.kind, iv, action) for action, iv in moves]
    )

"""The intervention table: its row codec, its upsert and the announcements of every move.

Both services write ``intervention`` — scoring opens, attaches, re-ranks, expires and
follows up cases in its batches and sweeps; the api acknowledges and resolves them — and
each move goes out the same three ways in the mover's transaction: the row, a
``webhook_outbox`` event and an ``interventions.v1`` record. One definition of all of it,
so the two writers cannot drift apart.

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
    Expected,
    Gap,
    Intervention,
    InterventionState,
    Trigger,
    TriggerKind,
)
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
        "closed_at": intervention.closed_at,
    }


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
    )


# --- writes -----------------------------------------------------------------------------


async def write_interventions(conn: Conn, interventions: Sequence[Intervention]) -> None:
    """Upsert interventions in one statement (a batch moves hundreds of cases: one round
    trip each was a third of a batch's statements). The last move of an id wins, as a
    sequence of upserts would; the opening's fields are never overwritten."""
    latest = list({iv.intervention_id: iv for iv in interventions}.values())
    if not latest:
        return
    await conn.execute(
        """
        INSERT INTO intervention AS i (intervention_id, customer_id, state, triggers, gaps,
            actions, priority, threshold, health_at_open, opened_at, acknowledged_at,
            assignee, resolved_at, outcome_note, health_at_resolve, closed_at,
            follow_up_at, follow_up_health, updated_at)
        SELECT id, c, st, tr::jsonb, g::jsonb,
               ARRAY(SELECT jsonb_array_elements_text(a::jsonb)), pr, th, ho, op, ack, asg,
               res, note, hr, cl, fu, fh, up
        FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                    $7::float8[], $8::float8[], $9::float8[], $10::timestamptz[],
                    $11::timestamptz[], $12::text[], $13::timestamptz[], $14::text[],
                    $15::float8[], $16::timestamptz[], $17::timestamptz[], $18::float8[],
                    $19::timestamptz[])
             AS u(id, c, st, tr, g, a, pr, th, ho, op, ack, asg, res, note, hr, cl, fu, fh, up)
        ON CONFLICT (intervention_id) DO UPDATE SET
            state = EXCLUDED.state, triggers = EXCLUDED.triggers, gaps = EXCLUDED.gaps,
            actions = EXCLUDED.actions, priority = EXCLUDED.priority,
            acknowledged_at = EXCLUDED.acknowledged_at, assignee = EXCLUDED.assignee,
            resolved_at = EXCLUDED.resolved_at, outcome_note = EXCLUDED.outcome_note,
            health_at_resolve = EXCLUDED.health_at_resolve, closed_at = EXCLUDED.closed_at,
            follow_up_at = EXCLUDED.follow_up_at,
            follow_up_health = EXCLUDED.follow_up_health, updated_at = EXCLUDED.updated_at
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
    )


async def write_webhook_events(conn: Conn, events: Sequence[tuple[str, Intervention]]) -> None:
    """One statement for a batch's lifecycle events, in the order given (ids follow it)."""
    if not events:
        return
    await conn.execute(
        """
        INSERT INTO webhook_outbox (kind, intervention_id, customer_id, payload)
        SELECT k, i, c, p::jsonb
        FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY
             AS u(k, i, c, p, n)
        ORDER BY n
        """,
        [kind for kind, _ in events],
        [iv.intervention_id for _, iv in events],
        [iv.customer_id for _, iv in events],
        [_json(intervention_json(iv)) for _, iv in events],
    )


def intervention_record(topic: str, kind: str, intervention: Intervention) -> OutboxRow:
    """The ``interventions.v1`` outbox row announcing one lifecycle move."""
    return outbox_row(
        topic,
        intervention.intervention_id.encode(),
        orjson.dumps({"kind": kind, **intervention_json(intervention)}, option=orjson.OPT_UTC_Z),
        [("content-type", b"application/json")],
    )


async def record_interventions(
    conn: Conn, topic: str, moves: Sequence[tuple[str, Intervention]]
) -> None:
    """Store lifecycle moves with their webhook and topic announcements, in the caller's
    transaction: whoever moves an intervention (scoring, the sweep, the api) does all three."""
    await write_interventions(conn, [iv for _, iv in moves])
    await write_webhook_events(conn, moves)
    await insert_outbox(conn, [intervention_record(topic, kind, iv) for kind, iv in moves])

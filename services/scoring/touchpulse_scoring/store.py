"""Scoring's SQL: load the state of a set of customers, write back what changed.

Every function runs inside the caller's transaction. Customers are locked first (advisory
transaction locks, taken in one sorted order by the consumer and the deadline sweep
alike), so two writers never interleave on one customer and never deadlock.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

from touchpulse_scoring.domain import (
    EXPLAIN_WINDOW,
    NO_GUARD,
    CustomerProfile,
    Deadline,
    DeadlineRef,
    Expected,
    Fulfilment,
    Intervention,
    Outcome,
    ReopenGuard,
    TouchpointHealth,
)
from touchpulse_scoring.intervention_table import intervention_from_row
from touchpulse_shared.db import Conn


@dataclass
class CustomerState:
    """What the pure domain needs to know about one customer for one batch."""

    profile: CustomerProfile = field(default_factory=CustomerProfile)
    health: dict[str, TouchpointHealth] = field(default_factory=dict)
    journey_score: float | None = None
    #: The newest event time applied so far (None before the first): health is read there.
    as_of: datetime | None = None
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    deadlines: dict[DeadlineRef, Deadline] = field(default_factory=dict)
    #: Fulfilling events seen before their deadline's opening (see the deadline domain).
    early: dict[DeadlineRef, Fulfilment] = field(default_factory=dict)
    breaches: dict[str, list[datetime]] = field(default_factory=lambda: defaultdict(list))
    current: Intervention | None = None
    guard: ReopenGuard = NO_GUARD


async def load_state(
    conn: Conn,
    customers: Sequence[str],
    *,
    outcome_keys: Iterable[tuple[str, str]],
    deadline_refs: Iterable[DeadlineRef],
    breach_window_start: datetime,
    recovery_margin: float,
) -> dict[str, CustomerState]:
    states = {c: CustomerState() for c in customers}
    for row in await conn.fetch(
        "SELECT * FROM customer_profile WHERE customer_id = ANY($1::text[])", customers
    ):
        states[row["customer_id"]].profile = CustomerProfile(
            segment=row["segment"],
            customer_since=row["customer_since"],
            value=row["value"],
            reach=row["reach"],
        )
    for row in await conn.fetch(
        "SELECT * FROM touchpoint_health WHERE customer_id = ANY($1::text[])", customers
    ):
        states[row["customer_id"]].health[row["touchpoint"]] = TouchpointHealth(
            s=row["s"], w=row["w"], t_ref=row["t_ref"], outcomes=row["outcomes"]
        )
    for row in await conn.fetch(
        "SELECT customer_id, score, as_of FROM journey_health WHERE customer_id = ANY($1::text[])",
        customers,
    ):
        states[row["customer_id"]].journey_score = row["score"]
        states[row["customer_id"]].as_of = row["as_of"]
    keys = sorted(set(outcome_keys))
    if keys:
        for row in await conn.fetch(
            """
            SELECT o.* FROM outcome o
            JOIN unnest($1::text[], $2::text[]) AS k(c, key)
              ON o.customer_id = k.c AND o.outcome_key = k.key
            """,
            [c for c, _ in keys],
            [k for _, k in keys],
        ):
            states[row["customer_id"]].outcomes[row["outcome_key"]] = outcome_from_row(row)
    refs = sorted(set(deadline_refs), key=lambda r: (r.customer_id, r.promise_id, r.journey_key))
    if refs:
        for row in await _fetch_by_refs(conn, "deadline", refs):
            deadline = deadline_from_row(row)
            states[deadline.customer_id].deadlines[deadline.ref] = deadline
        for row in await _fetch_by_refs(conn, "early_fulfilment", refs):
            ref = DeadlineRef(row["customer_id"], row["promise_id"], row["journey_key"])
            states[ref.customer_id].early[ref] = Fulfilment(row["occurred_at"], row["event_ref"])
    for row in await conn.fetch(
        """
        SELECT customer_id, promise_id, occurred_at FROM outcome
        WHERE customer_id = ANY($1::text[]) AND NOT met AND occurred_at >= $2
        """,
        customers,
        breach_window_start,
    ):
        states[row["customer_id"]].breaches[row["promise_id"]].append(row["occurred_at"])
    for row in await conn.fetch(
        """
        SELECT * FROM intervention
        WHERE customer_id = ANY($1::text[]) AND state IN ('open', 'acknowledged')
        """,
        customers,
    ):
        states[row["customer_id"]].current = intervention_from_row(row)
    for row in await conn.fetch(
        """
        SELECT DISTINCT ON (i.customer_id) i.*,
            (SELECT max(h.score) FROM journey_health_history h
              WHERE h.customer_id = i.customer_id AND h.at > i.closed_at) AS best_since
        FROM intervention i
        WHERE i.customer_id = ANY($1::text[]) AND i.state IN ('resolved', 'expired')
        ORDER BY i.customer_id, i.closed_at DESC
        """,
        customers,
    ):
        closed = intervention_from_row(row)
        guard = ReopenGuard.after_close(closed)
        if row["best_since"] is not None:
            guard = ReopenGuard(
                closed_at=guard.closed_at,
                health_at_close=guard.health_at_close,
                # "Recovered past threshold + margin since it closed", from the history.
                recovered=guard.recovered
                or row["best_since"] >= closed.threshold + recovery_margin,
            )
        states[row["customer_id"]].guard = guard
    return states


async def _fetch_by_refs(conn: Conn, table: str, refs: Sequence[DeadlineRef]) -> list[Any]:
    """The rows of ``table`` (keyed by customer, promise and journey) for these refs."""
    rows: list[Any] = await conn.fetch(
        f"""
        SELECT t.* FROM {table} t
        JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(c, p, j)
          ON t.customer_id = k.c AND t.promise_id = k.p AND t.journey_key = k.j
        """,  # noqa: S608 - the table is one of two names in this module, never input
        [r.customer_id for r in refs],
        [r.promise_id for r in refs],
        [r.journey_key for r in refs],
    )
    return rows


# --- rows -------------------------------------------------------------------------------


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_UTC_Z).decode()


def outcome_from_row(row: Any) -> Outcome:
    expected = orjson.loads(row["expected"])
    return Outcome(
        outcome_key=row["outcome_key"],
        customer_id=row["customer_id"],
        promise_id=row["promise_id"],
        catalogue_version=row["catalogue_version"],
        touchpoint=row["touchpoint"],
        occurred_at=row["occurred_at"],
        expected=Expected(op=expected["op"], target=expected["target"], unit=expected["unit"]),
        actual=orjson.loads(row["actual"]),
        gap=row["gap"],
        met=row["met"],
        score=row["score"],
        weight=row["weight"],
        severity=row["severity"],
        event_ids=tuple(row["event_ids"]),
        opened_at=row["opened_at"],
    )


async def load_recent_outcomes(conn: Conn, customers: Sequence[str]) -> dict[str, list[Outcome]]:
    """Each customer's newest outcomes, as many as a health explanation looks at."""
    found: dict[str, list[Outcome]] = defaultdict(list)
    if not customers:
        return found
    for row in await conn.fetch(
        """
        SELECT o.* FROM unnest($1::text[]) AS c(id)
        CROSS JOIN LATERAL (
            SELECT * FROM outcome WHERE customer_id = c.id
            ORDER BY occurred_at DESC, outcome_key DESC LIMIT $2
        ) AS o
        """,
        sorted(set(customers)),
        EXPLAIN_WINDOW,
    ):
        found[row["customer_id"]].append(outcome_from_row(row))
    return found


def outcome_json(outcome: Outcome) -> dict[str, Any]:
    return {
        "promise_id": outcome.promise_id,
        "touchpoint": outcome.touchpoint,
        "occurred_at": outcome.occurred_at,
        "expected": {
            "op": outcome.expected.op,
            "target": outcome.expected.target,
            "unit": outcome.expected.unit,
        },
        "actual": outcome.actual,
        "gap": outcome.gap,
        "met": outcome.met,
        "score": outcome.score,
        "severity": outcome.severity,
        "event_ids": list(outcome.event_ids),
    }


def deadline_from_row(row: Any) -> Deadline:
    return Deadline(
        customer_id=row["customer_id"],
        promise_id=row["promise_id"],
        journey_key=row["journey_key"],
        touchpoint=row["touchpoint"],
        opened_at=row["opened_at"],
        due_at=row["due_at"],
        opening_event_ids=tuple(row["opening_event_ids"]),
        catalogue_version=row["catalogue_version"],
        tolerance_hours=row["tolerance_hours"],
        weight=row["weight"],
        breach_weight=row["breach_weight"],
        severity=row["severity"],
        state=row["state"],
        closed_at=row["closed_at"],
        fulfilled_by=row["fulfilled_by"],
    )


# --- writes -----------------------------------------------------------------------------


async def write_outcomes(conn: Conn, outcomes: Sequence[Outcome]) -> None:
    if not outcomes:
        return
    await conn.execute(
        """
        INSERT INTO outcome AS o (customer_id, outcome_key, promise_id, catalogue_version,
            touchpoint, occurred_at, expected, actual, gap, met, score, weight, severity,
            event_ids, opened_at)
        SELECT c, k, p, v, t, at, e::jsonb, a::jsonb, g, m, s, w, sev,
               ARRAY(SELECT jsonb_array_elements_text(ids::jsonb)), op
        FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                    $6::timestamptz[], $7::text[], $8::text[], $9::float8[], $10::bool[],
                    $11::float8[], $12::float8[], $13::text[], $14::text[], $15::timestamptz[])
             AS u(c, k, p, v, t, at, e, a, g, m, s, w, sev, ids, op)
        ON CONFLICT (customer_id, outcome_key) DO UPDATE SET
            promise_id = EXCLUDED.promise_id, catalogue_version = EXCLUDED.catalogue_version,
            touchpoint = EXCLUDED.touchpoint, occurred_at = EXCLUDED.occurred_at,
            expected = EXCLUDED.expected, actual = EXCLUDED.actual, gap = EXCLUDED.gap,
            met = EXCLUDED.met, score = EXCLUDED.score, weight = EXCLUDED.weight,
            severity = EXCLUDED.severity, event_ids = EXCLUDED.event_ids,
            opened_at = EXCLUDED.opened_at, recorded_at = now()
        """,
        [o.customer_id for o in outcomes],
        [o.outcome_key for o in outcomes],
        [o.promise_id for o in outcomes],
        [o.catalogue_version for o in outcomes],
        [o.touchpoint for o in outcomes],
        [o.occurred_at for o in outcomes],
        [
            _json({"op": o.expected.op, "target": o.expected.target, "unit": o.expected.unit})
            for o in outcomes
        ],
        [_json(o.actual) for o in outcomes],
        [o.gap for o in outcomes],
        [o.met for o in outcomes],
        [o.score for o in outcomes],
        [o.weight for o in outcomes],
        [o.severity for o in outcomes],
        [_json(list(o.event_ids)) for o in outcomes],
        [o.opened_at for o in outcomes],
    )


async def write_health(
    conn: Conn, rows: Sequence[tuple[str, str, TouchpointHealth]], now: datetime
) -> None:
    if not rows:
        return
    await conn.execute(
        """
        INSERT INTO touchpoint_health AS h (customer_id, touchpoint, s, w, t_ref, outcomes,
            updated_at)
        SELECT c, t, s, w, r, n, $7 FROM unnest($1::text[], $2::text[], $3::float8[],
            $4::float8[], $5::timestamptz[], $6::int[]) AS u(c, t, s, w, r, n)
        ON CONFLICT (customer_id, touchpoint) DO UPDATE SET
            s = EXCLUDED.s, w = EXCLUDED.w, t_ref = EXCLUDED.t_ref,
            outcomes = EXCLUDED.outcomes, updated_at = EXCLUDED.updated_at
        """,
        [c for c, _, _ in rows],
        [t for _, t, _ in rows],
        [h.s for _, _, h in rows],
        [h.w for _, _, h in rows],
        [h.t_ref for _, _, h in rows],
        [h.outcomes for _, _, h in rows],
        now,
    )


@dataclass(frozen=True)
class JourneyRow:
    customer_id: str
    score: float | None
    band: str | None
    weakest_touchpoint: str | None
    as_of: datetime
    changed: bool


async def write_journeys(conn: Conn, rows: Sequence[JourneyRow], now: datetime) -> None:
    if not rows:
        return
    await conn.execute(
        """
        INSERT INTO journey_health AS j (customer_id, score, band, weakest_touchpoint, as_of,
            updated_at)
        SELECT c, s, b, w, a, $6 FROM unnest($1::text[], $2::float8[], $3::text[], $4::text[],
            $5::timestamptz[]) AS u(c, s, b, w, a)
        ON CONFLICT (customer_id) DO UPDATE SET
            score = EXCLUDED.score, band = EXCLUDED.band,
            weakest_touchpoint = EXCLUDED.weakest_touchpoint,
            as_of = GREATEST(j.as_of, EXCLUDED.as_of), updated_at = EXCLUDED.updated_at
        """,
        [r.customer_id for r in rows],
        [r.score for r in rows],
        [r.band for r in rows],
        [r.weakest_touchpoint for r in rows],
        [r.as_of for r in rows],
        now,
    )
    changed = [r for r in rows if r.changed]
    if changed:
        await conn.execute(
            """
            INSERT INTO journey_health_history (customer_id, at, score, band)
            SELECT c, $4, s, b FROM unnest($1::text[], $2::float8[], $3::text[]) AS u(c, s, b)
            """,
            [r.customer_id for r in changed],
            [r.score for r in changed],
            [r.band for r in changed],
            now,
        )


async def write_deadlines(conn: Conn, deadlines: Sequence[Deadline]) -> None:
    if not deadlines:
        return
    await conn.execute(
        """
        INSERT INTO deadline AS d (customer_id, promise_id, journey_key, opened_at, due_at,
            opening_event_ids, catalogue_version, touchpoint, tolerance_hours, weight,
            breach_weight, severity, state, closed_at, fulfilled_by)
        SELECT c, p, j, o, du, ARRAY(SELECT jsonb_array_elements_text(ids::jsonb)), v, t, tol,
               w, bw, sev, st, cl, fb
        FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[],
                    $6::text[], $7::text[], $8::text[], $9::float8[], $10::float8[],
                    $11::float8[], $12::text[], $13::text[], $14::timestamptz[], $15::text[])
             AS u(c, p, j, o, du, ids, v, t, tol, w, bw, sev, st, cl, fb)
        ON CONFLICT (customer_id, promise_id, journey_key) DO UPDATE SET
            opened_at = EXCLUDED.opened_at, due_at = EXCLUDED.due_at,
            opening_event_ids = EXCLUDED.opening_event_ids,
            catalogue_version = EXCLUDED.catalogue_version, touchpoint = EXCLUDED.touchpoint,
            tolerance_hours = EXCLUDED.tolerance_hours, weight = EXCLUDED.weight,
            breach_weight = EXCLUDED.breach_weight, severity = EXCLUDED.severity,
            state = EXCLUDED.state, closed_at = EXCLUDED.closed_at,
            fulfilled_by = EXCLUDED.fulfilled_by
        """,
        [d.customer_id for d in deadlines],
        [d.promise_id for d in deadlines],
        [d.journey_key for d in deadlines],
        [d.opened_at for d in deadlines],
        [d.due_at for d in deadlines],
        [_json(list(d.opening_event_ids)) for d in deadlines],
        [d.catalogue_version for d in deadlines],
        [d.touchpoint for d in deadlines],
        [d.tolerance_hours for d in deadlines],
        [d.weight for d in deadlines],
        [d.breach_weight for d in deadlines],
        [d.severity for d in deadlines],
        [d.state for d in deadlines],
        [d.closed_at for d in deadlines],
        [d.fulfilled_by for d in deadlines],
    )


async def write_early_fulfilments(
    conn: Conn, changes: Sequence[tuple[DeadlineRef, Fulfilment | None]]
) -> None:
    """Remember early fulfilments (a value) and forget settled ones (None)."""
    keep = [(r, f) for r, f in changes if f is not None]
    drop = [r for r, f in changes if f is None]
    if keep:
        await conn.execute(
            """
            INSERT INTO early_fulfilment (customer_id, promise_id, journey_key, occurred_at,
                event_ref)
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[],
                                 $5::text[])
            ON CONFLICT (customer_id, promise_id, journey_key) DO UPDATE SET
                occurred_at = EXCLUDED.occurred_at, event_ref = EXCLUDED.event_ref
            """,
            [r.customer_id for r, _ in keep],
            [r.promise_id for r, _ in keep],
            [r.journey_key for r, _ in keep],
            [f.occurred_at for _, f in keep],
            [f.event_ref for _, f in keep],
        )
    if drop:
        await conn.execute(
            """
            DELETE FROM early_fulfilment f
            USING unnest($1::text[], $2::text[], $3::text[]) AS k(c, p, j)
            WHERE f.customer_id = k.c AND f.promise_id = k.p AND f.journey_key = k.j
            """,
            [r.customer_id for r in drop],
            [r.promise_id for r in drop],
            [r.journey_key for r in drop],
        )


def breach_window_start(events_at: Iterable[datetime], within_days: float) -> datetime:
    return min(events_at) - timedelta(days=within_days)

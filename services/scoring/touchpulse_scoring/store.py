"""Scoring's SQL: load the state of a set of customers, write back what changed.

Every function runs inside the caller's transaction. Customers are locked first (advisory
transaction locks, taken in one sorted order by the consumer and the deadline sweep
alike), so two writers never interleave on one customer and never deadlock.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import orjson
from aiokafka import TopicPartition

from touchpulse_scoring.deadline_table import deadline_from_row
from touchpulse_scoring.dlq import MAX_DETAIL, DeadLetter
from touchpulse_scoring.domain import (
    EXPLAIN_WINDOW,
    NO_GUARD,
    NO_PROFILE,
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
from touchpulse_scoring.windows import KeptInterventions
from touchpulse_shared.contract import ExperienceEventV1
from touchpulse_shared.db import Conn
from touchpulse_shared.db.quality import Tally, clean_text, counts_upsert


@dataclass
class CustomerState:
    """What the pure domain needs to know about one customer for one batch."""

    # The shared immutable default, not one built (and validated) per customer and batch.
    profile: CustomerProfile = NO_PROFILE
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
    #: The journey row's revision (its xmin): what a kept explanation window is checked by.
    revision: str | None = None


async def load_erasures(conn: Conn, customers: Iterable[str]) -> dict[str, datetime]:
    """When each of these customers was erased, for those that were."""
    rows = await conn.fetch(
        """
        SELECT customer_id, erased_at FROM erased_customer
        WHERE customer_id = ANY($1::text[])
        """,
        sorted(set(customers)),
    )
    return {r["customer_id"]: r["erased_at"] for r in rows}


async def load_profiles(conn: Conn, customers: Iterable[str]) -> dict[str, CustomerProfile]:
    """The profiles of these customers that the CRM sent (others judge as NO_PROFILE)."""
    rows = await conn.fetch(
        """
        SELECT customer_id, segment, customer_since, value, reach FROM customer_profile
        WHERE customer_id = ANY($1::text[])
        """,
        sorted(set(customers)),
    )
    return {
        r["customer_id"]: CustomerProfile(
            segment=r["segment"],
            customer_since=r["customer_since"],
            value=r["value"],
            reach=r["reach"],
        )
        for r in rows
    }


async def claim_events(
    conn: Conn, items: Sequence[tuple[Any, ExperienceEventV1]]
) -> set[tuple[str, str]]:
    """Record these events (each with its Kafka record) as processed; return the identities
    not processed before. The dedupe on ``(source, event_id)``, in the batch transaction."""
    rows = await conn.fetch(
        """
        INSERT INTO processed_event (source, event_id, customer_id, topic, partition, "offset")
        SELECT r->>0, r->>1, r->>2, r->>3, (r->>4)::int, (r->>5)::bigint
        FROM jsonb_array_elements($1::jsonb) AS r
        ON CONFLICT DO NOTHING
        RETURNING source, event_id
        """,
        _rows(
            [e.source, e.event_id, e.customer_id, r.topic, r.partition, r.offset] for r, e in items
        ),
    )
    return {(r["source"], r["event_id"]) for r in rows}


async def release_events(conn: Conn, identities: Sequence[tuple[str, str]]) -> None:
    """Forget that these events were processed (claimed, then dead-lettered when judged)."""
    if not identities:
        return
    await conn.execute(
        """
        DELETE FROM processed_event
        WHERE (source, event_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
        """,
        [source for source, _ in identities],
        [event_id for _, event_id in identities],
    )


async def record_feedback(
    conn: Conn, quality: Tally, letters: Sequence[DeadLetter], now: datetime
) -> None:
    """Add a batch's per-source counters and store its dead letters for the api, in ONE
    statement of the batch transaction (none for a batch with nothing to count).

    Exactly once with the batch: a redelivered batch is dropped by the offset check before
    it reaches here, and a dead letter is keyed by where it was read besides.
    """
    if not letters:
        if quality:
            await conn.execute(counts_upsert(1), quality.as_json())
        return
    await conn.execute(
        f"""
        WITH letters AS (
            INSERT INTO dead_letter (topic, partition, "offset", source, reason, detail,
                                     event_id, event_type, customer_id, dead_lettered_at)
            SELECT r->>0, (r->>1)::int, (r->>2)::bigint, r->>3, r->>4, r->>5, r->>6, r->>7,
                   r->>8, $3
            FROM jsonb_array_elements($1::jsonb) AS r
            ON CONFLICT DO NOTHING
        )
        {counts_upsert(2)}
        """,  # noqa: S608 - the counters' statement is fixed text, never input
        _rows(
            [
                clean_text(d.topic, 249),
                d.partition,
                d.offset,
                d.source,
                clean_text(d.reason, 64),
                clean_text(d.detail, MAX_DETAIL),
                d.event_id,
                d.event_type,
                d.customer_id,
            ]
            for d in letters
        ),
        quality.as_json(),
        now,
    )


async def load_state(
    conn: Conn,
    customers: Sequence[str],
    *,
    deadline_refs: Iterable[DeadlineRef],
    breach_window_start: datetime,
    recovery_margin: float,
    kept: KeptInterventions | None = None,
) -> dict[str, CustomerState]:
    """Each customer's state for one batch, read under its lock. ``kept``: interventions
    decoded in earlier batches, reused where the row's version is the same."""
    decode = (
        intervention_from_row
        if kept is None
        else partial(kept.decode, decode=intervention_from_row)
    )
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
        """
        SELECT customer_id, score, as_of, xmin::text AS revision FROM journey_health
        WHERE customer_id = ANY($1::text[])
        """,
        customers,
    ):
        state = states[row["customer_id"]]
        state.journey_score = row["score"]
        state.as_of = row["as_of"]
        state.revision = row["revision"]
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
        SELECT *, xmin::text AS revision FROM intervention
        WHERE customer_id = ANY($1::text[]) AND state IN ('open', 'acknowledged')
        """,
        customers,
    ):
        states[row["customer_id"]].current = decode(row)
    # Each customer's newest closed case only, and the best health since it closed. Taken
    # per customer (LATERAL ... LIMIT 1 on intervention_closed): with DISTINCT ON the best
    # health was computed for every closed case of the customer, each over all the history
    # since that case closed, so the read grew with the square of a customer's past.
    for row in await conn.fetch(
        """
        SELECT i.*,
            (SELECT max(h.score) FROM journey_health_history h
              WHERE h.customer_id = i.customer_id AND h.at > i.closed_at) AS best_since
        FROM unnest($1::text[]) AS c(id)
        CROSS JOIN LATERAL (
            SELECT *, xmin::text AS revision FROM intervention
            WHERE customer_id = c.id AND state IN ('resolved', 'expired')
            ORDER BY closed_at DESC, intervention_id DESC
            LIMIT 1
        ) i
        """,
        customers,
    ):
        closed = decode(row)
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


def _rows(rows: Iterable[Sequence[Any]]) -> str:
    """A batch's rows for one statement as one JSON array of arrays (read back in SQL with
    ``jsonb_array_elements``): asyncpg encodes a dozen parallel arrays element by element,
    with two abstract-class checks per string, at four times the client CPU per row (and
    PostgreSQL takes the JSON no slower). Times in UTC with ``Z``, exact to the microsecond;
    floats in their shortest exact form."""
    return orjson.dumps(list(rows), option=orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC).decode()


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_UTC_Z).decode()


#: Decoded ``expected`` values by their stored JSON: a catalogue has a few dozen (promise and
#: segment targets), and the explanation windows kept in memory hold many outcomes each, so
#: one shared immutable object per value saves a decode and its memory per outcome read.
_EXPECTED: dict[str, Expected] = {}
_EXPECTED_MAX = 4096


def _expected(raw: str) -> Expected:
    found = _EXPECTED.get(raw)
    if found is None:
        if len(_EXPECTED) >= _EXPECTED_MAX:
            _EXPECTED.clear()  # unusual targets (a catalogue in flux): start over, bounded
        data = orjson.loads(raw)
        found = Expected(op=data["op"], target=data["target"], unit=data["unit"])
        _EXPECTED[raw] = found
    return found


def outcome_from_row(row: Any) -> Outcome:
    # The names repeated on every outcome (promise, touchpoint, catalogue version) are
    # interned: one string each instead of a copy per outcome in the kept windows.
    return Outcome(
        outcome_key=row["outcome_key"],
        customer_id=row["customer_id"],
        promise_id=sys.intern(row["promise_id"]),
        catalogue_version=sys.intern(row["catalogue_version"]),
        touchpoint=sys.intern(row["touchpoint"]),
        occurred_at=row["occurred_at"],
        expected=_expected(row["expected"]),
        actual=orjson.loads(row["actual"]),
        gap=row["gap"],
        met=row["met"],
        score=row["score"],
        weight=row["weight"],
        severity=row["severity"],
        event_ids=tuple(row["event_ids"]),
        opened_at=row["opened_at"],
    )


async def load_outcomes_by_key(conn: Conn, keys: Iterable[tuple[str, str]]) -> list[Outcome]:
    """The outcomes standing under these (customer, outcome key) pairs, where any stands:
    what an outcome about to be written would supersede."""
    ordered = sorted(set(keys))
    if not ordered:
        return []
    return [
        outcome_from_row(row)
        for row in await conn.fetch(
            """
            SELECT o.* FROM outcome o
            JOIN unnest($1::text[], $2::text[]) AS k(c, key)
              ON o.customer_id = k.c AND o.outcome_key = k.key
            """,
            [c for c, _ in ordered],
            [k for _, k in ordered],
        )
    ]


async def load_watermarks(conn: Conn, group: str, topic: str) -> dict[int, datetime]:
    """How far in event time each partition of ``topic`` is applied by ``group``."""
    rows = await conn.fetch(
        """
        SELECT partition, watermark FROM consumer_offset
        WHERE consumer_group = $1 AND topic = $2
        """,
        group,
        topic,
    )
    return {r["partition"]: r["watermark"] for r in rows}


async def load_due_deadlines(conn: Conn, now: datetime, limit: int) -> list[Any]:
    """Open deadlines past due, oldest first, read without locks (the sweep re-reads them
    under its customers' locks)."""
    rows: list[Any] = await conn.fetch(
        """
        SELECT customer_id, promise_id, journey_key, due_at FROM deadline
        WHERE state = 'open' AND due_at < $1 ORDER BY due_at LIMIT $2
        """,
        now,
        limit,
    )
    return rows


async def unacknowledged_customers(conn: Conn, cutoff: datetime) -> list[str]:
    """Customers with an open intervention opened at or before ``cutoff`` (no locks)."""
    rows = await conn.fetch(
        "SELECT customer_id FROM intervention WHERE state = 'open' AND opened_at <= $1 LIMIT 500",
        cutoff,
    )
    return sorted({r["customer_id"] for r in rows})


async def load_unacknowledged(
    conn: Conn, customers: Sequence[str], cutoff: datetime
) -> list[Intervention]:
    """Their open interventions opened at or before ``cutoff``, re-read under their locks."""
    return [
        intervention_from_row(row)
        for row in await conn.fetch(
            """
            SELECT * FROM intervention
            WHERE customer_id = ANY($1::text[]) AND state = 'open' AND opened_at <= $2
            """,
            customers,
            cutoff,
        )
    ]


async def follow_up_customers(conn: Conn, cutoff: datetime) -> list[str]:
    """Customers with an intervention resolved by ``cutoff`` and no follow-up yet."""
    rows = await conn.fetch(
        """
        SELECT customer_id FROM intervention
        WHERE state = 'resolved' AND follow_up_at IS NULL AND resolved_at <= $1 LIMIT 500
        """,
        cutoff,
    )
    return sorted({r["customer_id"] for r in rows})


async def load_follow_ups(
    conn: Conn, customers: Sequence[str], cutoff: datetime
) -> list[tuple[Intervention, float | None]]:
    """Those interventions, re-read under the locks, each with the customer's health now."""
    return [
        (intervention_from_row(row), row["health_now"])
        for row in await conn.fetch(
            """
            SELECT i.*, j.score AS health_now FROM intervention i
            LEFT JOIN journey_health j USING (customer_id)
            WHERE i.customer_id = ANY($1::text[]) AND i.state = 'resolved'
              AND i.follow_up_at IS NULL AND i.resolved_at <= $2
            """,
            customers,
            cutoff,
        )
    ]


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
            -- Code-point order, as the explanation's window orders in Python.
            ORDER BY occurred_at DESC, outcome_key COLLATE "C" DESC LIMIT $2
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


# --- writes -----------------------------------------------------------------------------


async def write_outcomes(conn: Conn, outcomes: Sequence[Outcome]) -> None:
    if not outcomes:
        return
    await conn.execute(
        """
        INSERT INTO outcome AS o (customer_id, outcome_key, promise_id, catalogue_version,
            touchpoint, occurred_at, expected, actual, gap, met, score, weight, severity,
            event_ids, opened_at)
        SELECT r->>0, r->>1, r->>2, r->>3, r->>4, (r->>5)::timestamptz, r->6, r->7,
               -- gap >= 0 is checked by the domain: JSON's null can only be +infinity.
               coalesce((r->>8)::float8, 'Infinity'), (r->>9)::bool, (r->>10)::float8,
               (r->>11)::float8, r->>12, ARRAY(SELECT jsonb_array_elements_text(r->13)),
               (r->>14)::timestamptz
        FROM jsonb_array_elements($1::jsonb) AS r
        ON CONFLICT (customer_id, outcome_key) DO UPDATE SET
            promise_id = EXCLUDED.promise_id, catalogue_version = EXCLUDED.catalogue_version,
            touchpoint = EXCLUDED.touchpoint, occurred_at = EXCLUDED.occurred_at,
            expected = EXCLUDED.expected, actual = EXCLUDED.actual, gap = EXCLUDED.gap,
            met = EXCLUDED.met, score = EXCLUDED.score, weight = EXCLUDED.weight,
            severity = EXCLUDED.severity, event_ids = EXCLUDED.event_ids,
            opened_at = EXCLUDED.opened_at, recorded_at = now()
        """,
        _rows(
            [
                o.customer_id,
                o.outcome_key,
                o.promise_id,
                o.catalogue_version,
                o.touchpoint,
                o.occurred_at,
                {"op": o.expected.op, "target": o.expected.target, "unit": o.expected.unit},
                o.actual,
                o.gap,
                o.met,
                o.score,
                o.weight,
                o.severity,
                o.event_ids,
                o.opened_at,
            ]
            for o in outcomes
        ),
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
        SELECT r->>0, r->>1, (r->>2)::float8, (r->>3)::float8, (r->>4)::timestamptz,
               (r->>5)::int, $2
        FROM jsonb_array_elements($1::jsonb) AS r
        ON CONFLICT (customer_id, touchpoint) DO UPDATE SET
            s = EXCLUDED.s, w = EXCLUDED.w, t_ref = EXCLUDED.t_ref,
            outcomes = EXCLUDED.outcomes, updated_at = EXCLUDED.updated_at
        """,
        _rows([c, t, h.s, h.w, h.t_ref, h.outcomes] for c, t, h in rows),
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


async def write_journeys(conn: Conn, rows: Sequence[JourneyRow], now: datetime) -> dict[str, str]:
    """Upsert journey rows; return each row's new revision (this transaction's id)."""
    if not rows:
        return {}
    written = await conn.fetch(
        """
        INSERT INTO journey_health AS j (customer_id, score, band, weakest_touchpoint, as_of,
            updated_at)
        SELECT r->>0, (r->>1)::float8, r->>2, r->>3, (r->>4)::timestamptz, $2
        FROM jsonb_array_elements($1::jsonb) AS r
        ON CONFLICT (customer_id) DO UPDATE SET
            score = EXCLUDED.score, band = EXCLUDED.band,
            weakest_touchpoint = EXCLUDED.weakest_touchpoint,
            as_of = GREATEST(j.as_of, EXCLUDED.as_of), updated_at = EXCLUDED.updated_at
        RETURNING customer_id, xmin::text AS revision
        """,
        _rows([r.customer_id, r.score, r.band, r.weakest_touchpoint, r.as_of] for r in rows),
        now,
    )
    changed = [r for r in rows if r.changed]
    if changed:
        await conn.execute(
            """
            INSERT INTO journey_health_history (customer_id, at, score, band)
            SELECT r->>0, $2, (r->>1)::float8, r->>2 FROM jsonb_array_elements($1::jsonb) AS r
            """,
            _rows([r.customer_id, r.score, r.band] for r in changed),
            now,
        )
    return {r["customer_id"]: r["revision"] for r in written}


async def write_deadlines(conn: Conn, deadlines: Sequence[Deadline]) -> None:
    if not deadlines:
        return
    await conn.execute(
        """
        INSERT INTO deadline AS d (customer_id, promise_id, journey_key, opened_at, due_at,
            opening_event_ids, catalogue_version, touchpoint, tolerance_hours, weight,
            breach_weight, severity, state, closed_at, fulfilled_by)
        SELECT r->>0, r->>1, r->>2, (r->>3)::timestamptz, (r->>4)::timestamptz,
               ARRAY(SELECT jsonb_array_elements_text(r->5)), r->>6, r->>7,
               (r->>8)::float8, (r->>9)::float8, (r->>10)::float8, r->>11, r->>12,
               (r->>13)::timestamptz, r->>14
        FROM jsonb_array_elements($1::jsonb) AS r
        ON CONFLICT (customer_id, promise_id, journey_key) DO UPDATE SET
            opened_at = EXCLUDED.opened_at, due_at = EXCLUDED.due_at,
            opening_event_ids = EXCLUDED.opening_event_ids,
            catalogue_version = EXCLUDED.catalogue_version, touchpoint = EXCLUDED.touchpoint,
            tolerance_hours = EXCLUDED.tolerance_hours, weight = EXCLUDED.weight,
            breach_weight = EXCLUDED.breach_weight, severity = EXCLUDED.severity,
            state = EXCLUDED.state, closed_at = EXCLUDED.closed_at,
            fulfilled_by = EXCLUDED.fulfilled_by
        """,
        _rows(
            [
                d.customer_id,
                d.promise_id,
                d.journey_key,
                d.opened_at,
                d.due_at,
                d.opening_event_ids,
                d.catalogue_version,
                d.touchpoint,
                d.tolerance_hours,
                d.weight,
                d.breach_weight,
                d.severity,
                d.state,
                d.closed_at,
                d.fulfilled_by,
            ]
            for d in deadlines
        ),
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


# --- the batch's offsets, stored with its effect --------------------------------------


class Rewind(Exception):
    """Records are missing between the stored offset and the batch: seek back and refetch."""

    def __init__(self, positions: Mapping[TopicPartition, int]) -> None:
        super().__init__(f"rewinding {dict(positions)}")
        self.positions = dict(positions)


async def stored_offsets(
    conn: Conn, group: str, partitions: Sequence[TopicPartition]
) -> dict[TopicPartition, int]:
    rows = await conn.fetch(
        """
        SELECT topic, partition, next_offset FROM consumer_offset
        WHERE consumer_group = $1 AND (topic, partition) IN (
            SELECT * FROM unnest($2::text[], $3::int[]))
        """,
        group,
        [tp.topic for tp in partitions],
        [tp.partition for tp in partitions],
    )
    return {TopicPartition(r["topic"], r["partition"]): r["next_offset"] for r in rows}


async def claim_batch(conn: Conn, group: str, records: Sequence[Any]) -> list[Any]:
    """Inside the batch transaction: lock the offsets, keep only records not yet applied.

    The row locks make two members that both believe they own a partition (a rebalance in
    flight) take turns; the second then sees the first's offsets and drops the records.
    """
    first: dict[TopicPartition, int] = {}
    for record in records:
        first.setdefault(TopicPartition(record.topic, record.partition), record.offset)
    partitions = sorted(first)
    # A partition this group never read starts where the consumer was placed: its beginning.
    await conn.execute(
        """
        INSERT INTO consumer_offset (consumer_group, topic, partition, next_offset)
        SELECT $1, t, p, o FROM unnest($2::text[], $3::int[], $4::bigint[]) AS u(t, p, o)
        ON CONFLICT DO NOTHING
        """,
        group,
        [tp.topic for tp in partitions],
        [tp.partition for tp in partitions],
        [first[tp] for tp in partitions],
    )
    rows = await conn.fetch(
        """
        SELECT topic, partition, next_offset FROM consumer_offset
        WHERE consumer_group = $1 AND (topic, partition) IN (
            SELECT * FROM unnest($2::text[], $3::int[]))
        ORDER BY topic, partition
        FOR UPDATE
        """,
        group,
        [tp.topic for tp in partitions],
        [tp.partition for tp in partitions],
    )
    stored = {TopicPartition(r["topic"], r["partition"]): r["next_offset"] for r in rows}
    gaps = {tp: stored[tp] for tp, offset in first.items() if offset > stored[tp]}
    if gaps:
        # The consumer was positioned past what was applied (e.g. fetching began before the
        # positions were restored, aiokafka #738): go back rather than skip.
        raise Rewind(gaps)
    return [r for r in records if r.offset >= stored[TopicPartition(r.topic, r.partition)]]


async def store_offsets(
    conn: Conn, group: str, records: Sequence[Any]
) -> dict[TopicPartition, int]:
    nexts: dict[TopicPartition, int] = {}
    newest: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        nexts[tp] = max(nexts.get(tp, 0), record.offset + 1)
        newest[tp] = max(newest.get(tp, 0), record.timestamp)
    await conn.execute(
        """
        UPDATE consumer_offset AS c SET next_offset = u.n, updated_at = now(),
            watermark = greatest(c.watermark, to_timestamp(u.ms / 1000.0))
        FROM unnest($2::text[], $3::int[], $4::bigint[], $5::bigint[]) AS u(t, p, n, ms)
        WHERE c.consumer_group = $1 AND c.topic = u.t AND c.partition = u.p
          AND c.next_offset < u.n
        """,
        group,
        [tp.topic for tp in nexts],
        [tp.partition for tp in nexts],
        list(nexts.values()),
        [newest[tp] for tp in nexts],
    )
    return nexts


async def mark_caught_up(
    conn: Conn, group: str, partitions: Sequence[TopicPartition], at: datetime
) -> None:
    """These partitions have nothing unapplied: they are applied up to ``at``."""
    await conn.execute(
        """
        UPDATE consumer_offset AS c SET watermark = greatest(c.watermark, $4)
        FROM unnest($2::text[], $3::int[]) AS u(t, p)
        WHERE c.consumer_group = $1 AND c.topic = u.t AND c.partition = u.p
        """,
        group,
        [tp.topic for tp in partitions],
        [tp.partition for tp in partitions],
        at,
    )


async def skip_to(conn: Conn, group: str, tp: TopicPartition, offset: int) -> None:
    """Move a partition's stored next offset forward to ``offset`` (records before it were
    deleted by retention before they were applied: reported as data lost)."""
    await conn.execute(
        """
        UPDATE consumer_offset SET next_offset = $4, updated_at = now()
        WHERE consumer_group = $1 AND topic = $2 AND partition = $3
          AND next_offset < $4
        """,
        group,
        tp.topic,
        tp.partition,
        offset,
    )


# --- catalogue versions ----------------------------------------------------------------------

# Any fixed 64-bit number: "recording the catalogue in effect" among advisory locks.
_CATALOGUE_LOCK = 0x636174616C67_01


@dataclass(frozen=True, slots=True)
class CatalogueRecorded:
    """What :func:`record_catalogue` found and did."""

    #: A new period began (False: this catalogue was already the one in effect).
    began: bool
    #: Earlier catalogues with this version string but other content (an edit that forgot
    #: to change the version): outcomes naming the version are ambiguous between them.
    version_reused: bool


async def record_catalogue(
    conn: Conn, *, version: str, content_hash: str, content: str, now: datetime
) -> CatalogueRecorded:
    """Make this catalogue the one in ``catalogue_version`` that is in effect; in the caller's
    transaction.

    Idempotent: a scoring member restarting on the catalogue in effect, or a second member
    loading it after the first, changes nothing. Otherwise the current period ends at
    ``now`` and this catalogue's begins. Members serialise on an advisory lock (the
    partial unique index would refuse a second open row anyway: the lock makes the loser
    wait and then find the work done rather than fail).
    """
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _CATALOGUE_LOCK)
    current = await conn.fetchrow(
        "SELECT id, content_hash, came_into_effect FROM catalogue_version"
        " WHERE went_out_of_effect IS NULL"
    )
    if current is not None and current["content_hash"] == content_hash:
        return CatalogueRecorded(began=False, version_reused=False)
    reused = await conn.fetchval(
        "SELECT EXISTS (SELECT FROM catalogue_version WHERE version = $1 AND content_hash <> $2)",
        version,
        content_hash,
    )
    if current is not None:
        # A clock behind the current period's start (another member's) never makes a period
        # end before it began, nor the periods overlap.
        now = max(now, current["came_into_effect"])
        await conn.execute(
            "UPDATE catalogue_version SET went_out_of_effect = $2 WHERE id = $1",
            current["id"],
            now,
        )
    await conn.execute(
        "INSERT INTO catalogue_version (version, content_hash, content, came_into_effect)"
        " VALUES ($1, $2, $3, $4)",
        version,
        content_hash,
        content,
        now,
    )
    return CatalogueRecorded(began=True, version_reused=bool(reused))

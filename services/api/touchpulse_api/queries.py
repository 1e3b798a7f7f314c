"""The api's SQL: every statement its customer, intervention and organisation routes run.

Routes call these with a connection and get rows or small typed values back; they hold no
SQL of their own (the webhooks keep theirs in ``webhooks/store.py``, keys theirs in
``touchpulse_shared.auth``). What the api writes beside scoring — the customer lock, outbox
rows, the intervention table — comes from the one definition both services use
(``touchpulse_shared.db``, ``touchpulse_scoring.intervention_table``), never from scoring's
batch storage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from touchpulse_scoring.domain import (
    EXPLAIN_WINDOW,
    Action,
    Expected,
    Intervention,
    Outcome,
    TouchpointHealth,
)
from touchpulse_scoring.intervention_table import intervention_from_row, record_actions
from touchpulse_shared.contract.profiles import (
    from_row,
    profile_outbox_row,
    tombstone_outbox_row,
)
from touchpulse_shared.db import Conn
from touchpulse_shared.db.locks import lock_customers
from touchpulse_shared.db.outbox import insert_outbox, outbox_row
from touchpulse_shared.settings import Settings

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _instant(microseconds: int) -> datetime:
    """An instant the health read sent as microseconds since the epoch: exact, and the same
    ``datetime`` (UTC) asyncpg decodes a ``timestamptz`` to, whatever the session's TimeZone
    (``to_json`` of a timestamptz would print it in that zone)."""
    return _EPOCH + timedelta(microseconds=microseconds)


# --- the health read ---------------------------------------------------------------------

# One round trip: the journey row, whether the customer is known at all, and four
# aggregates. The outcomes are the explanation's window (the newest EXPLAIN_WINDOW, ordered
# as scoring orders them) and of those only the breaches: explain() passes over kept
# promises, so they are neither sent nor decoded. Touchpoint rows come in the order the
# six-query read read them (none asked), so sums over them run in the same order.
# Timestamps inside the aggregates travel as microseconds since the epoch (see _instant).
#
# The touchpoint states and the breaches are what the explanation is computed from, and
# they change only with a write of the journey row (every writer of a customer's outcomes
# or touchpoint health writes that row in the same transaction; erasure deletes it): the
# row's revision (its xmin) says whether the explanation the api kept from an earlier read
# still holds. The caller passes the revision it kept ($4, NULL for none); ``stale`` is
# true unless the row is still at it, and only then are the two aggregates built and sent
# (a scalar subquery in a CASE branch not taken is never run).
_HEALTH = """
SELECT j.score, j.band, j.weakest_touchpoint, j.as_of, j.updated_at,
       j.xmin::text AS revision, k.stale,
       j.customer_id IS NOT NULL
           OR EXISTS (SELECT FROM customer_profile WHERE customer_id = $1) AS known,
       CASE WHEN k.stale THEN
       -- In name order: the answer's bytes must not depend on the plan (a prepared,
       -- generic plan returned the rows in another order than a fresh one).
       (SELECT json_agg(json_build_array(
                   touchpoint, s, w, (extract(epoch FROM t_ref) * 1000000)::int8, outcomes)
                   ORDER BY touchpoint COLLATE "C")
        FROM touchpoint_health WHERE customer_id = $1) END AS touchpoints,
       (SELECT json_agg(json_build_array((extract(epoch FROM at) * 1000000)::int8, score)
                        ORDER BY at)
        FROM journey_health_history WHERE customer_id = $1 AND at >= $2) AS trend,
       CASE WHEN k.stale THEN
       (SELECT json_agg(json_build_array(
                   outcome_key, promise_id, catalogue_version, touchpoint,
                   (extract(epoch FROM occurred_at) * 1000000)::int8, expected, actual, gap,
                   score, weight, severity, event_ids,
                   (extract(epoch FROM opened_at) * 1000000)::int8))
        -- The explanation's window in code-point order, as scoring reads it and Python
        -- orders it (a tie in time at the 200th outcome falls the same way everywhere).
        FROM (SELECT * FROM outcome WHERE customer_id = $1
              ORDER BY occurred_at DESC, outcome_key COLLATE "C" DESC LIMIT $3) AS recent
        WHERE NOT met) END AS breaches,
       (SELECT intervention_id FROM intervention
        WHERE customer_id = $1 AND state IN ('open', 'acknowledged')) AS open_intervention_id
FROM (VALUES (1)) AS one (n)
LEFT JOIN journey_health j ON j.customer_id = $1
CROSS JOIN LATERAL (
    SELECT $4::text IS NULL OR j.xmin::text IS DISTINCT FROM $4::text AS stale
) AS k
"""


@dataclass(frozen=True, slots=True)
class HealthRead:
    """What the health answer is computed from, read in one statement."""

    #: The journey row's columns; None for a customer scoring has not scored yet.
    score: float | None
    band: str | None
    weakest_touchpoint: str | None
    as_of: datetime | None
    updated_at: datetime | None
    #: The journey row's revision (its xmin); None without a row.
    revision: str | None
    #: The touchpoint states and the breaches among the explanation's window of newest
    #: outcomes; both None when the row is still at the revision the caller kept (then
    #: neither was read: what the caller derived from them at that revision holds).
    states: dict[str, TouchpointHealth] | None
    breaches: list[Outcome] | None
    trend: list[tuple[datetime, float | None]]
    open_intervention_id: str | None


async def read_health(
    conn: Conn, customer_id: str, *, trend_since: datetime, kept_revision: str | None = None
) -> HealthRead | None:
    """The customer's health inputs; None when neither scoring nor the CRM knows them.

    ``kept_revision``: the journey row's revision the caller holds an explanation for.
    """
    row = await conn.fetchrow(_HEALTH, customer_id, trend_since, EXPLAIN_WINDOW, kept_revision)
    assert row is not None  # noqa: S101 - one row from VALUES, whatever the join finds
    if not row["known"]:
        return None
    trend = row["trend"]
    states: dict[str, TouchpointHealth] | None = None
    breaches: list[Outcome] | None = None
    if row["stale"]:
        touchpoints = row["touchpoints"]
        states = {
            t: TouchpointHealth(s=s, w=w, t_ref=_instant(ref), outcomes=n)
            for t, s, w, ref, n in (orjson.loads(touchpoints) if touchpoints else ())
        }
        found = row["breaches"]
        breaches = [_breach(customer_id, b) for b in (orjson.loads(found) if found else ())]
    return HealthRead(
        score=row["score"],
        band=row["band"],
        weakest_touchpoint=row["weakest_touchpoint"],
        as_of=row["as_of"],
        updated_at=row["updated_at"],
        revision=row["revision"],
        states=states,
        breaches=breaches,
        trend=[(_instant(at), score) for at, score in (orjson.loads(trend) if trend else ())],
        open_intervention_id=row["open_intervention_id"],
    )


def _breach(customer_id: str, item: list[Any]) -> Outcome:
    (key, promise, version, touchpoint, at, expected, actual, gap, score, weight, severity) = item[
        :11
    ]
    event_ids, opened = item[11], item[12]
    return Outcome(
        outcome_key=key,
        customer_id=customer_id,
        promise_id=promise,
        catalogue_version=version,
        touchpoint=touchpoint,
        occurred_at=_instant(at),
        expected=Expected(op=expected["op"], target=expected["target"], unit=expected["unit"]),
        actual=actual,
        gap=gap,
        met=False,
        score=score,
        weight=weight,
        severity=severity,
        event_ids=tuple(event_ids),
        opened_at=None if opened is None else _instant(opened),
    )


# --- gaps and the at-risk list ------------------------------------------------------------


async def customer_gaps(
    conn: Conn,
    customer_id: str,
    *,
    touchpoint: str | None,
    promise: str | None,
    breaches_only: bool,
    since: datetime | None,
    until: datetime | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[asyncpg.Record]:
    """The customer's outcomes newest first, filtered, after the cursor's position."""
    rows: list[asyncpg.Record] = await conn.fetch(
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
        limit,
    )
    return rows


async def at_risk(
    conn: Conn,
    *,
    below: float,
    segment: str | None,
    touchpoint: str | None,
    new_customers: bool | None,
    open_intervention: bool | None,
    new_since: date,
    after: tuple[float, str] | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Customers under ``below``, by priority (an open case's, else one from the profile)."""
    rows: list[asyncpg.Record] = await conn.fetch(
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
        limit,
    )
    return rows


async def organisation_gaps(
    conn: Conn, *, since: datetime, until: datetime
) -> list[asyncpg.Record]:
    """Per touchpoint and promise in [since, until): events, breaches, gap percentiles."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT touchpoint, promise_id, count(*) AS events,
               count(*) FILTER (WHERE NOT met) AS breaches,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY gap) FILTER (WHERE NOT met)
                   AS median_gap,
               percentile_cont(0.9) WITHIN GROUP (ORDER BY gap) FILTER (WHERE NOT met)
                   AS p90_gap,
               count(DISTINCT customer_id) FILTER (WHERE NOT met) AS customers_affected
        FROM outcome WHERE occurred_at >= $1 AND occurred_at < $2
        GROUP BY touchpoint, promise_id
        """,
        since,
        until,
    )
    return rows


# --- profiles -----------------------------------------------------------------------------


async def read_profile(conn: Conn, customer_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM customer_profile WHERE customer_id = $1", customer_id
    )
    return row


async def write_profile(
    conn: Conn,
    customer_id: str,
    *,
    segment: str,
    customer_since: date | None,
    value: float,
    reach: float,
    topic: str,
) -> asyncpg.Record:
    """Create or replace a profile, with its record for the compacted profiles topic, in
    the caller's transaction; the row has ``created`` (true for a new profile)."""
    # Scoring's lock: a batch of this customer's events sees the profile before or after
    # this write, never beside it, and updated_at (the clock after the lock) tells replay
    # which of the customer's events were scored with it.
    await lock_customers(conn, [customer_id])
    row: asyncpg.Record | None = await conn.fetchrow(
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
        segment,
        customer_since,
        value,
        reach,
    )
    if row is None:
        row = await conn.fetchrow(
            "SELECT *, false AS created FROM customer_profile WHERE customer_id = $1",
            customer_id,
        )
    assert row is not None  # noqa: S101 - inserted, updated, or there unchanged
    await insert_outbox(conn, [profile_outbox_row(topic, from_row(row))])
    return row


# --- interventions ------------------------------------------------------------------------


async def list_interventions(
    conn: Conn,
    *,
    states: Sequence[str],
    min_priority: float | None,
    customer_id: str | None,
    after: tuple[float, str] | None,
    limit: int,
    awake_at: datetime | None = None,
) -> list[asyncpg.Record]:
    """Interventions in ``states`` by priority, each with its customer's health now; with
    ``awake_at``, none snoozed past that time."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT i.*, j.score AS health_now FROM intervention i
        LEFT JOIN journey_health j USING (customer_id)
        WHERE i.state = ANY($1::text[])
          AND ($2::float8 IS NULL OR i.priority >= $2)
          AND ($3::text IS NULL OR i.customer_id = $3)
          AND ($4::float8 IS NULL OR (i.priority, i.intervention_id) < ($4, $5))
          AND ($7::timestamptz IS NULL OR i.snoozed_until IS NULL OR i.snoozed_until <= $7)
        ORDER BY i.priority DESC, i.intervention_id DESC
        LIMIT $6
        """,
        list(states),
        min_priority,
        customer_id,
        None if after is None else after[0],
        None if after is None else after[1],
        limit,
        awake_at,
    )
    return rows


async def read_intervention(conn: Conn, intervention_id: str) -> asyncpg.Record | None:
    """One intervention with its customer's health now (``health_now``)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        """
        SELECT i.*, j.score AS health_now FROM intervention i
        LEFT JOIN journey_health j USING (customer_id) WHERE i.intervention_id = $1
        """,
        intervention_id,
    )
    return row


async def lock_intervention(
    conn: Conn, intervention_id: str
) -> tuple[Intervention, float | None] | None:
    """The intervention and its customer's health, read under the customer's lock (taken
    here, in the caller's transaction); None for no such intervention."""
    customer = await conn.fetchval(
        "SELECT customer_id FROM intervention WHERE intervention_id = $1", intervention_id
    )
    if customer is None:
        return None
    # The same lock scoring takes, so a batch never overwrites this move or vice versa.
    await lock_customers(conn, [customer])
    row = await conn.fetchrow(
        "SELECT * FROM intervention WHERE intervention_id = $1", intervention_id
    )
    assert row is not None  # noqa: S101 - locked and known to exist
    health: float | None = await conn.fetchval(
        "SELECT score FROM journey_health WHERE customer_id = $1", customer
    )
    return intervention_from_row(row), health


async def write_intervention_action(
    conn: Conn, topic: str, action: Action, intervention: Intervention
) -> None:
    """Store a workflow move with its history entry and its webhook and topic announcements
    (the customer locked by :func:`lock_intervention` in the same transaction)."""
    await record_actions(conn, topic, [(action, intervention)])


# --- erasure ------------------------------------------------------------------------------

# Each table holding anything about a customer, and what it is called in the answer.
_ERASED_TABLES = (
    ("customer_profile", "profile"),
    ("outcome", "outcomes"),
    ("touchpoint_health", "touchpoint_health"),
    ("journey_health", "journey_health"),
    ("journey_health_history", "health_history"),
    ("deadline", "deadlines"),
    ("early_fulfilment", "early_fulfilments"),
    ("processed_event", "processed_events"),
    ("webhook_outbox", "pending_webhooks"),
    ("webhook_delivery", "webhook_deliveries"),
    # Scoring stores the customer a dead letter is about, and never quotes it in the detail.
    ("dead_letter", "dead_letters"),
)


async def erase(
    conn: Conn, customer_id: str, *, now: datetime, settings: Settings
) -> dict[str, int]:
    """Remove everything about the customer and write the tombstones, in the caller's
    transaction and under the customer's lock; rows removed per kind of data."""
    removed: dict[str, int] = {}
    await lock_customers(conn, [customer_id])
    await conn.execute(
        """
        INSERT INTO erased_customer (customer_id, erased_at) VALUES ($1, $2)
        ON CONFLICT (customer_id) DO UPDATE SET erased_at = EXCLUDED.erased_at
        """,
        customer_id,
        now,
    )
    for table, label in _ERASED_TABLES:
        status = await conn.execute(
            f"DELETE FROM {table} WHERE customer_id = $1",  # noqa: S608 - fixed names
            customer_id,
        )
        removed[label] = int(status.split()[-1])
    interventions = [
        r["intervention_id"]
        for r in await conn.fetch(
            "DELETE FROM intervention WHERE customer_id = $1 RETURNING intervention_id",
            customer_id,
        )
    ]
    removed["interventions"] = len(interventions)
    # Unpublished records about the customer must not go out after the tombstones (nor a
    # dead-letter copy of one of their records, keyed by the customer as ingest wrote it).
    await conn.execute(
        """
        DELETE FROM kafka_outbox
        WHERE (topic = ANY($1::text[]) AND key = $2)
           OR (topic = $3 AND key = ANY($4::bytea[]))
        """,
        [settings.health_topic, settings.profiles_topic, settings.dead_letter_topic],
        customer_id.encode(),
        settings.interventions_topic,
        [i.encode() for i in interventions],
    )
    await insert_outbox(
        conn,
        [
            outbox_row(settings.health_topic, customer_id.encode(), None),
            tombstone_outbox_row(settings.profiles_topic, customer_id),
        ]
        + [outbox_row(settings.interventions_topic, i.encode(), None) for i in interventions],
    )
    return removed

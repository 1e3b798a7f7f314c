"""The desk's SQL: the queue, its counts, the live feed's cursor, the call list, the
back-test's profiles.

What the REST api already reads (health, profiles, a customer's interventions, the
organisation's gaps) the desk reads through ``touchpulse_api.queries``; only what the pages
need beyond it is here. The queue walks the partial indexes of migration 0010 (active
cases by priority, by assignee, by gap touchpoint).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

import asyncpg
import orjson

from touchpulse_scoring.domain import CustomerProfile
from touchpulse_shared.db import Conn

ACTIVE = ("open", "acknowledged")


class Scope(StrEnum):
    ALL = "all"
    MINE = "mine"
    UNASSIGNED = "unassigned"


@dataclass(frozen=True, slots=True)
class QueueFilter:
    scope: Scope = Scope.ALL
    segment: str | None = None
    touchpoint: str | None = None
    new_customers: bool = False
    overdue: bool = False


@dataclass(frozen=True, slots=True)
class QueueCounts:
    """Active cases per filter, each within the segment and touchpoint chosen."""

    all: int
    mine: int
    unassigned: int
    new_customers: int
    overdue: int


# The filters as SQL over `i` (intervention) and `p` (customer_profile), parameters:
# $1 segment, $2 touchpoint as a one-gap jsonb array, $3 me, $4 new since (date), $5 opened
# at or before this is overdue when still open, $6 now (a case snoozed past it is set aside).
_FROM = """
    FROM intervention i
    LEFT JOIN customer_profile p USING (customer_id)
"""
_WHERE = """
    WHERE i.state IN ('open', 'acknowledged')
      AND ($1::text IS NULL OR coalesce(p.segment, 'standard') = $1)
      AND ($2::jsonb IS NULL OR i.gaps @> $2::jsonb)
      AND (i.snoozed_until IS NULL OR i.snoozed_until <= $6::timestamptz)
"""
_NEW = "coalesce(p.customer_since >= $4::date, false)"
_OVERDUE = "(i.state = 'open' AND i.opened_at <= $5::timestamptz)"


def _touchpoint(value: str | None) -> str | None:
    if value is None:
        return None
    return orjson.dumps([{"touchpoint": value}]).decode()


async def queue_counts(
    conn: Conn, f: QueueFilter, *, me: str, new_since: date, overdue_at: datetime, now: datetime
) -> QueueCounts:
    row = await conn.fetchrow(
        f"""
        SELECT count(*) AS all,
               count(*) FILTER (WHERE i.assignee = $3) AS mine,
               count(*) FILTER (WHERE i.assignee IS NULL) AS unassigned,
               count(*) FILTER (WHERE {_NEW}) AS new_customers,
               count(*) FILTER (WHERE {_OVERDUE}) AS overdue
        {_FROM} {_WHERE}
        """,
        f.segment,
        _touchpoint(f.touchpoint),
        me,
        new_since,
        overdue_at,
        now,
    )
    assert row is not None  # noqa: S101 - an aggregate always answers one row
    return QueueCounts(
        all=row["all"],
        mine=row["mine"],
        unassigned=row["unassigned"],
        new_customers=row["new_customers"],
        overdue=row["overdue"],
    )


async def queue_page(
    conn: Conn,
    f: QueueFilter,
    *,
    me: str,
    new_since: date,
    overdue_at: datetime,
    now: datetime,
    offset: int,
    limit: int,
) -> list[asyncpg.Record]:
    """One page of active cases, highest priority first, with the customer's profile and
    health now."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""
        SELECT i.intervention_id, i.customer_id, i.state, i.priority, i.opened_at, i.version,
               i.acknowledged_at, i.assignee, i.gaps, i.triggers, i.health_at_open,
               coalesce(p.segment, 'standard') AS segment, p.customer_since, p.value,
               p.reach, j.score AS health_now, j.band,
               {_NEW} AS new_customer, {_OVERDUE} AS overdue
        {_FROM} LEFT JOIN journey_health j USING (customer_id)
        {_WHERE}
          AND ($7::text IS NULL
               OR ($7 = 'mine' AND i.assignee = $3)
               OR ($7 = 'unassigned' AND i.assignee IS NULL))
          AND (NOT $8::bool OR {_NEW})
          AND (NOT $9::bool OR {_OVERDUE})
        ORDER BY i.priority DESC, i.intervention_id DESC
        OFFSET $10 LIMIT $11
        """,
        f.segment,
        _touchpoint(f.touchpoint),
        me,
        new_since,
        overdue_at,
        now,
        None if f.scope is Scope.ALL else f.scope.value,
        f.new_customers,
        f.overdue,
        offset,
        limit,
    )
    return rows


async def queue_cursor(conn: Conn) -> str:
    """A value that changes whenever a case opens, moves or closes: the newest change and
    the number of active cases (a case deleted by erasure moves no updated_at)."""
    row = await conn.fetchrow(
        """
        SELECT (SELECT max(updated_at) FROM intervention) AS newest,
               (SELECT count(*) FROM intervention
                WHERE state IN ('open', 'acknowledged')) AS active
        """
    )
    assert row is not None  # noqa: S101 - one row from a SELECT without FROM
    newest = row["newest"]
    return f"{newest.isoformat() if newest else '-'}/{row['active']}"


async def segments(conn: Conn) -> list[str]:
    """The customers' segments (the filter's choices), with the default one.

    A skip scan along ``desk_customer_segment``: one index probe per distinct segment, where
    a DISTINCT over 100,000 profiles read them all (10 ms)."""
    rows = await conn.fetch(
        """
        WITH RECURSIVE s AS (
            SELECT min(segment) AS segment FROM customer_profile
            UNION ALL
            SELECT (SELECT min(segment) FROM customer_profile WHERE segment > s.segment)
            FROM s WHERE s.segment IS NOT NULL
        )
        SELECT segment FROM s WHERE segment IS NOT NULL
        UNION SELECT 'standard' ORDER BY 1
        """
    )
    return [r["segment"] for r in rows]


async def call_list(conn: Conn, *, limit: int) -> list[asyncpg.Record]:
    """Customers with an active case holding a critical breach, by the case's priority x
    value x reach (reach as 1 + ln(1 + reach), as the at-risk list weighs it)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT i.intervention_id, i.customer_id, i.priority, i.gaps, i.assignee, i.state,
               coalesce(p.segment, 'standard') AS segment, coalesce(p.value, 1) AS value,
               coalesce(p.reach, 0) AS reach, j.score AS health_now,
               i.priority * coalesce(p.value, 1) * (1 + ln(1 + coalesce(p.reach, 0)))
                   AS weight
        FROM intervention i
        LEFT JOIN customer_profile p USING (customer_id)
        LEFT JOIN journey_health j USING (customer_id)
        WHERE i.state IN ('open', 'acknowledged')
          AND i.gaps @> '[{"severity": "critical"}]'::jsonb
        ORDER BY weight DESC, i.intervention_id DESC
        LIMIT $1
        """,
        limit,
    )
    return rows


async def actions_helped(conn: Conn, *, since: datetime, until: datetime) -> list[asyncpg.Record]:
    """Health at opening versus at follow-up for cases followed up in [since, until): by
    the promise of their first gap, by outcome category (a case closed without one, or
    expired unowned, by its state), and by both. ``by`` says which grouping a row is
    ("promise", "outcome" or "both"); the other column is NULL in the first two."""
    # One scan with GROUPING SETS rather than three queries: the averages per promise and
    # per outcome are over the cases themselves, not averages of the pairs' averages.
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        WITH followed AS (
            SELECT coalesce(gaps -> 0 ->> 'promise_id', '(none)') AS promise_id,
                   coalesce(outcome_category, state) AS outcome,
                   health_at_open, follow_up_health
            FROM intervention
            WHERE follow_up_at >= $1 AND follow_up_at < $2 AND follow_up_health IS NOT NULL
        )
        SELECT CASE grouping(promise_id, outcome)
                   WHEN 0 THEN 'both' WHEN 1 THEN 'promise' ELSE 'outcome' END AS by,
               promise_id, outcome, count(*) AS cases,
               avg(health_at_open) AS health_at_open,
               avg(follow_up_health) AS health_at_follow_up
        FROM followed
        GROUP BY GROUPING SETS ((promise_id, outcome), (promise_id), (outcome))
        ORDER BY cases DESC, promise_id, outcome
        """,
        since,
        until,
    )
    return rows


async def backtest_profiles(
    conn: Conn, customers: Iterable[str]
) -> tuple[dict[str, CustomerProfile], dict[str, datetime]]:
    """For the back-test page: the profiles of these customers the CRM sent, and when each
    erased one was erased (events received before that were never applied)."""
    wanted = sorted(set(customers))
    profiles = {
        r["customer_id"]: CustomerProfile(
            segment=r["segment"],
            customer_since=r["customer_since"],
            value=r["value"],
            reach=r["reach"],
        )
        for r in await conn.fetch(
            """
            SELECT customer_id, segment, customer_since, value, reach FROM customer_profile
            WHERE customer_id = ANY($1::text[])
            """,
            wanted,
        )
    }
    erased = {
        r["customer_id"]: r["erased_at"]
        for r in await conn.fetch(
            """
            SELECT customer_id, erased_at FROM erased_customer
            WHERE customer_id = ANY($1::text[])
            """,
            wanted,
        )
    }
    return profiles, erased

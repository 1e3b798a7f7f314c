"""Figures about the whole state — health by segment, the intervention queue — for metrics.

Counters say what happened; these say where things stand now, which only PostgreSQL knows
(every scoring instance sees a part of the stream, but the state is shared). Each instance
reads them on a timer; dashboards take ``max`` across instances. One read is a few grouped
scans of ``journey_health`` and the open part of ``intervention``: cheap at a 15 s cadence
for millions of customers, and never on the event path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from touchpulse_scoring.domain.policy import InterventionPolicy
from touchpulse_shared.db import Conn

#: Band label of customers who have a journey row but no scored outcome yet.
UNSCORED = "none"
#: Customers without a CRM profile are judged as this segment (the profile's default).
DEFAULT_SEGMENT = "standard"
#: Score ranges for the distribution panel: ten points wide, 100 inside the last one.
SCORE_RANGES = tuple(f"{low}-{low + 10}" for low in range(0, 100, 10))


@dataclass(frozen=True)
class StateFigures:
    #: (segment, band) -> customers
    customers: dict[tuple[str, str], int] = field(default_factory=dict)
    #: (segment, score range) -> customers
    by_score: dict[tuple[str, str], int] = field(default_factory=dict)
    #: segment -> mean journey health of its scored customers
    mean_score: dict[str, float] = field(default_factory=dict)
    #: state (open, acknowledged) -> interventions
    interventions: dict[str, int] = field(default_factory=dict)
    #: open interventions past the acknowledgement service level
    overdue: int = 0
    #: age of the oldest open (unowned) intervention, 0 when there is none
    oldest_unacknowledged_s: float = 0.0


async def read_state_figures(
    conn: Conn, *, now: datetime, policy: InterventionPolicy
) -> StateFigures:
    rows = await conn.fetch(
        """
        SELECT COALESCE(p.segment, $1) AS segment,
               COALESCE(j.band, $2) AS band,
               -- LEAST ignores NULLs, so an unscored row would land in 90-100 without CASE.
               CASE WHEN j.score IS NOT NULL THEN LEAST(floor(j.score / 10), 9)::int END
                   AS decile,
               count(*) AS customers,
               COALESCE(sum(j.score), 0) AS score_sum
        FROM journey_health j LEFT JOIN customer_profile p USING (customer_id)
        GROUP BY 1, 2, 3
        """,
        DEFAULT_SEGMENT,
        UNSCORED,
    )
    customers: dict[tuple[str, str], int] = {}
    by_score: dict[tuple[str, str], int] = {}
    sums: dict[str, tuple[float, int]] = {}
    for row in rows:
        segment, band, n = row["segment"], row["band"], row["customers"]
        customers[segment, band] = customers.get((segment, band), 0) + n
        if row["decile"] is None:
            continue
        key = (segment, SCORE_RANGES[row["decile"]])
        by_score[key] = by_score.get(key, 0) + n
        total, count = sums.get(segment, (0.0, 0))
        sums[segment] = (total + row["score_sum"], count + n)

    # An aggregate without GROUP BY always returns exactly one row.
    (queue,) = await conn.fetch(
        """
        SELECT count(*) FILTER (WHERE state = 'open') AS open,
               count(*) FILTER (WHERE state = 'acknowledged') AS acknowledged,
               count(*) FILTER (WHERE state = 'open' AND opened_at <= $1) AS overdue,
               min(opened_at) FILTER (WHERE state = 'open') AS oldest_open
        FROM intervention WHERE state IN ('open', 'acknowledged')
        """,
        now - timedelta(hours=policy.acknowledge_within_hours),
    )
    oldest = queue["oldest_open"]
    return StateFigures(
        customers=customers,
        by_score=by_score,
        mean_score={s: total / count for s, (total, count) in sums.items()},
        interventions={"open": queue["open"], "acknowledged": queue["acknowledged"]},
        overdue=queue["overdue"],
        oldest_unacknowledged_s=max((now - oldest).total_seconds(), 0.0) if oldest else 0.0,
    )


async def read_backlogs(
    conn: Conn, *, now: datetime, policy: InterventionPolicy
) -> dict[str, tuple[int, float]]:
    """Per background loop: (items waiting for it, seconds the oldest has waited; 0 when
    none). Outbox rows since they were written; deadlines, expiries and follow-ups since
    they became due (the sweep may rightly wait for a partition's watermark, so an age of
    minutes under a backlog is normal; hours is not)."""
    expire_cutoff = now - timedelta(days=policy.expire_unacknowledged_days)
    follow_cutoff = now - timedelta(days=policy.follow_up_days)
    # The outbox's rows carry the database's time; the rest is judged on scoring's clock.
    rows = await conn.fetch(
        """
        SELECT 'outbox' AS loop, count(*) AS items,
               extract(epoch FROM clock_timestamp() - min(created_at))::float8 AS age
          FROM kafka_outbox
        UNION ALL
        SELECT 'deadline_sweep', count(*), extract(epoch FROM $1 - min(due_at))::float8
          FROM deadline WHERE state = 'open' AND due_at <= $1
        UNION ALL
        SELECT 'expiry', count(*), extract(epoch FROM $2 - min(opened_at))::float8
          FROM intervention WHERE state = 'open' AND opened_at <= $2
        UNION ALL
        SELECT 'follow_ups', count(*), extract(epoch FROM $3 - min(resolved_at))::float8
          FROM intervention
         WHERE state = 'resolved' AND follow_up_at IS NULL AND resolved_at <= $3
        """,
        now,
        expire_cutoff,
        follow_cutoff,
    )
    return {r["loop"]: (int(r["items"]), max(r["age"] or 0.0, 0.0)) for r in rows}

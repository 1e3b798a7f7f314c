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

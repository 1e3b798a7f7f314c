"""The state gauges: health by segment and the intervention queue, read from PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from touchpulse_scoring.domain.policy import InterventionPolicy
from touchpulse_scoring.metrics import ScoringMetrics
from touchpulse_scoring.state_figures import read_state_figures
from touchpulse_shared.db.migrate import migrate_url

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
POLICY = InterventionPolicy(acknowledge_within_hours=24)


@pytest.fixture
async def conn(fresh_database: str) -> AsyncIterator[asyncpg.Connection]:
    await migrate_url(fresh_database)
    connection = await asyncpg.connect(fresh_database)
    yield connection
    await connection.close()


async def _health(conn: asyncpg.Connection, customer: str, score: float | None) -> None:
    band = None if score is None else ("red" if score < 50 else "amber" if score < 75 else "green")
    await conn.execute(
        "INSERT INTO journey_health (customer_id, score, band, as_of, updated_at)"
        " VALUES ($1, $2, $3, $4, $4)",
        customer,
        score,
        band,
        NOW,
    )


async def _intervention(
    conn: asyncpg.Connection, customer: str, state: str, opened_hours_ago: float
) -> None:
    opened = NOW - timedelta(hours=opened_hours_ago)
    await conn.execute(
        """
        INSERT INTO intervention (intervention_id, customer_id, state, triggers, gaps, actions,
                                  priority, threshold, opened_at, updated_at)
        VALUES ($1, $2, $3, '[]', '[]', '{}', 1, 50, $4, $4)
        """,
        f"iv-{customer}",
        customer,
        state,
        opened,
    )


def _sample(metrics: ScoringMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


@pytest.mark.postgres
async def test_health_by_segment_and_band(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "INSERT INTO customer_profile (customer_id, segment) VALUES ('p1', 'premium'),"
        " ('p2', 'premium')"
    )
    await _health(conn, "p1", 30.0)
    await _health(conn, "p2", 90.0)
    await _health(conn, "s1", 55.0)  # no profile: the default segment
    await _health(conn, "s2", 100.0)
    await _health(conn, "s3", None)  # a journey row without a scored outcome

    figures = await read_state_figures(conn, now=NOW, policy=POLICY)
    metrics = ScoringMetrics(CollectorRegistry())
    metrics.set_state(figures, at=1.0)

    gauge = "touchpulse_journey_health_customers"
    assert _sample(metrics, gauge, segment="premium", band="red") == 1
    assert _sample(metrics, gauge, segment="premium", band="green") == 1
    assert _sample(metrics, gauge, segment="standard", band="amber") == 1
    assert _sample(metrics, gauge, segment="standard", band="green") == 1
    assert _sample(metrics, gauge, segment="standard", band="none") == 1
    assert _sample(metrics, gauge, segment="premium", band="amber") is None
    assert _sample(metrics, "touchpulse_journey_health_score_mean", segment="premium") == 60.0
    # The unscored customer does not drag the mean towards zero.
    assert _sample(metrics, "touchpulse_journey_health_score_mean", segment="standard") == 77.5
    ranges = "touchpulse_journey_health_score_range_customers"
    assert _sample(metrics, ranges, segment="premium", range="30-40") == 1
    assert _sample(metrics, ranges, segment="standard", range="90-100") == 1  # 100 included
    assert _sample(metrics, ranges, segment="standard", range="50-60") == 1

    # A segment that empties disappears instead of keeping its last figure.
    await conn.execute("DELETE FROM journey_health WHERE customer_id LIKE 'p%'")
    metrics.set_state(await read_state_figures(conn, now=NOW, policy=POLICY), at=2.0)
    assert _sample(metrics, gauge, segment="premium", band="red") is None
    assert _sample(metrics, "touchpulse_journey_health_score_mean", segment="premium") is None
    assert _sample(metrics, "touchpulse_scoring_state_refresh_timestamp_seconds") == 2.0


@pytest.mark.postgres
async def test_intervention_queue_and_overdue(conn: asyncpg.Connection) -> None:
    await _intervention(conn, "a", "open", opened_hours_ago=30)  # past the 24 h SLA
    await _intervention(conn, "b", "open", opened_hours_ago=2)
    await _intervention(conn, "c", "acknowledged", opened_hours_ago=48)  # owned: not overdue
    await _intervention(conn, "d", "resolved", opened_hours_ago=100)

    metrics = ScoringMetrics(CollectorRegistry())
    metrics.set_state(await read_state_figures(conn, now=NOW, policy=POLICY), at=1.0)

    assert _sample(metrics, "touchpulse_interventions_current", state="open") == 2
    assert _sample(metrics, "touchpulse_interventions_current", state="acknowledged") == 1
    assert _sample(metrics, "touchpulse_interventions_unacknowledged_overdue") == 1
    oldest = _sample(metrics, "touchpulse_interventions_oldest_unacknowledged_age_seconds")
    assert oldest == 30 * 3600

    await conn.execute("UPDATE intervention SET state = 'acknowledged' WHERE customer_id = 'a'")
    metrics.set_state(await read_state_figures(conn, now=NOW, policy=POLICY), at=2.0)
    assert _sample(metrics, "touchpulse_interventions_unacknowledged_overdue") == 0
    oldest = _sample(metrics, "touchpulse_interventions_oldest_unacknowledged_age_seconds")
    assert oldest == 2 * 3600


def test_lag_drops_partitions_that_moved_away() -> None:
    metrics = ScoringMetrics(CollectorRegistry())
    metrics.set_lag({0: 5, 1: 7})
    metrics.set_lag({1: 3})
    name = "touchpulse_scoring_consumer_lag_records"
    assert _sample(metrics, name, partition="0") is None
    assert _sample(metrics, name, partition="1") == 3


def test_acknowledgement_sla_must_be_shorter_than_expiry() -> None:
    with pytest.raises(ValueError, match="acknowledge_within_hours"):
        InterventionPolicy(acknowledge_within_hours=14 * 24, expire_unacknowledged_days=14)

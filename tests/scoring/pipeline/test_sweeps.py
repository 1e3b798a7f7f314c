"""Timers that fire without events never fire twice, even from two instances at once."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import asyncpg

from tests.scoring.pipeline.ledger import CATALOGUE, START, EngineRecord
from touchpulse_scoring.domain import acknowledge, resolve
from touchpulse_scoring.engine import (
    Engine,
    Report,
    Source,
    Topics,
    expire_interventions,
    record_follow_ups,
)
from touchpulse_scoring.intervention_table import (
    intervention_from_row,
    read_history,
    write_interventions,
)
from touchpulse_shared.contract import EVENT_ADAPTER, encode_record
from touchpulse_shared.db.migrate import migrate_url

TOPICS = Topics(health="h", interventions="i", dead_letters="d")


def _record(offset: int, **event: object) -> EngineRecord:
    encoded = encode_record(
        EVENT_ADAPTER.validate_python(event), producer="ingest", received_at=START
    )
    return EngineRecord("events", 0, offset, encoded.key, encoded.value, encoded.headers)


def _engine(now: datetime) -> Engine:
    return Engine(
        catalogue=lambda: CATALOGUE,
        topics=TOPICS,
        source=Source(group="g", topic="events", partitions=lambda: 1),
        clock=lambda: now,
    )


async def _applied_up_to(conn: asyncpg.Connection, at: datetime) -> None:
    """What the consumer records: the events partition is applied up to ``at``."""
    await conn.execute(
        """
        INSERT INTO consumer_offset (consumer_group, topic, partition, next_offset, watermark)
        VALUES ('g', 'events', 0, 1, $1)
        ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET watermark = $1
        """,
        at,
    )


async def _in_transaction(url: str, engine: Engine) -> Report:
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            return await engine.sweep(conn)
    finally:
        await conn.close()


async def test_two_sweeps_at_once_record_one_breach(fresh_database: str) -> None:
    await migrate_url(fresh_database)
    conn = await asyncpg.connect(fresh_database)
    try:
        async with conn.transaction():
            await _engine(START).handle(
                conn,
                [
                    _record(
                        0,
                        event_id="o-1",
                        source="shop",
                        customer_id="S-1",
                        touchpoint="sales",
                        type="order.placed",
                        occurred_at=START,
                        journey_id="order-1",
                        measures={"price_matches_quote": True},
                    )
                ],
            )
        later = START + timedelta(hours=60)
        # The partition is applied only up to before the due time: the delivery may still be
        # waiting in the topic, so nothing is declared missing yet.
        await _applied_up_to(conn, START + timedelta(hours=47))
        assert (await _in_transaction(fresh_database, _engine(later))).outcomes == []
        await _applied_up_to(conn, later)
        reports = await asyncio.gather(
            *(_in_transaction(fresh_database, _engine(later)) for _ in range(2))
        )
        assert sorted(len(r.outcomes) for r in reports) == [0, 1]
        assert await conn.fetchval("SELECT count(*) FROM outcome WHERE NOT met") == 1
        assert await conn.fetchval("SELECT state FROM deadline") == "expired"
        # A later sweep finds nothing left to do.
        assert (
            await _in_transaction(fresh_database, _engine(later + timedelta(hours=1)))
        ).outcomes == []
    finally:
        await conn.close()


async def test_an_unacknowledged_intervention_expires_once(fresh_database: str) -> None:
    await migrate_url(fresh_database)
    conn = await asyncpg.connect(fresh_database)
    try:
        async with conn.transaction():
            await _engine(START).handle(
                conn,
                [
                    _record(
                        0,
                        event_id="s-1",
                        source="survey",
                        customer_id="S-2",
                        touchpoint="survey",
                        type="survey.answered",
                        occurred_at=START,
                        measures={"csat": 1},
                    )
                ],
            )
        assert await conn.fetchval("SELECT state FROM intervention") == "open"
        too_early = START + timedelta(days=3)
        async with conn.transaction():
            assert await expire_interventions(conn, CATALOGUE, too_early, "i") == 0

        overdue = START + timedelta(days=15)

        async def expire() -> int:
            other = await asyncpg.connect(fresh_database)
            try:
                async with other.transaction():
                    return await expire_interventions(other, CATALOGUE, overdue, "i")
            finally:
                await other.close()

        assert sorted(await asyncio.gather(expire(), expire())) == [0, 1]
        assert await conn.fetchval("SELECT state FROM intervention") == "expired"
        kinds = [r["kind"] for r in await conn.fetch("SELECT kind FROM webhook_outbox ORDER BY id")]
        assert kinds == ["intervention.opened", "intervention.expired"]
    finally:
        await conn.close()


async def test_a_resolved_intervention_gets_its_follow_up_health_once(fresh_database: str) -> None:
    await migrate_url(fresh_database)
    conn = await asyncpg.connect(fresh_database)
    try:
        async with conn.transaction():
            await _engine(START).handle(
                conn,
                [
                    _record(
                        0,
                        event_id="s-9",
                        source="survey",
                        customer_id="S-3",
                        touchpoint="survey",
                        type="survey.answered",
                        occurred_at=START,
                        measures={"csat": 1},
                    )
                ],
            )
        row = await conn.fetchrow("SELECT * FROM intervention")
        assert row is not None
        worked = acknowledge(intervention_from_row(row), now=START, assignee="a")
        closed = resolve(worked, now=START + timedelta(days=1), note="called", health=0.0)
        await write_interventions(conn, [closed])

        async with conn.transaction():
            assert await record_follow_ups(conn, CATALOGUE, START + timedelta(days=5)) == 0
        later = START + timedelta(days=16)
        async with conn.transaction():
            assert await record_follow_ups(conn, CATALOGUE, later) == 1
        async with conn.transaction():
            assert await record_follow_ups(conn, CATALOGUE, later) == 0
        row = await conn.fetchrow("SELECT * FROM intervention")
        assert row is not None
        assert row["follow_up_at"] == later
        score = await conn.fetchval("SELECT score FROM journey_health WHERE customer_id = 'S-3'")
        assert row["follow_up_health"] == score
        # The case's history says so, as the system's move: did the action help?
        history = await read_history(conn, row["intervention_id"])
        assert [(a.kind, a.actor.kind.value) for a in history] == [
            ("intervention.opened", "system"),
            ("intervention.followed_up", "system"),
        ]
        assert history[-1].detail == {"health": score, "health_at_resolve": 0.0}
    finally:
        await conn.close()

"""Explanation windows kept in memory between batches change no judgement.

One long-lived engine (as the service runs it) scores a rich customer — more outcomes than
an explanation looks at, late deliveries superseding recorded misses, sweeps, an open case
whose gaps are re-ranked on every change — and leaves exactly the state an engine that
keeps nothing leaves. Writes made outside the consumer while a window is kept (erasure,
resolve, a profile change) are seen by the next batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson

from tests.api.health.rich import CATALOGUE, RICH, START, corpus
from touchpulse_scoring.domain import acknowledge, resolve
from touchpulse_scoring.engine import Engine, Source, Topics
from touchpulse_scoring.intervention_table import intervention_from_row, write_interventions
from touchpulse_shared.contract import EVENT_ADAPTER, encode_record
from touchpulse_shared.db.migrate import migrate_url

GROUP, TOPIC = "windows", "windows.events"


@dataclass(frozen=True)
class _Record:
    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


class _Scorer:
    """One engine for a whole run, its clock moved per batch as the service's moves."""

    def __init__(self, capacity: int) -> None:
        self.now = START
        self.offset = 0
        self.engine = Engine(
            catalogue=lambda: CATALOGUE,
            topics=Topics(health="h", interventions="i", dead_letters="d"),
            source=Source(group=GROUP, topic=TOPIC, partitions=lambda: 1),
            clock=lambda: self.now,
            window_capacity=capacity,
        )

    async def batch(self, conn: asyncpg.Connection, events: list[dict[str, Any]]) -> None:
        self.now = max(datetime.fromisoformat(e["occurred_at"]) for e in events) + timedelta(
            minutes=2
        )
        records = []
        for e in events:
            encoded = encode_record(
                EVENT_ADAPTER.validate_python(e), producer="ingest", received_at=self.now
            )
            records.append(
                _Record(TOPIC, 0, self.offset, encoded.key, encoded.value, encoded.headers)
            )
            self.offset += 1
        async with conn.transaction():
            await self.engine.handle(conn, records)
            await conn.execute(
                """
                INSERT INTO consumer_offset (consumer_group, topic, partition, next_offset,
                    watermark)
                VALUES ($1, $2, 0, $3, $4)
                ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET
                    next_offset = EXCLUDED.next_offset, watermark = EXCLUDED.watermark
                """,
                GROUP,
                TOPIC,
                self.offset,
                self.now,
            )
        async with conn.transaction():
            await self.engine.sweep(conn)


async def _run(url: str, capacity: int, members: int = 1) -> tuple[_Scorer, dict[str, Any]]:
    """Score the corpus in batches of 13; with ``members`` > 1, the batches go round the
    members in turn, as a partition moves between members of the group and back."""
    await migrate_url(url)
    scorers = [_Scorer(capacity) for _ in range(members)]
    conn = await asyncpg.connect(url)
    try:
        events = corpus()
        for n, first in enumerate(range(0, len(events), 13)):
            scorer = scorers[n % members]
            scorer.offset = max(s.offset for s in scorers)
            await scorer.batch(conn, events[first : first + 13])
        return scorers[0], await _state(conn)
    finally:
        await conn.close()


async def _state(conn: asyncpg.Connection) -> dict[str, Any]:
    """Everything a judgement leaves, ids and all (the intervention ids are derived)."""

    async def rows(query: str) -> list[dict[str, Any]]:
        return [dict(r) for r in await conn.fetch(query)]

    return {
        "interventions": await rows(
            "SELECT intervention_id, state, triggers::text, gaps::text, priority, opened_at,"
            " updated_at FROM intervention ORDER BY intervention_id"
        ),
        "webhooks": await rows("SELECT kind, payload::text FROM webhook_outbox ORDER BY id"),
        "journeys": await rows("SELECT customer_id, score, band, as_of FROM journey_health"),
        "outcomes": await rows(
            "SELECT customer_id, outcome_key, score, met, occurred_at FROM outcome ORDER BY 1, 2"
        ),
    }


async def test_kept_windows_leave_the_state_an_engine_keeping_nothing_leaves(
    fresh_database: str, other_fresh_database: str
) -> None:
    kept, with_windows = await _run(fresh_database, capacity=100_000)
    _, without = await _run(other_fresh_database, capacity=0)
    assert with_windows == without
    # Not vacuous: the run re-ranked the open case's gaps from kept windows many times,
    # and the case's gaps are the explanation of more outcomes than a window holds.
    assert kept.engine.windows.hits > 20
    assert len(with_windows["outcomes"]) > 200
    assert any(w["kind"] == "intervention.attached" for w in with_windows["webhooks"])


async def test_a_customer_moving_between_members_and_back_is_judged_on_current_state(
    fresh_database: str, other_fresh_database: str
) -> None:
    """Two members keep windows and take the customer's batches in turn: each comes back to
    a window the other has since moved, notices by the revision, and reads it again."""
    first, moved = await _run(fresh_database, capacity=100_000, members=2)
    _, alone = await _run(other_fresh_database, capacity=0)
    assert moved == alone
    assert first.engine.windows.misses > 10  # it did come back to stale windows


def _call(n: int, at: datetime, customer: str = RICH, wait: int = 700) -> dict[str, Any]:
    return {
        "event_id": f"late-{customer}-{n}",
        "source": "golden",
        "customer_id": customer,
        "touchpoint": "call_centre",
        "type": "call.answered",
        "occurred_at": at.isoformat(),
        "measures": {"wait_seconds": wait, "first_contact_resolution": False},
    }


async def test_writes_outside_the_consumer_reach_the_next_batch(fresh_database: str) -> None:
    scorer, _ = await _run(fresh_database, capacity=100_000)
    conn = await asyncpg.connect(fresh_database)
    at = START + timedelta(days=47)
    try:
        assert len(scorer.engine.windows) > 0
        # Resolved by a person (the api's write): the next breach cannot attach to it.
        row = await conn.fetchrow("SELECT * FROM intervention WHERE state = 'open'")
        assert row is not None
        worked = acknowledge(intervention_from_row(row), now=at, assignee="agent@example")
        await write_interventions(conn, [resolve(worked, now=at, note="called", health=20.0)])
        await scorer.batch(conn, [_call(1, at + timedelta(minutes=5))])
        states = [r["state"] for r in await conn.fetch("SELECT state FROM intervention")]
        assert states.count("resolved") == 1
        assert "attached" not in {
            r["kind"]
            for r in await conn.fetch(
                "SELECT kind FROM webhook_outbox WHERE created_at >= now() - interval '1 minute'"
                " AND intervention_id = $1",
                row["intervention_id"],
            )
        }

        # A profile change (the api's upsert) is judged with at once: premium's tighter target.
        await conn.execute(
            "UPDATE customer_profile SET segment = 'standard' WHERE customer_id = $1", RICH
        )
        await scorer.batch(conn, [_call(2, at + timedelta(minutes=10), wait=50)])
        target = await conn.fetchval(
            "SELECT expected->>'target' FROM outcome WHERE outcome_key LIKE $1",
            '%"late-G-rich-2"%',
        )
        standard = next(p for p in CATALOGUE.promises if p.id == "call-answer-time").expect.target  # type: ignore[union-attr]
        assert float(target) == float(standard)

        # Erased (the api's erasure deletes every row of the customer): the kept window is
        # not used; the next event starts a new customer whose explanation has one breach.
        async with conn.transaction():
            for table in ("outcome", "touchpoint_health", "journey_health", "intervention"):
                await conn.execute(
                    f"DELETE FROM {table} WHERE customer_id = $1",  # noqa: S608 - fixed names
                    RICH,
                )
        await scorer.batch(
            conn,
            [
                {
                    **_call(3, at + timedelta(minutes=20)),
                    "touchpoint": "survey",
                    "type": "survey.answered",
                    "measures": {"csat": 1, "nps": 0},
                }
            ],
        )
        gaps = orjson.loads(
            await conn.fetchval(
                "SELECT gaps::text FROM intervention WHERE customer_id = $1 AND state = 'open'",
                RICH,
            )
        )
        assert {g["event_ids"][0] for g in gaps} == {"golden/late-G-rich-3"}
    finally:
        await conn.close()

"""Explanation windows and decoded interventions kept in memory between batches change no
judgement.

One long-lived engine (as the service runs it) scores a rich customer — more outcomes than
an explanation looks at, late deliveries superseding recorded misses, sweeps, an open case
whose gaps are re-ranked on every change — and leaves exactly the state an engine that
keeps nothing leaves. Writes made outside the consumer while a window is kept (erasure,
resolve, a profile change) are seen by the next batch.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson

from tests.api.health.rich import CATALOGUE, GROUP, RICH, START, TOPIC, corpus, score
from touchpulse_scoring.domain import Intervention, InterventionState, acknowledge, resolve
from touchpulse_scoring.engine import Engine, Source, Topics
from touchpulse_scoring.intervention_table import intervention_from_row, write_interventions
from touchpulse_scoring.store import load_state
from touchpulse_scoring.windows import KeptInterventions
from touchpulse_shared.db.migrate import migrate_url


class _Members:
    """Long-lived engines (as the service keeps one), their clocks moved per batch; the
    batches go round them in turn, as a partition moves between members and back."""

    def __init__(self, capacity: int, members: int = 1) -> None:
        self.now = START
        self.offset = 0
        self.engines = [
            Engine(
                catalogue=lambda: CATALOGUE,
                topics=Topics(health="h", interventions="i", dead_letters="d"),
                source=Source(group=GROUP, topic=TOPIC, partitions=lambda: 1),
                clock=lambda: self.now,
                window_capacity=capacity,
            )
            for _ in range(members)
        ]
        self.batches = 0

    def at(self, now: datetime, _: int) -> Engine:
        self.now = now
        engine = self.engines[self.batches % len(self.engines)]
        self.batches += 1
        return engine

    async def batch(self, conn: asyncpg.Connection, events: list[dict[str, Any]]) -> None:
        self.offset = await score(conn, events, offset=self.offset, engine_at=self.at)


async def _run(url: str, capacity: int, members: int = 1) -> tuple[Engine, dict[str, Any]]:
    await migrate_url(url)
    scorers = _Members(capacity, members)
    conn = await asyncpg.connect(url)
    try:
        await scorers.batch(conn, corpus())
        return scorers.engines[0], await _state(conn)
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
    assert kept.windows.hits > 20
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
    assert first.windows.misses > 10  # it did come back to stale windows


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
    await migrate_url(fresh_database)
    scorer = _Members(capacity=100_000)
    conn = await asyncpg.connect(fresh_database)
    at = START + timedelta(days=47)
    try:
        await scorer.batch(conn, corpus())
        assert len(scorer.engines[0].windows) > 0
        # Resolved by a person (the api's write): the next breach cannot attach to it.
        row = await conn.fetchrow("SELECT * FROM intervention WHERE state = 'open'")
        assert row is not None
        # Scoring holds the open case decoded: only its row version can tell it changed.
        assert row["intervention_id"] in scorer.engines[0].interventions
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


async def test_a_kept_intervention_is_used_only_while_its_row_is_unchanged(
    fresh_database: str,
) -> None:
    """The decoded case is reused while its row's version (xmin) is the one it was decoded
    from, and decoded again after any other writer's change."""
    await migrate_url(fresh_database)
    scorer = _Members(capacity=100_000)
    conn = await asyncpg.connect(fresh_database)
    kept = KeptInterventions(100_000)

    async def current() -> Intervention | None:
        window_start = START - timedelta(days=365)
        states = await load_state(
            conn,
            [RICH],
            deadline_refs=(),
            breach_window_start=window_start,
            recovery_margin=5.0,
            kept=kept,
        )
        return states[RICH].current

    try:
        await scorer.batch(conn, corpus())
        first = await current()
        assert first is not None
        assert (await current()) is first  # the row is unchanged: not decoded again
        assert kept.hits == 1
        row = await conn.fetchrow(
            "SELECT * FROM intervention WHERE intervention_id = $1", first.intervention_id
        )
        taken = acknowledge(intervention_from_row(row), now=first.updated_at, assignee="a@b")
        await write_interventions(conn, [taken])  # another writer: the api's take
        after = await current()
        assert after is not None
        assert after is not first
        assert after.state is InterventionState.ACKNOWLEDGED
        assert after.assignee == "a@b"
        assert kept.hits == 1
    finally:
        await conn.close()

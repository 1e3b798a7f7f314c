"""Interventions do not depend on how records were batched.

The same records, in the same order, through ``Engine.handle`` one per transaction and all
in one: the cases (opened or not, when, why, with which gaps), their webhooks and the
journeys must be the same. A batch used to decide once per customer at its end, so a dip
below the line that the batch's later events lifted again opened no case, and a case
opened at the batch's newest event rather than at the event that tipped it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import asyncpg

from tests.scoring.pipeline.ledger import CATALOGUE, START, EngineRecord
from touchpulse_scoring.engine import Engine, Source, Topics
from touchpulse_shared.contract import EVENT_ADAPTER, encode_record
from touchpulse_shared.db.migrate import migrate_url

TOPIC = "batching.events"


def _call(customer: str, n: int, at: datetime, *, wait: int, resolved: bool) -> dict[str, Any]:
    return {
        "event_id": f"{customer}-call-{n}",
        "source": "batching",
        "customer_id": customer,
        "touchpoint": "call_centre",
        "type": "call.answered",
        "occurred_at": at.isoformat(),
        "measures": {"wait_seconds": wait, "first_contact_resolution": resolved},
    }


def _dip_and_recovery() -> list[dict[str, Any]]:
    """Two bad calls (four breaches, two promises: no repeat, one touchpoint: no spread)
    take the customer to 23 on evidence 5: under the line, a case opens. Two good calls
    then lift the journey back to 55, above it."""
    at = START + timedelta(hours=1)
    bad = [_call("B-dip", n, at + timedelta(minutes=n), wait=600, resolved=False) for n in (0, 1)]
    good = [_call("B-dip", n, at + timedelta(minutes=n), wait=10, resolved=True) for n in (2, 3)]
    return [*bad, *good]


def _critical_then_kept() -> list[dict[str, Any]]:
    """A critical survey answer, then hours later a call that keeps every promise."""
    at = START + timedelta(hours=2)
    survey = {
        "event_id": "B-crit-survey",
        "source": "batching",
        "customer_id": "B-crit",
        "touchpoint": "survey",
        "type": "survey.answered",
        "occurred_at": at.isoformat(),
        "measures": {"csat": 1, "nps": 9},
    }
    return [survey, _call("B-crit", 0, at + timedelta(hours=5), wait=10, resolved=True)]


async def _score(url: str, events: list[dict[str, Any]], batch: int) -> dict[str, Any]:
    await migrate_url(url)
    conn = await asyncpg.connect(url)
    try:
        now = START + timedelta(days=1)
        engine = Engine(
            catalogue=lambda: CATALOGUE,
            topics=Topics(health="h", interventions="i", dead_letters="d"),
            source=Source(group="batching", topic=TOPIC, partitions=lambda: 1),
            clock=lambda: now,
        )
        records = []
        for offset, event in enumerate(events):
            encoded = encode_record(
                EVENT_ADAPTER.validate_python(event), producer="ingest", received_at=now
            )
            records.append(
                EngineRecord(TOPIC, 0, offset, encoded.key, encoded.value, encoded.headers)
            )
        for first in range(0, len(records), batch):
            async with conn.transaction():
                await engine.handle(conn, records[first : first + batch])

        async def rows(query: str) -> list[dict[str, Any]]:
            return [dict(r) for r in await conn.fetch(query)]

        return {
            "interventions": await rows(
                "SELECT intervention_id, customer_id, state, triggers::text, gaps::text,"
                " priority, health_at_open, opened_at, updated_at"
                " FROM intervention ORDER BY intervention_id"
            ),
            "webhooks": await rows("SELECT kind, payload::text FROM webhook_outbox ORDER BY id"),
            "journeys": await rows(
                "SELECT customer_id, score, band, as_of FROM journey_health ORDER BY 1"
            ),
        }
    finally:
        await conn.close()


async def test_a_dip_that_the_same_batch_lifts_again_still_opens_the_case(
    fresh_database: str, other_fresh_database: str
) -> None:
    events = _dip_and_recovery()
    one_by_one = await _score(fresh_database, events, batch=1)
    together = await _score(other_fresh_database, events, batch=len(events))
    assert together == one_by_one
    [case] = together["interventions"]
    # Opened at the second bad call, the one that tipped the journey under the line.
    assert case["opened_at"] == datetime.fromisoformat(events[1]["occurred_at"])
    assert "low_health" in case["triggers"]
    [journey] = together["journeys"]
    assert journey["score"] > CATALOGUE.policy.interventions.threshold  # lifted again


async def test_a_case_opens_at_the_event_that_tipped_it_whatever_came_after_in_the_batch(
    fresh_database: str, other_fresh_database: str
) -> None:
    events = _critical_then_kept()
    one_by_one = await _score(fresh_database, events, batch=1)
    together = await _score(other_fresh_database, events, batch=len(events))
    assert together == one_by_one
    [case] = together["interventions"]
    assert case["opened_at"] == datetime.fromisoformat(events[0]["occurred_at"])
    assert "critical_breach" in case["triggers"]

"""The counters and dead letters are written with scoring's batch, so they count exactly
once: a batch whose transaction died midway leaves nothing, a redelivered batch (offsets in
Kafka lost in a crash) adds nothing, a retried event counts as a duplicate. The lifecycle
removes both past their keep days and nothing sooner. Driven through the engine and the
consumer's own offset statements, in the consumer's order, on the real PostgreSQL."""

from __future__ import annotations

import contextlib
import dataclasses
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
import pytest

from tests.scoring.pipeline.ledger import CATALOGUE, START, make_event
from touchpulse_scoring.dlq import origin
from touchpulse_scoring.engine import Engine, Source, Topics
from touchpulse_scoring.lifecycle import Terms, prune_round
from touchpulse_scoring.store import claim_batch, store_offsets
from touchpulse_shared.contract import encode_record
from touchpulse_shared.db.migrate import migrate_url
from touchpulse_shared.settings import Settings

GROUP, TOPIC = "feedback-group", "feedback.events"
RECEIVED = START + timedelta(minutes=10)
NOW = START + timedelta(minutes=30)


@dataclass(frozen=True)
class Record:
    """What the consumer path reads of an aiokafka record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp: int


class Crash(Exception):
    """The process dies after the batch's statements, before its commit."""


class Batches:
    def __init__(self) -> None:
        self.offsets = [0, 0]
        self.rng = random.Random(17)

    def records(self, count: int, *, first: int = 0, poison: bool = False) -> list[Record]:
        made = []
        for n in range(first, first + count):
            event = make_event(n, f"C-{n % 5}", START + timedelta(minutes=n), "call", self.rng)
            encoded = encode_record(event, producer="ingest", received_at=RECEIVED)
            made.append(self._record(n % 2, encoded.key, encoded.value, encoded.headers))
        if poison:
            named = encode_record(
                make_event(999, "C-1", START, "call", self.rng),
                producer="ingest",
                received_at=RECEIVED,
            )
            made.append(self._record(1, named.key, b"{not json", named.headers))
            made.append(self._record(0, b"C-2", b"\x00\xff", []))
        return made

    def _record(
        self, partition: int, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> Record:
        offset = self.offsets[partition]
        self.offsets[partition] += 1
        stamp = int(RECEIVED.timestamp() * 1000)
        return Record(TOPIC, partition, offset, key, value, headers, stamp)


async def apply(pool: asyncpg.Pool, records: list[Record], *, crash: bool = False) -> None:
    """One batch as the consumer applies it (consumer.py: claim, handle, store offsets, commit)."""
    engine = Engine(
        catalogue=lambda: CATALOGUE,
        topics=Topics(health="h", interventions="i", dead_letters="d"),
        source=Source(group=GROUP, topic=TOPIC, partitions=lambda: 2),
        clock=lambda: NOW,
    )
    async with pool.acquire() as conn:
        with contextlib.suppress(Crash):
            async with conn.transaction():
                fresh = await claim_batch(conn, GROUP, records)
                await engine.handle(conn, fresh)
                await store_offsets(conn, GROUP, records)
                if crash:
                    raise Crash


async def counts(pool: asyncpg.Pool) -> dict[str, object]:
    rows = await pool.fetch(
        "SELECT kind, reason, sum(events)::int AS n FROM source_quality"
        " WHERE source = 'test-source' GROUP BY kind, reason ORDER BY kind, reason"
    )
    return {
        **{f"{r['kind']}:{r['reason']}".rstrip(":"): r["n"] for r in rows},
        "dead_letter rows": await pool.fetchval("SELECT count(*) FROM dead_letter"),
        "shards": await pool.fetchval(
            "SELECT count(DISTINCT shard) FROM source_quality WHERE kind = 'accepted'"
        ),
    }


@pytest.fixture
async def pool(fresh_database: str) -> AsyncIterator[asyncpg.Pool]:
    await migrate_url(fresh_database)
    created = await asyncpg.create_pool(fresh_database, min_size=1, max_size=2)
    yield created
    await created.close()


async def test_a_batch_counts_once_whatever_crashes_and_redeliveries_happen(
    pool: asyncpg.Pool, base_settings: Settings
) -> None:
    batches = Batches()
    first = batches.records(10, poison=True)
    await apply(pool, first, crash=True)  # died before its commit: nothing of it stays
    assert await counts(pool) == {"dead_letter rows": 0, "shards": 0}

    await apply(pool, first)
    expected = {
        "accepted": 10,
        "dead_lettered:not_json": 1,  # the one naming no source is listed, not counted
        "dead_letter rows": 2,
        "shards": 2,
    }
    assert await counts(pool) == expected
    await apply(pool, first)  # redelivered: Kafka never heard of the commit
    assert await counts(pool) == expected

    # Half of it again with new records behind (a rebalance mid-batch), and a client's
    # retry of an applied event under a new offset.
    again = [r for r in first if r.offset >= 3] + batches.records(4, first=10)
    retry = batches.records(1, first=0)
    await apply(pool, again + retry)
    assert await counts(pool) == {**expected, "accepted": 14, "duplicate": 1}
    seen = await pool.fetchval("SELECT max(last_event_at) FROM source_quality")
    assert seen == RECEIVED
    letter = await pool.fetchrow("SELECT * FROM dead_letter WHERE source IS NOT NULL")
    assert letter is not None
    assert (letter["reason"], letter["event_id"], letter["dead_lettered_at"]) == (
        "not_json",
        "e-999",
        NOW,
    )

    # Retention: dead letters after their 14 days, counters after their 90, not before.
    terms = dataclasses.replace(Terms.from_settings(base_settings), group=GROUP, events_topic=TOPIC)
    policy = CATALOGUE.policy.interventions

    async def at(later: timedelta) -> dict[str, object]:
        await prune_round(pool, now=NOW + later, terms=terms, policy=policy)
        return await counts(pool)

    assert await at(timedelta(days=13, hours=23)) == {**expected, "accepted": 14, "duplicate": 1}
    assert (await at(timedelta(days=14, minutes=1)))["dead_letter rows"] == 0
    assert (await at(timedelta(days=89)))["accepted"] == 14
    assert await at(timedelta(days=90, hours=2)) == {"dead_letter rows": 0, "shards": 0}


def test_a_dead_letter_is_attributed_only_to_names_the_contract_allows() -> None:
    decoded = make_event(1, "C-1", START, "call", random.Random(1))
    assert origin([], None, decoded) == ("test-source", "e-1", "call.answered")
    headers = [("ce_source", b"web-prod"), ("ce_id", b"w-1"), ("ce_type", b"page.viewed")]
    assert origin(headers, b"\x00", None) == ("web-prod", "w-1", "page.viewed")
    # Headers that cannot be names fall back to the value's fields, then to nothing.
    hostile = [
        ("ce_source", b"a" * 300),
        ("ce_id", b"\xff\xfe"),
        ("ce_type", b"two words"),
    ]
    value = b'{"source": "from-value", "event_id": "bad\\u0000id", "type": 7}'
    assert origin(hostile, value, None) == ("from-value", None, None)
    assert origin([], b'["not", "an object"]', None) == (None, None, None)
    assert origin([], b'{"source": "\\ud800"}', None) == (None, None, None)

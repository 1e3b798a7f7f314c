"""Publishing what scoring committed: health, intervention events and dead letters.

The batch transaction writes Kafka records into ``kafka_outbox`` beside the state they
describe. This publisher sends them afterwards, in id order, and deletes them only once
Kafka acknowledged them (``acks=all``). Order of operations per round:

1. take the publisher lock (one publisher at a time across instances, so records of one
   key are never sent out of order by two instances);
2. read the oldest rows;
3. send them and wait for every acknowledgement;
4. delete exactly those rows and commit.

A crash after 3 and before 4 sends those rows again: consumers of these topics see at
least once, which compacted topics (latest value per key) and the dead-letter topic
(reason + original position) absorb.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson
import structlog
from aiokafka import AIOKafkaProducer

from touchpulse_shared.db import Conn

log = structlog.get_logger(__name__)

# Any fixed 64-bit number: "the outbox publisher" among advisory locks.
_PUBLISHER_LOCK = 0x6F7574626F78_01
BATCH = 1000


def outbox_row(
    topic: str, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]] = ()
) -> tuple[str, bytes | None, bytes | None, str]:
    """A row for ``kafka_outbox`` (header values kept as latin-1 text in JSON)."""
    encoded = orjson.dumps([_header_entry(name, raw) for name, raw in headers]).decode()
    return (topic, key, value, encoded)


def _header_entry(name: str, raw: bytes) -> list[str]:
    text = raw.decode("latin-1")
    if "\x00" in name or "\x00" in text:
        # jsonb cannot hold \u0000, and a dead letter keeps a foreign producer's headers as
        # they came: such a header goes as base64, marked, so the batch can still commit.
        return [_b64(name.encode()), _b64(raw), "base64"]
    return [name, text]


def _header(entry: list[str]) -> tuple[str, bytes]:
    if len(entry) == 3 and entry[2] == "base64":
        return base64.b64decode(entry[0]).decode(), base64.b64decode(entry[1])
    name, text = entry
    return name, text.encode("latin-1")


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


async def insert_outbox(
    conn: Conn, rows: Sequence[tuple[str, bytes | None, bytes | None, str]]
) -> None:
    if not rows:
        return
    topics, keys, values, headers = zip(*rows, strict=True)
    await conn.execute(
        """
        INSERT INTO kafka_outbox (topic, key, value, headers)
        SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::jsonb[])
        """,
        list(topics),
        list(keys),
        list(values),
        list(headers),
    )


async def publish_once(
    pool: asyncpg.Pool, producer: AIOKafkaProducer, *, ack_within_s: float
) -> int:
    """Send and delete up to one batch of outbox rows; return how many were published."""
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _PUBLISHER_LOCK):
            return 0
        rows = await conn.fetch(
            "SELECT id, topic, key, value, headers FROM kafka_outbox ORDER BY id LIMIT $1", BATCH
        )
        if not rows:
            return 0
        futures: list[asyncio.Future[Any]] = []
        for row in rows:
            headers = [_header(entry) for entry in orjson.loads(row["headers"])]
            futures.append(
                await producer.send(row["topic"], row["value"], key=row["key"], headers=headers)
            )
        async with asyncio.timeout(ack_within_s):
            await asyncio.gather(*futures)
        await conn.execute(
            "DELETE FROM kafka_outbox WHERE id = ANY($1::bigint[])", [r["id"] for r in rows]
        )
        return len(rows)

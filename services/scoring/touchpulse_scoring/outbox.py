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
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer

# Rows are written through touchpulse_shared.db.outbox, by scoring and the api alike.
from touchpulse_shared.db.outbox import decode_headers

log = structlog.get_logger(__name__)

# Any fixed 64-bit number: "the outbox publisher" among advisory locks.
_PUBLISHER_LOCK = 0x6F7574626F78_01
BATCH = 1000


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
            headers = decode_headers(row["headers"])
            futures.append(
                await producer.send(row["topic"], row["value"], key=row["key"], headers=headers)
            )
        async with asyncio.timeout(ack_within_s):
            await asyncio.gather(*futures)
        await conn.execute(
            "DELETE FROM kafka_outbox WHERE id = ANY($1::bigint[])", [r["id"] for r in rows]
        )
        return len(rows)

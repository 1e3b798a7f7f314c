"""The api's reads of ``source_quality`` and ``dead_letter`` (written by scoring and
ingest, see :mod:`touchpulse_shared.db.quality`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from touchpulse_shared.db import Conn


async def quality_counts(conn: Conn, *, source: str, since: datetime, until: datetime) -> list[Any]:
    """The source's counters summed over the hours in ``[since, until)``, by kind and reason
    (over every writer's shard)."""
    return await conn.fetch(
        """
        SELECT kind, reason, sum(events)::bigint AS events
        FROM source_quality
        WHERE source = $1 AND hour >= $2 AND hour < $3
        GROUP BY kind, reason
        """,
        source,
        since,
        until,
    )


async def last_event_at(conn: Conn, *, source: str, before: datetime) -> datetime | None:
    """The newest receipt time of an event of the source scoring applied, in an hour before
    ``before`` (within the counters' retention): the newest hour found by the key's order,
    then its shards' newest time."""
    found: datetime | None = await conn.fetchval(
        """
        SELECT max(last_event_at) FROM source_quality
        WHERE source = $1 AND kind = 'accepted' AND hour = (
            SELECT hour FROM source_quality
            WHERE source = $1 AND kind = 'accepted' AND hour < $2
            ORDER BY hour DESC LIMIT 1)
        """,
        source,
        before,
    )
    return found


async def list_dead_letters(
    conn: Conn,
    *,
    source: str | None,
    reason: str | None,
    since: datetime | None,
    after: tuple[datetime, str, int, int] | None,
    limit: int,
) -> list[Any]:
    """Dead letters newest first (then by topic, partition and offset, descending), from
    the position ``after`` (a cursor's) on; ``source`` None lists every source's."""
    return await conn.fetch(
        """
        SELECT topic, partition, "offset", source, reason, detail, event_id, event_type,
               dead_lettered_at
        FROM dead_letter
        WHERE ($1::text IS NULL OR source = $1)
          AND ($2::text IS NULL OR reason = $2)
          AND ($3::timestamptz IS NULL OR dead_lettered_at >= $3)
          AND ($4::timestamptz IS NULL OR (dead_lettered_at, topic, partition, "offset")
                                          < ($4, $5::text, $6::int, $7::bigint))
        ORDER BY dead_lettered_at DESC, topic DESC, partition DESC, "offset" DESC
        LIMIT $8
        """,
        source,
        reason,
        since,
        None if after is None else after[0],
        None if after is None else after[1],
        None if after is None else after[2],
        None if after is None else after[3],
        limit,
    )

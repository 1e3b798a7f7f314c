"""The api's reads of ``catalogue_version`` (scoring writes it; see scoring's store)."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from touchpulse_shared.db import Conn


async def list_versions(
    conn: Conn, *, after: tuple[datetime, int] | None, limit: int
) -> list[asyncpg.Record]:
    """Periods of effect, newest first; ``after`` is the last (came_into_effect, id) seen."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT id, version, content_hash, came_into_effect, went_out_of_effect
          FROM catalogue_version
         WHERE $1::timestamptz IS NULL OR (came_into_effect, id) < ($1, $2)
         ORDER BY came_into_effect DESC, id DESC
         LIMIT $3
        """,
        None if after is None else after[0],
        None if after is None else after[1],
        limit,
    )
    return rows


async def read_version(conn: Conn, version: str) -> asyncpg.Record | None:
    """The newest period of catalogue ``version`` (a reused version string: the catalogue
    most recently in effect under it), with its text."""
    row: asyncpg.Record | None = await conn.fetchrow(
        """
        SELECT version, content_hash, content, came_into_effect, went_out_of_effect
          FROM catalogue_version
         WHERE version = $1
         ORDER BY came_into_effect DESC, id DESC
         LIMIT 1
        """,
        version,
    )
    return row


async def read_versions(conn: Conn, versions: list[str]) -> list[asyncpg.Record]:
    """:func:`read_version` for several versions at once (one round trip)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT DISTINCT ON (version) version, content_hash, content
          FROM catalogue_version
         WHERE version = ANY($1::text[])
         ORDER BY version, came_into_effect DESC, id DESC
        """,
        versions,
    )
    return rows

"""The api's reads for the promise routes: ``catalogue_version`` (scoring writes it; see
scoring's store) and, for a preview, the deadlines scoring holds for the refs an event opens
or fulfils (decoded here: the api reads through its own queries, not scoring's store)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from touchpulse_scoring.deadline_table import DEADLINE_COLUMNS, deadline_from_row
from touchpulse_scoring.domain import Deadline, DeadlineRef, Fulfilment
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


async def standing_deadlines(
    conn: Conn, refs: Sequence[DeadlineRef]
) -> tuple[dict[DeadlineRef, Deadline], dict[DeadlineRef, Fulfilment]]:
    """The deadlines and early fulfilments scoring holds for ``refs`` (what its per-event
    step reads before judging an event that opens or fulfils them)."""
    if not refs:
        return {}, {}
    # The refs as three arrays, one per key column.
    keys = (
        [r.customer_id for r in refs],
        [r.promise_id for r in refs],
        [r.journey_key for r in refs],
    )
    deadlines = {
        DeadlineRef(r["customer_id"], r["promise_id"], r["journey_key"]): deadline_from_row(r)
        for r in await conn.fetch(
            f"SELECT {DEADLINE_COLUMNS} FROM deadline"  # noqa: S608 - fixed column names
            " WHERE (customer_id, promise_id, journey_key) IN"
            " (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))",
            *keys,
        )
    }
    early = {
        DeadlineRef(r["customer_id"], r["promise_id"], r["journey_key"]): Fulfilment(
            r["occurred_at"], r["event_ref"]
        )
        for r in await conn.fetch(
            "SELECT customer_id, promise_id, journey_key, occurred_at, event_ref"
            " FROM early_fulfilment WHERE (customer_id, promise_id, journey_key) IN"
            " (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))",
            *keys,
        )
    }
    return deadlines, early

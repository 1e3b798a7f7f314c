"""Sessions PostgreSQL terminates (``pg_terminate_backend``, idle timeouts, failovers) while
the client holds them idle — in a pool, or idle in a transaction — are *lost connections*,
reported as such, and the pool goes on with fresh ones.

asyncpg alone reports the operation that follows such a termination, in the event-loop turns
before the socket's end reaches it, as ``InternalClientError: cannot switch to state 15;
another operation (2) is in progress``, which no "database unavailable" handler caught:
scoring died and its background loops ended silently (issue 13, defects 1 and 3).
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from asyncpg.transaction import Transaction

from touchpulse_shared.db.pool import DATABASE_ERRORS, application_name, connect, create_pool

pytestmark = pytest.mark.postgres

TRIALS = 30


async def _terminate(admin: asyncpg.Connection, pid: int) -> None:
    assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)


async def _next_operation(conn: asyncpg.Connection, tx: Transaction | None) -> None:
    if tx is not None:
        await tx.rollback()
    else:
        await conn.execute("SELECT 1")


async def test_an_idle_session_terminated_is_a_lost_connection(database_url: str) -> None:
    """Every turn of the window between the server's FATAL and the socket's end, for a
    connection idle and one idle in a transaction: always a database error, never the
    protocol's "another operation is in progress"."""
    admin = await asyncpg.connect(database_url)
    seen: set[str] = set()
    try:
        for trial in range(TRIALS):
            conn = await connect(database_url, service="tests", role="terminated")
            in_tx = trial % 2 == 1
            tx = conn.transaction()
            if in_tx:
                await tx.start()
                await conn.execute("SELECT 1")
            await _terminate(admin, conn.get_server_pid())
            for _ in range(trial % 5):  # how far into the window the next operation comes
                await asyncio.sleep(0)
            with pytest.raises(DATABASE_ERRORS) as caught:
                await _next_operation(conn, tx if in_tx else None)
            assert not isinstance(caught.value, asyncpg.InternalClientError)
            seen.add(type(caught.value).__name__)
            assert conn.is_closed()
    finally:
        await admin.close()
    assert seen <= {"ConnectionDoesNotExistError", "InterfaceError"}, seen


async def test_a_pool_replaces_sessions_the_server_ended(database_url: str) -> None:
    """A pool whose idle sessions were all terminated: each use either works or fails as a
    lost connection (each dead session at most once), and then works on fresh sessions."""
    pool = await create_pool(database_url, service="tests", role="pool", min_size=3, max_size=3)
    admin = await asyncpg.connect(database_url)
    try:
        for trial in range(TRIALS):
            pids = [
                r["pid"]
                for r in await admin.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
                    application_name("tests", "pool"),
                )
            ]
            assert pids, "the pool's sessions carry their name"
            for pid in pids:
                await _terminate(admin, pid)
            for _ in range(trial % 4):
                await asyncio.sleep(0)
            lost = 0
            failures: list[BaseException] = []
            while True:
                try:
                    async with pool.acquire() as conn, conn.transaction():
                        assert await conn.fetchval("SELECT 1") == 1
                    break
                except DATABASE_ERRORS as exc:
                    failures.append(exc)
                    lost += 1
                    assert lost <= len(pids), "a dead session handed out twice"
            assert not [f for f in failures if isinstance(f, asyncpg.InternalClientError)]
    finally:
        await admin.close()
        await pool.close()

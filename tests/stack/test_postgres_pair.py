"""A primary with its synchronous standby (LocalPostgresPair) and the services' pool on the
pair's multi-host URL: every commit the pool was told of survives a failover, an ambiguous
commit (on the standby, its client never told) is there after it, the pool finds the new
primary by itself, the old primary stays fenced until it is rewound into a standby, and a
second failover goes back (and that old primary is rewound too)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from touchpulse_scoring.main import _with_database
from touchpulse_shared.db.pool import DATABASE_ERRORS, create_pool
from touchpulse_shared.settings import Settings, load_settings, redact_url
from touchpulse_shared.stack.local import new_run_dir
from touchpulse_shared.stack.postgres import LocalPostgresPair
from touchpulse_shared.stack.procs import port_open

pytestmark = [pytest.mark.postgres]


def test_a_multi_host_url_is_a_valid_database_url_and_its_password_is_masked() -> None:
    url = "postgresql://tp:s3cret@10.0.0.1:5432,10.0.0.2:5432/tp?target_session_attrs=read-write"
    settings = load_settings(database_url=url)
    assert settings.database_url == url
    assert redact_url(url) == (
        "postgresql://tp:***@10.0.0.1:5432,10.0.0.2:5432/tp?target_session_attrs=read-write"
    )
    assert "s3cret" in settings.secret_values()
    # The replay's scratch database: same hosts and options, another database.
    assert _with_database(url, "scratch") == url.replace("/tp?", "/scratch?")


def _cli(url: str, *commands: list[str]) -> list[tuple[int, str]]:
    """``touchpulse`` commands side by side, on ``url`` alone (no other setting)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOUCHPULSE_", "KAFKA_"))}
    env |= {"TOUCHPULSE_DATABASE_URL": url, "TOUCHPULSE_LOG_LEVEL": "ERROR"}
    running = [
        subprocess.Popen(  # noqa: S603 - the venv's own entry point
            [str(Path(sys.executable).parent / "touchpulse"), *command],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for command in commands
    ]
    return [(proc.wait(60), proc.communicate()[0]) for proc in running]


async def _insert(pool: asyncpg.Pool, n: int) -> None:
    await pool.execute("INSERT INTO pair_ledger (n) VALUES ($1)", n)


async def _insert_until_taken(pool: asyncpg.Pool, n: int) -> int:
    """Insert ``n``, retrying what a failover breaks (as the services do); the attempts."""
    for attempt in range(1, 200):
        try:
            await _insert(pool, n)
        except DATABASE_ERRORS:
            await asyncio.sleep(0.05)
            continue
        return attempt
    raise AssertionError(f"{n} was never written")


async def _rows(url: str) -> set[int]:
    conn = await asyncpg.connect(url)
    try:
        return {r["n"] for r in await conn.fetch("SELECT n FROM pair_ledger")}
    finally:
        await conn.close()


async def _until(ready: Callable[[], Awaitable[bool]], what: str, within_s: float = 20.0) -> None:
    """Poll ``ready`` (a readiness check, not pacing) until true, or fail naming ``what``."""
    deadline = time.monotonic() + within_s
    while not await ready():
        assert time.monotonic() < deadline, f"not within {within_s} s: {what}"
        await asyncio.sleep(0.01)


async def _is(conn: asyncpg.Connection, query: str, *args: object, expected: object = True) -> bool:
    return bool(await conn.fetchval(query, *args) == expected)


async def _stall_a_commit_on_the_standby(pair: LocalPostgresPair, pool: asyncpg.Pool) -> None:
    """A commit whose WAL the standby has flushed and whose client is not told: commits
    wait for the standby to *apply* (remote_apply), and the standby's replay is paused."""
    assert pair.standby is not None
    primary = await asyncpg.connect(pair.primary.url)
    standby = await asyncpg.connect(pair.standby.url)
    try:
        await primary.execute("ALTER SYSTEM SET synchronous_commit = remote_apply")
        await primary.execute("SELECT pg_reload_conf()")
        await standby.execute("SELECT pg_wal_replay_pause()")
        # The reload reaches a session at its next statement: each check is a new statement.
        await _until(
            lambda: _is(
                primary, "SELECT current_setting('synchronous_commit')", expected="remote_apply"
            ),
            "the primary's commits wait for the standby's replay",
        )
        stalled = asyncio.ensure_future(_insert(pool, -1))
        await _until(
            lambda: _is(primary, "SELECT bool_or(wait_event = 'SyncRep') FROM pg_stat_activity"),
            "a commit waiting for the standby",
        )
        flushed = await primary.fetchval("SELECT pg_current_wal_flush_lsn()::text")
        await _until(
            lambda: _is(standby, "SELECT pg_last_wal_receive_lsn() >= $1::text::pg_lsn", flushed),
            "the standby has received the stalled commit's WAL",
        )
        assert not stalled.done(), "the commit returned: it was not stalled"
        assert -1 not in await _rows(pair.standby.url)  # received, not yet applied
    finally:
        await primary.close()
        await standby.close()
    pair.failover()
    with pytest.raises(DATABASE_ERRORS):
        await stalled  # the client never heard the COMMIT


@pytest.mark.timeout(60)
async def test_failover_keeps_every_acknowledged_commit_and_the_pool_follows(
    base_settings: Settings,
) -> None:
    pair = LocalPostgresPair(workdir=new_run_dir(base_settings.state_dir) / "pair")
    pair.start()
    try:
        first, second = pair.nodes
        pool = await create_pool(pair.url, service="test", role="pair", max_size=2)
        try:
            await pool.execute("CREATE TABLE pair_ledger (n bigint PRIMARY KEY)")
            for n in range(50):
                await _insert(pool, n)

            await _stall_a_commit_on_the_standby(pair, pool)
            assert pair.primary is second
            assert pair.fenced is first
            assert not port_open(first.host, first.port), "the old primary is down"
            acked = set(range(50))
            for n in range(50, 60):  # the same pool, reconnecting by itself
                await _insert_until_taken(pool, n)
                acked.add(n)
            # The CLI on the same URL, its first host down: it finds the new primary.
            [(code, out)] = _cli(pair.url, ["migrate"])
            assert code == 0, out
            (status, status_out), (keys, keys_out) = _cli(
                pair.url, ["migrate", "--status"], ["keys", "list"]
            )
            assert (status, status_out.splitlines()[-1]) == (0, "0 pending"), status_out
            assert (keys, keys_out.strip()) == (
                0,
                "no keys yet: create one with `touchpulse keys create`",
            ), keys_out
            rows = await _rows(pair.url)
            assert acked <= rows, sorted(acked - rows)
            assert -1 in rows, "the ambiguous commit was on the standby: it stays"

            pair.rejoin()  # rewound into the new primary's synchronous standby
            assert pair.standby is first
            assert first.in_recovery()
            for n in range(60, 70):
                await _insert(pool, n)
                acked.add(n)

            # WAL over several segments since the last checkpoint: the crash recovery before
            # the next rewind must not recycle what pg_rewind reads (it did, in a soak).
            for n in range(70, 74):
                await _insert(pool, n)
                acked.add(n)
                await pool.execute("SELECT pg_switch_wal()")
            pair.failover()  # and back
            assert pair.primary is first
            assert not port_open(second.host, second.port)
            for n in range(74, 80):
                await _insert_until_taken(pool, n)
                acked.add(n)
            pair.rejoin()
            assert pair.standby is second
            assert second.in_recovery()
            rows = await _rows(pair.url)
            assert rows == acked | {-1}, sorted(rows ^ (acked | {-1}))
            conn = await asyncpg.connect(pair.url)
            try:
                assert await conn.fetchval("SELECT current_setting('port')::int") == first.port
            finally:
                await conn.close()
        finally:
            # Not close(): after a failed check a stalled insert may still hold a connection.
            pool.terminate()
    finally:
        pair.stop()

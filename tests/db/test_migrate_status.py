"""`touchpulse migrate --status` and `--dry-run`: what the database has and would get, read
without applying anything; a migration edited after it was applied is named (exit 1)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from touchpulse_shared.db.migrate import load_migrations, migrate_url, migration_states

pytestmark = pytest.mark.postgres

TOUCHPULSE = Path(sys.executable).with_name("touchpulse")


def _touchpulse(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHPULSE_")}
    return subprocess.run(  # noqa: S603
        [str(TOUCHPULSE), *args],
        env=env | {"TOUCHPULSE_DATABASE_URL": url, "TOUCHPULSE_LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def _tables(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        )
        return count
    finally:
        await conn.close()


async def test_status_and_dry_run_apply_nothing(fresh_database: str) -> None:
    count = len(load_migrations())
    dry, status = await asyncio.gather(
        asyncio.to_thread(_touchpulse, fresh_database, "migrate", "--dry-run"),
        asyncio.to_thread(_touchpulse, fresh_database, "migrate", "--status"),
    )
    assert dry.returncode == 0, dry.stderr
    assert f"would apply: {list(range(1, count + 1))}" in dry.stdout
    assert status.returncode == 0, status.stderr
    assert "0001_core  pending" in status.stdout
    assert f"{count} pending" in status.stdout
    assert await _tables(fresh_database) == 0  # not even the bookkeeping table

    await migrate_url(fresh_database)
    after = await asyncio.to_thread(_touchpulse, fresh_database, "migrate", "--status")
    assert after.returncode == 0, after.stderr
    assert "0 pending" in after.stdout
    assert after.stdout.count(" applied  ") == count, after.stdout


async def test_a_migration_changed_after_it_was_applied_is_named(fresh_database: str) -> None:
    await migrate_url(fresh_database)
    migrations = load_migrations()
    edited = [*migrations[:-1], dataclasses.replace(migrations[-1], sql="SELECT 1;")]
    conn = await asyncpg.connect(fresh_database)
    try:
        states = await migration_states(conn, edited)
        fewer = await migration_states(conn, migrations[:-1])
    finally:
        await conn.close()
    assert [s.state for s in states].count("changed") == 1
    assert states[-1].state == "changed"
    assert states[-1].applied_at is not None
    # A release without the newest file: the database is ahead, not behind.
    assert fewer[-1].state == "unknown"
    assert fewer[-1].version == migrations[-1].version

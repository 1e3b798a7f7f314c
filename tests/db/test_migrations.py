"""Migrations against the real PostgreSQL: applied once, recorded, safe to repeat and race."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from touchpulse_shared.db.migrate import (
    Migration,
    MigrationError,
    load_migrations,
    migrate,
    migrate_url,
)


async def _tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r["tablename"] for r in rows}
    finally:
        await conn.close()


async def test_applies_every_migration_once_and_records_it(fresh_database: str) -> None:
    shipped = load_migrations()
    applied = await migrate_url(fresh_database)
    assert [m.version for m in applied] == [m.version for m in shipped]
    assert {"schema_migration", "customer_profile", "processed_event", "consumer_offset"} <= (
        await _tables(fresh_database)
    )

    assert await migrate_url(fresh_database) == [], "a second run applies nothing"

    conn = await asyncpg.connect(fresh_database)
    try:
        rows = await conn.fetch("SELECT version, checksum FROM schema_migration ORDER BY version")
    finally:
        await conn.close()
    assert [(r["version"], r["checksum"]) for r in rows] == [
        (m.version, m.checksum) for m in shipped
    ]


async def test_two_processes_migrating_at_once_apply_each_version_once(
    fresh_database: str,
) -> None:
    conns = [await asyncpg.connect(fresh_database) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        versions = sorted(m.version for result in results for m in result)
        assert versions == [m.version for m in load_migrations()]
        count = await conns[0].fetchval("SELECT count(*) FROM schema_migration")
        assert count == len(load_migrations())
    finally:
        for conn in conns:
            await conn.close()


async def test_an_applied_migration_that_was_edited_is_refused(fresh_database: str) -> None:
    first = Migration(1, "first", "CREATE TABLE a (id int);")
    conn = await asyncpg.connect(fresh_database)
    try:
        await migrate(conn, [first])
        edited = Migration(1, "first", "CREATE TABLE a (id bigint);")
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await migrate(conn, [edited])
    finally:
        await conn.close()


async def test_a_failing_migration_leaves_no_trace(fresh_database: str) -> None:
    good = Migration(1, "good", "CREATE TABLE good (id int);")
    bad = Migration(2, "bad", "CREATE TABLE half (id int); SELECT no_such_function();")
    conn = await asyncpg.connect(fresh_database)
    try:
        with pytest.raises(asyncpg.UndefinedFunctionError):
            await migrate(conn, [good, bad])
        versions = await conn.fetch("SELECT version FROM schema_migration")
        assert [r["version"] for r in versions] == [1]
        assert "half" not in await _tables(fresh_database)
        # The lock was released despite the failure: a fixed file applies on the next run.
        fixed = Migration(2, "bad", "CREATE TABLE half (id int);")
        assert [m.version for m in await migrate(conn, [good, fixed])] == [2]
    finally:
        await conn.close()


def test_migration_files_must_be_numbered_without_gaps(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0003_c.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="without gaps"):
        load_migrations(tmp_path)


def test_migration_files_must_be_named_by_the_convention(tmp_path: Path) -> None:
    (tmp_path / "1-first.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=r"NNNN_name\.sql"):
        load_migrations(tmp_path)

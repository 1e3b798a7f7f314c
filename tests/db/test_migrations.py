"""Migrations against the real PostgreSQL: applied once, recorded, safe to repeat and race."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest
from structlog.testing import capture_logs

from touchpulse_shared.db.migrate import (
    NO_TRANSACTION_MARKER,
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


# A table under write load, and an index built on it by a no-transaction migration.
_TABLE = Migration(
    1,
    "reading",
    """
    CREATE TABLE reading (id bigserial PRIMARY KEY, customer_id text NOT NULL, value float8);
    INSERT INTO reading (customer_id, value)
    SELECT 'C-' || (g % 5000), g FROM generate_series(1, 50000) g;
    """,
)
_INDEX = Migration(
    2,
    "reading_customer",
    f"""{NO_TRANSACTION_MARKER}
-- Built while writers keep inserting (this file runs outside a transaction).
CREATE INDEX CONCURRENTLY IF NOT EXISTS reading_customer ON reading (customer_id);
""",
)
# Generous for a loaded machine; every wait below polls a state and ends as soon as it holds.
_WAIT_S = 60.0


class _Writers:
    """Connections inserting into ``reading`` one short transaction at a time."""

    def __init__(self, conns: list[asyncpg.Connection]) -> None:
        self.conns = conns
        self.rows = 0
        self.stop = asyncio.Event()
        self.tasks = [asyncio.create_task(self._write(c)) for c in conns]

    async def _write(self, conn: asyncpg.Connection) -> None:
        while not self.stop.is_set():
            await conn.execute("INSERT INTO reading (customer_id, value) VALUES ('C-w', 1)")
            self.rows += 1

    async def progress(self, rows: int, *, unless: asyncio.Task[object]) -> None:
        """Until ``rows`` more rows are committed; fails if that takes too long."""
        target = self.rows + rows
        deadline = asyncio.get_running_loop().time() + _WAIT_S
        while self.rows < target:
            assert not unless.done(), "the migration ended before the writers were checked"
            for task in self.tasks:
                if task.done():
                    task.result()
            assert asyncio.get_running_loop().time() < deadline, (
                f"writes blocked: {self.rows - target + rows} of {rows} rows in {_WAIT_S:.0f} s"
            )
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks)


async def _waiting_in_build(
    admin: asyncpg.Connection, pid: int, task: asyncio.Task[object]
) -> None:
    """Until the migrating session is inside CREATE INDEX CONCURRENTLY, waiting for an older
    transaction (the index exists, still invalid)."""
    deadline = asyncio.get_running_loop().time() + _WAIT_S
    while True:
        if task.done():
            task.result()  # raises what the migration raised
            pytest.fail("the migration finished while an older transaction was open")
        row = await admin.fetchrow(
            """
            SELECT a.wait_event, i.indisvalid FROM pg_stat_activity a
            LEFT JOIN pg_class c ON c.relname = 'reading_customer'
            LEFT JOIN pg_index i ON i.indexrelid = c.oid
            WHERE a.pid = $1
            """,
            pid,
        )
        if row is not None and row["wait_event"] == "virtualxid" and row["indisvalid"] is False:
            return
        assert asyncio.get_running_loop().time() < deadline, f"never waiting in the build: {row}"
        await asyncio.sleep(0.05)


async def _index_state(conn: asyncpg.Connection) -> list[bool]:
    rows = await conn.fetch(
        """
        SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        WHERE c.relname = 'reading_customer'
        """
    )
    return [r["indisvalid"] for r in rows]


async def test_a_no_transaction_migration_builds_an_index_while_writes_flow(
    fresh_database: str,
) -> None:
    conns = [await asyncpg.connect(fresh_database) for _ in range(7)]
    admin, blocker, migrator, second, *writer_conns = conns
    await migrate(migrator, [_TABLE])
    writers = _Writers(writer_conns)
    try:
        await writers.progress(50, unless=asyncio.create_task(asyncio.sleep(_WAIT_S)))
        # An older transaction keeps the build from finishing (CONCURRENTLY waits for every
        # snapshot older than its own), so what the writers do is seen mid-build.
        old = blocker.transaction(isolation="repeatable_read")
        await old.start()
        await blocker.fetchval("SELECT count(*) FROM reading")
        build = asyncio.create_task(migrate(migrator, [_TABLE, _INDEX]))
        await _waiting_in_build(admin, migrator.get_server_pid(), build)

        # The build holds SHARE UPDATE EXCLUSIVE, which INSERT's ROW EXCLUSIVE does not
        # conflict with (a plain CREATE INDEX holds SHARE, which does) ...
        modes = await admin.fetch(
            """
            SELECT mode FROM pg_locks
            WHERE pid = $1 AND relation = 'reading'::regclass AND granted
            """,
            migrator.get_server_pid(),
        )
        assert {r["mode"] for r in modes} == {"ShareUpdateExclusiveLock"}
        # ... and the writers go on committing while it is built.
        await writers.progress(500, unless=build)
        # A second runner waits for the lock without deadlocking against the build.
        waiting = asyncio.create_task(migrate(second, [_TABLE, _INDEX]))
        await writers.progress(100, unless=build)
        assert not waiting.done()

        await old.commit()
        assert [m.version for m in await asyncio.wait_for(build, _WAIT_S)] == [2]
        assert await asyncio.wait_for(waiting, _WAIT_S) == []
        await writers.progress(50, unless=asyncio.create_task(asyncio.sleep(_WAIT_S)))
        await writers.close()
        assert await _index_state(admin) == [True]
        recorded = await admin.fetch("SELECT version, checksum FROM schema_migration ORDER BY 1")
        assert [(r["version"], r["checksum"]) for r in recorded] == [
            (1, _TABLE.checksum),
            (2, _INDEX.checksum),
        ]
        written = await admin.fetchval("SELECT count(*) FROM reading WHERE customer_id = 'C-w'")
        assert written == writers.rows
    finally:
        for task in writers.tasks:
            task.cancel()
        await asyncio.gather(*writers.tasks, return_exceptions=True)
        for conn in conns:
            await conn.close()


async def test_an_interrupted_concurrent_build_is_dropped_and_built_again(
    fresh_database: str,
) -> None:
    admin, blocker, migrator = [await asyncpg.connect(fresh_database) for _ in range(3)]
    try:
        await migrate(migrator, [_TABLE])
        old = blocker.transaction(isolation="repeatable_read")
        await old.start()
        await blocker.fetchval("SELECT count(*) FROM reading")
        build = asyncio.create_task(migrate(migrator, [_TABLE, _INDEX]))
        await _waiting_in_build(admin, migrator.get_server_pid(), build)
        # The migrating session dies midway (a crash, a failover, an administrator).
        await admin.execute("SELECT pg_terminate_backend($1)", migrator.get_server_pid())
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
            await asyncio.wait_for(build, _WAIT_S)
        await old.commit()
        assert await _index_state(admin) == [False], "CONCURRENTLY left an invalid index"
        assert await admin.fetchval("SELECT max(version) FROM schema_migration") == 1

        rerun = await asyncpg.connect(fresh_database)
        try:
            with capture_logs() as logs:
                applied = await migrate(rerun, [_TABLE, _INDEX])
        finally:
            await rerun.close()
        assert [m.version for m in applied] == [2]
        assert await _index_state(admin) == [True]
        dropped = [e for e in logs if e["event"] == "db.migration.invalid_index_dropped"]
        assert [e["index"] for e in dropped] == ["reading_customer"]
    finally:
        for conn in (admin, blocker, migrator):
            await conn.close()


def test_a_concurrent_index_must_be_safe_to_build_again(tmp_path: Path) -> None:
    (tmp_path / "0001_index.sql").write_text(
        f"{NO_TRANSACTION_MARKER}\nCREATE INDEX CONCURRENTLY r ON reading (customer_id);\n"
    )
    with pytest.raises(MigrationError, match="needs IF NOT EXISTS"):
        load_migrations(tmp_path)

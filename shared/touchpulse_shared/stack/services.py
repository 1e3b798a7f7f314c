"""The Touchpulse services as child processes of ``touchpulse run``.

Each service is its own process (as in production), started with the resolved settings in
its environment, considered up once its ``/readyz`` answers 200, and stopped with SIGTERM
(uvicorn's graceful shutdown) before the servers it depends on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from touchpulse_shared.settings import Settings, env_name
from touchpulse_shared.stack.procs import spawn, stop, wait_until

# Services connect to Kafka and PostgreSQL at start; both are already up by then.
READY_TIMEOUT_S = 60.0
# uvicorn waits up to its graceful timeout (10 s) for requests in flight.
STOP_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    module: str
    port_setting: str
    #: Serves an OpenAPI document at /docs.
    api_docs: bool = True

    def port(self, settings: Settings) -> int:
        port: int = getattr(settings, self.port_setting)
        return port


SERVICES = (
    ServiceSpec("ingest", "touchpulse_ingest.main", "ingest_port"),
    ServiceSpec("scoring", "touchpulse_scoring.main", "scoring_metrics_port", api_docs=False),
    ServiceSpec("api", "touchpulse_api.main", "api_port"),
)


class RunningService:
    def __init__(self, spec: ServiceSpec, settings: Settings, workdir: Path) -> None:
        self.spec = spec
        self.url = f"http://{settings.host}:{spec.port(settings)}"
        self.log_path = workdir / f"{spec.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._settings = settings

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, *, timeout: float = READY_TIMEOUT_S) -> None:
        self._proc = spawn(
            [sys.executable, "-m", self.spec.module],
            log_path=self.log_path,
            env={**os.environ, **settings_env(self._settings)},
        )
        try:
            wait_until(
                self._ready,
                timeout=timeout,
                what=f"the {self.spec.name} service",
                proc=self._proc,
                log_path=self.log_path,
                interval=0.2,
            )
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, *, timeout: float = STOP_TIMEOUT_S) -> None:
        if self._proc is not None:
            stop(self._proc, sig=signal.SIGTERM, timeout=timeout)
            self._proc = None


def settings_env(settings: Settings) -> Mapping[str, str]:
    """The settings as the environment of a child process (only what is set)."""
    env = {}
    for name, value in settings.model_dump().items():
        if value is not None:
            env[env_name(name)] = str(value)
    return env

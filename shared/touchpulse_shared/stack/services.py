"""The Touchpulse services as child processes of ``touchpulse run``.

Each service is its own process (as in production), started with the resolved settings in
its environment, considered up once its ``/readyz`` answers 200, and stopped with SIGTERM
(uvicorn's graceful shutdown) before the servers it depends on.

A service that exits on its own is restarted with exponential backoff, as compose's
``restart: unless-stopped`` and Kubernetes' ``restartPolicy: Always`` do in production;
only a service that keeps crashing stops the stack (:class:`RestartPolicy`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
from pydantic import SecretStr

from touchpulse_shared.settings import Settings, env_name, reveal
from touchpulse_shared.stack.procs import StackError, spawn, stop, wait_until

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


@dataclass(frozen=True)
class RestartPolicy:
    """When ``touchpulse run`` restarts a service that exited on its own, and when it stops.

    The first restart comes after 1 s, then 2, 4, 8, 16 s (at most 30 s) while crashes keep
    coming within the window: a one-off crash (a bug on rare input, the OOM killer, someone's
    ``kill``) costs about a second of service, and nothing is lost (ingest answered 503 or
    the client retries; scoring's offsets live in PostgreSQL). Five crashes within two
    minutes is a crash loop: with the backoff that takes half a minute or more (1 + 2 + 4 +
    8 s of waiting plus four starts), long enough to ride out a dependency's brief outage,
    short enough that a service broken for good stops the stack with its log named instead
    of flapping unnoticed. A restart that does not get ready in time counts as a crash.
    """

    backoff_start_s: float = 1.0
    backoff_max_s: float = 30.0
    max_crashes: int = 5
    window_s: float = 120.0

    def delay(self, crashes: int) -> float:
        return float(min(self.backoff_start_s * 2 ** max(crashes - 1, 0), self.backoff_max_s))


class CrashLoop(StackError):
    """A service kept crashing: the runner stops everything."""


def describe_exit(code: int) -> str:
    """``exit code 1``, or ``exit code -9 (SIGKILL)`` for a signal."""
    if code < 0:
        try:
            return f"exit code {code} ({signal.Signals(-code).name})"
        except ValueError:
            pass
    return f"exit code {code}"


class RunningService:
    def __init__(
        self,
        spec: ServiceSpec,
        settings: Settings,
        workdir: Path,
        policy: RestartPolicy = RestartPolicy(),
    ) -> None:
        self.spec = spec
        self.url = f"http://{settings.host}:{spec.port(settings)}"
        self.log_path = workdir / f"{spec.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._settings = settings
        self.policy = policy
        #: Restarts so far, and how the last crash ended.
        self.restarts = 0
        self.last_exit: str | None = None
        self._crashes: deque[float] = deque()
        self._restart_at: float | None = None
        self._starting_since: float | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def up(self) -> bool:
        """Running and past its readiness (not crashed, waiting or restarting)."""
        return self.alive and self._starting_since is None

    def _spawn(self) -> subprocess.Popen[bytes]:
        self._proc = spawn(
            [sys.executable, "-m", self.spec.module],
            log_path=self.log_path,
            env={**os.environ, **settings_env(self._settings)},
        )
        return self._proc

    def start(self, *, timeout: float = READY_TIMEOUT_S) -> None:
        self._spawn()
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

    def supervise(self, now: float | None = None) -> str | None:
        """One step of supervision, from the runner's loop (never blocks for long): notice
        an exit, restart after the backoff, see the restart get ready. Returns what to tell
        the user, if anything; raises :class:`CrashLoop` when the service keeps crashing."""
        now = time.monotonic() if now is None else now
        if self._restart_at is not None:
            if now >= self._restart_at:
                self._restart_at = None
                self._spawn()
                self._starting_since = now
            return None
        if self._proc is None:
            return None
        code = self._proc.poll()
        if code is None:
            if self._starting_since is None:
                return None
            if self._ready():
                self._starting_since = None
                return (
                    f"{self.spec.name} restarted: pid {self.pid}, restart {self.restarts}, "
                    "ready again"
                )
            if now - self._starting_since <= READY_TIMEOUT_S:
                return None
            stop(self._proc, sig=signal.SIGTERM, timeout=STOP_TIMEOUT_S)
            self.last_exit = f"not ready within {READY_TIMEOUT_S:.0f} s"
        else:
            self.last_exit = describe_exit(code)
        self._proc = None
        self._starting_since = None
        self._crashes.append(now)
        while now - self._crashes[0] > self.policy.window_s:
            self._crashes.popleft()
        crashes = len(self._crashes)
        if crashes >= self.policy.max_crashes:
            raise CrashLoop(
                f"the {self.spec.name} service crashed {crashes} times within "
                f"{self.policy.window_s:.0f} s (last: {self.last_exit}); stopping everything. "
                f"Its log: {self.log_path}"
            )
        delay = self.policy.delay(crashes)
        self._restart_at = now + delay
        self.restarts += 1
        return (
            f"{self.spec.name} exited ({self.last_exit}); restart {self.restarts} in {delay:g} s "
            f"({crashes} of {self.policy.max_crashes} crashes allowed within "
            f"{self.policy.window_s:.0f} s; log {self.log_path})"
        )

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, *, timeout: float = STOP_TIMEOUT_S) -> None:
        self._restart_at = None
        if self._proc is not None:
            stop(self._proc, sig=signal.SIGTERM, timeout=timeout)
            self._proc = None


def settings_env(settings: Settings) -> Mapping[str, str]:
    """The settings as the environment of a child process (only what is set)."""
    env = {}
    for name, value in settings.model_dump().items():
        if value is not None:
            # A secret's own value: str() of a SecretStr is its mask.
            env[env_name(name)] = str(reveal(value) if isinstance(value, SecretStr) else value)
    return env

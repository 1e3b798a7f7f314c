"""The dispatcher as its own OS process, SIGKILLed while its requests are in flight: a new
one sends every delivery again with the same webhook-id once the leases run out, and
nothing is lost."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from standardwebhooks import Webhook

from tests.api.webhooks.conftest import Answer, Receiver, outbox, subscribe
from touchpulse_shared.settings import ENV_PREFIX, Settings
from touchpulse_shared.stack.services import settings_env

TIMEOUT_S = 5.0
LEASE_S = 10.0
# Wall-clock bounds on a loaded 2-core machine, not expectations.
START_S = 60.0
DRAIN_S = 90.0


class DispatcherProcess:
    def __init__(self, settings: Settings, log_path: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
        env.update(settings_env(settings))
        env["TOUCHPULSE_LOG_LEVEL"] = "INFO"
        self.log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [
                sys.executable,
                "-m",
                "touchpulse_api.webhooks",
                f"--timeout-s={TIMEOUT_S}",
                f"--lease-s={LEASE_S}",
            ],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self.log.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(60)
        self.log.close()
        return code


@pytest.fixture
def processes() -> Iterator[list[DispatcherProcess]]:
    started: list[DispatcherProcess] = []
    yield started
    for process in started:
        if process.proc.poll() is None:
            process.kill()


async def test_a_dispatcher_killed_mid_delivery_loses_nothing(
    pool: asyncpg.Pool,
    settings: Settings,
    receiver: Receiver,
    processes: list[DispatcherProcess],
    tmp_path: Path,
) -> None:
    _, secret = await subscribe(pool, settings, receiver.url)
    for n in range(5):
        await outbox(pool, intervention_id=f"iv-{n}")
    # Every request of the first dispatcher is held open: it dies with all of them in flight.
    receiver.default = Answer(200, hold=True)
    log_path = tmp_path / "dispatcher.log"

    first = DispatcherProcess(settings, log_path)
    processes.append(first)
    await receiver.wait_for(5, within_s=START_S)
    first.kill()
    in_flight = {r.webhook_id for r in receiver.requests}
    assert len(in_flight) == 5
    rows = await pool.fetch("SELECT id, state, attempts FROM webhook_delivery")
    assert {r["id"] for r in rows} == in_flight
    assert {(r["state"], r["attempts"]) for r in rows} == {("pending", 1)}
    assert await pool.fetchval("SELECT count(*) FROM webhook_attempt") == 0

    receiver.default = Answer(200)
    receiver.release.set()  # the held handlers answer a client that is gone
    second = DispatcherProcess(settings, log_path)
    processes.append(second)
    async with asyncio.timeout(DRAIN_S):
        # PostgreSQL has nothing to wait on here: poll it.
        while await pool.fetchval(  # noqa: ASYNC110
            "SELECT count(*) FROM webhook_delivery WHERE state <> 'delivered'"
        ):
            await asyncio.sleep(0.2)
    assert second.stop() == 0, log_path.read_text()

    resent = receiver.requests[5:]
    assert sorted(r.webhook_id for r in resent) == sorted(in_flight)
    for request in resent:
        Webhook(secret).verify(request.body, request.headers)
    bodies = {r.webhook_id: r.body for r in receiver.requests[:5]}
    assert all(bodies[r.webhook_id] == r.body for r in resent), "a retry carries the same body"
    rows = await pool.fetch("SELECT id, attempts FROM webhook_delivery")
    assert {r["attempts"] for r in rows} == {2}
    logged = await pool.fetch("SELECT attempt, status FROM webhook_attempt")
    assert {(r["attempt"], r["status"]) for r in logged} == {(2, 200)}
    assert len(logged) == 5

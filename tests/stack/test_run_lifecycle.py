"""`touchpulse run` (what `make run` executes): up, addresses printed, and nothing left behind.

Both ways a run can end are covered: a SIGTERM stops the servers in order, and a SIGKILL of
the runner (a crashed test session looks the same) takes them down with it.
"""

from __future__ import annotations

import asyncio
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import asyncpg
import httpx
import psutil
import pytest

from touchpulse_shared.stack.procs import free_port

# Broker and database start in a few seconds; the rest is slack for a loaded machine.
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0
READY_LINE = "Ctrl-C stops everything."


class Runner:
    def __init__(self, **settings: str) -> None:
        # A run of its own: local servers, and service ports nobody else uses.
        env = {
            k: v
            for k, v in os.environ.items()
            if k
            not in {
                "KAFKA_BOOTSTRAP_SERVERS",
                "TOUCHPULSE_KAFKA_BOOTSTRAP_SERVERS",
                "TOUCHPULSE_DATABASE_URL",
            }
        }
        for setting in (
            "TOUCHPULSE_INGEST_PORT",
            "TOUCHPULSE_API_PORT",
            "TOUCHPULSE_SCORING_METRICS_PORT",
        ):
            env[setting] = str(free_port())
        env.update(settings)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "touchpulse_shared.cli", "run"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self.output.append(line)
            if text in line:
                return
        pytest.fail(f"no {text!r} from touchpulse run; output:\n{''.join(self.output)}")

    def server_pids(self) -> dict[str, int]:
        pids = {}
        for line in self.output:
            match = re.match(r"\s+(kafka|postgres|ingest|scoring|api)\s.*pid (\d+)", line)
            if match:
                pids[match[1]] = int(match[2])
        return pids

    def printed(self, pattern: str) -> str:
        match = re.search(pattern, "".join(self.output))
        assert match, f"{pattern!r} not in output:\n{''.join(self.output)}"
        return match[1]


@pytest.fixture
def runner() -> Iterator[Runner]:
    run = Runner()
    yield run
    if run.proc.poll() is None:
        run.proc.kill()
        run.proc.wait()
    run._pump_thread.join(10)  # EOF once the runner is gone
    assert run.proc.stdout is not None
    run.proc.stdout.close()


def _gone(pids: dict[str, int], timeout: float) -> list[str]:
    procs = []
    for pid in pids.values():
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return [f"{p.pid} {p.name()}" for p in alive]


def test_sigterm_stops_every_server_it_started(runner: Runner) -> None:
    runner.wait_for(READY_LINE, START_TIMEOUT_S)
    printed = "".join(runner.output)
    assert re.search(r"kafka\s+127\.0\.0\.1:\d+", printed)
    assert re.search(r"postgres\s+postgresql://\S+@127\.0\.0\.1:\d+/touchpulse", printed)
    pids = runner.server_pids()
    assert set(pids) == {"kafka", "postgres", "ingest", "scoring", "api"}
    assert psutil.Process(pids["kafka"]).name() == "java"
    assert psutil.Process(pids["postgres"]).name() == "postgres"

    # The printed demo key works against the printed ingest address, over real HTTP.
    ingest = runner.printed(r"ingest\s+(http://\S+)")
    key = runner.printed(r"demo key\s+(tpk_\S+)")
    event = {
        "event_id": "lifecycle-1",
        "source": "demo",
        "customer_id": "C-1",
        "touchpoint": "call_centre",
        "type": "call.answered",
        "occurred_at": datetime.now(UTC).isoformat(),
        "measures": {"wait_seconds": 420},
    }
    response = httpx.post(
        f"{ingest}/v1/events", json=event, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    assert response.status_code == 202, response.text
    assert httpx.get(f"{ingest}/readyz", timeout=5).status_code == 200

    # ... and scoring turns it into journey health: 420 s on hold is a broken promise.
    database = runner.printed(r"postgres\s+(postgresql://\S+)")
    score = asyncio.run(_health_of(database, "C-1"))
    assert score is not None
    assert score < 100

    # ... which the api explains to a CRM, with the printed key.
    api = runner.printed(r"api\s+(http://\S+)")
    crm_key = runner.printed(r"crm key\s+(tpk_\S+)")
    health = httpx.get(
        f"{api}/v1/customers/C-1/health", headers={"Authorization": f"Bearer {crm_key}"}, timeout=30
    )
    assert health.status_code == 200, health.text
    assert health.json()["score"] == score
    assert health.json()["explanation"][0]["promise_id"] == "call-answer-time"

    runner.proc.send_signal(signal.SIGTERM)
    assert runner.proc.wait(STOP_TIMEOUT_S) == 0
    assert _gone(pids, timeout=5) == []
    runner.wait_for("Stopped.", 5)


async def _health_of(database: str, customer: str) -> float | None:
    conn = await asyncpg.connect(database)
    try:
        for _ in range(int(START_TIMEOUT_S / 0.2)):
            score = await conn.fetchval(
                "SELECT score FROM journey_health WHERE customer_id = $1", customer
            )
            if score is not None:
                return float(score)
            await asyncio.sleep(0.2)
        return None
    finally:
        await conn.close()


def test_a_killed_runner_takes_its_servers_with_it(runner: Runner) -> None:
    runner.wait_for(READY_LINE, START_TIMEOUT_S)
    pids = runner.server_pids()
    assert set(pids) == {"kafka", "postgres", "ingest", "scoring", "api"}

    runner.proc.kill()  # SIGKILL: no cleanup code of ours runs
    runner.proc.wait()
    # The kernel's parent-death signal does the work; postgres children follow the postmaster.
    assert _gone(pids, timeout=20) == []

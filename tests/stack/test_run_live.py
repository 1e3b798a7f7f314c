"""`make run` is a live demo: simulated journeys flow, the terminal shows what happens, and
Ctrl-C stops all of it."""

from __future__ import annotations

import os
import queue
import re
import signal
import time
from collections.abc import Iterator

import psutil
import pytest

from tests.stack.test_run_lifecycle import (
    READY_LINE,
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    Runner,
    _gone,
)
from touchpulse_shared.stack.live import ServiceState, Snapshot, render
from touchpulse_shared.stack.services import RestartPolicy

# The promise: live figures within a minute of start, interventions soon after.
LIVE_WITHIN_S = 60.0
INTERVENTION_WITHIN_S = 120.0


@pytest.fixture
def live_runner() -> Iterator[Runner]:
    run = Runner(
        TOUCHPULSE_RUN_LIVE_INTERVAL_S="2", TOUCHPULSE_SCORING_STATE_METRICS_INTERVAL_S="2"
    )
    yield run
    if run.proc.poll() is None:
        run.proc.kill()
        run.proc.wait()
    run._pump_thread.join(10)
    assert run.proc.stdout is not None
    run.proc.stdout.close()


def _wait_for_pattern(runner: Runner, pattern: str, within_s: float) -> re.Match[str]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        match = re.search(pattern, "".join(runner.output))
        if match:
            return match
        runner.wait_for("── live", max(deadline - time.monotonic(), 0.1))
    pytest.fail(f"{pattern!r} never shown; output:\n{''.join(runner.output)[-4000:]}")


def test_make_run_shows_the_demo_live_and_ctrl_c_stops_it(live_runner: Runner) -> None:
    runner = live_runner
    runner.wait_for(READY_LINE, START_TIMEOUT_S)
    started = time.monotonic()
    printed = "".join(runner.output)
    assert re.search(r"simulator\s+20 events/s", printed), printed
    assert re.search(r"ingest\s+http://\S+\s+\(docs http://\S+/docs, metrics", printed)
    pids = runner.server_pids()

    # The simulator puts its customers' profiles first; then events flow and are scored.
    _wait_for_pattern(
        runner, r"events/s\s+[1-9][\d.]* accepted\s+[1-9][\d.]* scored", LIVE_WITHIN_S
    )
    assert time.monotonic() - started < LIVE_WITHIN_S
    _wait_for_pattern(runner, r"health\s+red \d+ \(\d+%\)\s+amber", INTERVENTION_WITHIN_S)
    _wait_for_pattern(runner, r"weakest\s+\w+ \d+% broken of", INTERVENTION_WITHIN_S)
    # An intervention opened from a simulated breach, with what went wrong.
    _wait_for_pattern(
        runner,
        r"\n    sim-\S+\s+\(.*priority [\d.]+\)\n      - [\w-]+: expected ",
        INTERVENTION_WITHIN_S,
    )

    runner.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends to the foreground process
    assert runner.proc.wait(STOP_TIMEOUT_S) == 0
    assert _gone(pids, timeout=5) == []
    runner.wait_for("Stopped.", 5)


def _after(runner: Runner, start: int, pattern: str, within_s: float) -> re.Match[str]:
    """``pattern`` in what the runner printed from line ``start`` on, waiting for it (and
    reading what it printed last even after it exited)."""
    deadline = time.monotonic() + within_s
    while True:
        match = re.search(pattern, "".join(runner.output[start:]))
        if match:
            return match
        exited = runner.proc.poll() is not None
        try:
            runner.output.append(runner.lines.get(timeout=0.5))
            continue
        except queue.Empty:
            pass
        if exited or time.monotonic() > deadline:
            pytest.fail(f"{pattern!r} never shown; output:\n{''.join(runner.output)[-4000:]}")


def test_a_crashed_service_is_restarted_and_only_a_crash_loop_stops_the_run(
    live_runner: Runner,
) -> None:
    runner = live_runner
    runner.wait_for(READY_LINE, START_TIMEOUT_S)
    pids = runner.server_pids()
    _wait_for_pattern(runner, r"events/s\s+[\d.]+ accepted\s+[1-9][\d.]* scored", LIVE_WITHIN_S)

    # scoring dies (the OOM killer, a bug): it is restarted, said so, and scores again.
    mark = len(runner.output)
    os.kill(pids["scoring"], signal.SIGKILL)
    _after(runner, mark, r"↻ scoring exited \(exit code -9 \(SIGKILL\)\); restart 1 in 1 s", 30)
    pid = int(_after(runner, mark, r"↻ scoring restarted: pid (\d+), restart 1", 90)[1])
    assert pid != pids["scoring"]
    assert psutil.Process(pid).is_running()
    restarted = len(runner.output)
    # The live view names it, and events are scored again by the new process.
    _after(
        runner,
        restarted,
        r"events/s\s+[\d.]+ accepted\s+[1-9][\d.]* scored(?:.|\n)*?"
        r"restarts   scoring 1 \(last exit code -9 \(SIGKILL\); up\)",
        INTERVENTION_WITHIN_S,
    )
    assert runner.proc.poll() is None, "one crash must not stop the stack"
    for name in ("kafka", "postgres", "ingest", "api"):
        assert psutil.Process(pids[name]).is_running(), f"{name} was stopped"

    # A service that keeps crashing stops everything, with a message and exit status 1.
    policy = RestartPolicy()
    for _ in range(policy.max_crashes + 2):  # a spare kill in case one crash left the window
        os.kill(pid, signal.SIGKILL)
        mark = len(runner.output)
        match = _after(runner, mark, r"↻ scoring restarted: pid (\d+)|crashed \d+ times", 90)
        if match[1] is None:
            break
        pid = int(match[1])
    assert runner.proc.wait(STOP_TIMEOUT_S) == 1
    runner._pump_thread.join(10)
    while not runner.lines.empty():
        runner.output.append(runner.lines.get())
    printed = "".join(runner.output)
    assert re.search(
        rf"touchpulse: the scoring service crashed {policy.max_crashes} times within "
        rf"{policy.window_s:.0f} s \(last: exit code -9 \(SIGKILL\)\); stopping everything",
        printed,
    ), printed[-3000:]
    assert _gone(pids, timeout=10) == []


def test_restarts_back_off_and_are_shown() -> None:
    policy = RestartPolicy()
    assert [policy.delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    text = render(
        None,
        Snapshot(at=1.0),
        [
            ServiceState("ingest"),
            ServiceState("scoring", 2, "exit code -9 (SIGKILL)", up=False),
        ],
    )
    assert "restarts   scoring 2 (last exit code -9 (SIGKILL); restarting)" in text
    assert "ingest" not in text
    assert "restarts" not in render(None, Snapshot(at=1.0), [ServiceState("api")])


def test_the_live_view_reads_like_the_system() -> None:
    gap = {
        "promise_id": "call-answer-time",
        "expected": {"op": "<=", "target": 60.0, "unit": "wait_seconds"},
        "actual": 420.0,
    }
    never = {
        "promise_id": "delivery-within-48h",
        "expected": {"op": "<=", "target": 48.0, "unit": "hours"},
        "actual": None,
    }
    slot = {  # a promised slot's hours, as a person would read them
        "promise_id": "delivery-as-promised",
        "expected": {"op": "<=", "target": 47.69833333333333, "unit": "hours"},
        "actual": 52.016666666666666,
    }
    before = Snapshot(at=10.0, accepted=100, scored=90, rejected=1)
    after = Snapshot(
        at=15.0,
        accepted=200,
        scored=190,
        rejected=6,
        bands={"red": 2, "amber": 3, "green": 5},
        segment_means={"premium": 61.4, "standard": 80.0},
        outcomes={"delivery": (3, 10), "web": (1, 20), "survey": (0, 5)},
        open_interventions=1,
        newest=[
            {
                "customer_id": "C-9",
                "health_at_open": 31.2,
                "priority": 18.8,
                "gaps": [gap, never],
            },
            {"customer_id": "C-10", "health_at_open": 44.0, "priority": 6.0, "gaps": [slot]},
        ],
    )
    text = render(before, after)
    assert "20.0 accepted" in text
    assert "20.0 scored" in text
    assert "1.0 rejected" in text
    assert "red 2 (20%)  amber 3 (30%)  green 5 (50%)" in text
    assert "premium 61, standard 80" in text
    assert (
        "weakest    delivery 30% broken of 10, web 5% broken of 20, survey 0% broken of 5" in text
    )
    assert "C-9  (health 31, priority 18.8)" in text
    assert "call-answer-time: expected wait_seconds <= 60, actual 420" in text
    assert "delivery-within-48h: expected hours <= 48, actual never came" in text
    assert "delivery-as-promised: expected hours <= 47.7, actual 52.02" in text
    assert "no customer scored yet" in render(None, Snapshot(at=1.0))

"""`make run` is a live demo: simulated journeys flow, the terminal shows what happens, and
Ctrl-C stops all of it."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator

import pytest

from tests.stack.test_run_lifecycle import (
    READY_LINE,
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    Runner,
    _gone,
)
from touchpulse_shared.stack.live import Snapshot, render

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
            {"customer_id": "C-9", "health_at_open": 31.2, "priority": 18.8, "gaps": [gap, never]}
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
    assert "no customer scored yet" in render(None, Snapshot(at=1.0))

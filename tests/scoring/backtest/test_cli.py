"""``touchpulse catalogue backtest``'s refusals, before it reads anything: exit 2 with the
reason on stderr, nothing on stdout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def _backtest(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "touchpulse_shared.cli", "catalogue", "backtest", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_an_invalid_candidate_is_refused_with_its_problems(tmp_path: Path) -> None:
    broken = (
        (REPO / "deploy/promises.yaml")
        .read_text()
        .replace("    weight: 1.0\n", "    weight: -1\n", 1)
    )
    candidate = tmp_path / "broken.yaml"
    candidate.write_text(broken)
    done = _backtest(str(candidate), "--json")
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert "promise 'call-answer-time': weight" in done.stderr


def test_since_and_days_together_are_a_usage_error() -> None:
    both = _backtest("deploy/promises.yaml", "--since", "2026-12-01T00:00:00Z", "--days", "3")
    assert both.returncode == 2
    assert "not both" in both.stderr

"""A small catalogue whose every line the tests can point at, and ways to run the commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
from typer.testing import CliRunner

from touchpulse_scoring.catalogue_tools.cli import app

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ROOT / "deploy" / "promises.yaml"
#: The console script the project installs beside this interpreter.
TOUCHPULSE = Path(sys.executable).with_name("touchpulse")

BASE = """\
version: "2026.01.1"
touchpoints:
  call_centre: 1.0
  delivery: 1.5
  survey: 0.5
events:
  survey:
    survey.answered:
      required: [csat]
policy:
  half_life_days: 30
  bands: {amber_from: 50, green_from: 75}
  interventions:
    threshold: 50
    resolution_categories: [reached_and_fixed, compensated]
promises:
  - id: call-answer-time
    touchpoint: call_centre
    event_type: call.answered
    measure: wait_seconds
    expect: {op: "<=", target: 60}
    tolerance: 540
    weight: 1.0
    segments:
      premium: {target: 30, tolerance: 270}
    action: Call back
    description: We answer within a minute
  - id: call-resolved
    touchpoint: call_centre
    event_type: call.answered
    measure: resolved
    expect: {op: "==", target: true}
    weight: 1.5
    action: Follow up
    description: Solved in the first call
  - id: delivery-within-48h
    touchpoint: delivery
    deadline: {opened_by: order.placed, fulfilled_by: delivery.completed, within_hours: 48}
    tolerance: 48
    segments:
      premium: {within_hours: 24}
    action: Call about the delivery
    description: Delivered within two days
  - id: survey-csat
    touchpoint: survey
    event_type: survey.answered
    measure: csat
    expect: {op: ">=", target: 4}
    tolerance: 3
    severity: critical
    critical_at: 2
    action: Call the customer
    description: You were satisfied
"""


def mutate(text: str, old: str, new: str) -> str:
    """``text`` with its one occurrence of ``old`` replaced (a test edits what it means to)."""
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
    return text.replace(old, new)


def line_of(text: str, fragment: str) -> int:
    """The 1-based line holding ``fragment`` (which must occur once)."""
    assert text.count(fragment) == 1, f"{fragment!r} occurs {text.count(fragment)} times"
    return text[: text.index(fragment)].count("\n") + 1


def write(directory: Path, name: str, text: str | bytes) -> Path:
    path = directory / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def run(*args: str | Path) -> tuple[int, str, str]:
    """The catalogue commands in-process (fast): exit code, stdout, stderr."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def run_json(*args: str | Path) -> tuple[int, Any]:
    code, out, _ = run(*args, "--json")
    return code, orjson.loads(out)


def touchpulse(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The real ``touchpulse`` command: what proves the entry point plugs the commands in."""
    return subprocess.run(  # noqa: S603 - our own console script, fixed arguments
        [str(TOUCHPULSE), *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=ROOT,
    )

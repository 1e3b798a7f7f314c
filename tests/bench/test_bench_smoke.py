"""``make bench-ingest`` in its quick mode completes and reports every figure in full.

Speed is measured, never asserted: a loaded CI machine must not fail this test. What is
asserted is the shape of the report: each figure printed with a value, a ceiling and a
ratio, and a result file holding every key the docs describe.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench.ingest import FIGURE_KEYS

REPO = Path(__file__).resolve().parents[2]
# Quick mode takes about 30 s on 2 cores; the rest is slack for a loaded machine.
TIMEOUT_S = 240
NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.timeout(TIMEOUT_S + 30)]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, object]]:
    output = tmp_path_factory.mktemp("bench") / "ingest.json"
    proc = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "tests.bench.ingest", "--quick", "--output", str(output)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result: dict[str, object] = json.loads(output.read_text())
    return proc.stdout, result


def test_every_figure_is_printed_with_a_ceiling_and_a_ratio(
    quick_run: tuple[str, dict[str, object]],
) -> None:
    stdout, result = quick_run
    figures = result["figures"]
    assert isinstance(figures, dict)
    rows = stdout.splitlines()
    for key in FIGURE_KEYS:
        figure = figures[key]
        # Two figures may share a label (one value, two ceilings): the ceiling tells them apart.
        row = next((r for r in rows if figure["label"] in r and figure["ceiling_label"] in r), None)
        assert row is not None, f"{key} is not printed:\n{stdout}"
        # value, ceiling value and ratio at least
        assert len(NUMBER.findall(row.replace(figure["label"], ""))) >= 3, row
    assert "shares the machine's" in stdout  # the load generator's share is stated


def test_the_result_file_holds_every_key(quick_run: tuple[str, dict[str, object]]) -> None:
    _, result = quick_run
    for key in (
        "benchmark",
        "mode",
        "started_at",
        "finished_at",
        "machine",
        "versions",
        "settings",
        "figures",
        "targets",
        "cpu",
        "peak_rss_bytes",
        "rounds",
        "open_loop",
        "notes",
        "warnings",
    ):
        assert key in result, key
    assert result["mode"] == "quick"
    machine, versions = result["machine"], result["versions"]
    assert isinstance(machine, dict)
    assert isinstance(versions, dict)
    assert machine["nproc"]
    assert machine["memory_bytes"]
    for package in ("python", "kafka", "aiokafka", "fastapi", "uvicorn", "pydantic"):
        assert versions[package], package
    figures = result["figures"]
    assert isinstance(figures, dict)
    assert set(figures) == set(FIGURE_KEYS)
    for key, figure in figures.items():
        for field in ("value", "ceiling"):
            assert isinstance(figure[field], float), (key, field)
            assert math.isfinite(figure[field]), (key, field)
        assert set(figure["ratio"]) == {"median", "min", "max", "n"}, key
    settings = result["settings"]
    assert isinstance(settings, dict)
    corpus = settings["corpus"]
    assert corpus["kprod_record_size"] == round(corpus["record_value_bytes"])
    assert settings["producer"]["linger_ms"] >= 0

"""``make bench-ingest``, ``make bench-scoring`` and ``make bench-api`` in their quick modes
complete and report every figure in full.

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
from typing import Any

import pytest

from tests.bench.api import CPU_COLUMNS as API_CPU_COLUMNS
from tests.bench.api import FIGURE_KEYS as API_FIGURE_KEYS
from tests.bench.ingest import FIGURE_KEYS
from tests.bench.scoring import FIGURE_KEYS as SCORING_FIGURE_KEYS

REPO = Path(__file__).resolve().parents[2]
# Quick mode takes about 30 s on 2 cores; the rest is slack for a loaded machine.
TIMEOUT_S = 240
NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.timeout(TIMEOUT_S + 30)]


def _quick(bench: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, object]]:
    output = tmp_path_factory.mktemp("bench") / f"{bench}.json"
    proc = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", f"tests.bench.{bench}", "--quick", "--output", str(output)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result: dict[str, object] = json.loads(output.read_text())
    return proc.stdout, result


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, object]]:
    return _quick("ingest", tmp_path_factory)


@pytest.fixture(scope="module")
def scoring_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    return _quick("scoring", tmp_path_factory)


@pytest.fixture(scope="module")
def api_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    return _quick("api", tmp_path_factory)


def _assert_printed(stdout: str, figures: dict[str, Any], keys: tuple[str, ...]) -> None:
    rows = stdout.splitlines()
    for key in keys:
        figure = figures[key]
        # Two figures may share a label (one value, two ceilings): the ceiling tells them apart.
        row = next((r for r in rows if figure["label"] in r and figure["ceiling_label"] in r), None)
        assert row is not None, f"{key} is not printed:\n{stdout}"
        # figure, value, ceiling, ceiling value, ratio, target, met: columns 2+ spaces apart
        cells = re.split(r"\s{2,}", row.strip())
        assert len(cells) == 7, row
        for cell in (cells[1], cells[3], cells[4]):
            assert NUMBER.match(cell), row


def _assert_complete(figures: dict[str, Any], keys: tuple[str, ...]) -> None:
    assert set(figures) == set(keys)
    for key, figure in figures.items():
        for field in ("value", "ceiling"):
            assert isinstance(figure[field], float), (key, field)
            assert math.isfinite(figure[field]), (key, field)
        assert set(figure["ratio"]) == {"median", "min", "max", "n"}, key
        assert math.isfinite(figure["ratio"]["median"]), key


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


def test_scoring_prints_every_figure_with_a_ceiling_and_a_ratio(
    scoring_run: tuple[str, dict[str, Any]],
) -> None:
    stdout, result = scoring_run
    _assert_printed(stdout, result["figures"], SCORING_FIGURE_KEYS)
    assert "shares the machine's" in stdout  # this process's share is stated
    for what in ("scoring", "postgres", "kafka broker", "peak RSS: scoring"):
        assert what in stdout, what


def test_scoring_result_file_holds_every_key(scoring_run: tuple[str, dict[str, Any]]) -> None:
    _, result = scoring_run
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
        "work",
        "pairs",
        "open_loop",
        "open_loop_lower_rate",
        "notes",
        "warnings",
    ):
        assert key in result, key
    assert result["benchmark"] == "scoring"
    assert result["mode"] == "quick"
    assert result["machine"]["nproc"]
    for package in ("python", "kafka", "postgresql", "aiokafka", "asyncpg", "java"):
        assert result["versions"][package], package
    _assert_complete(result["figures"], SCORING_FIGURE_KEYS)
    assert set(result["targets"]) == {"events_per_cpu_s", "p99_ms"}
    # Scoring did the work the corpus asks for: every event applied, none a dead letter,
    # outcomes kept and broken, deadlines missed, interventions opened.
    work = result["work"]
    assert work["counts"]["processed"] == result["settings"]["corpus"]["events"]
    assert work["metrics"]["events_dead_letter"] == 0
    for count in ("outcomes", "broken", "missed_deadlines", "interventions"):
        assert work["counts"][count] > 0, count
    assert len(result["pairs"]) == 1
    scoring = result["pairs"][0]["scoring"]
    for process in ("scoring", "postgres", "kafka"):
        assert scoring["cpu_s_per_event"][process] > 0, process
    assert result["peak_rss_bytes"]["scoring"] > 0
    for key in ("open_loop", "open_loop_lower_rate"):
        open_loop = result[key]
        assert open_loop["incomplete"] == 0, key
        assert open_loop["latency_db"]["count"] > 0, key
        assert len(open_loop["latency_db_by_quarter"]) == 4, key
        assert open_loop["latency_metric"]["count"] > 0, key


def test_api_prints_every_figure_with_a_ceiling_and_a_ratio(
    api_run: tuple[str, dict[str, Any]],
) -> None:
    stdout, result = api_run
    _assert_printed(stdout, result["figures"], API_FIGURE_KEYS)
    assert "shares the machine's" in stdout  # the load generator's share is stated
    # The background load is stated, and so is every process's CPU and the api's memory.
    assert "background while ingesting (health): 500 events/s offered to ingest" in stdout
    for what in ("postgres (all)", "load generator", "scoring", "kafka broker", "peak RSS: api"):
        assert what in stdout, what


def test_api_result_file_holds_every_key(api_run: tuple[str, dict[str, Any]]) -> None:
    _, result = api_run
    for key in (
        "benchmark",
        "mode",
        "started_at",
        "finished_at",
        "machine",
        "versions",
        "settings",
        "state",
        "answers",
        "figures",
        "targets",
        "cpu",
        "peak_rss_bytes",
        "pairs",
        "open_loop",
        "notes",
        "warnings",
    ):
        assert key in result, key
    assert result["benchmark"] == "api"
    assert result["mode"] == "quick"
    assert result["machine"]["nproc"]
    for package in ("python", "fastapi", "starlette", "uvicorn", "asyncpg", "kafka", "postgresql"):
        assert result["versions"][package], package
    _assert_complete(result["figures"], API_FIGURE_KEYS)
    assert result["targets"]["health_p99_ms"]["max"] == 15.0
    assert isinstance(result["targets"]["health_p99_ms"]["met"], bool)
    # The pipeline built the state the api reads: health, history, outcomes kept and broken.
    for count in ("customers", "touchpoint_health", "history", "outcomes", "broken"):
        assert result["state"][count] > 0, count
    assert result["answers"]["explanation_items"] > 0
    assert len(result["pairs"]) == 1
    for server in ("health", "bare"):
        assert result["pairs"][0][server]["statuses"] == {
            "200": result["pairs"][0][server]["requests"]
        }
    loops = result["open_loop"]
    rate = loops["rate_per_s"]
    assert rate == pytest.approx(0.5 * result["pairs"][0]["health"]["units_per_s"])
    for key in ("health_ingesting", "bare_ingesting", "health_quiet", "bare_quiet"):
        assert loops[key]["offered_per_s"] == rate, key
        assert loops[key]["incomplete"] == 0, key
        assert loops[key]["latency"]["count"] > 0, key
    for key in ("health_ingesting_background", "bare_ingesting_background"):
        background = loops[key]
        assert background["offered_events_per_s"] > 0, key
        assert background["acked_events_per_s"] > 0, key
        assert background["committed_in_window"] > 0, key
    # The broker's and PostgreSQL's CPU is measured when the run started them.
    local = {c for c in API_CPU_COLUMNS if c not in {"kafka", "postgres"}}
    for phase, cpu in result["cpu"].items():
        assert cpu["unit"] == "request", phase
        assert local <= set(cpu["us_per_unit"]), phase
    health = result["cpu"]["health (closed)"]["us_per_unit"]
    for process in ("api", "loadgen", "postgres"):
        assert health.get(process, 1.0) > 0, process
    assert result["peak_rss_bytes"]["api"] > 0

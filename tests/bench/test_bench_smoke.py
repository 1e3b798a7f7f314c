"""``make bench`` in its quick mode (``python -m tests.bench --quick``: every stage, one broker
and one database) completes and reports every figure in full.

Speed is measured, never asserted: a loaded CI machine must not fail this test. What is
asserted is the shape of the report: each figure printed with a value, a ceiling and a
ratio, every process with its CPU and memory, and a result file holding every key the docs
describe.
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

from tests.bench import api, ingest, scale, scoring

REPO = Path(__file__).resolve().parents[2]
# The quick suite takes about 90 s on 2 cores; the rest is slack for a loaded machine.
TIMEOUT_S = 300
NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
STAGE_FIGURES = {
    "ingest": ingest.FIGURE_KEYS,
    "scoring": scoring.FIGURE_KEYS,
    "scale": scale.FIGURE_KEYS,
    "api": api.FIGURE_KEYS,
}

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.timeout(TIMEOUT_S + 30)]


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    output = tmp_path_factory.mktemp("bench") / "suite.json"
    proc = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "tests.bench", "--quick", "--output", str(output)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(output.read_text())
    return proc.stdout, result


def test_every_figure_is_printed_with_its_ceiling_and_ratio(
    suite: tuple[str, dict[str, Any]],
) -> None:
    stdout, result = suite
    rows = stdout.splitlines()
    for key, figure in result["figures"].items():
        # Two figures may share a label (one value, two ceilings): the ceiling tells them apart.
        row = next(
            (
                r
                for r in rows
                if r.startswith(figure["stage"] + " ")
                and f"  {figure['label']}  " in r
                and f"  {figure['ceiling_label']}  " in r
            ),
            None,
        )
        assert row is not None, f"{key} is not printed:\n{stdout}"
        # stage, figure, value, ceiling, ceiling value, ratio, target, met: 2+ spaces apart
        cells = re.split(r"\s{2,}", row.strip())
        assert len(cells) == 8, row
        for cell in (cells[2], cells[4], cells[5]):
            assert NUMBER.match(cell), row
    assert "shares the machine's" in stdout  # the load generator's share is stated
    assert "linear scaling" in stdout  # and the speed-up's ceiling, with why
    for what in ("peak RSS", "scoring-2", "postgres (all", "load generator", "kafka broker"):
        assert what in stdout, what


def test_the_result_file_holds_every_key(suite: tuple[str, dict[str, Any]]) -> None:
    _, result = suite
    for key in (
        "benchmark",
        "mode",
        "started_at",
        "finished_at",
        "wall_s",
        "stage_wall_s",
        "machine",
        "versions",
        "settings",
        "figures",
        "processes",
        "targets",
        "notes",
        "warnings",
        "stages",
    ):
        assert key in result, key
    assert result["benchmark"] == "suite"
    assert result["mode"] == "quick"
    assert set(result["stages"]) == set(STAGE_FIGURES)
    assert set(result["stage_wall_s"]) == set(STAGE_FIGURES)
    assert result["machine"]["nproc"]
    assert result["machine"]["memory_bytes"]
    for package in (
        "python",
        "kafka",
        "postgresql",
        "java",
        "aiokafka",
        "asyncpg",
        "fastapi",
        "uvicorn",
        "pydantic",
        "starlette",
    ):
        assert result["versions"][package], package
    assert set(result["settings"]["stages"]) == set(STAGE_FIGURES)
    expected = {f"{stage}.{key}" for stage, keys in STAGE_FIGURES.items() for key in keys}
    assert set(result["figures"]) == expected
    for key, figure in result["figures"].items():
        assert figure["stage"] == key.partition(".")[0]
        for field in ("value", "ceiling"):
            assert isinstance(figure[field], float), (key, field)
            assert math.isfinite(figure[field]), (key, field)
        assert set(figure["ratio"]) == {"median", "min", "max", "n"}, key
        assert math.isfinite(figure["ratio"]["median"]), key


def test_every_process_has_its_cpu_and_memory(suite: tuple[str, dict[str, Any]]) -> None:
    _, result = suite
    found = result["processes"]
    local = result["settings"]["servers"]["kafka"]["where"] == "local"
    expected = {
        "ingest": ["ingest", "load generator"],
        "scoring": ["scoring", "postgres"],
        "scale": ["scoring", "scoring-1", "scoring-2", "postgres"],
        "api": ["api", "ingest", "scoring", "postgres", "load generator"],
    }
    for stage, names in expected.items():
        for name in names + (["kafka"] if local else []):
            entry = found[stage][name]
            assert entry["cpu"], (stage, name)
            for phase, cpu in entry["cpu"].items():
                assert cpu["cpu_s_per_unit"] >= 0, (stage, name, phase)
                assert cpu["unit"] in {"event", "request"}, (stage, name, phase)
    for stage, name in (
        ("ingest", "ingest"),
        ("scoring", "scoring"),
        ("scale", "scoring-1"),
        ("scale", "scoring-2"),
        ("api", "api"),
    ):
        assert found[stage][name]["peak_rss_bytes"] > 0, (stage, name)
    if local:
        for stage in expected:
            assert found[stage]["kafka"]["peak_rss_bytes"] > 0, stage
            assert found[stage]["postgres (largest process)"]["peak_rss_bytes"] > 0, stage
            assert found[stage]["postgres (all, PSS)"]["peak_rss_bytes"] > 0, stage


def test_the_stages_did_their_work(suite: tuple[str, dict[str, Any]]) -> None:
    _, result = suite
    stages = result["stages"]
    # Ingest: Kafka's own producer and every phase measured.
    settings = stages["ingest"]["settings"]
    assert settings["corpus"]["kprod_record_size"] == round(
        settings["corpus"]["record_value_bytes"]
    )
    assert len(stages["ingest"]["rounds"]) == 1
    # Scoring applied every event, none a dead letter, and found what the corpus holds.
    work = stages["scoring"]["work"]
    assert work["counts"]["processed"] == stages["scoring"]["settings"]["corpus"]["events"]
    assert work["metrics"]["events_dead_letter"] == 0
    for count in ("outcomes", "broken", "missed_deadlines", "interventions"):
        assert work["counts"][count] > 0, count
    for key in ("open_loop", "open_loop_lower_rate"):
        open_loop = stages["scoring"][key]
        assert open_loop["incomplete"] == 0, key
        assert open_loop["latency_db"]["count"] > 0, key
        assert len(open_loop["latency_db_by_quarter"]) == 4, key
    # Scale-out: one process, then two of one group, each applying every event.
    scaled = stages["scale"]
    assert scaled["kcons"]["records"] >= scaled["settings"]["corpus"]["events"]
    for pair in scaled["pairs"]:
        assert pair["one"]["processes"] == ["scoring"]
        assert pair["two"]["processes"] == ["scoring-1", "scoring-2"]
        for run in (pair["one"], pair["two"]):
            assert run["counts"]["processed"] == scaled["settings"]["corpus"]["events"]
            for process in run["processes"]:
                assert run["cpu_s_per_event"][process] > 0, process
    # The api: every read answered 200, the pipeline built the state and kept up.
    read = stages["api"]
    for count in ("customers", "touchpoint_health", "history", "outcomes", "broken"):
        assert read["state"][count] > 0, count
    for server in ("health", "bare"):
        pair = read["pairs"][0][server]
        assert pair["statuses"] == {"200": pair["requests"]}
    loops = read["open_loop"]
    for key in ("health_ingesting", "bare_ingesting", "health_quiet", "bare_quiet"):
        assert loops[key]["incomplete"] == 0, key
        assert loops[key]["latency"]["count"] > 0, key

"""``make bench`` in its smoke form (``python -m tests.bench --smoke``: every stage in its quick
mode, the replay and history stages at their smallest; one broker and one database)
completes and reports every figure in full.

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

from tests.bench import api, backtest, desk, history, ingest, replay, scale, scoring

REPO = Path(__file__).resolve().parents[2]
# The smoke suite takes about 2.5 min on 2 cores; the rest is slack for a loaded machine.
TIMEOUT_S = 420
NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
STAGE_FIGURES = {
    "ingest": ingest.FIGURE_KEYS,
    "scoring": scoring.FIGURE_KEYS,
    "replay": replay.FIGURE_KEYS,
    "scale": scale.FIGURE_KEYS,
    "api": api.FIGURE_KEYS,
    "history": history.FIGURE_KEYS,
    "desk": desk.FIGURE_KEYS,
    "backtest": backtest.FIGURE_KEYS,
}
#: Figures new with issue 14: each must be there and positive.
POSITIVE = {
    *(f"replay.{key}" for key in replay.FIGURE_KEYS),
    *(f"history.{key}" for key in history.FIGURE_KEYS),
    *(f"desk.{key}" for key in desk.FIGURE_KEYS),
    *(f"backtest.{key}" for key in backtest.FIGURE_KEYS),
    *(
        f"scoring.{key}"
        for key in (
            "scoring_us_per_event_vs_upsert",
            "postgres_us_per_event_vs_upsert",
            "high_rate_at_offered",
            "high_rate_p50_vs_kafka",
            "high_rate_p99_vs_kafka",
            "peak_rss_mib",
            "customers_touched",
            "rss_at_1m_customers_mib",
        )
    ),
}

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.timeout(TIMEOUT_S + 30)]


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    output = tmp_path_factory.mktemp("bench") / "suite.json"
    proc = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "tests.bench", "--smoke", "--output", str(output)],
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
    assert result["mode"] == "smoke"
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
    for key in POSITIVE:
        figure = result["figures"][key]
        assert figure["value"] > 0, key
        assert figure["ceiling"] > 0, key
        assert figure["ratio"]["median"] > 0, key


def test_every_process_has_its_cpu_and_memory(suite: tuple[str, dict[str, Any]]) -> None:
    _, result = suite
    found = result["processes"]
    local = result["settings"]["servers"]["kafka"]["where"] == "local"
    expected = {
        "ingest": ["ingest", "load generator"],
        "scoring": ["scoring", "postgres"],
        "replay": ["replay", "postgres"],
        "scale": ["scoring", "scoring-1", "scoring-2", "postgres"],
        "api": ["api", "ingest", "scoring", "postgres", "load generator"],
        "history": ["scoring", "api", "postgres"],
        "desk": ["api", "postgres", "load generator"],
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
        ("replay", "replay"),
        ("history", "scoring"),
        ("history", "api"),
        ("desk", "api"),
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
    # The high rate may leave a backlog: measured, not required to keep up.
    high = stages["scoring"]["open_loop_high_rate"]
    assert high["latency_db"]["count"] > 0
    assert high["sustained_per_s"] > 0
    # The memory probe touched one customer per event.
    probe = stages["scoring"]["memory_probe"]
    assert probe["customers_touched"] == probe["customers"] > 0
    assert probe["peak_rss_bytes"] > 0
    # The replay rebuilt every event of the corpus, with interventions muted.
    rebuilt = stages["replay"]
    assert rebuilt["work"]["counts"]["processed"] == rebuilt["settings"]["corpus"]["events"]
    assert rebuilt["work"]["counts"]["interventions"] == 0
    for pair in rebuilt["pairs"]:
        assert pair["replay"]["exit_code"] in (0, 1)
        assert pair["replay"]["events"] > 0
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
    # History: the year holds its N events' rows, the lifecycle pruned some, every measured
    # corpus was applied and every health read answered.
    past = stages["history"]
    year = past["year"]
    stored = past["settings"]["plan"]["stored_events"]
    assert year["after_the_year"]["rows"]["processed_event"] >= stored
    assert year["after_the_year"]["rows"]["customers"] > 0
    assert (
        year["after_pruning"]["rows"]["processed_event"]
        < year["after_the_year"]["rows"]["processed_event"]
    )
    assert len(past["runs"]) == 4
    for name, run in past["runs"].items():
        assert run["events"] > 0, name
    for level, reads in past["reads"].items():
        assert reads["statuses"] == {"200": reads["requests"]}, level
        assert reads["latency"]["count"] > 0, level


def test_the_desk_stage_seeded_its_cases_and_every_page_answered(
    suite: tuple[str, dict[str, Any]],
) -> None:
    _, result = suite
    pages = result["stages"]["desk"]
    plan = pages["settings"]["plan"]
    assert pages["state"]["customers"] == plan["customers"]
    assert pages["state"]["open_interventions"] == plan["open_interventions"]
    for pair in pages["pairs"]:
        for name in ("queue", "customer", "bare"):
            assert pair[name]["statuses"] == {"200": pair[name]["requests"]}, name
            assert pair[name]["latency"]["count"] > 0, name

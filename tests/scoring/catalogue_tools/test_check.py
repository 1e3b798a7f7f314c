"""``touchpulse catalogue check``: the services' verdict, every problem at once and placed."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import yaml

from tests.scoring.catalogue_tools.support import (
    BASE,
    SHIPPED,
    line_of,
    mutate,
    run,
    run_json,
    touchpulse,
    write,
)
from touchpulse_scoring.catalogue_source import CatalogueSource
from touchpulse_scoring.domain import CatalogueError, parse_catalogue


def test_the_shipped_catalogue_passes_through_the_touchpulse_command() -> None:
    """The real console script: the entry point plugs `catalogue` into `touchpulse`."""
    done = touchpulse("catalogue", "check", SHIPPED, "--json")
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    raw = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    assert report["valid"] is True
    assert report["problems"] == []
    assert report["version"] == raw["version"]
    assert report["sha256"] == hashlib.sha256(SHIPPED.read_bytes()).hexdigest()
    # ...which is the hash the services report for the catalogue they run.
    assert report["sha256"] == CatalogueSource(SHIPPED).content_hash
    summary = report["summary"]
    # Every figure recomputed from the YAML itself, not from the domain.
    assert summary["promises"] == len(raw["promises"])
    assert [t["name"] for t in summary["touchpoints"]] == list(raw["touchpoints"])
    for touchpoint in summary["touchpoints"]:
        assert touchpoint["importance"] == raw["touchpoints"][touchpoint["name"]]
        assert [p["id"] for p in touchpoint["promises"]] == [
            p["id"] for p in raw["promises"] if p["touchpoint"] == touchpoint["name"]
        ]
    segments: dict[str, list[str]] = {}
    for promise in raw["promises"]:
        for segment in promise.get("segments", {}):
            segments.setdefault(segment, []).append(promise["id"])
    assert summary["segments"] == segments
    assert [c["id"] for c in summary["critical"]] == [
        p["id"] for p in raw["promises"] if p.get("severity") == "critical"
    ]
    interventions = raw["policy"]["interventions"]
    assert summary["policy"]["intervention_threshold"] == interventions["threshold"]
    assert summary["policy"]["resolution_categories"] == interventions["resolution_categories"]
    assert summary["policy"]["half_life_days"] == raw["policy"]["half_life_days"]


def test_the_text_summary_names_what_the_catalogue_promises(tmp_path: Path) -> None:
    code, out, _ = run("check", write(tmp_path, "c.yaml", BASE))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].endswith("c.yaml: valid promise catalogue, version 2026.01.1")
    assert lines[1] == f"  sha256 {hashlib.sha256(BASE.encode()).hexdigest()}"
    assert "touchpoints (3), 4 promises:" in lines
    assert "  call_centre  importance 1, 2 promises" in lines
    assert "  survey       importance 0.5, 1 promise, declares 1 event type" in lines
    assert "      call-answer-time: call.answered wait_seconds <= 60 ± 540" in lines
    assert "      call-resolved: call.answered resolved == true, weight 1.5" in lines
    assert (
        "      delivery-within-48h: order.placed → delivery.completed within 48 h ± 48 h" in lines
    )
    assert "      survey-csat: survey.answered csat >= 4 ± 3 [critical]" in lines
    assert "  premium: call-answer-time, delivery-within-48h" in lines
    assert "critical promises (1):" in lines
    assert "  survey-csat (survey, critical at 2)" in lines
    assert "  resolution categories: reached_and_fixed, compensated" in lines


@dataclass(frozen=True)
class Expected:
    subject: str  # "promise 'id'", "policy" or "" (another section)
    field: str
    message: str  # a part of the message
    at: str | None  # a fragment on the line the problem is placed on (None: no line)


@dataclass(frozen=True)
class Case:
    edits: tuple[tuple[str, str], ...]
    expected: tuple[Expected, ...]


CASES = {
    "unknown field": Case(
        (
            ("    weight: 1.0\n", "    weight: 1.0\n    colour: blue\n"),
            ("  half_life_days: 30\n", "  half_life_days: 30\n  half_life_dayz: 20\n"),
        ),
        (
            Expected("promise 'call-answer-time'", "colour", "Extra inputs", "colour: blue"),
            Expected("policy", "half_life_dayz", "Extra inputs", "half_life_dayz"),
        ),
    ),
    "missing field": Case(
        (
            ('expect: {op: "<=", target: 60}', 'expect: {op: "<="}'),
            ("    action: Call the customer\n", ""),
        ),
        (
            Expected("promise 'call-answer-time'", "expect.target", "Field required", '{op: "<="}'),
            # A missing field is placed on what should hold it: here the promise itself.
            Expected("promise 'survey-csat'", "action", "Field required", "id: survey-csat"),
        ),
    ),
    "bad type": Case(
        (
            ("tolerance: 540", 'tolerance: "540"'),
            ("    weight: 1.5\n", "    weight: heavy\n"),
            ("  call_centre: 1.0", "  call_centre: yes"),
        ),
        (
            Expected("promise 'call-answer-time'", "tolerance", "valid number", '"540"'),
            Expected("promise 'call-resolved'", "weight", "valid number", "heavy"),
            Expected("", "touchpoints.call_centre", "valid number", "call_centre: yes"),
        ),
    ),
    "duplicate id and unknown touchpoint": Case(
        (
            ("  - id: call-resolved\n", "  - id: call-answer-time  # copied\n"),
            ("touchpoint: delivery\n", "touchpoint: deliveries\n"),
        ),
        (
            Expected("promise 'call-answer-time'", "id", "duplicate id", "# copied"),
            Expected(
                "promise 'delivery-within-48h'",
                "touchpoint",
                "'deliveries' is not one of the catalogue's touchpoints",
                "deliveries",
            ),
        ),
    ),
    "segment overrides": Case(
        (
            ("      premium: {target: 30, tolerance: 270}", "      Premium Gold: {target: 30}"),
            ("      premium: {within_hours: 24}", "      premium: {}"),
            ("    weight: 1.5\n", "    weight: 1.5\n    segments: {premium: {target: 2}}\n"),
            (
                "  half_life_days: 30\n",
                "  half_life_days: 30\n  prior: {touchpoints: {shop: {}}}\n",
            ),
        ),
        (
            Expected(
                "promise 'call-answer-time'",
                "segments.Premium Gold (the name)",
                "Input should be a lowercase letter",
                "Premium Gold",
            ),
            Expected(
                "promise 'delivery-within-48h'",
                "segments.premium",
                "give within_hours, tolerance or both",
                "premium: {}",
            ),
            Expected(
                "promise 'call-resolved'",
                "segments.premium",
                "a boolean promise has no segment overrides",
                "segments: {premium: {target: 2}}",
            ),
            Expected(
                "policy",
                "prior.touchpoints.shop",
                "'shop' is not one of the catalogue's touchpoints",
                "prior: {touchpoints",
            ),
        ),
    ),
    "bad policy values": Case(
        (
            ("bands: {amber_from: 50, green_from: 75}", "bands: {amber_from: 80, green_from: 75}"),
            # A model's own rule is checked once its fields are valid (pydantic), so the
            # field error is put in another model than the rules'.
            ("  half_life_days: 30\n", "  half_life_days: 0\n"),
            ("[reached_and_fixed, compensated]", "[reached_and_fixed, reached_and_fixed]"),
        ),
        (
            Expected("policy", "bands", "amber_from must not exceed green_from", "bands:"),
            Expected("policy", "half_life_days", "greater than 0", "half_life_days: 0"),
            Expected("policy", "interventions", "lists a category twice", "  interventions:"),
        ),
    ),
    "rules across fields": Case(
        (
            ("    tolerance: 540\n", ""),
            ("    critical_at: 2\n", "    critical_at: 5\n"),
        ),
        (
            Expected(
                "promise 'call-answer-time'",
                "tolerance",
                "a numeric promise needs a tolerance greater than 0",
                "id: call-answer-time",
            ),
            Expected(
                "promise 'survey-csat'",
                "critical_at",
                "must be below expect.target (4.0)",
                "critical_at: 5",
            ),
        ),
    ),
    "tracking plan": Case(
        (
            ("required: [csat]", "required: [csat, csat]"),
            ("event_type: survey.answered", "event_type: survey.sent"),
        ),
        (
            Expected(
                "", "events.survey['survey.answered'].required[1]", "listed twice", "[csat, csat]"
            ),
            Expected(
                "promise 'survey-csat'",
                "event_type",
                "'survey.sent' is not among the event types events.survey declares",
                "survey.sent",
            ),
        ),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_every_problem_is_reported_at_once_with_promise_field_and_line(
    name: str, tmp_path: Path
) -> None:
    case = CASES[name]
    text = BASE
    for old, new in case.edits:
        text = mutate(text, old, new)
    code, report = run_json("check", write(tmp_path, "bad.yaml", text))
    assert code == 1
    assert report["valid"] is False
    assert report["summary"] is None
    problems = report["problems"]
    assert len(problems) == len(case.expected), problems
    for want in case.expected:
        found = [
            p
            for p in problems
            if (p["subject"] or "") == want.subject
            and p["field"] == want.field
            and want.message in p["message"]
        ]
        assert len(found) == 1, (want, problems)
        (problem,) = found
        promise_id = want.subject[len("promise '") : -1] if want.subject else None
        assert problem["promise"] == (promise_id if want.subject != "policy" else None)
        assert problem["line"] == (line_of(text, want.at) if want.at else None), problem
    # One validator: the problems are exactly the ones the services log for this text.
    with pytest.raises(CatalogueError) as refused:
        parse_catalogue(text)
    assert [p["text"] for p in problems] == list(refused.value.problems)


def test_the_text_report_puts_each_problem_on_its_line(tmp_path: Path) -> None:
    text = mutate(BASE, "    weight: 1.0\n", "    weight: 1.0\n    colour: blue\n")
    text = mutate(text, "    threshold: 50\n", "    threshold: 150\n")
    code, out, _ = run("check", write(tmp_path, "bad.yaml", text))
    assert code == 1
    assert out.splitlines() == [
        f"{tmp_path / 'bad.yaml'}: invalid: 2 problems; ingest and scoring would refuse this file",
        f"  line {line_of(text, '150')}: policy: interventions.threshold:"
        " Input should be less than or equal to 100",
        f"  line {line_of(text, 'colour')}: promise 'call-answer-time': colour:"
        " Extra inputs are not permitted",
    ]


def test_a_yaml_syntax_error_is_placed_by_the_parser(tmp_path: Path) -> None:
    text = mutate(BASE, 'expect: {op: ">=", target: 4}', 'expect: {op: ">=", target: 4')
    code, report = run_json("check", write(tmp_path, "bad.yaml", text))
    assert code == 1
    (problem,) = report["problems"]
    assert problem["message"].startswith("not valid YAML:")
    assert problem["promise"] is None
    # The parser notices the unclosed brace where the next line begins.
    assert problem["line"] == line_of(text, "target: 4\n") + 1


def test_a_duplicate_key_is_refused_on_its_line(tmp_path: Path) -> None:
    text = mutate(BASE, "    tolerance: 540\n", "    tolerance: 540\n    tolerance: 5\n")
    code, report = run_json("check", write(tmp_path, "bad.yaml", text))
    assert code == 1
    (problem,) = report["problems"]
    assert "found duplicate key 'tolerance'" in problem["message"]
    assert problem["line"] == line_of(text, "tolerance: 5\n")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the catalogue should be a mapping"),
        ("# only a comment\n", "the catalogue should be a mapping"),
        ("- a list\n", "the catalogue should be a mapping"),
        (b"version: \xff\n", "cannot be read"),
        ("version: '1'\n", "touchpoints: Field required"),
    ],
    ids=["empty", "comments only", "a list", "not UTF-8", "a mapping with little in it"],
)
def test_files_that_are_no_catalogue_are_invalid(
    content: str | bytes, message: str, tmp_path: Path
) -> None:
    code, report = run_json("check", write(tmp_path, "c.yaml", content))
    assert code == 1
    assert report["valid"] is False
    assert any(message in p["text"] for p in report["problems"]), report["problems"]


def test_the_mapping_with_little_in_it_gets_every_missing_section_at_once(tmp_path: Path) -> None:
    code, report = run_json("check", write(tmp_path, "c.yaml", "version: '1'\n"))
    assert code == 1
    assert [(p["field"], p["message"]) for p in report["problems"]] == [
        ("touchpoints", "Field required"),
        ("promises", "Field required"),
    ]
    assert {p["line"] for p in report["problems"]} == {1}


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run("check", tmp_path / "missing.yaml")[0] == 2
    assert run("check", tmp_path)[0] == 2
    assert run("check")[0] == 2
    assert run("check", write(tmp_path, "c.yaml", BASE), "--colour")[0] == 2


def test_control_characters_from_the_file_never_reach_the_terminal(tmp_path: Path) -> None:
    text = mutate(BASE, "    weight: 1.0\n", '    weight: 1.0\n    "col\\e[2Jour": blue\n')
    code, out, _ = run("check", write(tmp_path, "bad.yaml", text))
    assert code == 1
    assert "\x1b" not in out
    assert "promise 'call-answer-time': col\\x1b[2Jour: Extra inputs are not permitted" in out

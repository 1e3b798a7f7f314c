"""deploy/prometheus checked by the promtool of the Prometheus that runs it.

promtool validates the compose config (with the rule files it loads) and every rule file,
and runs the alert unit tests; the checks here add what promtool cannot know: that every
alert carries its runbook, that the rules only read metrics Touchpulse exports, and that
the scrape ports are the services' real defaults.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from touchpulse_shared.settings import Settings
from touchpulse_shared.stack.prometheus import PrometheusTools, prometheus_tools

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "prometheus"
CONFIG = DEPLOY / "prometheus.yml"
RULE_FILES = sorted((DEPLOY / "rules").glob("*.yml"))
RULE_TESTS = DEPLOY / "tests" / "touchpulse-alerts.test.yml"

# Metrics the rules may read that Touchpulse does not export: Prometheus's own.
PROMETHEUS_METRICS = frozenset({"up"})
REQUIRED_ANNOTATIONS = ("summary", "description", "runbook")
PROMQL_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless"}
    | {"bool", "offset", "inf", "nan"}
)


@pytest.fixture(scope="module")
def tools(base_settings: Settings) -> PrometheusTools:
    return prometheus_tools(base_settings.cache_dir)


def _promtool(tools: PrometheusTools, *args: str, cwd: Path = ROOT) -> str:
    result = subprocess.run(  # noqa: S603 - promtool from our own cache
        [str(tools.promtool), *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def _rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend(group["rules"])
    return rules


def test_rule_files_exist() -> None:
    names = {p.name for p in RULE_FILES}
    assert {"touchpulse-alerts.yml", "touchpulse-recording.yml"} <= names


def test_compose_config_is_valid_with_its_rules(tools: PrometheusTools, tmp_path: Path) -> None:
    config = yaml.safe_load(CONFIG.read_text())
    # The glob is where compose mounts deploy/prometheus/rules; point a copy at the repo's
    # files so promtool checks the rules the config would really load.
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    config["rule_files"] = [str(DEPLOY / "rules" / "*.yml")]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config))
    output = _promtool(tools, "check", "config", str(copy))
    assert "SUCCESS" in output
    for path in RULE_FILES:
        assert path.name in output, output


def test_compose_config_syntax_as_shipped(tools: PrometheusTools) -> None:
    output = _promtool(tools, "check", "config", "--syntax-only", str(CONFIG))
    assert "SUCCESS" in output


def test_compose_config_scrapes_the_services_default_ports() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    fields = Settings.model_fields
    assert jobs["ingest"]["static_configs"][0]["targets"] == [
        f"ingest:{fields['ingest_port'].default}"
    ]
    assert jobs["api"]["static_configs"][0]["targets"] == [f"api:{fields['api_port'].default}"]
    # Replicas: one A record each behind the compose service name.
    assert jobs["scoring"]["dns_sd_configs"] == [
        {
            "names": ["scoring"],
            "type": "A",
            "port": fields["scoring_metrics_port"].default,
            "refresh_interval": "30s",
        }
    ]
    assert config["global"]["scrape_interval"] == "15s"
    assert config["global"]["evaluation_interval"] == "15s"


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_rule_file_passes_promtool_check(tools: PrometheusTools, path: Path) -> None:
    output = _promtool(tools, "check", "rules", str(path))
    assert "SUCCESS" in output


def test_alert_unit_tests_pass(tools: PrometheusTools) -> None:
    # From the test file's folder: its rule_files paths are relative to it.
    output = _promtool(tools, "test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert "SUCCESS" in output
    assert "FAILED" not in output


def test_every_alert_has_a_unit_test_that_fires_and_one_that_does_not() -> None:
    alerts = {r["alert"] for r in _rules() if "alert" in r}
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert alerts - fires == set(), "alerts never shown to fire"
    assert alerts - quiet == set(), "alerts never shown to stay quiet"
    assert (fires | quiet) - alerts == set(), "tests of alerts that do not exist"


def test_every_alert_has_severity_and_runbook_annotations() -> None:
    alerts = [r for r in _rules() if "alert" in r]
    assert len(alerts) >= 10
    for alert in alerts:
        assert alert["labels"]["severity"] in {"critical", "warning"}, alert["alert"]
        for key in REQUIRED_ANNOTATIONS:
            assert alert["annotations"].get(key, "").strip(), (alert["alert"], key)


def _metric_names(expr: str) -> set[str]:
    # Strip what holds names that are not metrics: strings (label values, regexes), label
    # matchers, range and subquery durations, and grouping label lists.
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    # Dropping `by (...)` whole leaves `sum (...)`, so the aggregation reads as a function.
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        name = match.group()
        followed_by = expr[match.end() :].lstrip()[:1]
        preceded_by = expr[: match.start()][-1:]
        if followed_by == "(" or name.lower() in PROMQL_KEYWORDS or preceded_by.isdigit():
            continue  # a function, a keyword, or a duration unit such as the m of 5m
        names.add(name)
    return names


def test_metric_name_extraction() -> None:
    expr = (
        'sum by (touchpoint) (rate(touchpulse_a_total{result="broken",x=~"a.*"}[15m]))'
        " / on (touchpoint) group_left sum without (promise) (b:c:rate5m offset 1h)"
        " > bool 0.2 and time() - max(up) > 120"
    )
    assert _metric_names(expr) == {"touchpulse_a_total", "b:c:rate5m", "up"}


def test_rules_read_only_touchpulse_metrics_and_recorded_series() -> None:
    rules = _rules()
    recorded = {r["record"] for r in rules if "record" in r}
    for rule in rules:
        for name in _metric_names(rule["expr"]):
            assert name.startswith("touchpulse_") or name in PROMETHEUS_METRICS | recorded, (
                rule.get("alert") or rule.get("record"),
                name,
            )

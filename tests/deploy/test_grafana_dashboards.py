"""The provisioned Grafana files, checked without any server; and the query expander.

The integration test (``test_observability.py``) runs every expanded query against a real
Prometheus and PostgreSQL; these tests catch what can be seen in the files themselves.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.grafana import (
    DASHBOARD_DIR,
    GRAFANA_DIR,
    POSTGRES_UID,
    PROMETHEUS_UID,
    PanelQuery,
    UnexpandedError,
    dashboards,
    expand,
    iter_panels,
    label_values_selector,
    panel_queries,
    promql_metric_names,
    variable_queries,
    variables,
)

PROVISIONING = GRAFANA_DIR / "provisioning"
END = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
START = END - timedelta(hours=6)
EXPECTED_UIDS = {"touchpulse-journey-health", "touchpulse-interventions", "touchpulse-pipeline"}
PROVISIONED_UIDS = {PROMETHEUS_UID, POSTGRES_UID}
# Panels that draw values and so must say what the values are.
UNIT_PANELS = {"timeseries", "stat", "gauge", "bargauge", "barchart"}
# Grafana's built-in variables: defined by Grafana, not by the dashboard.
BUILTIN = {
    "__rate_interval",
    "__interval",
    "__interval_ms",
    "__range",
    "__range_s",
    "__range_ms",
    "__timeFilter",
    "__timeFrom",
    "__timeTo",
    "__timeGroup",
    "__timeGroupAlias",
    "__all",
}


def _boards() -> list[dict[str, Any]]:
    return dashboards()


def _yaml(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict), path
    return loaded


def _targets(board: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(p, t) for p in iter_panels(board) for t in p.get("targets", [])]


def _query_text(target: dict[str, Any]) -> str:
    return str(target.get("expr") or target.get("rawSql") or "")


def _datasources() -> list[dict[str, Any]]:
    return list(_yaml(PROVISIONING / "datasources" / "touchpulse.yml")["datasources"])


# --- the files ----------------------------------------------------------------------------


def test_the_three_dashboards_load_with_unique_uids() -> None:
    boards = _boards()
    uids = [b["uid"] for b in boards]
    assert len(uids) == len(set(uids))
    assert set(uids) == EXPECTED_UIDS
    for board in boards:
        assert board["id"] is None, board["uid"]
        assert board["schemaVersion"] == 39
        assert board["tags"] == ["touchpulse"]
        assert board["refresh"] == "30s"
        assert board["time"] == {"from": "now-6h", "to": "now"}
        assert board["title"]


@pytest.mark.parametrize("path", sorted(DASHBOARD_DIR.glob("*.json")), ids=lambda p: p.name)
def test_every_dashboard_file_is_a_json_object(path: Path) -> None:
    assert isinstance(json.loads(path.read_text(encoding="utf-8")), dict)


def test_every_panel_and_target_names_a_provisioned_datasource() -> None:
    for board in _boards():
        for panel in iter_panels(board):
            where = f"{board['uid']} / {panel.get('title')}"
            datasource = panel.get("datasource")
            assert isinstance(datasource, dict), where
            assert datasource.get("uid") in PROVISIONED_UIDS, where
            assert datasource.get("type"), where
            for target in panel.get("targets", []):
                assert target["datasource"]["uid"] in PROVISIONED_UIDS, where
                assert target["datasource"]["type"], where
        for variable in variables(board):
            if variable.get("type") == "query":
                assert variable["datasource"]["uid"] in PROVISIONED_UIDS, variable["name"]


def test_datasource_types_match_the_provisioned_ones() -> None:
    types = {d["uid"]: d["type"] for d in _datasources()}
    for board in _boards():
        for panel, target in _targets(board):
            for ds in (panel["datasource"], target["datasource"]):
                assert ds["type"] == types[ds["uid"]], (board["uid"], panel["title"])


def test_every_target_has_a_query_and_a_unique_ref_id() -> None:
    for board in _boards():
        for panel in iter_panels(board):
            targets = panel.get("targets", [])
            if panel["type"] != "row":
                assert targets, f"{board['uid']} / {panel['title']}: no targets"
            ref_ids = [t.get("refId") for t in targets]
            assert all(ref_ids), panel["title"]
            assert len(ref_ids) == len(set(ref_ids)), panel["title"]
            for target in targets:
                assert _query_text(target).strip(), f"{panel['title']} [{target['refId']}]"
                assert not target.get("hide"), "a hidden target would never be checked"


def test_value_panels_have_units_and_thresholds() -> None:
    for board in _boards():
        for panel in iter_panels(board):
            if panel["type"] in UNIT_PANELS:
                defaults = panel["fieldConfig"]["defaults"]
                assert defaults.get("unit"), f"{board['uid']} / {panel['title']}: no unit"
                assert defaults["thresholds"]["steps"], panel["title"]


def test_panel_ids_are_unique_and_every_panel_is_placed() -> None:
    for board in _boards():
        panels = list(iter_panels(board))
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids)), board["uid"]
        for panel in panels:
            grid = panel["gridPos"]
            assert {"h", "w", "x", "y"} <= grid.keys(), panel["title"]
            assert grid["x"] + grid["w"] <= 24, panel["title"]
            assert grid["h"] > 0, panel["title"]
            assert grid["w"] > 0, panel["title"]


def test_panel_titles_are_unique_per_dashboard() -> None:
    # Test reports and the integration test name panels by title.
    for board in _boards():
        titles = [p["title"] for p in iter_panels(board)]
        assert len(titles) == len(set(titles)), board["uid"]


def test_panels_do_not_overlap() -> None:
    for board in _boards():
        cells: dict[tuple[int, int], str] = {}
        for panel in board["panels"]:  # nested panels of collapsed rows are laid out apart
            grid = panel["gridPos"]
            for x in range(grid["x"], grid["x"] + grid["w"]):
                for y in range(grid["y"], grid["y"] + grid["h"]):
                    assert (x, y) not in cells, (panel["title"], cells.get((x, y)))
                    cells[(x, y)] = panel["title"]


_USED = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)")


def _used_variables(text: str) -> set[str]:
    return {next(g for g in m.groups() if g) for m in _USED.finditer(text)}


def test_every_variable_used_is_defined() -> None:
    for board in _boards():
        defined = {v["name"] for v in variables(board)}
        texts = [_query_text(t) for _, t in _targets(board)]
        texts += [str(v.get("query", "")) for v in variables(board)]
        for text in texts:
            undefined = _used_variables(text) - defined - BUILTIN
            assert not undefined, (board["uid"], undefined, text)


def test_template_variables_follow_the_all_schemes() -> None:
    for board in _boards():
        defined = {v["name"]: v for v in variables(board)}
        if board["uid"] != "touchpulse-pipeline":
            assert {"segment", "touchpoint", "pg_segment"} <= defined.keys(), board["uid"]
        for name, variable in defined.items():
            assert variable["multi"], name
            assert variable["includeAll"], name
            if variable["datasource"]["uid"] == PROMETHEUS_UID:
                assert variable["allValue"] == ".*", name
                assert variable["query"].startswith("label_values("), name
            else:
                # Grafana leaves a custom all value unquoted: the SQL would break.
                assert not variable.get("allValue"), name
        for _, target in _targets(board):
            text = _query_text(target)
            for name in ("segment", "touchpoint"):
                if f"${name}" in text:
                    assert f'{name}=~"${name}"' in text, text
            for name in ("pg_segment", "pg_touchpoint"):
                if name in text:
                    assert f"IN (${{{name}:sqlstring}})" in text, text


def test_promql_uses_rate_interval_and_only_touchpulse_metrics() -> None:
    for board in _boards():
        for panel, target in _targets(board):
            if target["datasource"]["uid"] != PROMETHEUS_UID:
                continue
            expr = target["expr"]
            names = promql_metric_names(expr)
            assert names, expr
            assert all(n.startswith("touchpulse_") for n in names), (panel["title"], names)
            # Rate windows come from Grafana, never a fixed literal.
            for window in re.findall(r"\[([^\]]+)\]", expr):
                assert window in {"$__rate_interval", "$__range"}, (panel["title"], expr)


def test_state_gauges_are_aggregated_with_max() -> None:
    # Several scoring replicas export the same state gauges: summing them would multiply.
    gauges = (
        "touchpulse_journey_health_customers",
        "touchpulse_journey_health_score_mean",
        "touchpulse_journey_health_score_range_customers",
        "touchpulse_interventions_current",
        "touchpulse_interventions_unacknowledged_overdue",
        "touchpulse_interventions_oldest_unacknowledged_age_seconds",
        "touchpulse_scoring_consumer_lag_records",
    )
    for board in _boards():
        for panel, target in _targets(board):
            expr = target.get("expr", "")
            for gauge in gauges:
                for match in re.finditer(rf"(\w+)\s*(?:by \([^)]*\)\s*)?\(\s*{gauge}\b", expr):
                    assert match[1] == "max", (panel["title"], expr)
                if gauge in expr:
                    assert re.search(rf"max(?: by \([^)]*\))? ?\({gauge}\b", expr), expr


def test_vector_zero_fallbacks_only_on_single_stats() -> None:
    for board in _boards():
        for panel, target in _targets(board):
            if "vector(0)" in target.get("expr", ""):
                assert panel["type"] == "stat", panel["title"]


def test_the_customers_needing_action_table_reads_the_intervention_queue() -> None:
    board = next(b for b in _boards() if b["uid"] == "touchpulse-journey-health")
    panel = next(p for p in iter_panels(board) if p["title"] == "Top customers needing action")
    sql = panel["targets"][0]["rawSql"]
    for needed in ("intervention", "gaps", "expected", "actual", "actions", "opened_at"):
        assert needed in sql
    assert "state IN ('open', 'acknowledged')" in sql
    assert "ORDER BY i.priority DESC" in sql


# --- provisioning -------------------------------------------------------------------------


def test_the_datasource_provisioning_names_the_dashboards_uids() -> None:
    config = _yaml(PROVISIONING / "datasources" / "touchpulse.yml")
    assert config["apiVersion"] == 1
    by_uid = {d["uid"]: d for d in config["datasources"]}
    assert set(by_uid) == PROVISIONED_UIDS
    prometheus = by_uid[PROMETHEUS_UID]
    assert prometheus["type"] == "prometheus"
    assert prometheus["url"] == "http://prometheus:9090"
    postgres = by_uid[POSTGRES_UID]
    assert postgres["type"] == "grafana-postgresql-datasource"
    assert postgres["url"] == "postgres:5432"
    assert postgres["user"] == "${GRAFANA_PG_USER}"
    assert postgres["secureJsonData"] == {"password": "${GRAFANA_PG_PASSWORD}"}
    assert "password" not in postgres
    assert postgres["jsonData"] == postgres["jsonData"] | {
        "database": "touchpulse",
        "sslmode": "disable",
        "postgresVersion": 1500,
        "timescaledb": False,
    }
    used = {t["datasource"]["uid"] for b in _boards() for _, t in _targets(b) if "datasource" in t}
    assert used == PROVISIONED_UIDS


def test_the_dashboard_provider_loads_the_mounted_folder() -> None:
    config = _yaml(PROVISIONING / "dashboards" / "touchpulse.yml")
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    assert provider["folder"] == "Touchpulse"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


_SECRET_KEYS = re.compile(r"(password|secret|token|api[_-]?key)\W*[:=]\s*(.+)", re.IGNORECASE)


def test_no_literal_secret_anywhere() -> None:
    for path in sorted(GRAFANA_DIR.rglob("*")):
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.lstrip().startswith("#"):
                continue
            match = _SECRET_KEYS.search(line)
            if match:
                value = match[2].strip().strip("\"',")
                assert re.fullmatch(r"\$\{[A-Z_]+\}", value), f"{path.name}: {line.strip()}"
    for board in _boards():
        text = json.dumps(board)
        assert "secureJsonData" not in text
        assert "password" not in text.lower()


# --- the expanded queries -----------------------------------------------------------------


def test_every_query_expands_completely() -> None:
    queries = panel_queries(start=START, end=END)
    assert len([q for q in queries if q.datasource == "prometheus"]) >= 30
    assert {q.datasource for q in queries} == {"prometheus", "postgres"}
    for query in queries:
        assert "$" not in query.query, query
        assert query.query.strip(), query
    titled = {(q.dashboard, q.panel, q.ref_id) for q in queries}
    assert len(titled) == len(queries), "every target should be identifiable"


def test_variable_queries_become_series_selectors_and_sql() -> None:
    found = {(q.dashboard, q.panel): q for q in variable_queries(start=START, end=END)}
    segment = found[("touchpulse-journey-health", "segment")]
    assert segment.datasource == "prometheus"
    assert segment.query == 'touchpulse_journey_health_customers{segment!=""}'
    touchpoint = found[("touchpulse-journey-health", "touchpoint")]
    assert touchpoint.query == 'touchpulse_scoring_outcomes_total{touchpoint!=""}'
    pg_segment = found[("touchpulse-journey-health", "pg_segment")]
    assert pg_segment.datasource == "postgres"
    assert pg_segment.query.startswith("SELECT")


# --- the expander on synthetic dashboards -------------------------------------------------

PROM = {"type": "prometheus", "uid": PROMETHEUS_UID}
PG = {"type": "grafana-postgresql-datasource", "uid": POSTGRES_UID}


def _board(panels: list[dict[str, Any]], variables_: list[dict[str, Any]]) -> dict[str, Any]:
    return {"uid": "synthetic", "panels": panels, "templating": {"list": variables_}}


def _prom_var(name: str) -> dict[str, Any]:
    return {
        "type": "query",
        "name": name,
        "datasource": PROM,
        "query": f"label_values(touchpulse_x, {name})",
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
    }


def _pg_var(name: str, query: str) -> dict[str, Any]:
    return {
        "type": "query",
        "name": name,
        "datasource": PG,
        "query": query,
        "multi": True,
        "includeAll": True,
    }


def _prom_panel(title: str, *exprs: str) -> dict[str, Any]:
    targets = [{"refId": chr(65 + i), "datasource": PROM, "expr": e} for i, e in enumerate(exprs)]
    return {"type": "timeseries", "title": title, "datasource": PROM, "targets": targets}


def _pg_panel(title: str, sql: str) -> dict[str, Any]:
    target = {"refId": "A", "datasource": PG, "rawSql": sql, "format": "table"}
    return {"type": "table", "title": title, "datasource": PG, "targets": [target]}


def _expanded(board: dict[str, Any], **kwargs: Any) -> list[PanelQuery]:
    return panel_queries(start=START, end=END, boards=[board], **kwargs)


def test_prometheus_variables_expand_to_their_all_value_in_every_syntax() -> None:
    board = _board(
        [
            _prom_panel(
                "p",
                'sum by (a) (rate(touchpulse_x{segment=~"$segment"}[$__rate_interval]))',
                'touchpulse_x{segment=~"${segment}", touchpoint=~"${touchpoint:regex}"}',
                "increase(touchpulse_x[$__range]) / $__range_s",
                "touchpulse_x[$__interval]",
            )
        ],
        [_prom_var("segment"), _prom_var("touchpoint")],
    )
    queries = _expanded(board, rate_interval="2m", range_="10m", interval="30s")
    assert [q.query for q in queries] == [
        'sum by (a) (rate(touchpulse_x{segment=~".*"}[2m]))',
        'touchpulse_x{segment=~".*", touchpoint=~".*"}',
        "increase(touchpulse_x[10m]) / 600",
        "touchpulse_x[30s]",
    ]
    assert (queries[0].dashboard, queries[0].panel, queries[0].ref_id, queries[0].datasource) == (
        "synthetic",
        "p",
        "A",
        "prometheus",
    )


def test_panels_inside_rows_are_included() -> None:
    row = {
        "type": "row",
        "title": "collapsed",
        "collapsed": True,
        "datasource": PROM,
        "panels": [_prom_panel("nested", "touchpulse_nested")],
    }
    board = _board([_prom_panel("top", "touchpulse_top"), row], [])
    assert [(q.panel, q.query) for q in _expanded(board)] == [
        ("top", "touchpulse_top"),
        ("nested", "touchpulse_nested"),
    ]


def test_postgres_all_is_the_variables_query_or_the_quoted_values() -> None:
    query = "SELECT 'standard' AS segment UNION SELECT segment FROM customer_profile"
    board = _board(
        [_pg_panel("t", "SELECT 1 FROM x WHERE s IN (${pg_segment:sqlstring}) AND t IN ($pg_tp)")],
        [_pg_var("pg_segment", query + ";"), _pg_var("pg_tp", "SELECT 'a'")],
    )
    (as_subquery,) = _expanded(board)
    assert as_subquery.datasource == "postgres"
    expected = f"SELECT 1 FROM x WHERE s IN ({query}) AND t IN (SELECT 'a')"  # noqa: S608
    assert as_subquery.query == expected
    (as_literal,) = _expanded(board, pg_values={"pg_segment": ["premium", "o'hara"]})
    assert as_literal.query == (
        "SELECT 1 FROM x WHERE s IN ('premium','o''hara') AND t IN (SELECT 'a')"
    )


def test_sql_time_macros_expand_as_grafana_writes_them() -> None:
    sql = (
        "SELECT $__timeGroupAlias(i.opened_at, '1h'), $__timeGroup(at, '5m', 0) , "
        "$__timeGroup(at, '30s'), 1 "
        "FROM t WHERE $__timeFilter(i.opened_at) AND x > $__timeFrom() AND x < $__timeTo()"
    )
    board = _board([_pg_panel("t", sql)], [])
    (query,) = _expanded(board)
    assert query.query == (
        'SELECT floor(extract(epoch from i.opened_at)/3600)*3600 AS "time", '
        "floor(extract(epoch from at)/300)*300 , "
        'floor(extract(epoch from at)/30)*30 AS "time", 1 '
        "FROM t WHERE i.opened_at BETWEEN '2026-03-01T06:00:00Z' AND '2026-03-01T12:00:00Z' "
        "AND x > '2026-03-01T06:00:00Z' AND x < '2026-03-01T12:00:00Z'"
    )


def test_a_panel_time_override_moves_the_start() -> None:
    panel = _pg_panel("weekly", "SELECT 1 WHERE $__timeFilter(at)")
    panel["timeFrom"] = "90d"
    (query,) = _expanded(_board([panel], []))
    assert (
        query.query == "SELECT 1 WHERE at BETWEEN '2025-12-01T12:00:00Z' AND '2026-03-01T12:00:00Z'"
    )


@pytest.mark.parametrize(
    "expr",
    [
        'touchpulse_x{segment=~"$undefined"}',
        "rate(touchpulse_x[$__unknown_macro])",
        'touchpulse_x{a="${segment:percentencode}"}',
        "touchpulse_x{a=~'[[nothing]]'}",
        "touchpulse_x $",
    ],
)
def test_a_leftover_dollar_raises(expr: str) -> None:
    board = _board([_prom_panel("p", expr)], [_prom_var("segment")])
    with pytest.raises(UnexpandedError):
        _expanded(board)


def test_a_leftover_sql_macro_or_unsupported_format_raises() -> None:
    for sql in ("SELECT $__unixEpochFilter(at)", "SELECT 1 WHERE s IN (${pg_s:csv})"):
        board = _board([_pg_panel("t", sql)], [_pg_var("pg_s", "SELECT 'a'")])
        with pytest.raises(UnexpandedError):
            _expanded(board)


def test_an_empty_query_raises() -> None:
    with pytest.raises(UnexpandedError, match="empty query"):
        _expanded(_board([_prom_panel("p", "  ")], []))


def test_expand_needs_timezone_aware_times() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        expand("$__timeFrom()", start=datetime(2026, 1, 1), end=END)  # noqa: DTZ001


def test_label_values_become_series_selectors() -> None:
    assert label_values_selector("label_values(touchpulse_x, segment)") == (
        'touchpulse_x{segment!=""}'
    )
    assert label_values_selector('label_values(touchpulse_x{a="b"}, segment)') == (
        'touchpulse_x{a="b", segment!=""}'
    )
    with pytest.raises(ValueError, match="label_values"):
        label_values_selector("query_result(up)")


def test_promql_metric_names_skip_functions_labels_and_keywords() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, route) (rate(touchpulse_a_bucket{route=~"x|y"}'
        "[$__rate_interval]))) or on (route) 0 * sum without (le) (touchpulse_b) "
        "/ ignoring (status) group_left (route) touchpulse_c > bool 1 or vector(0)"
    )
    assert promql_metric_names(expr) == {"touchpulse_a_bucket", "touchpulse_b", "touchpulse_c"}
    assert promql_metric_names("up + node_load1") == {"up", "node_load1"}

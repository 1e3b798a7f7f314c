"""The provisioned Grafana dashboards as runnable queries: Grafana's expansion, done here.

Every query of every panel (rows' nested panels included) and every template variable's own
query is expanded the way Grafana would expand it with **every variable at "All"**, so a test
can run it against a real Prometheus or PostgreSQL:

- Prometheus variables (``segment``, ``touchpoint``) have the custom ``allValue`` ``.*``;
  Grafana inserts a custom all value unformatted (except for the ``text`` and
  ``percentencode`` formats), so ``$segment``, ``${segment}`` and ``${segment:regex}`` all
  become ``.*``.
- PostgreSQL variables (``pg_segment``, ``pg_touchpoint``) have **no** custom ``allValue``:
  Grafana's "All" is then the list of every value the variable's query returned, quoted
  (``'a','b'``; ``sqlstring``/``singlequote`` format, or no format: the SQL data source
  quotes multi-value variables itself). The dashboards use them only as
  ``x IN (${pg_segment:sqlstring})``. With ``pg_values`` (variable name → the values its
  query returned) the expansion is that literal list, exactly as Grafana writes it; without
  it, the variable's own query is inserted as a subquery
  (``x IN (SELECT DISTINCT touchpoint FROM touchpoint_health ORDER BY 1)``), which selects
  the same set without a round trip.
- Global variables: ``$__rate_interval`` and ``$__interval`` (given), ``$__range``,
  ``$__range_s`` and ``$__range_ms`` (from ``range_``).
- PostgreSQL macros, as Grafana's PostgreSQL data source writes them (``timescaledb: false``):
  ``$__timeFilter(col)`` → ``col BETWEEN '<start>' AND '<end>'`` (RFC 3339, UTC),
  ``$__timeFrom()`` / ``$__timeTo()`` → ``'<start>'`` / ``'<end>'``,
  ``$__timeGroup(col, '1h'[, fill])`` → ``floor(extract(epoch from col)/3600)*3600`` and
  ``$__timeGroupAlias(...)`` → the same with `` AS "time"`` (as is a ``$__timeGroup(...)``
  directly followed by a comma, Grafana's compatibility rule).
- A panel's relative-time override (``timeFrom``, e.g. ``"90d"``) moves ``start`` to
  ``end - timeFrom`` and ``$__range`` to that span, as Grafana does.

Anything else that starts with ``$`` (or the old ``[[var]]`` syntax) is left in the query,
and a query with a leftover raises :class:`UnexpandedError`, so nothing slips through.

Template-variable queries (:func:`variable_queries`): a Prometheus
``label_values(metric, label)`` becomes the series selector ``metric{label!=""}``, usable
both as ``match[]`` of ``/api/v1/series`` and as an instant query: it returns data exactly
when the variable would have values. PostgreSQL variable queries are returned as they are.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARD_DIR = GRAFANA_DIR / "dashboards"

PROMETHEUS_UID = "touchpulse-prometheus"
POSTGRES_UID = "touchpulse-postgres"
DATASOURCE_KINDS = {PROMETHEUS_UID: "prometheus", POSTGRES_UID: "postgres"}


class UnexpandedError(ValueError):
    """A query still holds a ``$`` macro or variable after expansion."""


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str  # the dashboard's uid
    panel: str  # the panel's title; for a template variable, its name
    ref_id: str  # the target's refId; "variable" for a template variable
    datasource: str  # "prometheus" | "postgres"
    query: str  # expanded, ready to run


def dashboards(directory: Path = DASHBOARD_DIR) -> list[dict[str, Any]]:
    """Every dashboard JSON under ``directory``, in file-name order."""
    result: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.json")):
        loaded = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(loaded, dict):
            raise TypeError(f"{path}: a dashboard is a JSON object")
        result.append(loaded)
    return result


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, and the panels nested in (collapsed) rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def variables(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    templating = dashboard.get("templating", {})
    return list(templating.get("list", []))


def datasource_kind(datasource: Any) -> str:
    if not isinstance(datasource, Mapping):
        raise TypeError(f"a datasource must be an object with type and uid, not {datasource!r}")
    uid = datasource.get("uid")
    if uid not in DATASOURCE_KINDS:
        raise ValueError(f"datasource uid {uid!r} is not one of the provisioned ones")
    return DATASOURCE_KINDS[uid]


def target_query(target: Mapping[str, Any], kind: str) -> str:
    """The query text of a target: ``expr`` for Prometheus, ``rawSql`` for PostgreSQL."""
    value = target.get("expr" if kind == "prometheus" else "rawSql")
    return value if isinstance(value, str) else ""


def variable_query(variable: Mapping[str, Any]) -> str:
    query = variable.get("query")
    if isinstance(query, Mapping):
        query = query.get("query")
    return query if isinstance(query, str) else ""


# --- durations and times ------------------------------------------------------------------

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")


def parse_duration(text: str) -> timedelta:
    """A Grafana/Prometheus duration such as ``5m``, ``90d`` or ``1h30m``."""
    text = text.strip().strip("'\"")
    parts = _DURATION.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in parts))


def _rfc3339(moment: datetime) -> str:
    """As Go's ``time.RFC3339Nano`` in UTC: trailing zeros of the fraction dropped, ``Z``."""
    if moment.tzinfo is None:
        raise ValueError("start and end must be timezone-aware")
    moment = moment.astimezone(UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += "." + f"{moment.microsecond:06d}".rstrip("0")
    return text + "Z"


def _seconds_text(span: timedelta) -> str:
    seconds = span.total_seconds()
    return str(int(seconds)) if seconds == int(seconds) else str(seconds)


# --- expansion ----------------------------------------------------------------------------

_VARIABLE = re.compile(
    r"\$\{(?P<braced>\w+)(?::(?P<format>[\w]+))?\}|\$(?P<plain>\w+)|\[\[(?P<old>\w+)(?::\w+)?\]\]"
)
_MACRO = re.compile(r"\$__(?P<name>timeFilter|timeFrom|timeTo|timeGroupAlias|timeGroup)\(")
_ALL_LITERAL_FORMATS = {None, "sqlstring", "singlequote"}


@dataclass(frozen=True)
class _Context:
    start: datetime
    end: datetime
    rate_interval: str
    interval: str
    range_: str
    dashboard_variables: Mapping[str, Mapping[str, Any]]
    pg_values: Mapping[str, Sequence[str]] | None


def _macro_args(query: str, open_paren: int) -> tuple[list[str], int]:
    """The comma-separated arguments from ``query[open_paren]`` == '(' to its match."""
    depth = 0
    args: list[str] = []
    current: list[str] = []
    quote: str | None = None
    for i in range(open_paren, len(query)):
        char = query[i]
        if quote:
            current.append(char)
            if char == quote:
                quote = None
            continue
        if char in "'\"":
            quote = char
            current.append(char)
        elif char == "(":
            depth += 1
            if depth > 1:
                current.append(char)
        elif char == ")":
            depth -= 1
            if depth == 0:
                args.append("".join(current).strip())
                return [a for a in args if a], i + 1
            current.append(char)
        elif char == "," and depth == 1:
            args.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    raise UnexpandedError(f"unbalanced parentheses after a macro in: {query}")


def _sql_macro(name: str, args: list[str], ctx: _Context) -> str:
    if name == "timeFilter":
        if len(args) != 1:
            raise UnexpandedError(f"$__timeFilter takes one column, got {args}")
        return f"{args[0]} BETWEEN '{_rfc3339(ctx.start)}' AND '{_rfc3339(ctx.end)}'"
    if name == "timeFrom":
        return f"'{_rfc3339(ctx.start)}'"
    if name == "timeTo":
        return f"'{_rfc3339(ctx.end)}'"
    # timeGroup / timeGroupAlias: (column, interval[, fill]); the fill is applied by Grafana
    # to the result, not in SQL.
    if len(args) not in (2, 3):
        raise UnexpandedError(f"$__{name} takes (column, interval[, fill]), got {args}")
    seconds = _seconds_text(parse_duration(args[1]))
    group = f"floor(extract(epoch from {args[0]})/{seconds})*{seconds}"
    return group + ' AS "time"' if name == "timeGroupAlias" else group


def _expand_sql_macros(query: str, ctx: _Context) -> str:
    out: list[str] = []
    pos = 0
    while match := _MACRO.search(query, pos):
        out.append(query[pos : match.start()])
        args, pos = _macro_args(query, match.end() - 1)
        name = match["name"]
        # Grafana's pre-5.3 compatibility: $__timeGroup(...) directly followed by a comma is
        # taken as $__timeGroupAlias.
        if name == "timeGroup" and query[pos : pos + 1] == ",":
            name = "timeGroupAlias"
        out.append(_sql_macro(name, args, ctx))
    out.append(query[pos:])
    return "".join(out)


def _global(name: str, ctx: _Context) -> str | None:
    milliseconds = {"__interval_ms": ctx.interval, "__range_ms": ctx.range_}
    if name in milliseconds:
        return str(int(parse_duration(milliseconds[name]).total_seconds() * 1000))
    if name == "__range_s":
        return str(int(parse_duration(ctx.range_).total_seconds()))
    plain = {
        "__rate_interval": ctx.rate_interval,
        "__interval": ctx.interval,
        "__range": ctx.range_,
    }
    return plain.get(name)


def _all_value(variable: Mapping[str, Any], fmt: str | None, ctx: _Context) -> str | None:
    name = variable["name"]
    if not variable.get("includeAll"):
        raise UnexpandedError(f"variable {name!r} has no All option to expand to")
    custom = variable.get("allValue")
    if custom:
        if fmt == "text":
            return "All"
        if fmt == "percentencode":
            raise UnexpandedError(f"format percentencode of {name!r} is not supported here")
        return str(custom)
    if fmt not in _ALL_LITERAL_FORMATS:
        raise UnexpandedError(f"format {fmt!r} of {name!r} is not supported for All")
    if ctx.pg_values is not None and name in ctx.pg_values:
        return ",".join("'" + value.replace("'", "''") + "'" for value in ctx.pg_values[name])
    query = variable_query(variable).strip().rstrip(";")
    if not query:
        raise UnexpandedError(f"variable {name!r} has no query to stand for All")
    return query


def _expand_variables(query: str, ctx: _Context) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match["braced"] or match["plain"] or match["old"]
        value = _global(name, ctx)
        if value is not None:
            return value
        variable = ctx.dashboard_variables.get(name)
        if variable is None:
            return match[0]  # an unknown name or a macro: left for the leftover check
        all_value = _all_value(variable, match["format"], ctx)
        return match[0] if all_value is None else all_value

    return _VARIABLE.sub(replace, query)


def _check_expanded(query: str, where: str) -> str:
    if "$" in query or re.search(r"\[\[\w+", query):
        leftover = re.findall(r"\$\{?\w*|\[\[\w+", query)
        raise UnexpandedError(f"{where}: unexpanded {leftover} in: {query}")
    return query


def expand(
    query: str,
    *,
    start: datetime,
    end: datetime,
    rate_interval: str = "1m",
    interval: str = "15s",
    range_: str = "5m",
    dashboard_variables: Sequence[Mapping[str, Any]] = (),
    pg_values: Mapping[str, Sequence[str]] | None = None,
    where: str = "query",
) -> str:
    """One query expanded as Grafana would with every variable at All; raises on leftovers."""
    ctx = _Context(
        start=start,
        end=end,
        rate_interval=rate_interval,
        interval=interval,
        range_=range_,
        dashboard_variables={v["name"]: v for v in dashboard_variables},
        pg_values=pg_values,
    )
    # Grafana interpolates variables in the browser first; the data source then expands
    # its macros on the server.
    return _check_expanded(_expand_sql_macros(_expand_variables(query, ctx), ctx), where)


def panel_queries(
    *,
    rate_interval: str = "1m",
    range_: str = "5m",
    start: datetime,
    end: datetime,
    interval: str = "15s",
    pg_values: Mapping[str, Sequence[str]] | None = None,
    boards: Sequence[Mapping[str, Any]] | None = None,
) -> list[PanelQuery]:
    """Every target of every panel of every dashboard, expanded (see the module docs)."""
    result: list[PanelQuery] = []
    for board in dashboards() if boards is None else boards:
        uid = str(board.get("uid"))
        board_variables = variables(board)
        for panel in iter_panels(board):
            title = str(panel.get("title", ""))
            panel_start, panel_range = start, range_
            if panel.get("timeFrom"):
                span = parse_duration(str(panel["timeFrom"]))
                panel_start, panel_range = end - span, f"{_seconds_text(span)}s"
            for target in panel.get("targets", []):
                kind = datasource_kind(target.get("datasource", panel.get("datasource")))
                text = target_query(target, kind)
                ref_id = str(target.get("refId", ""))
                where = f"{uid} / {title} / {ref_id}"
                if not text.strip():
                    raise UnexpandedError(f"{where}: empty query")
                query = expand(
                    text,
                    start=panel_start,
                    end=end,
                    rate_interval=rate_interval,
                    interval=interval,
                    range_=panel_range,
                    dashboard_variables=board_variables,
                    pg_values=pg_values,
                    where=where,
                )
                result.append(PanelQuery(uid, title, ref_id, kind, query))
    return result


_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?P<selector>.+?)\s*,\s*(?P<label>\w+)\s*\)\s*$")


def label_values_selector(query: str) -> str:
    """``label_values(metric, label)`` → ``metric{label!=""}`` (also with a selector)."""
    match = _LABEL_VALUES.match(query)
    if match is None:
        raise ValueError(f"not a label_values(metric, label) query: {query!r}")
    selector, label = match["selector"], match["label"]
    if selector.endswith("}"):
        inner = selector[selector.index("{") + 1 : -1].strip()
        head = selector[: selector.index("{")]
        return f'{head}{{{inner + ", " if inner else ""}{label}!=""}}'
    return f'{selector}{{{label}!=""}}'


def variable_queries(
    *,
    rate_interval: str = "1m",
    range_: str = "5m",
    start: datetime,
    end: datetime,
    interval: str = "15s",
    boards: Sequence[Mapping[str, Any]] | None = None,
) -> list[PanelQuery]:
    """The query variables' own queries: Prometheus ones as series selectors (module docs)."""
    result: list[PanelQuery] = []
    for board in dashboards() if boards is None else boards:
        uid = str(board.get("uid"))
        board_variables = variables(board)
        for variable in board_variables:
            if variable.get("type") != "query":
                continue
            name = str(variable["name"])
            kind = datasource_kind(variable.get("datasource"))
            text = variable_query(variable)
            if kind == "prometheus":
                text = label_values_selector(text)
            query = expand(
                text,
                start=start,
                end=end,
                rate_interval=rate_interval,
                interval=interval,
                range_=range_,
                dashboard_variables=board_variables,
                where=f"{uid} / variable {name}",
            )
            result.append(PanelQuery(uid, name, "variable", kind, query))
    return result


# --- PromQL names -------------------------------------------------------------------------

_PROMQL_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels, keywords excluded)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery windows
    # Label lists of grouping and vector matching: by (...), on (...), group_left (...)
    text = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text, flags=re.I
    )
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", text):
        name, call = match[1], match[2]
        if call or name.lower() in _PROMQL_KEYWORDS:
            continue
        names.add(name)
    return names

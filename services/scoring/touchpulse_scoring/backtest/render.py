"""A back-test report as terminal tables (the JSON is :meth:`BacktestReport.to_json`)."""

from __future__ import annotations

from collections.abc import Sequence

from touchpulse_scoring.backtest.core import (
    ALL_SEGMENTS,
    BANDS,
    BacktestReport,
    CustomerSide,
    GapRow,
    Rates,
)

#: Customers named in full in the interventions section; the JSON lists all of them.
NAMED = 10


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines)


def _number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _arrow(a: str, b: str) -> str:
    return a if a == b else f"{a} → {b}"


def _gap(row: GapRow) -> str:
    actual = "nothing" if row.actual is None else str(row.actual)
    return f"{row.promise_id} {row.unit} {row.op} {row.target}: {actual} (gap {row.gap:g})"


def _side(side: CustomerSide) -> str:
    return "; ".join(_gap(g) for g in side.gaps) or "-"


def promises_table(report: BacktestReport, *, changed_only: bool = False) -> str:
    rows = []
    for row in report.promises:
        if changed_only and not row.changed:
            continue
        if row.segment != ALL_SEGMENTS and not row.changed:
            continue  # a segment's row only where it differs: the totals say the rest
        a: Rates = row.live
        b: Rates = row.candidate
        rows.append(
            [
                row.promise_id,
                "all" if row.segment == ALL_SEGMENTS else row.segment,
                _arrow(f"{a.outcomes:,}", f"{b.outcomes:,}"),
                _arrow(f"{a.breaches:,}", f"{b.breaches:,}"),
                _arrow(_rate(a.breach_rate), _rate(b.breach_rate)),
                _arrow(_number(a.median_gap), _number(b.median_gap)),
                _arrow(_number(a.p90_gap), _number(b.p90_gap)),
            ]
        )
    header = ["promise", "segment", "outcomes", "breaches", "breach rate", "median gap", "p90 gap"]
    return table(header, rows)


def bands_table(report: BacktestReport) -> str:
    header = ["live \\ candidate", *BANDS]
    rows = [[a, *(f"{report.bands[a][b]:,}" for b in BANDS)] for a in BANDS]
    return table(header, rows)


def affected_table(report: BacktestReport) -> str:
    rows = [
        [
            row.customer_id,
            row.segment,
            _arrow(_number(row.live.score, 1), _number(row.candidate.score, 1)),
            _arrow(row.live.band, row.candidate.band),
            _arrow(str(row.live.breaches), str(row.candidate.breaches)),
            _arrow(str(row.live.interventions_opened), str(row.candidate.interventions_opened)),
            _side(row.live),
            _side(row.candidate),
        ]
        for row in report.most_affected
    ]
    header = [
        "customer",
        "segment",
        "health",
        "band",
        "breaches",
        "cases",
        "worst gaps, live",
        "worst gaps, candidate",
    ]
    return table(header, rows)


def _named(customers: Sequence[str]) -> str:
    shown = ", ".join(customers[:NAMED])
    return shown + (f", … ({len(customers):,} in all)" if len(customers) > NAMED else "")


def render_text(report: BacktestReport) -> str:
    cases = report.interventions
    lines = [
        f"Back-test of catalogue {report.candidate_version} against {report.live_version}:"
        f" {report.events:,} events ({report.duplicates:,} duplicates dropped) of"
        f" {report.customers:,} customers, {report.first_event or '-'} to"
        f" {report.last_event or '-'}",
    ]
    for side in ("live", "candidate"):
        refused = report.unscorable[side]
        if refused:
            lines.append(
                f"refused under {side}: "
                + ", ".join(f"{reason} {n:,}" for reason, n in refused.items())
            )
    if report.empty:
        lines.append("No difference: the candidate judges these events exactly as live does.")
    lines += [
        "",
        "Promises (standing outcomes; gaps of the breaches, in the promise's unit):",
        promises_table(report),
        "",
        f"Bands: {report.moved:,} customers move; {report.customers_changed:,} change at all",
        bands_table(report),
        "",
        f"Interventions opened: {cases.opened_live:,} under live, {cases.opened_candidate:,}"
        " under the candidate",
        f"would open: {len(cases.would_open):,} customers"
        + (f" ({_named(cases.would_open)})" if cases.would_open else ""),
        f"would not open: {len(cases.would_not_open):,} customers"
        + (f" ({_named(cases.would_not_open)})" if cases.would_not_open else ""),
    ]
    if cases.triggers:
        lines.append(
            "triggers of the cases opened (live → candidate): "
            + ", ".join(f"{kind} {a:,} → {b:,}" for kind, (a, b) in cases.triggers.items())
        )
    if report.most_affected:
        lines += [
            "",
            f"The {len(report.most_affected)} customers most affected:",
            affected_table(report),
        ]
    return "\n".join(lines)

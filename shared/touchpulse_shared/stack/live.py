"""The live view of ``make run``: what the running system is doing, read the way its users
read it — the services' ``/metrics`` (as Prometheus would) and the api (as a CRM would).

Reading (:func:`read_snapshot`) is separate from rendering (:func:`render`), which is pure:
two snapshots in, text out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.live import Live
from rich.text import Text

BANDS = ("red", "amber", "green")
# A read of the live figures must never hold up the runner's loop for long.
READ_TIMEOUT_S = 3.0
NEWEST_INTERVENTIONS = 3
WEAKEST_TOUCHPOINTS = 3


@dataclass(frozen=True)
class Snapshot:
    at: float
    accepted: float = 0.0
    rejected: float = 0.0
    scored: float = 0.0
    #: band -> customers (all segments)
    bands: dict[str, float] = field(default_factory=dict)
    #: segment -> mean journey health
    segment_means: dict[str, float] = field(default_factory=dict)
    #: touchpoint -> (broken, judged) outcomes since start
    outcomes: dict[str, tuple[float, float]] = field(default_factory=dict)
    open_interventions: float = 0.0
    #: the newest interventions, as the api returns them
    newest: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ServiceState:
    """A supervised service as the live view shows it."""

    name: str
    restarts: int = 0
    #: How its last crash ended (``exit code -9 (SIGKILL)``), if it crashed.
    last_exit: str | None = None
    up: bool = True


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def read_snapshot(
    client: httpx.Client, *, ingest: str, scoring: str, api: str, crm_key: str, at: float
) -> Snapshot:
    """Raises :class:`httpx.HTTPError` when a service does not answer; the caller skips."""
    accepted = rejected = scored = open_now = 0.0
    bands: dict[str, float] = defaultdict(float)
    means: dict[str, float] = {}
    broken: dict[str, float] = defaultdict(float)
    judged: dict[str, float] = defaultdict(float)
    for name, _labels, value in _samples(client.get(f"{ingest}/metrics").text):
        if name == "touchpulse_ingest_events_accepted_total":
            accepted += value
        elif name == "touchpulse_ingest_events_rejected_total":
            rejected += value
    for name, labels, value in _samples(client.get(f"{scoring}/metrics").text):
        if name == "touchpulse_scoring_events_total" and labels.get("result") == "applied":
            scored += value
        elif name == "touchpulse_journey_health_customers" and labels["band"] in BANDS:
            bands[labels["band"]] += value
        elif name == "touchpulse_journey_health_score_mean":
            means[labels["segment"]] = value
        elif name == "touchpulse_scoring_outcomes_total":
            judged[labels["touchpoint"]] += value
            if labels["result"] == "broken":
                broken[labels["touchpoint"]] += value
        elif name == "touchpulse_interventions_current" and labels["state"] == "open":
            open_now = value
    page = client.get(
        f"{api}/v1/interventions",
        params={"state": "open", "limit": 200},
        headers={"Authorization": f"Bearer {crm_key}"},
    )
    page.raise_for_status()
    items: list[dict[str, Any]] = page.json()["items"]
    newest = sorted(items, key=lambda i: str(i["opened_at"]), reverse=True)[:NEWEST_INTERVENTIONS]
    return Snapshot(
        at=at,
        accepted=accepted,
        rejected=rejected,
        scored=scored,
        bands=dict(bands),
        segment_means=means,
        outcomes={t: (broken[t], judged[t]) for t in judged},
        open_interventions=open_now,
        newest=newest,
    )


def _gap(gap: dict[str, Any]) -> str:
    expected = gap["expected"]
    actual = "never came" if gap["actual"] is None else _number(gap["actual"])
    return (
        f"{gap['promise_id']}: expected {expected['unit']} {expected['op']} "
        f"{_number(expected['target'])}, actual {actual}"
    )


def _number(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        # A person reads this: 47.7 hours, not 47.69833333333333.
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def render(
    previous: Snapshot | None, current: Snapshot, services: Sequence[ServiceState] = ()
) -> str:
    """One block of the live view; rates are taken between the two snapshots (a restarted
    service's counters start again from zero: no negative rates)."""
    lines = ["── live " + "─" * 62]
    if previous is not None and current.at > previous.at:
        span = current.at - previous.at
        rate_in = max(current.accepted - previous.accepted, 0.0) / span
        rate_scored = max(current.scored - previous.scored, 0.0) / span
        rate_bad = max(current.rejected - previous.rejected, 0.0) / span
        lines.append(
            f"  events/s   {rate_in:7.1f} accepted  {rate_scored:7.1f} scored  "
            f"{rate_bad:5.1f} rejected   (total accepted {current.accepted:,.0f})"
        )
    else:
        lines.append(f"  events     {current.accepted:,.0f} accepted, {current.scored:,.0f} scored")
    scored = sum(current.bands.values())
    if scored:
        counts = {band: current.bands.get(band, 0.0) for band in BANDS}
        shares = "  ".join(f"{b} {n:,.0f} ({100 * n / scored:.0f}%)" for b, n in counts.items())
        means = ", ".join(f"{s} {m:.0f}" for s, m in sorted(current.segment_means.items()))
        lines.append(f"  health     {shares}   mean by segment: {means}")
    else:
        lines.append("  health     no customer scored yet")
    ranked = sorted(
        ((b / n, t, n) for t, (b, n) in current.outcomes.items() if n),
        reverse=True,
    )[:WEAKEST_TOUCHPOINTS]
    if ranked:
        lines.append(
            "  weakest    "
            + ", ".join(f"{t} {100 * share:.0f}% broken of {n:,.0f}" for share, t, n in ranked)
        )
    lines.append(f"  open interventions {current.open_interventions:,.0f}; newest:")
    for item in current.newest:
        health = item.get("health_at_open")
        shown = "no score" if health is None else f"health {health:.0f}"
        lines.append(f"    {item['customer_id']}  ({shown}, priority {item['priority']:.1f})")
        for gap in item.get("gaps", [])[:2]:
            lines.append(f"      - {_gap(gap)}")
    if not current.newest:
        lines.append("    none yet")
    restarted = [s for s in services if s.restarts or not s.up]
    if restarted:
        lines.append(
            "  restarts   "
            + ", ".join(
                f"{s.name} {s.restarts} (last {s.last_exit}; {'up' if s.up else 'restarting'})"
                for s in restarted
            )
        )
    return "\n".join(lines)


class LiveDisplay:
    """Shows each rendered view: on a terminal, redrawn in place (rich's Live, which prints
    anything else written meanwhile above it); elsewhere (a pipe, a log file), block after
    block through ``echo``, so the record keeps every view."""

    def __init__(self, echo: Callable[[str], None], console: Console | None = None) -> None:
        self.echo = echo
        self.console = console or Console()
        self._live: Live | None = None

    @property
    def in_place(self) -> bool:
        return self.console.is_terminal

    def show(self, text: str) -> None:
        if not self.in_place:
            self.echo(text)
            return
        # markup off: a promise or touchpoint name with [brackets] is shown as written.
        view = Text(text)
        if self._live is None:
            self._live = Live(view, console=self.console, auto_refresh=False)
            self._live.start()
        self._live.update(view, refresh=True)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()  # the last view stays on screen
            self._live = None

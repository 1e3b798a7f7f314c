"""The back-test's pure core on hand-made and simulated events (no broker, no database)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from touchpulse_scoring.backtest import core
from touchpulse_scoring.backtest.render import render_text
from touchpulse_scoring.domain import Catalogue, CustomerProfile, parse_catalogue
from touchpulse_shared.contract import EVENT_ADAPTER, ExperienceEventV1
from touchpulse_shared.simulator import Simulator, SimulatorConfig

REPO = Path(__file__).resolve().parents[3]
TEXT = (REPO / "deploy/promises.yaml").read_text()
LIVE = parse_catalogue(TEXT)
START = datetime(2026, 11, 2, 9, tzinfo=UTC)


def _catalogue(*edits: tuple[str, str]) -> Catalogue:
    text = TEXT.replace('version: "', 'version: "candidate-', 1)
    for old, new in edits:
        assert old in text
        text = text.replace(old, new, 1)
    return parse_catalogue(text)


#: Calls answered within 10 s (premium: 5 s), worth 10 promise weights.
TIGHT = _catalogue(
    (
        '    expect: {op: "<=", target: 60}\n    tolerance: 540',
        '    expect: {op: "<=", target: 10}\n    tolerance: 20',
    ),
    ("      premium: {target: 30, tolerance: 270}", "      premium: {target: 5, tolerance: 20}"),
)


def _call(n: int, customer: str, wait: float, *, minutes: int = 0) -> ExperienceEventV1:
    return EVENT_ADAPTER.validate_python(
        {
            "event_id": f"call-{n}",
            "source": "pbx",
            "customer_id": customer,
            "touchpoint": "call_centre",
            "type": "call.answered",
            "occurred_at": START + timedelta(minutes=minutes + n),
            "measures": {"wait_seconds": wait},
        }
    )


@pytest.fixture(scope="module")
def simulated() -> tuple[list[ExperienceEventV1], dict[str, CustomerProfile]]:
    sim = Simulator(SimulatorConfig(seed=5, customers=120, bad_rate=0.0), START)
    events = [EVENT_ADAPTER.validate_python(e) for e in sim.events(3000)]
    profiles = {
        c: CustomerProfile(
            segment=p["segment"],
            customer_since=date.fromisoformat(p["customer_since"]),
            value=p["value"],
            reach=p["reach"],
        )
        for c, p in sim.profiles()
    }
    return events, profiles


def _json(report: core.BacktestReport) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(report.to_json())
    return found


def test_an_identical_candidate_changes_nothing(
    simulated: tuple[list[ExperienceEventV1], dict[str, CustomerProfile]],
) -> None:
    events, profiles = simulated
    report = core.backtest(events, profiles, LIVE, _catalogue(), now=START + timedelta(days=3))
    assert report.empty
    assert report.customers_changed == 0
    assert report.moved == 0
    assert report.most_affected == ()
    assert report.interventions.opened_live == report.interventions.opened_candidate > 0
    assert all(row.live == row.candidate for row in report.promises)
    assert report.events + report.duplicates == len(events)
    assert report.duplicates > 0, "the simulator posts some events twice"
    assert "No difference" in render_text(report)


def test_the_shortcuts_for_untouched_customers_and_events_are_exact(
    simulated: tuple[list[ExperienceEventV1], dict[str, CustomerProfile]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events, profiles = simulated
    now = START + timedelta(days=3)
    quick = core.backtest(events, profiles, LIVE, TIGHT, now=now)
    # Every customer judged twice, every event under both catalogues.
    monkeypatch.setattr(core._Changes, "touches", lambda self, events: True)
    monkeypatch.setattr(core._Changes, "touched", lambda self, event: True)
    full = core.backtest(events, profiles, LIVE, TIGHT, now=now)
    assert quick.to_json() == full.to_json()
    assert quick.customers_changed > 0


def test_a_report_is_the_same_bytes_whatever_the_order_of_the_events(
    simulated: tuple[list[ExperienceEventV1], dict[str, CustomerProfile]],
) -> None:
    events, profiles = simulated
    now = START + timedelta(days=3)
    forward = core.backtest(events, profiles, LIVE, TIGHT, now=now)
    backward = core.backtest(list(reversed(events)), profiles, LIVE, TIGHT, now=now)
    assert forward.to_json() == backward.to_json()


def test_batches_of_customers_give_the_report_of_one_run(
    simulated: tuple[list[ExperienceEventV1], dict[str, CustomerProfile]],
) -> None:
    # As the command feeds it, a partition at a time: every customer's events in one batch.
    events, profiles = simulated
    now = START + timedelta(days=3)
    whole = core.backtest(events, profiles, LIVE, TIGHT, now=now)
    batched = core.Backtest(LIVE, TIGHT, now=now)
    for part in range(3):
        batched.add([e for e in events if hash(e.customer_id) % 3 == part], profiles)
    assert batched.report().to_json() == whole.to_json()
    assert len(whole.most_affected) == core.MOST_AFFECTED


def test_a_tightened_promise_breaks_moves_and_opens() -> None:
    premium = CustomerProfile(segment="premium")
    events = [
        # Kept under both for a standard customer: 8 s.
        _call(0, "fine", 8),
        # 40 s: kept live (60 s), broken under 10 s, and by 30 s: a score of 0.
        _call(1, "slow", 40),
        _call(2, "slow", 45),
        _call(3, "slow", 50),
        # Premium: live promises 30 s, the candidate 5 s; 20 s is kept, then broken.
        _call(4, "premium", 20),
        # A retry of the same call counts once.
        _call(1, "slow", 40),
    ]
    report = core.backtest(events, {"premium": premium}, LIVE, TIGHT)
    assert report.duplicates == 1
    rows = {(r.promise_id, r.segment): r for r in report.promises}
    total = rows[("call-answer-time", core.ALL_SEGMENTS)]
    assert (total.live.outcomes, total.live.breaches) == (5, 0)
    assert (total.candidate.outcomes, total.candidate.breaches) == (5, 4)
    assert total.candidate.breach_rate == 0.8
    # Gaps of the breaches: 30, 35, 40 s past 10 s, and 15 s past the premium 5 s.
    assert total.candidate.median_gap == 32.5
    assert total.candidate.p90_gap == 40.0
    assert rows[("call-answer-time", "premium")].candidate.median_gap == 15.0
    assert rows[("call-answer-time", "standard")].candidate.breaches == 3
    # Three broken calls, repeated within 7 days: a case opens for "slow" only.
    assert report.interventions.would_open == ("slow",)
    assert report.interventions.would_not_open == ()
    assert dict(report.interventions.triggers)["repeated_breach"] == (0, 1)
    assert report.bands["green"]["red"] == 1
    assert report.moved == 2
    slow = report.most_affected[0]
    assert slow.customer_id == "slow"
    assert (slow.live.band, slow.candidate.band) == ("green", "red")
    assert slow.candidate.gaps[0].promise_id == "call-answer-time"
    assert slow.live.gaps == ()
    assert [c.customer_id for c in report.most_affected] == ["slow", "premium"]
    text = render_text(report)
    assert "would open: 1 customers (slow)" in text
    assert "green → red" in text


def test_events_a_candidate_refuses_are_counted_not_judged() -> None:
    # The candidate requires a measure the call centre never sent: dead letters under it.
    refusing = _catalogue(
        (
            "      required: [wait_seconds]",
            "      required: [wait_seconds, queue_name]",
        )
    )
    report = core.backtest([_call(0, "a", 10), _call(1, "b", 500)], {}, LIVE, refusing)
    assert report.unscorable["live"] == {}
    assert report.unscorable["candidate"] == {"missing_measure": 2}
    assert not report.empty
    rows = {(r.promise_id, r.segment): r for r in report.promises}
    assert rows[("call-answer-time", core.ALL_SEGMENTS)].candidate.outcomes == 0
    assert report.bands["green"]["none"] == 1
    assert report.bands["amber"]["none"] + report.bands["red"]["none"] == 1


def test_nothing_in_nothing_out() -> None:
    report = core.backtest([], {}, LIVE, TIGHT)
    assert report.events == 0
    assert report.customers == 0
    assert report.empty
    assert _json(report)["promises"] == []

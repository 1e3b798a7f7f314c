"""The simulator's ground truth, without servers: what it records per customer is what the
catalogue makes of the events it generated, and the queue's score is plain arithmetic."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from touchpulse_scoring.domain.catalogue import Catalogue, load_catalogue_file
from touchpulse_scoring.domain.outcomes import evaluate
from touchpulse_scoring.domain.profile import CustomerProfile
from touchpulse_scoring.domain.promises import DeadlinePromise
from touchpulse_shared.contract import ExperienceEventV1
from touchpulse_shared.simulator import (
    DECISIONS,
    Scheduled,
    Simulator,
    SimulatorConfig,
    Treatment,
    Truth,
    score_queue,
)

START = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@cache
def catalogue() -> Catalogue:
    return load_catalogue_file("deploy/promises.yaml")


def when(value: str) -> datetime:
    return datetime.fromisoformat(value)


def judged_by_the_catalogue(sim: Simulator, items: list[Scheduled]) -> dict[str, Counter[str]]:
    """Per customer, the promises the catalogue finds broken in ``items`` (good events, each
    once): measure promises by ``evaluate``, deadlines by the catalogue's clocks and the
    journey's fulfilling event, as scoring's sweep would judge them."""
    broken: dict[str, Counter[str]] = defaultdict(Counter)
    events = {i.event["event_id"]: i.event for i in items if i.bad is None}.values()
    fulfilled: dict[tuple[str, str, str], datetime] = {}
    for event in events:
        if "journey_id" in event:
            key = (event["customer_id"], event["journey_id"], event["type"])
            fulfilled[key] = min(
                fulfilled.get(key, when(event["occurred_at"])), when(event["occurred_at"])
            )
    deadlines = [p for p in catalogue().promises if isinstance(p, DeadlinePromise)]
    for event in events:
        customer = event["customer_id"]
        segment = sim.segment(int(customer.rsplit("c", 1)[1]))
        for outcome in evaluate(
            ExperienceEventV1.model_validate(event), catalogue(), CustomerProfile(segment=segment)
        ):
            if not outcome.met:
                broken[customer][outcome.promise_id] += 1
        for promise in deadlines:
            if promise.deadline.opened_by != event["type"]:
                continue
            if promise.deadline.due_at_attribute:
                due = when(event["attributes"][promise.deadline.due_at_attribute])
            else:
                hours = promise.terms_for(segment).within_hours
                assert hours is not None
                due = when(event["occurred_at"]) + timedelta(hours=hours)
            key = (customer, event["journey_id"], promise.deadline.fulfilled_by)
            if key not in fulfilled or fulfilled[key] > due:
                broken[customer][promise.id] += 1
    return broken


def test_the_truth_is_what_the_catalogue_makes_of_the_events_generated() -> None:
    sim = Simulator(SimulatorConfig(seed=41, customers=150, bad_rate=0.03), START)
    items = sim.schedule(6000)
    truth = sim.truth()
    expected = judged_by_the_catalogue(sim, items)
    assert {c: dict(t.broken) for c, t in truth.items() if t.broken} == {
        c: dict(b) for c, b in expected.items() if b
    }
    # Every customer an event was about, and only those; events counted once.
    good = {i.event["event_id"]: i.event["customer_id"] for i in items if i.bad is None}
    assert Counter(good.values()) == {c: t.events for c, t in truth.items()}
    # Enough of everything for the comparison to mean something.
    promises = Counter(p for t in truth.values() for p in t.broken.elements())
    assert promises["delivery-within-48h"] > 5
    assert promises["survey-csat"] > 5
    assert promises["payment-charged-once"] + promises["survey-csat"] > 0


def test_critical_breaches_and_badly_treated_customers() -> None:
    sim = Simulator(SimulatorConfig(seed=42, customers=200, bad_rate=0), START)
    items = sim.schedule(8000)
    truth = sim.truth()
    critical: Counter[str] = Counter()
    for item in {i.event["event_id"]: i for i in items}.values():
        measures: dict[str, Any] = item.event["measures"]
        if item.event["type"] == "survey.answered" and measures["csat"] <= 2:
            critical[item.event["customer_id"]] += 1
        if item.event["type"] == "payment.captured" and measures["double_charged"]:
            critical[item.event["customer_id"]] += 1
    assert {c: t.critical for c, t in truth.items() if t.critical} == dict(critical)
    assert sum(critical.values()) > 5
    for treatment in truth.values():
        touchpoints = set()
        for promise_id in treatment.broken:
            promise = catalogue().promise(promise_id)
            assert promise is not None
            touchpoints.add(promise.touchpoint)
        assert set(treatment.touchpoints) == touchpoints
        assert treatment.badly_treated == (
            treatment.critical > 0 or len(treatment.touchpoints) >= 2
        )
        assert treatment.single_breach == (
            sum(treatment.broken.values()) == 1 and not treatment.critical
        )


def test_only_events_sent_count() -> None:
    """A journey begun before the start joins midway: its early events are not sent and
    count for nothing; a delivery whose order was not sent opens and breaks no clock; an
    order whose delivery was not sent is a breach by absence."""
    config = SimulatorConfig(seed=43, customers=80, bad_rate=0, deadline_window_s=60)
    sim = Simulator(config, START)
    items = sim.schedule(3000)
    openers = {(i.event["customer_id"], i.event.get("journey_id")) for i in items if i.clock}
    # Some deliveries belong to orders placed before the start, never sent.
    orphans = [
        i
        for i in items
        if i.event["type"] == "delivery.completed"
        and (i.event["customer_id"], i.event["journey_id"]) not in openers
    ]
    assert orphans
    assert all(not i.breaches for i in orphans if not i.event["measures"]["damaged"])
    # Truth from the first half of the items only: later deliveries of its orders are
    # missing, so their clocks are breached by absence; nothing of the second half counts.
    half = Truth()
    for item in items[:1500]:
        half.record(item)
    assert half.unfulfilled_clocks()
    # Clocks opened in the first half whose fulfilment came only in the second.
    fulfilled_early = {
        (i.event["customer_id"], i.event.get("journey_id"), i.event["type"]) for i in items[:1500]
    }
    cut: Counter[tuple[str, str]] = Counter()
    later = {
        (i.event["customer_id"], i.event.get("journey_id"), i.event["type"]) for i in items[1500:]
    }
    for item in items[:1500]:
        clock = item.clock
        if clock is None or item.duplicate:
            continue
        key = (item.event["customer_id"], item.event["journey_id"], clock.fulfilled_by)
        if key not in fulfilled_early and key in later:
            cut[item.event["customer_id"], clock.promise] += 1
    assert cut
    customers = half.customers()
    for (customer, promise), count in cut.items():
        assert customers[customer].broken[promise] >= count
    assert sum(t.events for t in customers.values()) == len(
        {i.event["event_id"] for i in items[:1500]}
    )
    # A duplicate adds nothing.
    assert not half.record(items[0])


def test_the_default_rates_are_realistic_and_overridable() -> None:
    sim = Simulator(SimulatorConfig(seed=44, bad_rate=0), START)
    surveys = [e for e in sim.events(20_000) if e["type"] == "survey.answered"]
    csat = Counter(int(e["measures"]["csat"]) for e in surveys)
    # CSAT mostly 4-5; a few per cent 1-2 (more after broken promises).
    assert (csat[4] + csat[5]) / len(surveys) > 0.75
    assert 0.02 < (csat[1] + csat[2]) / len(surveys) < 0.15
    assert sim.breach_probability("call_resolution", 0) == DECISIONS["call_resolution"][1]
    flat = Simulator(SimulatorConfig(breach_rate=0.5, breach_rates={"web": 0.2}), START)
    assert flat.breach_probability("call_resolution", 0) == 0.5
    assert flat.breach_probability("page_load", 0) == 0.2
    assert flat.breach_probability("checkout", 0) == 0.2


def test_the_queue_is_scored_against_the_truth() -> None:
    def treated(customer: str, critical: int = 0, **broken: int) -> Treatment:
        t = Treatment(customer, events=3, critical=critical)
        for promise, count in broken.items():
            t.broken[promise] += count
            t.touchpoints[promise.split("_")[0]] += count
        return t

    truth = {
        "a": treated("a", critical=1, survey_csat=1),  # critical
        "b": treated("b", delivery_late=1, billing_wrong=1),  # badly
        "c": treated("c", web_slow=1),  # a single breach
        "d": treated("d"),  # nothing
        "e": treated("e", app_slow=2),  # one touchpoint twice
    }
    score = score_queue(truth, {"a", "c", "e", "x"})
    assert (score.customers, score.badly_treated, score.critical, score.queued) == (5, 2, 1, 4)
    assert score.recall_critical == 1.0
    assert score.recall_badly == 0.5
    assert score.precision == 0.25
    assert score.queued_single == 1
    assert score.queued_unharmed == 1  # x: not in the run's truth at all
    assert score.missed_badly == ("b",)
    assert not score.meets_targets()
    assert "BELOW TARGET" in score.summary()
    perfect = score_queue(truth, {"a", "b"})
    assert perfect.meets_targets()
    assert "BELOW TARGET" not in perfect.summary()
    assert score_queue({}, set()).meets_targets()  # nothing done, nothing queued

"""The simulator's stream: deterministic, valid by the contract, judged by the catalogue,
journeys in order on a clock that lets deadlines resolve during a run."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from touchpulse_api.models import ProfileIn
from touchpulse_scoring.domain.catalogue import Catalogue, load_catalogue_file
from touchpulse_scoring.domain.outcomes import evaluate
from touchpulse_scoring.domain.profile import CustomerProfile
from touchpulse_scoring.domain.promises import DeadlinePromise, MeasurePromise
from touchpulse_shared.contract import (
    ExperienceEventV1,
    ItemError,
    from_batch,
    parse_native_batch,
)
from touchpulse_shared.simulator import (
    BAD_KINDS,
    DEADLINE_EVENTS,
    Incident,
    Scheduled,
    Simulator,
    SimulatorConfig,
    request_body,
)

START = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
HOUR = 3600.0


@cache
def catalogue() -> Catalogue:
    return load_catalogue_file("deploy/promises.yaml")


def when(value: str) -> datetime:
    return datetime.fromisoformat(value)


def offset_s(value: str) -> float:
    return (when(value) - START).total_seconds()


def by_journey(items: list[Scheduled]) -> dict[str, list[Scheduled]]:
    journeys: dict[str, list[Scheduled]] = defaultdict(list)
    for item in items:
        if item.bad is None and not item.duplicate and "journey_id" in item.event:
            journeys[item.event["journey_id"]].append(item)
    return journeys


def profile_of(sim: Simulator, customer_id: str) -> dict[str, Any]:
    return sim.profile(int(customer_id.rsplit("c", 1)[1]))


# --- determinism -----------------------------------------------------------------------------


def test_the_same_seed_and_start_give_the_same_events_byte_for_byte() -> None:
    first = orjson.dumps(Simulator(SimulatorConfig(seed=7), START).events(2000))
    again = orjson.dumps(Simulator(SimulatorConfig(seed=7), START).events(2000))
    other_seed = orjson.dumps(Simulator(SimulatorConfig(seed=8), START).events(2000))
    later = Simulator(SimulatorConfig(seed=7), START + timedelta(seconds=1)).events(2000)
    assert first == again
    assert first != other_seed
    # Another start is another run: no event id in common, so scoring keeps both.
    assert not {e["event_id"] for e in orjson.loads(first)} & {e["event_id"] for e in later}


def test_batch_sizes_do_not_change_the_stream() -> None:
    whole = Simulator(SimulatorConfig(seed=4, bad_rate=0.05), START).events(1500)
    sim = Simulator(SimulatorConfig(seed=4, bad_rate=0.05), START)
    pieces: list[dict[str, Any]] = []
    for size in (1, 7, 20, 500, 3, 969):
        pieces.extend(sim.events(size))
    assert pieces == whole


def test_the_good_events_do_not_depend_on_the_bad_rate() -> None:
    clean = Simulator(SimulatorConfig(seed=9, bad_rate=0.0), START).schedule(1000)
    noisy = Simulator(SimulatorConfig(seed=9, bad_rate=0.1), START).schedule(1100)
    good = [i.event for i in noisy if i.bad is None]
    assert good[:900] == [i.event for i in clean][:900]
    assert sum(i.bad is not None for i in noisy) > 50


# --- the contract and the catalogue ----------------------------------------------------------


def test_good_events_pass_the_contract_and_every_bad_one_fails_it() -> None:
    items = Simulator(SimulatorConfig(seed=3, bad_rate=0.05), START).schedule(4000)
    bad = [i for i in items if i.bad is not None]
    assert 120 < len(bad) < 300
    assert {i.bad for i in bad} == set(BAD_KINDS)
    for item in items:
        if item.bad is None:
            ExperienceEventV1.model_validate(item.event)
            assert not item.event["event_id"].endswith("-bad")
        else:
            with pytest.raises(ValidationError):
                ExperienceEventV1.model_validate(item.event)
            assert item.event["event_id"].endswith("-bad")


def test_every_event_type_and_measure_is_one_the_catalogue_judges() -> None:
    judged: dict[str, set[str]] = defaultdict(set)
    for promise in catalogue().promises:
        if isinstance(promise, MeasurePromise):
            judged[promise.event_type].add(promise.measure)
        elif isinstance(promise, DeadlinePromise):
            judged[promise.deadline.opened_by] |= set()
            judged[promise.deadline.fulfilled_by] |= set()
    sim = Simulator(SimulatorConfig(seed=5, bad_rate=0), START)
    events = sim.events(5000)
    assert {e["type"] for e in events} == set(judged), set(judged) ^ {e["type"] for e in events}
    for event in events:
        assert set(event["measures"]) <= judged[event["type"]], event
        # Judged without complaint (right kinds of measures) under the customer's terms.
        profile = CustomerProfile(segment=profile_of(sim, event["customer_id"])["segment"])
        evaluate(ExperienceEventV1.model_validate(event), catalogue(), profile)
    assert len({e["touchpoint"] for e in events}) == 10


def outcomes(sim: Simulator, events: list[dict[str, Any]]) -> dict[str, list[bool]]:
    """Per event id, whether each measure promise it was judged on was kept."""
    met: dict[str, list[bool]] = {}
    for event in events:
        profile = CustomerProfile(segment=profile_of(sim, event["customer_id"])["segment"])
        judged = evaluate(ExperienceEventV1.model_validate(event), catalogue(), profile)
        if judged:
            met[event["event_id"]] = [o.met for o in judged]
    return met


def test_no_breach_rate_keeps_every_promise_even_on_premium_terms() -> None:
    sim = Simulator(SimulatorConfig(seed=2, breach_rate=0.0, bad_rate=0), START)
    events = sim.events(3000)
    assert all(all(kept) for kept in outcomes(sim, events).values())
    surveys = [e for e in events if e["type"] == "survey.answered"]
    assert surveys
    assert all(e["measures"]["csat"] >= 4 for e in surveys)
    assert {profile_of(sim, e["customer_id"])["segment"] for e in events} >= {"premium"}


def test_a_full_breach_rate_breaks_every_promise_it_can() -> None:
    sim = Simulator(SimulatorConfig(seed=2, breach_rate=1.0, bad_rate=0), START)
    events = sim.events(3000)
    judged = outcomes(sim, events)
    kinds = {e["event_id"]: e["type"] for e in events}
    # A late delivery keeps its measures (its breach is the deadline); double charges are
    # rarer than other billing failures by design.
    spared = {"delivery.completed", "payment.captured"}
    assert all(not all(kept) for eid, kept in judged.items() if kinds[eid] not in spared)
    surveys = [e for e in events if e["type"] == "survey.answered"]
    assert surveys
    assert all(e["measures"]["csat"] <= 3 for e in surveys)
    assert any(e["measures"]["csat"] <= 2 for e in surveys)  # critical: the CEO's call list


def test_a_touchpoint_breach_rate_overrides_the_default() -> None:
    config = SimulatorConfig(seed=6, breach_rate=0.0, breach_rates={"web": 1.0}, bad_rate=0)
    sim = Simulator(config, START)
    events = sim.events(2000)
    judged = outcomes(sim, events)
    for event in events:
        if event["event_id"] in judged:
            broken = not all(judged[event["event_id"]])
            assert broken == (event["touchpoint"] == "web"), event


# --- journeys and time -----------------------------------------------------------------------

ORDER_FLOW = (
    "quote.sent",
    "order.placed",
    "delivery.promised",
    "delivery.completed",
    "invoice.issued",
    "payment.captured",
    "complaint.received",
    "complaint.acknowledged",
    "case.resolved",
    "message.answered",
    "survey.answered",
)


#: Back-dated to start their clocks (or into the order's past); the rest happen when sent.
BACK_DATED = frozenset({"quote.sent", "order.placed", "delivery.promised", "complaint.received"})


def test_journeys_are_linked_and_happen_in_order() -> None:
    items = Simulator(SimulatorConfig(seed=12, bad_rate=0.02), START).schedule(6000)
    orders = 0
    for journey, steps in by_journey(items).items():
        assert len({s.event["customer_id"] for s in steps}) == 1, journey
        in_order = [s for s in steps if not s.out_of_order]
        if journey.startswith("order-"):
            orders += 1
            flow = [ORDER_FLOW.index(s.event["type"]) for s in in_order]
            assert flow == sorted(flow), [s.event["type"] for s in in_order]
        live = [s for s in steps if s.event["type"] not in BACK_DATED]
        for step in live:
            if not step.out_of_order:
                assert abs(offset_s(step.event["occurred_at"]) - step.at_s) < 0.001
        assert [s.event["occurred_at"] for s in live if not s.out_of_order] == sorted(
            s.event["occurred_at"] for s in live if not s.out_of_order
        )
        # An event's story never runs backwards: what follows it happened after it.
        for step in steps:
            if step.event["type"] == "order.placed":
                later = [s for s in steps if s.event["type"] != "quote.sent"]
                assert all(s.event["occurred_at"] >= step.event["occurred_at"] for s in later)
    assert orders > 100


def test_no_event_is_posted_before_it_happened_nor_too_old_for_ingest() -> None:
    items = Simulator(SimulatorConfig(seed=13, bad_rate=0), START).schedule(8000)
    assert [i.at_s for i in items] == sorted(i.at_s for i in items)
    assert items[0].at_s >= 0
    for item in items:
        occurred = offset_s(item.event["occurred_at"])
        assert abs(occurred - item.occurred_s) < 0.001
        assert occurred <= item.at_s + 0.001
        assert occurred > -7 * 24 * HOUR  # ingest keeps 90 days; nothing near it


def test_the_timeline_runs_at_the_configured_rate_from_the_first_second() -> None:
    items = Simulator(SimulatorConfig(seed=14, rate=50.0), START).schedule(10_000)
    first_minute = sum(i.at_s < 60 for i in items)
    assert 50 * 60 * 0.85 < first_minute < 50 * 60 * 1.15
    span = items[-1].at_s - items[0].at_s
    assert 50 * 0.9 < len(items) / span < 50 * 1.1


def deliveries(sim: Simulator, items: list[Scheduled]) -> list[dict[str, Any]]:
    """Each order journey seen from its start: when it was posted, its clocks, its outcome;
    only those whose delivery, if any, would be in ``items``."""
    window = sim.config.deadline_window_s
    found = []
    for steps in by_journey(items).values():
        if steps[0].at_s > items[-1].at_s - 2 * window:
            continue
        kinds = {s.event["type"]: s for s in steps}
        if "order.placed" not in kinds or "delivery.promised" not in kinds:
            continue
        order, promised = kinds["order.placed"], kinds["delivery.promised"]
        premium = profile_of(sim, order.event["customer_id"])["segment"] == "premium"
        due = offset_s(order.event["occurred_at"]) + (24 if premium else 48) * HOUR
        slot = offset_s(promised.event["attributes"]["due_at"])
        done = kinds.get("delivery.completed")
        if done is None:
            outcome = "never"
        elif offset_s(done.event["occurred_at"]) > due:
            outcome = "late"
        elif done.event["measures"]["damaged"] or not done.event["measures"]["all_items_delivered"]:
            outcome = "damaged"
        else:
            outcome = "on_time"
        found.append(
            {
                "posted": order.at_s,
                "due": due,
                "slot": slot,
                "promised_at": offset_s(promised.event["occurred_at"]),
                "done": done,
                "outcome": outcome,
                "window": window,
            }
        )
    return found


def test_deadlines_resolve_during_a_short_run() -> None:
    sim = Simulator(SimulatorConfig(seed=15, breach_rate=0.3, bad_rate=0), START)
    items = sim.schedule(20 * 300)  # five minutes at 20 events per second
    seen = deliveries(sim, items)
    assert Counter(d["outcome"] for d in seen).keys() == {"on_time", "late", "never", "damaged"}
    for d in seen:
        assert d["slot"] >= d["promised_at"], "due_at before the promise: unscorable"
        if d["outcome"] == "late":
            # Its clock had run out when the order came; the gap is hours, not seconds.
            assert d["due"] <= d["posted"]
            assert (offset_s(d["done"].event["occurred_at"]) - d["due"]) / HOUR >= 2
        else:
            # The clock runs out in front of the viewer, a window after the order.
            assert d["posted"] < d["slot"] <= d["due"] <= d["posted"] + d["window"] + 0.01
            if d["done"] is not None:
                assert d["done"].at_s < d["slot"], "an on-time delivery is posted in time"


def test_an_incident_raises_the_breach_share_in_its_window() -> None:
    incident = Incident("delivery", start_offset_s=300, duration_s=300, breach_rate=1.0)
    config = SimulatorConfig(seed=16, breach_rate=0.05, bad_rate=0, incidents=(incident,))
    sim = Simulator(config, START)
    seen = deliveries(sim, sim.schedule(20 * 900))
    # The delivery is judged when due: a window after the journey began (a quote may come
    # a few seconds before the order).
    inside = [d for d in seen if 310 <= d["posted"] + d["window"] < 600]
    outside = [d for d in seen if not 290 <= d["posted"] + d["window"] < 610]
    assert len(inside) > 30
    assert len(outside) > 60
    assert all(d["outcome"] != "on_time" for d in inside)
    assert sum(d["outcome"] != "on_time" for d in outside) / len(outside) < 0.15


def test_an_incident_on_the_web_slows_the_pages_in_its_window() -> None:
    config = SimulatorConfig(
        seed=17, breach_rate=0.0, bad_rate=0, incidents=(Incident("web", 100, 50, 1.0),)
    )
    for item in Simulator(config, START).schedule(20 * 200):
        if item.event["type"] == "page.viewed" and not item.out_of_order and not item.duplicate:
            slow = item.event["measures"]["load_seconds"] > 2.5
            assert slow == (100 <= item.at_s < 150), item


# --- sends -----------------------------------------------------------------------------------


def test_duplicates_resend_an_earlier_event_with_its_id() -> None:
    config = SimulatorConfig(seed=18, duplicate_rate=0.05, bad_rate=0.02)
    items = Simulator(config, START).schedule(5000)
    firsts: dict[str, Scheduled] = {}
    duplicates = 0
    for item in items:
        event_id = item.event["event_id"]
        if item.duplicate:
            duplicates += 1
            assert firsts[event_id].event == item.event
            assert item.at_s > firsts[event_id].at_s
        else:
            assert event_id not in firsts, "only duplicates reuse an id"
            firsts[event_id] = item
    assert 0.03 * len(items) < duplicates < 0.07 * len(items)


def test_out_of_order_sends_come_after_a_later_event_and_never_move_a_deadline() -> None:
    config = SimulatorConfig(seed=19, out_of_order_rate=0.1, bad_rate=0)
    items = Simulator(config, START).schedule(5000)
    late = [i for i in items if i.out_of_order]
    assert len(late) > 150
    position = {id(item): n for n, item in enumerate(items)}
    journeys = by_journey(items)
    for item in late:
        assert item.event["type"] not in DEADLINE_EVENTS
        steps = journeys[item.event["journey_id"]]
        overtaken = [
            s
            for s in steps
            if s.event["occurred_at"] > item.event["occurred_at"]
            and position[id(s)] < position[id(item)]
        ]
        assert overtaken, item


# --- formats ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["native", "cloudevents"])
def test_batches_parse_with_the_projects_parsers(fmt: str) -> None:
    items = Simulator(SimulatorConfig(seed=20, bad_rate=0.1), START).schedule(1000)
    path, body, content_type = request_body([i.event for i in items], fmt)  # type: ignore[arg-type]
    if fmt == "cloudevents":
        assert (path, content_type) == ("/v1/events", "application/cloudevents-batch+json")
        parsed = from_batch(body)
    else:
        assert (path, content_type) == ("/v1/events/batch", "application/json")
        parsed = parse_native_batch(body)
    assert len(parsed) == len(items)
    for item, result in zip(items, parsed, strict=True):
        if item.bad is None:
            assert result == ExperienceEventV1.model_validate(item.event)
        else:
            assert isinstance(result, ItemError), item


# --- customers -------------------------------------------------------------------------------


def test_profiles_are_deterministic_valid_and_varied() -> None:
    sim = Simulator(SimulatorConfig(seed=21, customers=400, premium_share=0.2), START)
    profiles = sim.profiles()
    assert profiles == Simulator(SimulatorConfig(seed=21, customers=400), START).profiles()
    assert profiles != Simulator(SimulatorConfig(seed=22, customers=400), START).profiles()
    assert [c for c, _ in profiles] == [sim.customer(i) for i in range(400)]
    segments = Counter(p["segment"] for _, p in profiles)
    assert segments.keys() == {"standard", "premium", "business"}
    assert 50 < segments["premium"] < 110
    new = 0
    for index, (_, profile) in enumerate(profiles):
        ProfileIn.model_validate(profile)
        assert profile["segment"] == sim.segment(index)
        age = (START.date() - datetime.fromisoformat(profile["customer_since"]).date()).days
        new += 0 < age < 90
        assert profile["value"] > 0
    assert 60 < new < 150


def test_a_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="breach_rates"):
        SimulatorConfig(breach_rates={"web": 1.5})
    with pytest.raises(ValueError, match="deadline_window_s"):
        SimulatorConfig(deadline_window_s=5)
    with pytest.raises(ValueError, match="timezone"):
        Simulator(SimulatorConfig(), datetime(2026, 1, 1))  # noqa: DTZ001 - the point
    assert Incident.parse("delivery:60:3600") == Incident("delivery", 60, 3600, 0.9)
    assert Incident.parse("web:0:30:0.5") == Incident("web", 0, 30, 0.5)
    for text in ("delivery", "delivery:a:b", "delivery:1:0", "delivery:1:2:3"):
        with pytest.raises(ValueError, match="incident"):
            Incident.parse(text)

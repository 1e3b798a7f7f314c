"""The simulator's events: deterministic, valid by the contract, and judged by the catalogue."""

from __future__ import annotations

from datetime import UTC, datetime

from touchpulse_scoring.domain.catalogue import load_catalogue_file
from touchpulse_scoring.domain.promises import DeadlinePromise, MeasurePromise
from touchpulse_shared.contract import ExperienceEventV1
from touchpulse_shared.simulator import Simulator, SimulatorConfig

START = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_the_same_seed_gives_the_same_events() -> None:
    first = Simulator(SimulatorConfig(seed=7), START).events(500)
    again = Simulator(SimulatorConfig(seed=7), START).events(500)
    other = Simulator(SimulatorConfig(seed=8), START).events(500)
    assert first == again
    assert first != other
    assert len({(e["source"], e["event_id"]) for e in first}) == 500


def test_good_events_pass_the_contract_and_bad_ones_do_not() -> None:
    events = Simulator(SimulatorConfig(seed=3, bad_rate=0.05), START).events(2000)
    bad = [e for e in events if e["event_id"].endswith("-bad")]
    good = [e for e in events if not e["event_id"].endswith("-bad")]
    assert 40 < len(bad) < 200
    for event in good:
        ExperienceEventV1.model_validate(event)
    failures = 0
    for event in bad:
        try:
            ExperienceEventV1.model_validate(event)
        except ValueError:
            failures += 1
    assert failures == len(bad)


def test_every_event_type_is_one_the_catalogue_judges() -> None:
    kinds: set[str] = set()
    for promise in load_catalogue_file("deploy/promises.yaml").promises:
        if isinstance(promise, MeasurePromise):
            kinds.add(promise.event_type)
        elif isinstance(promise, DeadlinePromise):
            kinds |= {promise.deadline.opened_by, promise.deadline.fulfilled_by}
    events = Simulator(SimulatorConfig(seed=5, bad_rate=0), START).events(3000)
    sent = {e["type"] for e in events}
    assert sent <= kinds, sent - kinds
    assert len({e["touchpoint"] for e in events}) >= 9


def test_breach_rate_shapes_the_measures() -> None:
    never = Simulator(SimulatorConfig(seed=2, breach_rate=0.0, bad_rate=0), START).events(500)
    always = Simulator(SimulatorConfig(seed=2, breach_rate=1.0, bad_rate=0), START).events(500)
    surveys_never = [e for e in never if e["type"] == "survey.answered"]
    surveys_always = [e for e in always if e["type"] == "survey.answered"]
    assert surveys_never
    assert all(e["measures"]["csat"] == 5 for e in surveys_never)
    assert surveys_always
    assert all(e["measures"]["csat"] == 1 for e in surveys_always)

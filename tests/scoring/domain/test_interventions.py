"""The intervention state machine, priority, recommended actions and deterministic ids."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta

import pytest

from tests.scoring.domain.support import T0, catalogue, outcome
from touchpulse_scoring.domain import (
    LEGAL_MOVES,
    Gap,
    IllegalTransition,
    Intervention,
    InterventionState,
    InvalidCommand,
    Trigger,
    TriggerKind,
    acknowledge,
    attach,
    expire_intervention,
    expire_overdue,
    follow_up_due,
    intervention_id,
    intervention_priority,
    open_intervention,
    recommended_actions,
    record_follow_up,
    resolve,
)

POLICY = catalogue().policy.interventions
LOW = Trigger(kind=TriggerKind.LOW_HEALTH, detail="journey health 40 is under 50")
DAY = timedelta(days=1)


def _gap(key: str, *, score: float, gap: float, critical: bool = False, action: str = "") -> Gap:
    base = outcome(score=score, key=key, promise_id=key)
    return Gap.of(
        replace(base, gap=gap, severity="critical" if critical else "normal"),
        action or f"fix {key}",
    )


def _opened() -> Intervention:
    return open_intervention(
        customer_id="C-1",
        now=T0,
        triggers=[LOW],
        gaps=[_gap("a", score=0.5, gap=3)],
        priority=10.0,
        threshold=50.0,
        health=40.0,
    )


def _in(state: InterventionState) -> Intervention:
    opened = _opened()
    if state is InterventionState.OPEN:
        return opened
    if state is InterventionState.EXPIRED:
        return expire_intervention(opened, now=T0 + DAY)
    acknowledged = acknowledge(opened, now=T0 + DAY, assignee="ops-1")
    if state is InterventionState.ACKNOWLEDGED:
        return acknowledged
    return resolve(acknowledged, now=T0 + 2 * DAY, note="Called; refunded", health=70.0)


MOVES: dict[InterventionState, Callable[[Intervention], Intervention]] = {
    InterventionState.ACKNOWLEDGED: lambda i: acknowledge(i, now=T0 + 3 * DAY, assignee="a"),
    InterventionState.RESOLVED: lambda i: resolve(i, now=T0 + 3 * DAY, note="done", health=None),
    InterventionState.EXPIRED: lambda i: expire_intervention(i, now=T0 + 3 * DAY),
}


@pytest.mark.parametrize("state", list(InterventionState))
@pytest.mark.parametrize("target", list(MOVES))
def test_only_the_legal_moves_are_allowed(
    state: InterventionState, target: InterventionState
) -> None:
    before = _in(state)
    if target in LEGAL_MOVES[state]:
        assert MOVES[target](before).state is target
    else:
        with pytest.raises(IllegalTransition) as caught:
            MOVES[target](before)
        assert caught.value.state == state.value
        assert before.intervention_id in str(caught.value)


def test_the_happy_path_records_who_when_and_how_it_went() -> None:
    opened = _opened()
    assert (opened.state, opened.is_open, opened.health_at_open) == ("open", True, 40.0)
    acked = acknowledge(opened, now=T0 + DAY, assignee="  agent-7 ")
    assert (acked.acknowledged_at, acked.assignee, acked.is_open) == (T0 + DAY, "agent-7", True)
    done = resolve(acked, now=T0 + 2 * DAY, note=" Called and refunded ", health=72.5)
    assert done.outcome_note == "Called and refunded"
    assert (done.resolved_at, done.closed_at, done.health_at_resolve) == (
        T0 + 2 * DAY,
        T0 + 2 * DAY,
        72.5,
    )
    assert not done.is_open
    assert not follow_up_due(done, now=T0 + 15 * DAY, policy=POLICY)
    assert follow_up_due(done, now=T0 + 16 * DAY, policy=POLICY)
    followed = record_follow_up(done, now=T0 + 16 * DAY, health=80.0)
    assert (followed.follow_up_at, followed.follow_up_health) == (T0 + 16 * DAY, 80.0)
    assert not follow_up_due(followed, now=T0 + 30 * DAY, policy=POLICY)
    with pytest.raises(IllegalTransition):
        record_follow_up(followed, now=T0 + 30 * DAY, health=1.0)


@pytest.mark.parametrize("note", ["", "   ", "x" * 4001])
def test_a_resolution_needs_an_outcome_note(note: str) -> None:
    acked = _in(InterventionState.ACKNOWLEDGED)
    with pytest.raises(InvalidCommand) as caught:
        resolve(acked, now=T0 + DAY, note=note, health=None)
    assert caught.value.field == "note"


def test_an_acknowledgement_needs_an_assignee() -> None:
    with pytest.raises(InvalidCommand, match="assignee"):
        acknowledge(_opened(), now=T0, assignee=" ")


def test_follow_up_only_after_resolution() -> None:
    for state in (InterventionState.OPEN, InterventionState.EXPIRED):
        with pytest.raises(IllegalTransition):
            record_follow_up(_in(state), now=T0 + 30 * DAY, health=1.0)


def test_an_unacknowledged_intervention_expires_after_the_policy_period() -> None:
    opened = _opened()
    assert expire_overdue(opened, now=T0 + 13 * DAY, policy=POLICY) is None
    expired = expire_overdue(opened, now=T0 + 14 * DAY, policy=POLICY)
    assert expired is not None
    assert (expired.state, expired.closed_at) == ("expired", T0 + 14 * DAY)
    # Someone owns an acknowledged one; it does not expire by itself.
    acked = _in(InterventionState.ACKNOWLEDGED)
    assert expire_overdue(acked, now=T0 + 100 * DAY, policy=POLICY) is None


def test_attaching_adds_reasons_and_gaps_and_only_raises_priority() -> None:
    opened = _opened()
    critical = Trigger(kind=TriggerKind.CRITICAL_BREACH, detail="csat 1", promise_id="csat")
    grown = attach(
        opened,
        now=T0 + DAY,
        triggers=[critical, LOW],
        gaps=[_gap("csat", score=0.0, gap=3, critical=True)],
        priority=4.0,
    )
    assert grown.intervention_id == opened.intervention_id
    assert grown.reasons == (TriggerKind.LOW_HEALTH, TriggerKind.CRITICAL_BREACH)
    # The newest explanation leads, in its own ranking; earlier gaps follow.
    assert [g.promise_id for g in grown.gaps] == ["csat", "a"]
    assert grown.priority == 10.0
    assert grown.actions == ("fix csat", "fix a")
    assert attach(grown, now=T0, triggers=[], gaps=[], priority=25.0).priority == 25.0
    # A gap for a known outcome replaces it (a late delivery updates "never came").
    updated = attach(grown, now=T0, triggers=[], gaps=[_gap("a", score=0.9, gap=1)], priority=0)
    assert [(g.promise_id, g.score) for g in updated.gaps] == [("a", 0.9), ("csat", 0.0)]


def test_recommended_actions_are_deduplicated_critical_first_then_worst_first() -> None:
    gaps = [
        _gap("slow", score=0.8, gap=10, action="Call back"),
        _gap("wrong", score=0.0, gap=1, action="Fix invoice"),
        _gap("slower", score=0.2, gap=99, action="Call back"),
        _gap("csat", score=0.5, gap=2, critical=True, action="Manager calls"),
    ]
    assert recommended_actions(gaps) == ("Manager calls", "Fix invoice", "Call back")


@pytest.mark.parametrize(
    ("health", "value", "reach", "critical", "expected"),
    [
        (30.0, 1.0, 0.0, False, 20.0),
        (30.0, 2.0, math.e - 1, False, 20.0 * 2 * 2),
        (50.0, 1.0, 0.0, False, 0.0),
        (80.0, 5.0, 10.0, False, 0.0),  # above the threshold: clamped at 0
        (80.0, 1.0, 0.0, True, 10.0),  # critical: the floor, never 0
        (10.0, 1.0, 0.0, True, 40.0),  # critical and far under: the formula wins
        (None, 1.0, 0.0, False, 0.0),
        (30.0, 0.0, 0.0, True, 10.0),
    ],
)
def test_priority(
    health: float | None, value: float, reach: float, critical: bool, expected: float
) -> None:
    got = intervention_priority(
        threshold=50.0,
        health=health,
        value=value,
        reach=reach,
        critical=critical,
        critical_floor=10.0,
    )
    assert got == pytest.approx(expected)


def test_ids_are_deterministic() -> None:
    assert _opened().intervention_id == _opened().intervention_id
    same = intervention_id("C-1", T0, LOW, "k")
    assert same == intervention_id("C-1", T0, LOW, "k")
    assert same != intervention_id("C-2", T0, LOW, "k")
    assert same != intervention_id("C-1", T0 + timedelta(seconds=1), LOW, "k")
    assert same != intervention_id("C-1", T0, replace(LOW, kind=TriggerKind.CRITICAL_BREACH), "k")
    assert same != intervention_id("C-1", T0, LOW, "other")


def test_an_intervention_needs_a_trigger() -> None:
    with pytest.raises(ValueError, match="trigger"):
        open_intervention(
            customer_id="C-1",
            now=T0,
            triggers=[],
            gaps=[],
            priority=0,
            threshold=50,
            health=None,
        )

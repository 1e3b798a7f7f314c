"""When interventions open or attach: thresholds, critical and repeated breaches, hysteresis."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.scoring.domain.support import T0, catalogue, outcome
from touchpulse_scoring.domain import (
    NO_GUARD,
    NO_PROFILE,
    BreachHistory,
    Catalogue,
    CustomerProfile,
    Decision,
    Intervention,
    Outcome,
    ReopenGuard,
    TriggerKind,
    acknowledge,
    decide,
    expire_intervention,
    explanation_needed,
    resolve,
)

# The threshold, repeat and hysteresis tests isolate their rules: one breach may open a case
# here, and breadth is off. The evidence and breadth rules have their own tests below.
CAT = catalogue(interventions={"min_breaches": 1, "spread_breaches": {"touchpoints": 100}})
STRICT = catalogue()
DAY = timedelta(days=1)
_counter = iter(range(1_000_000))


def _breach(
    at: datetime = T0, *, promise_id: str = "call-answer-time", critical: bool = False
) -> Outcome:
    broken = outcome(score=0.2, at=at, key=f"b-{next(_counter)}", promise_id=promise_id)
    promise = CAT.promise(promise_id)
    return replace(
        broken,
        met=False,
        gap=300.0,
        severity="critical" if critical else "normal",
        touchpoint=broken.touchpoint if promise is None else promise.touchpoint,
    )


def _kept(at: datetime = T0) -> Outcome:
    return outcome(score=1.0, at=at, key=f"k-{next(_counter)}", promise_id="call-answer-time")


def _decide(
    outcomes: Sequence[Outcome],
    *,
    health: float | None,
    now: datetime = T0,
    previous: float | None = None,
    is_new: bool = False,
    profile: CustomerProfile = NO_PROFILE,
    breaches: BreachHistory | None = None,
    current: Intervention | None = None,
    guard: ReopenGuard = NO_GUARD,
    policy: Catalogue = CAT,
    explained: Sequence[Outcome] | None = None,
    evidence: float = float("inf"),
) -> Decision:
    return decide(
        catalogue=policy,
        customer_id="C-1",
        now=now,
        health=health,
        previous_health=previous,
        is_new=is_new,
        profile=profile,
        outcomes=outcomes,
        breaches=breaches or {},
        current=current,
        guard=guard,
        explained=explained,
        evidence=evidence,
    )


def _opened(health: float = 40.0, now: datetime = T0) -> Intervention:
    decision = _decide([_breach(now)], health=health, now=now)
    assert decision.intervention is not None
    return decision.intervention


def _resolved(at: datetime, health: float = 45.0) -> Intervention:
    acked = acknowledge(_opened(now=at - 2 * DAY), now=at - DAY, assignee="ops")
    return resolve(acked, now=at, note="called", health=health)


def test_a_breach_that_leaves_health_under_the_threshold_opens_one() -> None:
    decision = _decide([_breach()], health=40.0, profile=CustomerProfile(value=2.0))
    assert decision.kind == "opened"
    assert decision.intervention is not None
    iv = decision.intervention
    assert iv.reasons == (TriggerKind.LOW_HEALTH,)
    assert iv.priority == 20.0  # (50 - 40) * 2 * (1 + ln 1)
    assert iv.health_at_open == 40.0
    assert iv.threshold == 50.0
    assert [g.promise_id for g in iv.gaps] == ["call-answer-time"]
    assert iv.actions == ("Call back within 24 hours",)
    assert iv.opened_at == T0


def test_nothing_happens_without_a_breach_or_above_the_threshold() -> None:
    assert _decide([_kept()], health=30.0).kind == "none"
    assert _decide([], health=30.0).kind == "none"
    assert _decide([_breach()], health=50.0).kind == "none"


def test_new_customers_have_a_higher_threshold() -> None:
    assert _decide([_breach()], health=55.0, is_new=True).kind == "opened"
    assert _decide([_breach()], health=55.0, is_new=False).kind == "none"
    iv = _decide([_breach()], health=55.0, is_new=True).intervention
    assert iv is not None
    assert (iv.threshold, iv.priority) == (60.0, 5.0)


def test_a_critical_breach_opens_one_even_on_a_healthy_journey() -> None:
    decision = _decide([_breach(promise_id="survey-csat", critical=True)], health=90.0)
    assert decision.kind == "opened"
    assert decision.intervention is not None
    assert decision.intervention.reasons == (TriggerKind.CRITICAL_BREACH,)
    assert decision.intervention.priority == 10.0  # the floor
    assert decision.intervention.actions == ("A manager calls the customer",)


def test_the_same_promise_broken_three_times_in_a_week() -> None:
    history = {"call-answer-time": [T0 - 6 * DAY, T0 - 2 * DAY]}
    decision = _decide([_breach()], health=80.0, breaches=history)
    assert decision.kind == "opened"
    assert decision.intervention is not None
    assert decision.intervention.reasons == (TriggerKind.REPEATED_BREACH,)
    assert decision.intervention.priority == 0.0  # healthy, not critical: bottom of the queue
    # One of them eight days old: only two in the window.
    stale = {"call-answer-time": [T0 - 8 * DAY, T0 - 2 * DAY]}
    assert _decide([_breach()], health=80.0, breaches=stale).kind == "none"
    # Other promises' breaches do not add up.
    other = {"invoice-correct": [T0 - DAY, T0 - 2 * DAY]}
    assert _decide([_breach()], health=80.0, breaches=other).kind == "none"
    # Three in one batch count too.
    assert _decide([_breach(), _breach(), _breach()], health=80.0).kind == "opened"


def test_later_triggers_attach_to_the_open_intervention() -> None:
    opened = _opened()
    later = _breach(T0 + DAY, promise_id="survey-csat", critical=True)
    decision = _decide([later], health=30.0, now=T0 + DAY, current=opened)
    assert decision.kind == "attached"
    assert decision.intervention is not None
    iv = decision.intervention
    assert iv.intervention_id == opened.intervention_id
    assert iv.reasons == (TriggerKind.LOW_HEALTH, TriggerKind.CRITICAL_BREACH)
    assert len(iv.gaps) == 2
    assert iv.priority == 20.0
    assert iv.actions[0] == "A manager calls the customer"
    # Still open and nothing broken: it stays as it is.
    quiet = _decide([_kept()], health=30.0, current=iv)
    assert (quiet.kind, quiet.intervention) == ("none", iv)


def test_an_acknowledged_intervention_still_collects_triggers() -> None:
    acked = acknowledge(_opened(), now=T0, assignee="ops")
    decision = _decide([_breach(T0 + DAY)], health=35.0, now=T0 + DAY, current=acked)
    assert decision.kind == "attached"
    assert decision.intervention is not None
    assert decision.intervention.state == "acknowledged"


def test_no_new_intervention_until_recovery_or_cooldown() -> None:
    closed = _resolved(T0, health=45.0)
    guard = ReopenGuard.after_close(closed)
    # Still low the next day: held back, though the trigger is reported.
    held = _decide([_breach(T0 + DAY)], health=40.0, now=T0 + DAY, guard=guard)
    assert held.kind == "none"
    assert [t.kind for t in held.triggers] == [TriggerKind.LOW_HEALTH]
    # Recovered only to 55 (< 50 + 10) in between: still held back.
    held = _decide(
        [_breach(T0 + 2 * DAY)], health=40.0, previous=55.0, now=T0 + 2 * DAY, guard=held.guard
    )
    assert held.kind == "none"
    # After the cooldown, a new one may open.
    after = _decide([_breach(T0 + 7 * DAY)], health=40.0, now=T0 + 7 * DAY, guard=held.guard)
    assert after.kind == "opened"


def test_recovery_past_threshold_plus_margin_rearms_it() -> None:
    guard = ReopenGuard.after_close(_resolved(T0, health=45.0))
    # Health reached 60 at some point after the close (seen as a reading, no trigger).
    seen = _decide([_kept(T0 + DAY)], health=60.0, previous=45.0, now=T0 + DAY, guard=guard)
    assert seen.kind == "none"
    assert seen.guard.recovered
    # Then it falls again, within the cooldown: a new intervention opens.
    fall = _decide(
        [_breach(T0 + 2 * DAY)], health=40.0, previous=48.0, now=T0 + 2 * DAY, guard=seen.guard
    )
    assert fall.kind == "opened"


def test_resolving_on_a_healthy_journey_needs_no_recovery() -> None:
    guard = ReopenGuard.after_close(_resolved(T0, health=85.0))
    assert _decide([_breach(T0 + DAY)], health=40.0, now=T0 + DAY, guard=guard).kind == "opened"


def test_a_critical_breach_ignores_the_cooldown() -> None:
    guard = ReopenGuard.after_close(_resolved(T0, health=45.0))
    critical = _breach(T0 + DAY, promise_id="survey-csat", critical=True)
    assert _decide([critical], health=40.0, now=T0 + DAY, guard=guard).kind == "opened"


def test_an_expired_intervention_does_not_hold_the_next_one_back() -> None:
    expired = expire_intervention(_opened(), now=T0 + 14 * DAY)
    guard = ReopenGuard.after_close(expired)
    decision = _decide([_breach(T0 + 15 * DAY)], health=40.0, now=T0 + 15 * DAY, guard=guard)
    assert decision.kind == "opened"


def test_repeated_breaches_before_the_last_close_do_not_count() -> None:
    closed = _resolved(T0, health=85.0)
    guard = ReopenGuard.after_close(closed)
    history = {"call-answer-time": [T0 - 2 * DAY, T0 - DAY]}
    decision = _decide(
        [_breach(T0 + DAY)], health=80.0, now=T0 + DAY, breaches=history, guard=guard
    )
    assert decision.kind == "none"


def test_replays_reproduce_the_same_intervention() -> None:
    first = _breach()
    a = _decide([first], health=40.0).intervention
    b = _decide([first], health=40.0).intervention
    assert a is not None
    assert b is not None
    assert a.intervention_id == b.intervention_id


# --- interventions worth a call: evidence, breadth -----------------------------------------


def _on(touchpoint: str, at: datetime, promise_id: str) -> Outcome:
    return replace(_breach(at, promise_id=promise_id), touchpoint=touchpoint)


def test_low_health_on_one_breach_or_thin_evidence_opens_nothing() -> None:
    one = _breach()
    # One broken promise: it calls for its own fix, not a call.
    assert _decide([one], health=10.0, policy=STRICT, explained=[one]).kind == "none"
    two = [_breach(), _breach(T0 + DAY)]
    # Two, but resting on less evidence than the policy asks: one slow page load and a
    # second slow page load on a customer we know nothing else about.
    thin = _decide(two, health=10.0, policy=STRICT, explained=two, evidence=1.0)
    assert thin.kind == "none"
    enough = _decide(two, health=10.0, policy=STRICT, explained=two, evidence=3.25)
    assert enough.kind == "opened"
    assert enough.intervention is not None
    assert enough.intervention.reasons == (TriggerKind.LOW_HEALTH,)


def test_critical_and_repeated_breaches_do_not_wait_for_evidence() -> None:
    critical = _breach(promise_id="survey-csat", critical=True)
    decision = _decide([critical], health=95.0, policy=STRICT, explained=[critical], evidence=0.0)
    assert decision.kind == "opened"
    history = {"call-answer-time": [T0 - 2 * DAY, T0 - DAY]}
    repeated = _decide(
        [_breach()], health=95.0, policy=STRICT, breaches=history, explained=[], evidence=0.0
    )
    assert repeated.kind == "opened"


def test_breaches_at_two_touchpoints_within_the_window_open_one_in_any_order() -> None:
    call = _on("call_centre", T0, "call-answer-time")
    invoice = _on("billing", T0 + 10 * DAY, "invoice-correct")
    # Whichever arrives second sees the first, earlier or later in time.
    for new, before in ((invoice, call), (call, invoice)):
        history = {before.promise_id: [before.occurred_at]}
        decision = _decide([new], health=90.0, policy=STRICT, breaches=history, evidence=0.0)
        assert decision.kind == "opened", (new.promise_id, decision)
        assert decision.intervention is not None
        assert decision.intervention.reasons == (TriggerKind.SPREAD_BREACH,)
        assert "billing, call_centre" in decision.intervention.triggers[0].detail
    far = _on("billing", T0 + 15 * DAY, "invoice-correct")
    history = {"call-answer-time": [T0]}
    assert _decide([far], health=90.0, policy=STRICT, breaches=history).kind == "none"
    # Two breaches at one touchpoint are not breadth.
    same = {"call-answer-time": [T0 - DAY]}
    assert _decide([_breach()], health=90.0, policy=STRICT, breaches=same).kind == "none"


def test_breaches_before_the_last_case_closed_do_not_count_for_breadth() -> None:
    closed = ReopenGuard(closed_at=T0 + DAY, health_at_close=80.0, recovered=True)
    history = {"invoice-correct": [T0]}
    later = _on("call_centre", T0 + 2 * DAY, "call-answer-time")
    decision = _decide([later], health=90.0, policy=STRICT, breaches=history, guard=closed)
    assert decision.kind == "none"


# --- explanation_needed: exact, so scoring may skip the explanation's cost ----------------

_PROMISES = ("call-answer-time", "items-missing", "invoice-correct")


@st.composite
def _decision_inputs(draw: st.DrawFn) -> dict[str, Any]:
    def breach() -> Outcome:
        day = draw(st.integers(0, 30))
        return _breach(
            T0 + day * DAY,
            promise_id=draw(st.sampled_from(_PROMISES)),
            critical=draw(st.booleans()) and draw(st.booleans()),
        )

    batch = [breach() if draw(st.booleans()) else _kept() for _ in range(draw(st.integers(0, 3)))]
    history: dict[str, list[datetime]] = {}
    for _ in range(draw(st.integers(0, 3))):
        history.setdefault(draw(st.sampled_from(_PROMISES)), []).append(
            T0 + draw(st.integers(-20, 30)) * DAY
        )
    closed = draw(st.one_of(st.none(), st.integers(-30, 10)))
    guard = (
        NO_GUARD
        if closed is None
        else ReopenGuard(
            closed_at=T0 + closed * DAY,
            health_at_close=draw(st.floats(0, 100)),
            recovered=draw(st.booleans()),
        )
    )
    return {
        "catalogue": draw(st.sampled_from((CAT, STRICT))),
        "health": draw(st.one_of(st.none(), st.floats(0, 100))),
        "previous_health": draw(st.one_of(st.none(), st.floats(0, 100))),
        "is_new": draw(st.booleans()),
        "outcomes": batch,
        "breaches": history,
        "guard": guard,
        "evidence": draw(st.floats(0, 20)),
    }


@settings(max_examples=400, deadline=None)
@given(_decision_inputs(), st.lists(st.integers(0, 40), max_size=6))
def test_without_a_needed_explanation_every_explanation_decides_none(
    inputs: dict[str, Any], days: list[int]
) -> None:
    """When explanation_needed says no, decide says ``none`` whatever the explanation is —
    so scoring skips reading and scoring the customer's newest outcomes with no effect."""
    if explanation_needed(current=None, **inputs):
        return
    for explained in (None, [], [_breach(T0 + d * DAY) for d in days]):
        decision = decide(
            customer_id="C-1",
            now=T0 + 40 * DAY,
            profile=NO_PROFILE,
            current=None,
            explained=explained,
            **inputs,
        )
        assert decision.kind == "none", (inputs, explained)


def test_an_explanation_is_needed_for_an_open_case_and_for_a_trigger_in_reach() -> None:
    opened = _decide([_breach(critical=True)], health=90.0).intervention
    assert opened is not None
    common: dict[str, Any] = {
        "catalogue": CAT,
        "previous_health": None,
        "is_new": False,
        "breaches": {},
        "guard": NO_GUARD,
    }
    assert explanation_needed(health=90.0, outcomes=[_kept()], current=opened, **common)
    assert explanation_needed(
        health=90.0, outcomes=[_breach(critical=True)], current=None, **common
    )
    assert explanation_needed(health=10.0, outcomes=[_breach()], current=None, **common)
    assert not explanation_needed(health=90.0, outcomes=[_breach()], current=None, **common)
    assert not explanation_needed(health=10.0, outcomes=[_kept()], current=None, **common)
    # Under the line but on too little evidence: no low-health trigger, so none either way.
    assert not explanation_needed(
        health=10.0,
        outcomes=[_breach()],
        current=None,
        evidence=0.5,
        **{**common, "catalogue": STRICT},
    )

"""Order and duplicate independence of whole journeys: measure *and* deadline promises.

Each example is a customer's set of events — orders, promised slots, deliveries (sometimes
two for one journey, sometimes before their order), invoices, calls — folded through the
consumer's own per-event step (:func:`judge_event`) and the ledger, in one order and in
another, with duplicates, with deadline sweeps at arbitrary moments. The standing outcomes,
the health and the journey score must not depend on any of that (design §3: "deadline
outcomes depend on the set of events, never on their arrival order").
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.scoring.domain.support import T0, catalogue, close, event, outcome
from touchpulse_scoring.domain import (
    NO_PROFILE,
    CustomerProfile,
    Deadline,
    DeadlineRef,
    Fulfilment,
    Outcome,
    Prior,
    TouchpointHealth,
    apply_outcomes,
    assess,
    evidence,
    expire_deadline,
    health_at,
    judge_event,
)
from touchpulse_shared.contract import ExperienceEventV1

CAT = catalogue()
HALF_LIFE = CAT.policy.half_life_days
HOUR = timedelta(hours=1)


@dataclass
class Book:
    """One customer's state, as the consumer keeps it between batches."""

    health: dict[str, TouchpointHealth] = field(default_factory=dict)
    current: dict[str, Outcome] = field(default_factory=dict)
    deadlines: dict[DeadlineRef, Deadline] = field(default_factory=dict)
    early: dict[DeadlineRef, Fulfilment] = field(default_factory=dict)

    def apply(self, outcomes: tuple[Outcome, ...] | list[Outcome]) -> None:
        applied = apply_outcomes(self.health, self.current, outcomes, half_life_days=HALF_LIFE)
        self.health = dict(applied.health)
        self.current = dict(applied.current)

    def take(self, item: ExperienceEventV1, profile: CustomerProfile) -> None:
        judged = judge_event(item, CAT, profile, self.deadlines, self.early)
        judged.fold_into(self.deadlines, self.early)
        self.apply(judged.outcomes)

    def sweep(self, now: datetime) -> None:
        found = []
        for ref, deadline in sorted(self.deadlines.items(), key=lambda kv: repr(kv[0])):
            expired = expire_deadline(deadline, now)
            if expired is not None:
                self.deadlines[ref], outcome = expired
                found.append(outcome)
        self.apply(found)


hours = st.integers(min_value=0, max_value=24 * 8)


@st.composite
def journeys(draw: st.DrawFn) -> list[ExperienceEventV1]:
    """A customer's events: a few orders with their deliveries, invoices and calls."""
    events: list[ExperienceEventV1] = []
    for order in range(draw(st.integers(1, 3))):
        journey = f"order-{order}"
        start = T0 + draw(hours) * HOUR
        for opening in range(draw(st.integers(1, 2))):  # an amended order re-sends it
            events.append(
                event(
                    "order.placed",
                    "sales",
                    at=start + opening * draw(hours) * HOUR,
                    event_id=f"{journey}-placed-{opening}",
                    journey_id=journey,
                )
            )
        if draw(st.booleans()):
            due = start + draw(hours) * HOUR
            events.append(
                event(
                    "delivery.promised",
                    "delivery",
                    at=start,
                    event_id=f"{journey}-promised",
                    journey_id=journey,
                    attributes={"due_at": due.isoformat().replace("+00:00", "Z")},
                )
            )
        for delivery in range(draw(st.integers(0, 2))):  # none, one, or a second scan
            events.append(
                event(
                    "delivery.completed",
                    "delivery",
                    {"items_missing": draw(st.integers(0, 3))},
                    # Sometimes before the order's own timestamp: clock skew between systems.
                    at=start + (draw(hours) - 12) * HOUR,
                    event_id=f"{journey}-delivered-{delivery}",
                    journey_id=journey,
                )
            )
        if draw(st.booleans()):
            events.append(
                event(
                    "invoice.issued",
                    "billing",
                    {"invoice_correct": draw(st.booleans())},
                    at=start + draw(hours) * HOUR,
                    event_id=f"{journey}-invoice",
                    journey_id=journey,
                )
            )
    for call in range(draw(st.integers(0, 3))):
        events.append(
            event(
                "call.answered",
                "call_centre",
                {"wait_seconds": draw(st.integers(0, 900))},
                at=T0 + draw(hours) * HOUR,
                event_id=f"call-{call}",
            )
        )
    return events


profiles = st.sampled_from(
    [NO_PROFILE, CustomerProfile(segment="premium"), CustomerProfile(customer_since=T0.date())]
)


def _run(
    events: list[ExperienceEventV1], profile: CustomerProfile, sweeps: list[tuple[int, int]]
) -> Book:
    """Fold ``events`` in order, sweeping at ``(position, hours after T0)`` on the way, then
    once at the end, when every clock has long run out."""
    book = Book()
    at = dict(sweeps)
    for position, item in enumerate(events):
        if position in at:
            book.sweep(T0 + at[position] * HOUR)
        book.take(item, profile)
    book.sweep(T0 + 1000 * HOUR)
    return book


def _noticed(outcome: Outcome) -> Outcome:
    # A breach by absence says how late it was when the sweep noticed it: that one figure
    # depends on when sweeps ran, not on the events. Everything else must agree.
    return replace(outcome, gap=0.0) if outcome.actual is None else outcome


def _settled(deadline: Deadline) -> Deadline:
    return replace(deadline, closed_at=None) if deadline.state == "expired" else deadline


def _same(a: Book, b: Book, newest: datetime) -> None:
    assert a.current.keys() == b.current.keys()
    for key, standing in a.current.items():
        assert _noticed(standing) == _noticed(b.current[key]), key
    assert {r: _settled(d) for r, d in a.deadlines.items()} == {
        r: _settled(d) for r, d in b.deadlines.items()
    }
    assert a.early == b.early
    assert a.health.keys() == b.health.keys()
    for touchpoint, state in a.health.items():
        other = b.health[touchpoint]
        assert close(state.value, other.value)
        prior = CAT.policy.prior.for_touchpoint(touchpoint)
        assert close(
            health_at(state, newest, prior, half_life_days=HALF_LIFE),
            health_at(other, newest, prior, half_life_days=HALF_LIFE),
        )
    assert close(assess(a.health, CAT, newest).score, assess(b.health, CAT, newest).score)


sweep_points = st.lists(
    st.tuples(st.integers(0, 40), st.integers(0, 24 * 12)), max_size=4, unique_by=lambda s: s[0]
)


@settings(max_examples=300, deadline=None)
@given(st.data(), journeys(), profiles, sweep_points, sweep_points)
def test_a_journey_in_any_order_gives_the_same_outcomes_and_health(
    data: st.DataObject,
    events: list[ExperienceEventV1],
    profile: CustomerProfile,
    sweeps: list[tuple[int, int]],
    other_sweeps: list[tuple[int, int]],
) -> None:
    shuffled = data.draw(st.permutations(events))
    newest = max(e.occurred_at for e in events)
    _same(_run(events, profile, sweeps), _run(shuffled, profile, other_sweeps), newest)


@settings(max_examples=200, deadline=None)
@given(st.data(), journeys(), profiles)
def test_duplicates_change_nothing(
    data: st.DataObject, events: list[ExperienceEventV1], profile: CustomerProfile
) -> None:
    again = data.draw(st.lists(st.sampled_from(events), max_size=len(events)))
    mixed = data.draw(st.permutations(events + again))
    newest = max(e.occurred_at for e in events)
    _same(_run(events, profile, []), _run(mixed, profile, []), newest)


def test_a_delivery_before_its_order_settles_the_clock_with_the_real_gap() -> None:
    """The regression the issue names: a fulfilment that arrives first is remembered."""
    placed = event("order.placed", "sales", at=T0, event_id="o", journey_id="j")
    late = event(
        "delivery.completed", "delivery", {"items_missing": 0}, at=T0 + 72 * HOUR,
        event_id="d", journey_id="j",
    )  # fmt: skip
    in_order, reversed_ = _run([placed, late], NO_PROFILE, []), _run([late, placed], NO_PROFILE, [])
    _same(in_order, reversed_, T0 + 72 * HOUR)
    (deadline_outcome,) = [o for o in reversed_.current.values() if o.promise_id.endswith("48h")]
    assert (deadline_outcome.actual, deadline_outcome.gap, deadline_outcome.met) == (
        72.0,
        24.0,
        False,
    )
    # Settled: only the slot promise, whose opening never came, still waits.
    assert [r.promise_id for r in reversed_.early] == ["delivery-as-promised"]


# --- the prior and the evidence -----------------------------------------------------------

outcome_scores = st.lists(
    st.tuples(
        st.floats(0.0, 1.0), st.floats(0.1, 10.0), st.integers(0, 24 * 90), st.sampled_from([0, 1])
    ),
    min_size=1,
    max_size=20,
)
priors = st.builds(Prior, score=st.floats(0.0, 1.0), weight=st.floats(0.0, 20.0))


def _fold(items: list[tuple[float, float, int, int]]) -> TouchpointHealth:
    book = Book()
    book.apply(
        [
            outcome(score=s, weight=w, at=T0 + h * HOUR, key=f"k{i}", touchpoint="web")
            for i, (s, w, h, _) in enumerate(items)
        ]
    )
    return book.health["web"]


@given(outcome_scores, priors)
def test_health_with_the_prior_stays_between_the_prior_and_the_outcomes(
    items: list[tuple[float, float, int, int]], prior: Prior
) -> None:
    state = _fold(items)
    at = T0 + 24 * 90 * HOUR
    value = health_at(state, at, prior, half_life_days=HALF_LIFE)
    assert value is not None
    low = min(s for s, _, _, _ in items)
    high = max(s for s, _, _, _ in items)
    if prior.weight > 0:
        low, high = min(low, prior.score), max(high, prior.score)
    assert low - 1e-9 <= value <= high + 1e-9


@given(
    outcome_scores, st.tuples(st.floats(0.0, 1.0), st.floats(0.1, 10.0), st.integers(0, 24 * 90))
)
def test_evidence_only_grows_with_outcomes(
    items: list[tuple[float, float, int, int]], extra: tuple[float, float, int]
) -> None:
    at = T0 + 24 * 90 * HOUR
    before = evidence(_fold(items), at, half_life_days=HALF_LIFE)
    after = evidence(_fold([*items, (*extra, 0)]), at, half_life_days=HALF_LIFE)
    assert after >= before * (1 - 1e-12)
    assert after > 0


def test_no_outcomes_means_no_health_even_with_a_prior() -> None:
    assert health_at(TouchpointHealth(), T0, Prior(0.8, 2.0), half_life_days=HALF_LIFE) is None
    assert assess({}, CAT, T0).score is None


def test_one_breach_on_thin_evidence_reads_near_neutral_not_zero() -> None:
    state = _fold([(0.0, 0.5, 0, 0)])  # one slow page load, weight 0.5
    prior = CAT.policy.prior.for_touchpoint("web")
    value = health_at(state, T0, prior, half_life_days=HALF_LIFE)
    assert value is not None
    assert value == prior.score * prior.weight / (prior.weight + 0.5)
    assert state.value == 0.0  # what the raw ratio said
    # As evidence grows, the outcomes speak for themselves.
    many = _fold([(0.0, 0.5, i, 0) for i in range(200)])
    grown = health_at(many, T0 + 200 * HOUR, prior, half_life_days=HALF_LIFE)
    assert grown is not None
    assert grown < 0.05


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(sorted(CAT.touchpoints)),
        st.tuples(st.floats(0.01, 1.0), st.floats(0.1, 50.0)),
        min_size=2,
    ),
    st.randoms(use_true_random=False),
)
def test_the_same_touchpoint_states_score_the_same_bits_in_any_load_order(
    states: dict[str, tuple[float, float]], rng: random.Random
) -> None:
    """Scoring loads a customer's touchpoint rows in whatever order the database returns
    them and appends new touchpoints as they come: the journey score (and so the stored
    trend and every answer built on it) must not differ even in its last bit."""
    health = {
        t: TouchpointHealth(s=value * weight, w=weight, t_ref=T0, outcomes=3)
        for t, (value, weight) in states.items()
    }
    shuffled = list(health.items())
    rng.shuffle(shuffled)
    at = T0 + HOUR
    assert assess(health, CAT, at) == assess(dict(shuffled), CAT, at)
    assert assess(health, CAT, at) == assess(dict(reversed(list(health.items()))), CAT, at)

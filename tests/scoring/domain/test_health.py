"""Touchpoint health (S, W, t_ref): order independence, supersession, dedupe, rebase, bounds."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from tests.scoring.domain.support import (
    HALF_LIFE_DAYS,
    T0,
    close,
    outcome,
    outcome_lists,
    scores,
    weights,
)
from touchpulse_scoring.domain import (
    EMPTY,
    Outcome,
    TouchpointHealth,
    add_outcome,
    apply_outcomes,
    rebase,
    remove_outcome,
    replace_outcome,
)
from touchpulse_scoring.domain.health import REBASE_ABOVE


def _fold(outcomes: Iterable[Outcome]) -> TouchpointHealth:
    state = EMPTY
    for item in outcomes:
        state = add_outcome(state, item, half_life_days=HALF_LIFE_DAYS)
    return state


def _reference(outcomes: list[Outcome]) -> float | None:
    """The brief's formula evaluated directly at the newest outcome's time."""
    if not outcomes:
        return None
    now = max(o.occurred_at for o in outcomes)
    decay = [
        2.0 ** (-(now - o.occurred_at).total_seconds() / (HALF_LIFE_DAYS * 86_400))
        for o in outcomes
    ]
    num = math.fsum(o.weight * o.score * d for o, d in zip(outcomes, decay, strict=True))
    den = math.fsum(o.weight * d for o, d in zip(outcomes, decay, strict=True))
    return num / den


def test_no_outcomes_means_no_health() -> None:
    assert EMPTY.value is None


def test_recent_outcomes_count_more() -> None:
    old_bad = outcome(score=0.0, at=T0, key="a")
    new_good = outcome(score=1.0, at=T0 + timedelta(days=30), key="b")
    # One half-life apart: weights 1 and 2, so H = 2/3.
    assert close(_fold([old_bad, new_good]).value, 2 / 3)
    assert close(_fold([new_good, old_bad]).value, 2 / 3)


@given(outcome_lists(min_size=1))
def test_it_matches_the_formula(outcomes: list[Outcome]) -> None:
    assert close(_fold(outcomes).value, _reference(outcomes))


@given(st.data(), outcome_lists())
def test_the_order_of_arrival_does_not_matter(data: st.DataObject, outcomes: list[Outcome]) -> None:
    shuffled = data.draw(st.permutations(outcomes))
    assert close(_fold(outcomes).value, _fold(shuffled).value)


@given(outcome_lists())
def test_health_stays_in_the_unit_interval(outcomes: list[Outcome]) -> None:
    state = _fold(outcomes)
    if not outcomes:
        assert state.value is None
    else:
        assert state.value is not None
        assert 0.0 <= state.value <= 1.0
        assert state.outcomes == len(outcomes)
        assert math.isfinite(state.s)
        assert math.isfinite(state.w)


@given(outcome_lists(), st.data())
def test_supersession_equals_having_only_the_new_outcome(
    others: list[Outcome], data: st.DataObject
) -> None:
    offset = data.draw(st.integers(min_value=0, max_value=400 * 86_400))
    later = data.draw(st.integers(min_value=0, max_value=30 * 86_400))
    score_a, score_b = data.draw(scores), data.draw(scores)
    weight_a, weight_b = data.draw(weights), data.draw(weights)
    # In this domain a superseding outcome is never older than the one it replaces: a late
    # delivery comes after the due time its breach is dated at.
    a = outcome(score=score_a, weight=weight_a, at=T0 + timedelta(seconds=offset), key="x")
    b = outcome(score=score_b, weight=weight_b, at=T0 + timedelta(seconds=offset + later), key="x")
    replaced = replace_outcome(
        add_outcome(_fold(others), a, half_life_days=HALF_LIFE_DAYS),
        a,
        b,
        half_life_days=HALF_LIFE_DAYS,
    )
    direct = add_outcome(_fold(others), b, half_life_days=HALF_LIFE_DAYS)
    assert close(replaced.value, direct.value)
    assert replaced.outcomes == direct.outcomes


@given(outcome_lists(min_size=1))
def test_removing_everything_leaves_no_health(outcomes: list[Outcome]) -> None:
    state = _fold(outcomes)
    for item in reversed(outcomes):
        state = remove_outcome(state, item, half_life_days=HALF_LIFE_DAYS)
    assert state == EMPTY
    assert state.value is None


@given(st.data(), outcome_lists(min_size=1))
def test_duplicates_change_nothing(data: st.DataObject, outcomes: list[Outcome]) -> None:
    repeats = data.draw(st.lists(st.sampled_from(outcomes), max_size=20))
    with_duplicates = data.draw(st.permutations([*outcomes, *repeats]))
    applied = apply_outcomes({}, {}, with_duplicates, half_life_days=HALF_LIFE_DAYS)
    once = apply_outcomes({}, {}, outcomes, half_life_days=HALF_LIFE_DAYS)
    assert applied.health.keys() == once.health.keys()
    for touchpoint, state in once.health.items():
        assert close(applied.health[touchpoint].value, state.value)
        assert applied.health[touchpoint].outcomes == state.outcomes
    assert len(applied.ignored) == len(repeats)


@given(outcome_lists(min_size=1), st.integers(min_value=-200, max_value=200))
def test_rebasing_keeps_health(outcomes: list[Outcome], half_lives: int) -> None:
    state = _fold(outcomes)
    assert state.t_ref is not None
    moved = rebase(
        state,
        state.t_ref + timedelta(days=half_lives * HALF_LIFE_DAYS),
        half_life_days=HALF_LIFE_DAYS,
    )
    assert close(moved.value, state.value)
    assert moved.outcomes == state.outcomes


def test_far_apart_outcomes_rebase_instead_of_overflowing() -> None:
    first = outcome(score=0.0, at=T0, key="a")
    # 5,000 half-lives (about 410 years) later: 2^5000 would overflow a float.
    far = outcome(score=1.0, at=T0 + timedelta(days=5000 * HALF_LIFE_DAYS), key="b")
    state = add_outcome(add_outcome(EMPTY, first, half_life_days=30), far, half_life_days=30)
    assert state.t_ref == far.occurred_at
    assert math.isfinite(state.s)
    assert math.isfinite(state.w)
    assert state.value == 1.0
    # And in the other order, the ancient one simply stops counting.
    backwards = add_outcome(add_outcome(EMPTY, far, half_life_days=30), first, half_life_days=30)
    assert backwards.value == 1.0


def test_rebase_happens_only_beyond_the_bound() -> None:
    first = outcome(score=0.5, at=T0, key="a")
    near = outcome(score=1.0, at=T0 + timedelta(days=REBASE_ABOVE * HALF_LIFE_DAYS), key="b")
    state = _fold([first, near])
    assert state.t_ref == T0
    assert state.w <= 1 + 2.0**REBASE_ABOVE

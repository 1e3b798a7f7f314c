"""Applying outcomes once each, with supersession, in any order."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from tests.scoring.domain.support import HALF_LIFE_DAYS, T0, close, outcome, outcome_lists
from touchpulse_scoring.domain import Outcome, apply_outcomes, supersedes


def test_an_arrived_event_supersedes_a_breach_by_absence_and_not_the_reverse() -> None:
    breach = outcome(score=0.0, actual=None, at=T0, key="k")
    late = outcome(score=0.6, actual=60.0, at=T0 + timedelta(hours=12), key="k")
    assert supersedes(late, breach)
    assert not supersedes(breach, late)
    assert not supersedes(breach, breach)
    assert not supersedes(late, late)


def test_of_two_arrivals_the_earlier_stands() -> None:
    first = outcome(score=0.6, at=T0 + timedelta(hours=1), key="k")
    second = outcome(score=0.2, at=T0 + timedelta(hours=9), key="k")
    assert supersedes(first, second)
    assert not supersedes(second, first)


def test_what_happened_to_each_outcome_is_reported() -> None:
    breach = outcome(score=0.0, actual=None, at=T0, key="k", touchpoint="delivery")
    late = outcome(score=0.6, at=T0 + timedelta(hours=12), key="k", touchpoint="delivery")
    other = outcome(score=1.0, key="o", touchpoint="billing")
    first = apply_outcomes({}, {}, [breach, other], half_life_days=HALF_LIFE_DAYS)
    assert first.recorded == (breach, other)
    second = apply_outcomes(
        first.health, {breach.outcome_key: breach}, [late, late, breach], half_life_days=30
    )
    assert second.recorded == (late,)
    assert second.superseded == (breach,)
    assert second.ignored == (late, breach)
    assert second.health["delivery"].value == 0.6
    assert second.health["delivery"].outcomes == 1
    assert second.health["billing"] == first.health["billing"]


@given(st.data(), outcome_lists(max_size=15))
def test_the_result_depends_only_on_the_set_of_outcomes(
    data: st.DataObject, outcomes: list[Outcome]
) -> None:
    # Some keys also get a breach by absence (dated earlier) that their arrival supersedes.
    breaches = [
        replace(
            o,
            actual=None,
            met=False,
            score=0.0,
            gap=1.0,
            occurred_at=o.occurred_at - timedelta(hours=data.draw(st.integers(0, 500))),
        )
        for o in outcomes
        if data.draw(st.booleans())
    ]
    everything = [*outcomes, *breaches]
    shuffled = data.draw(st.permutations(everything))
    a = apply_outcomes({}, {}, everything, half_life_days=HALF_LIFE_DAYS)
    b = apply_outcomes({}, {}, shuffled, half_life_days=HALF_LIFE_DAYS)
    assert a.current == b.current
    assert set(a.current.values()) == set(outcomes)
    assert a.health.keys() == b.health.keys()
    for touchpoint, state in a.health.items():
        assert close(state.value, b.health[touchpoint].value)
        assert state.outcomes == b.health[touchpoint].outcomes

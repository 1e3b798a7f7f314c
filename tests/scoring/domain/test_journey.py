"""Journey health: weakest-link weighting, bounds, no score without outcomes."""

from __future__ import annotations

from datetime import timedelta
from random import Random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.scoring.domain.support import HALF_LIFE_DAYS, T0, catalogue, outcome
from touchpulse_scoring.domain import (
    TouchpointHealth,
    apply_outcomes,
    assess,
    evidence,
    journey_health,
    touchpoint_values,
    weakest_touchpoint,
)
from touchpulse_scoring.domain.journey import counted, score_of

IMPORTANCE = {"web": 1.0, "billing": 3.0, "delivery": 0.0}


def test_no_outcomes_gives_no_score() -> None:
    assert journey_health({}, IMPORTANCE, 0.5) is None
    assert journey_health({"web": None, "billing": None}, IMPORTANCE, 0.5) is None
    journey = assess({}, catalogue(), T0)
    assert (journey.score, journey.band, journey.weakest_touchpoint) == (None, None, None)


def test_lambda_one_is_the_weakest_link() -> None:
    assert journey_health({"web": 0.9, "billing": 0.3}, IMPORTANCE, 1.0) == pytest.approx(30.0)


def test_lambda_zero_is_the_importance_weighted_mean() -> None:
    score = journey_health({"web": 0.9, "billing": 0.3}, IMPORTANCE, 0.0)
    assert score == pytest.approx(100 * (0.9 * 1 + 0.3 * 3) / 4)


def test_the_default_blends_both() -> None:
    score = journey_health({"web": 0.9, "billing": 0.3}, IMPORTANCE, 0.5)
    assert score == pytest.approx(100 * (0.5 * 0.45 + 0.5 * 0.3))


def test_importance_zero_counts_only_as_the_weakest_link() -> None:
    health = {"web": 1.0, "delivery": 0.2}
    assert journey_health(health, IMPORTANCE, 0.0) == pytest.approx(100.0)
    assert journey_health(health, IMPORTANCE, 1.0) == pytest.approx(20.0)
    assert weakest_touchpoint(health, IMPORTANCE) == "delivery"


def test_all_importances_zero_falls_back_to_the_plain_mean() -> None:
    assert journey_health({"delivery": 0.2}, IMPORTANCE, 0.0) == pytest.approx(20.0)
    zero = {"a": 0.0, "b": 0.0}
    assert journey_health({"a": 0.2, "b": 0.6}, zero, 0.0) == pytest.approx(40.0)


def test_touchpoints_outside_the_catalogue_are_left_out() -> None:
    assert journey_health({"web": 0.8, "fax": 0.0}, IMPORTANCE, 1.0) == pytest.approx(80.0)


def test_weakest_touchpoint_ties_go_to_the_more_important() -> None:
    assert weakest_touchpoint({"web": 0.4, "billing": 0.4}, IMPORTANCE) == "billing"
    assert weakest_touchpoint({}, IMPORTANCE) is None


def test_assess_bands_and_names_the_weakest_link() -> None:
    cat = catalogue(prior={"weight": 0})  # the raw weakest-link arithmetic, no prior
    applied = apply_outcomes(
        {},
        {},
        [
            outcome(score=1.0, touchpoint="billing", key="a"),
            outcome(score=0.1, touchpoint="delivery", key="b"),
        ],
        half_life_days=HALF_LIFE_DAYS,
    )
    journey = assess(applied.health, cat, T0)
    # billing a=1, delivery a=2: mean 0.4, min 0.1 -> 100 * (0.2 + 0.05)
    assert journey.score == pytest.approx(25.0)
    assert journey.band == "red"
    assert journey.weakest_touchpoint == "delivery"
    assert dict(journey.touchpoints) == pytest.approx({"billing": 1.0, "delivery": 0.1})


health_values = st.one_of(st.none(), st.floats(min_value=0.0, max_value=1.0))


@given(
    st.dictionaries(st.sampled_from(["a", "b", "c", "d", "x"]), health_values),
    st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.floats(min_value=0, max_value=1000)),
    st.floats(min_value=0.0, max_value=1.0),
)
def test_journey_health_stays_between_0_and_100(
    health: dict[str, float | None], importance: dict[str, float], lam: float
) -> None:
    score = journey_health(health, importance, lam)
    counted = [h for t, h in health.items() if h is not None and t in importance]
    if not counted:
        assert score is None
    else:
        assert score is not None
        assert 0.0 <= score <= 100.0
        assert 100 * min(counted) - 1e-9 <= score <= 100 * max(counted) + 1e-9


_STATE = st.builds(
    TouchpointHealth,
    s=st.floats(min_value=0.0, max_value=50.0),
    w=st.floats(min_value=0.0, max_value=50.0),
    t_ref=st.one_of(
        st.none(), st.integers(-400, 0).map(lambda days: T0 + timedelta(days=days, seconds=7))
    ),
    outcomes=st.integers(0, 5),
)


@given(
    st.dictionaries(
        st.sampled_from(["call_centre", "billing", "delivery", "survey", "sales", "gone"]), _STATE
    ),
    st.randoms(use_true_random=False),
)
def test_assess_is_its_definition_in_any_load_order(
    states: dict[str, TouchpointHealth], rng: Random
) -> None:
    """assess folds the per-touchpoint reads into one pass: it must stay exactly (==, every
    bit) the composition of the public definitions, whatever order the states were loaded in
    ("gone" is a touchpoint the catalogue no longer has)."""
    cat = catalogue()
    policy = cat.policy
    values = counted(touchpoint_values(states, cat, T0), cat.touchpoints)
    score = score_of(values, cat.touchpoints, policy.weakest_link_lambda)
    items = list(states.items())
    rng.shuffle(items)
    journey = assess(dict(items), cat, T0)
    assert journey.touchpoints == values
    assert list(journey.touchpoints) == sorted(values)
    assert journey.score == score
    assert journey.band == (None if score is None else policy.bands.of(score))
    assert journey.weakest_touchpoint == weakest_touchpoint(values, cat.touchpoints)
    assert journey.evidence == sum(
        evidence(states[t], T0, half_life_days=policy.half_life_days) for t in sorted(values)
    )

"""The explanation's fast path gives the very answer of its definition, to the bit.

``explain`` scores one variant of the customer's touchpoint values per breach in its window;
it now shares the sums that do not depend on the replaced value (``_Variants``). The
definition kept here (score the whole replaced mapping with ``journey_health``) is the spec:
every impact and the ranking must be identical, not merely close, because scoring and the
api rank the same breaches and a case's gaps must not depend on which code path ran.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.scoring.domain.support import catalogue, outcome_lists, times
from touchpulse_scoring.domain import Catalogue, Outcome, apply_outcomes
from touchpulse_scoring.domain.explain import (
    EXPLAIN_TOP,
    EXPLAIN_WINDOW,
    _Kept,
    _Variants,
    explain,
    window,
)
from touchpulse_scoring.domain.health import TouchpointHealth, health_at, replace_outcome
from touchpulse_scoring.domain.journey import (
    assess,
    journey_health,
    score_of,
    touchpoint_values,
)

TOUCHPOINTS = ["web", "app", "billing", "delivery", "call_centre", "survey", "sales"]


def reference_explain(
    states: Mapping[str, TouchpointHealth],
    outcomes: Iterable[Outcome],
    catalogue: Catalogue,
    at: datetime,
) -> list[tuple[str, float]]:
    """The explanation by its definition: the score now minus the score with the breach kept
    instead, each variant scored whole."""
    policy = catalogue.policy
    importance = catalogue.touchpoints
    lam = policy.weakest_link_lambda
    raw = touchpoint_values(states, catalogue, at)
    score = journey_health(raw, importance, lam)
    if score is None:
        return []
    found: list[tuple[Outcome, float]] = []
    for o in window(outcomes):
        state = states.get(o.touchpoint)
        if state is None or o.met:
            continue
        if_kept = replace_outcome(
            state, o, _Kept(o.weight, o.occurred_at), half_life_days=policy.half_life_days
        )
        new = health_at(
            if_kept, at, catalogue.prior(o.touchpoint), half_life_days=policy.half_life_days
        )
        other = journey_health({**raw, o.touchpoint: new}, importance, lam)
        impact = round(score - (other if other is not None else score), 6)
        if impact != 0:
            found.append((o, impact))
    found.sort(key=lambda e: (e[1], -e[0].occurred_at.timestamp(), e[0].outcome_key))
    return [(o.outcome_key, impact) for o, impact in found[:EXPLAIN_TOP]]


importances = st.floats(min_value=0.0, max_value=5.0, allow_nan=False) | st.just(0.0)
lambdas = st.floats(min_value=-0.5, max_value=1.5, allow_nan=False)
health_values = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@settings(max_examples=400, deadline=None)
@given(
    values=st.dictionaries(st.sampled_from(TOUCHPOINTS), health_values, min_size=1),
    weights=st.fixed_dictionaries(dict.fromkeys(TOUCHPOINTS, importances)),
    lam=lambdas,
    replaced=st.data(),
    value=health_values,
)
def test_a_variant_scores_exactly_as_the_whole_mapping(
    values: dict[str, float],
    weights: dict[str, float],
    lam: float,
    replaced: st.DataObject,
    value: float,
) -> None:
    touchpoint = replaced.draw(st.sampled_from(sorted(values)))
    trial = dict(values)
    trial[touchpoint] = value
    # Equal as floats, not approximately: the same sums in the same order.
    assert _Variants(values, weights, lam).replacing(touchpoint, value) == score_of(
        trial, weights, lam
    )


@settings(max_examples=300, deadline=None)
@given(
    outcomes=outcome_lists(min_size=1, max_size=60),
    lam=st.floats(min_value=0.0, max_value=1.0, allow_nan=False),
    at=times,
    later=st.integers(min_value=0, max_value=400 * 86_400),
)
def test_explain_equals_its_definition(
    outcomes: list[Outcome], lam: float, at: datetime, later: int
) -> None:
    cat = catalogue(weakest_link_lambda=lam)
    applied = apply_outcomes({}, {}, outcomes, half_life_days=cat.policy.half_life_days)
    read_at = max(at, *(o.occurred_at for o in outcomes)) + timedelta(seconds=later)
    expected = reference_explain(applied.health, applied.current.values(), cat, read_at)
    # Scoring passes the journey it assessed at the same time (its values are not read
    # twice); the api and the back-test's gaps do not: both give the definition's answer.
    journey = assess(applied.health, cat, read_at)
    for assessed in (None, journey):
        got = [
            (e.outcome.outcome_key, e.impact)
            for e in explain(
                applied.health, applied.current.values(), cat, read_at, assessed=assessed
            )
        ]
        assert got == expected
    # A breach kept can only raise health: every impact is a cost.
    assert all(impact < 0 and math.isfinite(impact) for _, impact in got)


@settings(max_examples=40, deadline=None)
@given(
    outcomes=outcome_lists(min_size=EXPLAIN_WINDOW + 1, max_size=EXPLAIN_WINDOW + 80),
    at=times,
)
def test_explain_beyond_its_window_equals_its_definition(
    outcomes: list[Outcome], at: datetime
) -> None:
    """More standing outcomes than the window holds: only the newest count, whatever order
    they are passed in (under the window, the order is not even looked at)."""
    cat = catalogue(weakest_link_lambda=0.3)
    applied = apply_outcomes({}, {}, outcomes, half_life_days=cat.policy.half_life_days)
    read_at = max(at, *(o.occurred_at for o in outcomes))
    standing = list(applied.current.values())
    expected = reference_explain(applied.health, standing, cat, read_at)
    for order in (standing, standing[::-1]):
        got = explain(
            applied.health, order, cat, read_at, assessed=assess(applied.health, cat, read_at)
        )
        assert [(e.outcome.outcome_key, e.impact) for e in got] == expected

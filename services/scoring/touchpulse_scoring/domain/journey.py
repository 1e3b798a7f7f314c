"""Journey health: one 0-100 score per customer that stresses the weakest link.

``100 * ((1 - λ) · Σ aₜ Hₜ / Σ aₜ + λ · minₜ Hₜ)`` over the touchpoints with data.

- No touchpoint with data: no score (``None``), never 100: silence is not satisfaction.
- Touchpoints missing from the catalogue (removed by a reload) are left out: nothing can
  judge them any more, and their importance is unknown.
- Importance 0 keeps a touchpoint out of the weighted mean but not out of the minimum: it
  cannot raise the score, yet it can still be the weakest link. When every touchpoint with
  data has importance 0, the mean falls back to the plain mean so λ keeps its meaning.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from touchpulse_scoring.domain.catalogue import Catalogue
from touchpulse_scoring.domain.health import TouchpointHealth, evidence, health_at
from touchpulse_scoring.domain.policy import Band


@dataclass(frozen=True, slots=True)
class Journey:
    """A customer's journey health, its band and its weakest touchpoint."""

    score: float | None
    band: Band | None
    weakest_touchpoint: str | None
    #: H per touchpoint that counted (with the prior).
    touchpoints: Mapping[str, float]
    #: The decayed outcome weight behind the score, summed over the touchpoints that counted.
    evidence: float = 0.0


def journey_health(
    health: Mapping[str, float | None],
    importance: Mapping[str, float],
    weakest_link_lambda: float,
) -> float | None:
    """The 0-100 score from per-touchpoint H (``None`` = no data) and importances."""
    return score_of(_with_data(health, importance), importance, weakest_link_lambda)


def score_of(
    values: Mapping[str, float], importance: Mapping[str, float], weakest_link_lambda: float
) -> float | None:
    """:func:`journey_health` of H already clamped and limited to touchpoints with data and
    importance (what :func:`counted` returns): callers that score many variants of one
    customer's touchpoints (the explanation) filter once."""
    if not values:
        return None
    largest = max(importance[t] for t in values)
    if largest > 0:
        # Relative to the largest, so that tiny importances cannot underflow the products.
        relative = {t: importance[t] / largest for t in values}
        mean = sum(relative[t] * h for t, h in values.items()) / sum(relative.values())
    else:
        mean = sum(values.values()) / len(values)
    lam = min(max(weakest_link_lambda, 0.0), 1.0)
    score = 100.0 * ((1.0 - lam) * mean + lam * min(values.values()))
    return min(max(score, 0.0), 100.0)


def weakest_touchpoint(
    health: Mapping[str, float | None], importance: Mapping[str, float]
) -> str | None:
    """The touchpoint with the lowest H; ties go to the more important, then by name."""
    return _weakest(_with_data(health, importance), importance)


def _weakest(values: Mapping[str, float], importance: Mapping[str, float]) -> str | None:
    if not values:
        return None
    return min(values, key=lambda t: (values[t], -importance[t], t))


def touchpoint_values(
    states: Mapping[str, TouchpointHealth], catalogue: Catalogue, at: datetime
) -> dict[str, float | None]:
    """H per touchpoint with the policy's prior, read at ``at`` (the newest event time)."""
    policy = catalogue.policy
    return {
        t: health_at(state, at, catalogue.prior(t), half_life_days=policy.half_life_days)
        for t, state in states.items()
    }


def assess(states: Mapping[str, TouchpointHealth], catalogue: Catalogue, at: datetime) -> Journey:
    """Journey health, band, weakest touchpoint and evidence under the catalogue's policy,
    read at ``at``: the customer's newest event time applied, so the same events give the
    same journey whatever order and batches they came in."""
    # Once per customer per batch (and per event in a back-test): touchpoint_values and
    # _with_data folded into one pass in name order, the same values in the same order.
    policy = catalogue.policy
    half_life = policy.half_life_days
    importance = catalogue.touchpoints
    counted: dict[str, float] = {}
    for t in sorted(states):
        if t not in importance:
            continue
        h = health_at(states[t], at, catalogue.prior(t), half_life_days=half_life)
        if h is not None and not math.isnan(h):
            counted[t] = min(max(h, 0.0), 1.0)
    score = score_of(counted, importance, policy.weakest_link_lambda)
    return Journey(
        score=score,
        band=None if score is None else policy.bands.of(score),
        weakest_touchpoint=_weakest(counted, importance),
        touchpoints=counted,
        # counted is in name order already.
        evidence=sum(evidence(states[t], at, half_life_days=half_life) for t in counted),
    )


def counted(
    health: Mapping[str, float | None], importance: Mapping[str, float]
) -> dict[str, float]:
    """H clamped to [0, 1], of the touchpoints with data and a known importance."""
    return _with_data(health, importance)


def _with_data(
    health: Mapping[str, float | None], importance: Mapping[str, float]
) -> dict[str, float]:
    # In name order: the score's sums run over this dict, and a float sum depends on its
    # order in the last bit; the states come in load order (whatever the database returned,
    # new touchpoints appended), which must not show in the score, the trend or an answer.
    return {
        t: min(max(h, 0.0), 1.0)
        for t, h in sorted(health.items())
        if h is not None and not math.isnan(h) and t in importance
    }

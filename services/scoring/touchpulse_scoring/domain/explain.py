"""Why a customer's health is what it is: the breaches that cost it most, worst first.

One function serves the api's health explanation and the gaps an intervention carries, so a
case lists the same breaches, ranked the same way, as the health explanation at the moment
the case opened or grew — whatever batches the events came in.

The impact of a breach is the journey health it costs: the score now minus the score had
that promise been kept instead (marginal removal would say nothing once a touchpoint is at 0
through several breaches). Only the :data:`EXPLAIN_WINDOW` newest outcomes are looked at
(older ones have decayed anyway), and at most :data:`EXPLAIN_TOP` breaches are returned.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from touchpulse_scoring.domain.catalogue import Catalogue
from touchpulse_scoring.domain.health import TouchpointHealth, health_at, replace_outcome
from touchpulse_scoring.domain.journey import (
    counted,
    journey_health,
    score_of,
    touchpoint_values,
)
from touchpulse_scoring.domain.outcomes import Outcome

#: How many of a customer's newest outcomes an explanation looks at.
EXPLAIN_WINDOW = 200
#: How many breaches an explanation (and so one opening or attachment of a case) lists.
EXPLAIN_TOP = 20


@dataclass(frozen=True, slots=True)
class _Kept:
    """The promise kept instead: all health needs of it (score 1, same weight and time);
    a full outcome copy per breach re-scored was a tenth of the explanation's cost."""

    weight: float
    occurred_at: datetime
    score: float = 1.0


@dataclass(frozen=True, slots=True)
class Explained:
    """A breach and what it costs: journey-health points, negative (rounded to 1e-6)."""

    outcome: Outcome
    impact: float


def window(outcomes: Iterable[Outcome]) -> list[Outcome]:
    """The explanation's window: the newest :data:`EXPLAIN_WINDOW` outcomes, newest first."""
    ordered = sorted(outcomes, key=lambda o: (o.occurred_at, o.outcome_key), reverse=True)
    return ordered[:EXPLAIN_WINDOW]


def explain(
    states: Mapping[str, TouchpointHealth],
    outcomes: Iterable[Outcome],
    catalogue: Catalogue,
    at: datetime,
    *,
    limit: int = EXPLAIN_TOP,
) -> list[Explained]:
    """The breaches among ``outcomes`` (the customer's standing ones) that cost health now,
    worst first; ties go to the newer breach, then by key, so the ranking is total."""
    policy = catalogue.policy
    half_life = policy.half_life_days
    importance = catalogue.touchpoints
    # Filtered and clamped once; each breach below changes one touchpoint's value.
    raw = touchpoint_values(states, catalogue, at)
    values = counted(raw, importance)
    lam = policy.weakest_link_lambda
    score = score_of(values, importance, lam)
    if score is None:
        return []
    found: list[Explained] = []
    for outcome in window(outcomes):
        state = states.get(outcome.touchpoint)
        if state is None or outcome.met:
            continue
        kept = _Kept(outcome.weight, outcome.occurred_at)
        if_kept = replace_outcome(state, outcome, kept, half_life_days=half_life)
        prior = catalogue.prior(outcome.touchpoint)
        new = health_at(if_kept, at, prior, half_life_days=half_life)
        touchpoint = outcome.touchpoint
        if touchpoint in values:
            # The same as scoring {**raw, touchpoint: new} whole: the filtered values with
            # this one replaced in place (or dropped, with no data left).
            trial = dict(values)
            if new is None or math.isnan(new):
                del trial[touchpoint]
            else:
                trial[touchpoint] = min(max(new, 0.0), 1.0)
            other = score_of(trial, importance, lam)
        else:
            other = journey_health({**raw, touchpoint: new}, importance, lam)
        # Rounded so that float noise between equal breaches cannot reorder them.
        impact = round(score - (other if other is not None else score), 6)
        if impact != 0:
            found.append(Explained(outcome, impact))
    found.sort(key=lambda e: (e.impact, -e.outcome.occurred_at.timestamp(), e.outcome.outcome_key))
    return found[:limit]

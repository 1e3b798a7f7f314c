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
    Journey,
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
    assessed: Journey | None = None,
) -> list[Explained]:
    """The breaches among ``outcomes`` (the customer's standing ones) that cost health now,
    worst first; ties go to the newer breach, then by key, so the ranking is total.

    ``assessed``: ``assess(states, catalogue, at)`` when the caller has it already (scoring
    does, for every step it decides): its touchpoint values are the ones read here."""
    policy = catalogue.policy
    half_life = policy.half_life_days
    importance = catalogue.touchpoints
    # Filtered and clamped once; each breach below changes one touchpoint's value.
    values: Mapping[str, float] = (
        counted(touchpoint_values(states, catalogue, at), importance)
        if assessed is None
        else assessed.touchpoints
    )
    lam = policy.weakest_link_lambda
    score = score_of(values, importance, lam)
    if score is None:
        return []
    found: list[Explained] = []
    variants = _Variants(values, importance, lam)
    standing = outcomes if isinstance(outcomes, list | tuple) else list(outcomes)
    # The ranking below is total, so the window's own order matters only where it cuts.
    for outcome in standing if len(standing) <= EXPLAIN_WINDOW else window(standing):
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
            if new is None or math.isnan(new):
                trial = dict(values)
                del trial[touchpoint]
                other = score_of(trial, importance, lam)
            else:
                other = variants.replacing(touchpoint, min(max(new, 0.0), 1.0))
        elif new is None or math.isnan(new) or touchpoint not in importance:
            other = score  # it counts neither now nor kept
        else:
            # A touchpoint without data now that would have some: in name order, as
            # journey_health would sum it.
            other = journey_health({**values, touchpoint: new}, importance, lam)
        # Rounded so that float noise between equal breaches cannot reorder them.
        impact = round(score - (other if other is not None else score), 6)
        if impact != 0:
            found.append(Explained(outcome, impact))
    found.sort(key=lambda e: (e.impact, -e.outcome.occurred_at.timestamp(), e.outcome.outcome_key))
    return found[:limit]


class _Variants:
    """:func:`~.journey.score_of` of ``values`` with one touchpoint's value replaced, to the
    bit: the same sums in the same order, with what does not depend on the replaced value
    computed once. An explanation scores one such variant per breach in its window (up to
    200), and scoring each whole was most of the explanation's cost."""

    __slots__ = (
        "_importance",
        "_index",
        "_lam",
        "_min_after",
        "_min_before",
        "_prefix",
        "_rel",
        "_total",
        "_values",
        "_vs",
    )

    def __init__(
        self, values: Mapping[str, float], importance: Mapping[str, float], lam: float
    ) -> None:
        self._index = {t: i for i, t in enumerate(values)}
        self._vs = list(values.values())
        self._lam = min(max(lam, 0.0), 1.0)
        largest = max((importance[t] for t in values), default=0.0)
        # None: every importance is 0 (the plain mean), left to score_of itself.
        self._rel: list[float] | None = None
        if largest > 0:
            rel = [importance[t] / largest for t in values]
            self._rel = rel
            self._total = sum(rel)
            # score_of sums left to right from 0: the prefix before each index is shared.
            prefix = [0.0]
            acc: float = 0
            for r, v in zip(rel, self._vs, strict=True):
                acc += r * v
                prefix.append(acc)
            self._prefix = prefix
        inf = math.inf
        self._min_before = [inf]
        for v in self._vs:
            self._min_before.append(min(self._min_before[-1], v))
        self._min_after = [inf]
        for v in reversed(self._vs):
            self._min_after.append(min(self._min_after[-1], v))
        self._min_after.reverse()
        self._values = values
        self._importance = importance

    def replacing(self, touchpoint: str, value: float) -> float | None:
        """``score_of({**values, touchpoint: value})`` for a ``touchpoint`` in ``values``."""
        rel = self._rel
        if rel is None:
            trial = dict(self._values)
            trial[touchpoint] = value
            return score_of(trial, self._importance, self._lam)
        i = self._index[touchpoint]
        vs = self._vs
        acc = self._prefix[i] + rel[i] * value
        for j in range(i + 1, len(vs)):
            acc += rel[j] * vs[j]
        mean = acc / self._total
        lowest = min(self._min_before[i], value, self._min_after[i + 1])
        lam = self._lam
        score = 100.0 * ((1.0 - lam) * mean + lam * lowest)
        return min(max(score, 0.0), 100.0)

"""Touchpoint health: a recency-weighted mean of outcome scores, updated in O(1).

``H = Σ wᵢ sᵢ dᵢ / Σ wᵢ dᵢ`` with ``dᵢ = 2^(-(T - tᵢ)/h)``. The factor ``2^(-T/h)`` is common
to every term and cancels in the ratio, so H does not depend on the time T it is read at and
the state stores sums relative to a reference time ``t_ref`` instead::

    S = Σ wᵢ sᵢ 2^((tᵢ - t_ref)/h)        W = Σ wᵢ 2^((tᵢ - t_ref)/h)        H = S / W

Adding and removing an outcome are O(1), and a multiset of outcomes gives the same H (to
float rounding) whatever order it arrives in. ``outcomes`` counts the terms so that removing
the last one resets the sums to exact zeros rather than to rounding residue.

Evidence and the prior. ``value`` is the raw ratio, which reads one breach on an otherwise
silent touchpoint as 0. What scoring and the api report is :func:`health_at`: the outcomes
plus a neutral pseudo-outcome (``prior.score`` with weight ``prior.weight``) that does not
decay, read at a time ``at`` (the customer's newest event time)::

    E = W · 2^((t_ref - at)/h)             the evidence: the decayed outcome weight at ``at``
    H = (S · 2^((t_ref - at)/h) + p_w p_s) / (E + p_w)

Thin evidence sits near the prior and moves toward the outcomes' own mean as evidence grows;
old evidence decays back toward the prior. Still O(1), and still a function of the set of
outcomes and ``at`` alone (``at`` is the newest event time applied, itself a set function),
so order independence holds; with no outcomes there is no health (``None``), as before.

Float bounds: an outcome more than :data:`REBASE_ABOVE` half-lives newer than ``t_ref`` first
moves ``t_ref`` to its own time (scaling S and W down), so no factor exceeds ``2^64`` and, with
weights at most 1000 * the new-customer multiplier (≤ 100), W stays below ``2^64 * 10^5 * n``,
nowhere near the float maximum (~``2^1024``). Outcomes older than ``t_ref`` get factors below
1; past about 1074 half-lives (88 years at 30 days) they underflow to 0 and stop counting,
which their weight relative to newer outcomes (< ``2^-1000``) already meant in practice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

#: Rebase once a new outcome is this many half-lives ahead of ``t_ref``: factors stay ≤ 2^64,
#: so sums keep ~1e-19 relative precision for the smallest terms that still matter.
REBASE_ABOVE = 64.0
#: A factor of 2^1000 is still a finite float; beyond it ``2.0 ** x`` would overflow.
_MAX_EXPONENT = 1000.0
_DAY = 86_400.0


class Scored(Protocol):
    """What health needs of an outcome (an :class:`~.outcomes.Outcome`, or a stored row)."""

    @property
    def score(self) -> float: ...

    @property
    def weight(self) -> float: ...

    @property
    def occurred_at(self) -> datetime: ...


@dataclass(frozen=True, slots=True)
class TouchpointHealth:
    """``(S, W, t_ref)`` plus the number of outcomes in the sums."""

    s: float = 0.0
    w: float = 0.0
    t_ref: datetime | None = None
    outcomes: int = 0

    @property
    def value(self) -> float | None:
        """H in [0, 1], or ``None`` when no outcome carries weight."""
        if self.outcomes <= 0 or not self.w > 0.0:
            return None
        ratio = self.s / self.w
        return min(max(ratio, 0.0), 1.0)


EMPTY = TouchpointHealth()


@dataclass(frozen=True, slots=True)
class Prior:
    """The neutral pseudo-outcome every touchpoint's health starts from (see the module doc)."""

    score: float
    weight: float


#: No prior: :func:`health_at` reads the raw ratio.
NO_PRIOR = Prior(score=1.0, weight=0.0)


def evidence(state: TouchpointHealth, at: datetime, *, half_life_days: float) -> float:
    """The decayed outcome weight as of ``at``: how much the touchpoint's health rests on."""
    if state.t_ref is None or state.outcomes <= 0 or not state.w > 0.0:
        return 0.0
    return state.w * _decay(state.t_ref, at, half_life_days)


def health_at(
    state: TouchpointHealth, at: datetime, prior: Prior, *, half_life_days: float
) -> float | None:
    """H in [0, 1] with the prior, read at ``at``; ``None`` when no outcome counts."""
    # The innermost call of every health read and explanation (several per event): the
    # checks of ``value`` and the decay of ``_decay`` written out, the same arithmetic.
    t_ref, w = state.t_ref, state.w
    if state.outcomes <= 0 or not w > 0.0 or t_ref is None:
        return None
    weight = prior.weight
    if weight <= 0.0:
        return _clamp01(state.s / w)
    # _MAX_EXPONENT is larger than REBASE_ABOVE: one cap is both of _decay's.
    exponent = min((t_ref - at).total_seconds() / (half_life_days * _DAY), REBASE_ABOVE)
    factor: float = 2.0**exponent
    return _clamp01((state.s * factor + weight * prior.score) / (w * factor + weight))


def _clamp01(ratio: float) -> float:
    """``min(max(ratio, 0.0), 1.0)`` exactly (NaN and -0.0 included), without two calls."""
    if ratio < 0.0:
        return 0.0
    return 1.0 if ratio > 1.0 else ratio


def _decay(t_ref: datetime, at: datetime, half_life_days: float) -> float:
    # ``at`` is never before the outcomes in practice; the cap keeps a stray one finite.
    factor: float = 2.0 ** min(_exponent(t_ref, at, half_life_days), REBASE_ABOVE)
    return factor


def add_outcome(
    state: TouchpointHealth, outcome: Scored, *, half_life_days: float
) -> TouchpointHealth:
    """Fold one outcome into the sums."""
    if state.t_ref is None or state.outcomes <= 0:
        return TouchpointHealth(
            s=outcome.weight * outcome.score,
            w=outcome.weight,
            t_ref=outcome.occurred_at,
            outcomes=1,
        )
    exponent = _exponent(outcome.occurred_at, state.t_ref, half_life_days)
    if exponent > REBASE_ABOVE:
        state = rebase(state, outcome.occurred_at, half_life_days=half_life_days)
        exponent = 0.0
    factor = 2.0**exponent
    return TouchpointHealth(
        s=state.s + outcome.weight * outcome.score * factor,
        w=state.w + outcome.weight * factor,
        t_ref=state.t_ref,
        outcomes=state.outcomes + 1,
    )


def remove_outcome(
    state: TouchpointHealth, outcome: Scored, *, half_life_days: float
) -> TouchpointHealth:
    """Take back an outcome that was added before (to supersede or erase it)."""
    if state.t_ref is None or state.outcomes <= 1:
        return EMPTY
    factor = 2.0 ** _exponent(outcome.occurred_at, state.t_ref, half_life_days)
    # Rounding may leave a hair below zero; the clamp keeps the sums meaningful.
    w = max(state.w - outcome.weight * factor, 0.0)
    s = min(max(state.s - outcome.weight * outcome.score * factor, 0.0), w)
    return TouchpointHealth(s=s, w=w, t_ref=state.t_ref, outcomes=state.outcomes - 1)


def replace_outcome(
    state: TouchpointHealth, old: Scored, new: Scored, *, half_life_days: float
) -> TouchpointHealth:
    """Supersede ``old`` by ``new``: the same as if only ``new`` had ever been added.

    Exact up to rounding relative to ``old``'s term. Supersessions here never replace an
    outcome by a much older one (a late delivery comes after the due time its breach is dated
    at), so that rounding is small next to what remains; the property tests hold it to 1e-9.
    """
    removed = remove_outcome(state, old, half_life_days=half_life_days)
    return add_outcome(removed, new, half_life_days=half_life_days)


def rebase(state: TouchpointHealth, t_ref: datetime, *, half_life_days: float) -> TouchpointHealth:
    """The same health with sums relative to ``t_ref``; H changes only by float rounding.

    Moving ``t_ref`` back by more than 1000 half-lives would overflow and is refused.
    """
    if state.t_ref is None:
        return state
    exponent = _exponent(state.t_ref, t_ref, half_life_days)
    if exponent > _MAX_EXPONENT:
        raise ValueError(f"cannot rebase {exponent:.0f} half-lives back: the sums would overflow")
    factor = 2.0**exponent
    return TouchpointHealth(
        s=state.s * factor, w=state.w * factor, t_ref=t_ref, outcomes=state.outcomes
    )


def _exponent(at: datetime, t_ref: datetime, half_life_days: float) -> float:
    # Capped so that a removal of something never added cannot raise OverflowError.
    exponent = (at - t_ref).total_seconds() / (half_life_days * _DAY)
    return min(exponent, _MAX_EXPONENT)

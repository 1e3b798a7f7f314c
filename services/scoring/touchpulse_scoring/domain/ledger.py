"""Apply outcomes to a customer's state once each, with supersession, in any order.

The consumer dedupes events on ``(source, event_id)`` before it gets here; this is the second
line: an outcome whose key already stands is either a duplicate (ignored) or a better
outcome for the same thing (it supersedes, see :func:`supersedes`). Either way the result
depends only on the set of outcomes, never on the order they arrive in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from touchpulse_scoring.domain.health import (
    EMPTY,
    TouchpointHealth,
    add_outcome,
    remove_outcome,
)
from touchpulse_scoring.domain.outcomes import Outcome, OutcomeKey


def supersedes(new: Outcome, old: Outcome) -> bool:
    """Whether ``new`` replaces ``old`` under the same key, whichever came first.

    For a deadline, the outcome judged from the earlier opening stands (an order placed
    earlier started the clock earlier); then an arrived event beats a breach by absence (a
    late delivery replaces "never came"); of two arrived events the earlier one stands (it
    is when the promise was kept); anything else is a retry or replay, and the standing
    outcome stays. The deadline domain judges (earliest opening, earliest fulfilment) once
    both are known, and that outcome ranks first, so the standing outcome depends only on
    the set of events.
    """
    return _rank(new) < _rank(old)


#: Deadline outcomes stored before openings were recorded rank after any re-judgement.
_UNKNOWN_OPENING = datetime.max.replace(tzinfo=UTC)


def _rank(outcome: Outcome) -> tuple[datetime, bool, datetime, tuple[str, ...]]:
    # An expiry is dated at due_at, not when it was noticed, so two sweeps rank equal.
    opened = _UNKNOWN_OPENING if outcome.opened_at is None else outcome.opened_at
    return (opened, outcome.actual is None, outcome.occurred_at, outcome.event_ids)


@dataclass(frozen=True, slots=True)
class Applied:
    """The state after a batch and what happened to each outcome."""

    #: Every touchpoint given, plus any the batch touched.
    health: Mapping[str, TouchpointHealth]
    #: The standing outcome per key: those given, plus the batch's new ones.
    current: Mapping[OutcomeKey, Outcome]
    #: Outcomes that changed the state (new keys and supersessions), in input order.
    recorded: tuple[Outcome, ...]
    #: Outcomes that lost their place to one in ``recorded``.
    superseded: tuple[Outcome, ...]
    #: Duplicates, and outcomes that lose to the one standing under their key.
    ignored: tuple[Outcome, ...]


def apply_outcomes(
    health: Mapping[str, TouchpointHealth],
    current: Mapping[OutcomeKey, Outcome],
    outcomes: Iterable[Outcome],
    *,
    half_life_days: float,
) -> Applied:
    """Fold outcomes into per-touchpoint health, each key at most once.

    ``current`` must hold the standing outcome for every key in ``outcomes`` that has one
    (the consumer loads them by key); keys it lacks are taken to be new.
    """
    states = dict(health)
    standing = dict(current)
    recorded: list[Outcome] = []
    superseded: list[Outcome] = []
    ignored: list[Outcome] = []
    for outcome in outcomes:
        old = standing.get(outcome.outcome_key)
        if old is not None:
            if not supersedes(outcome, old):
                ignored.append(outcome)
                continue
            states[old.touchpoint] = remove_outcome(
                states.get(old.touchpoint, EMPTY), old, half_life_days=half_life_days
            )
            superseded.append(old)
        states[outcome.touchpoint] = add_outcome(
            states.get(outcome.touchpoint, EMPTY), outcome, half_life_days=half_life_days
        )
        standing[outcome.outcome_key] = outcome
        recorded.append(outcome)
    return Applied(
        health=states,
        current=standing,
        recorded=tuple(recorded),
        superseded=tuple(superseded),
        ignored=tuple(ignored),
    )

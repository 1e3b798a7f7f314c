"""Outcomes: one event (or one missed deadline) judged against one promise.

The score of a numeric promise is 1 when kept and falls linearly to 0 at target ± tolerance;
a boolean promise scores 1 or 0. ``gap`` is how far past the target the actual value lies,
in the promise's unit (0 when kept, 1.0 for a broken boolean promise).
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from datetime import datetime

from touchpulse_scoring.domain.catalogue import Catalogue, check_event
from touchpulse_scoring.domain.errors import UnscorableEvent, UnscorableReason
from touchpulse_scoring.domain.profile import CustomerProfile, is_new
from touchpulse_scoring.domain.promises import (
    Expected,
    MeasurePromise,
    MeasureRule,
    Op,
    Severity,
)
from touchpulse_shared.contract.events import ExperienceEventV1

#: Identifies an outcome within one customer; a later outcome with the same key supersedes
#: the earlier one (see :mod:`.ledger`). Text, so that it stores and indexes as one column.
OutcomeKey = str


def event_outcome_key(promise_id: str, source: str, event_id: str) -> OutcomeKey:
    """The key of a measure outcome: one per promise and event."""
    # JSON keeps (a/b, c) and (a, b/c) apart, which a joined string would not. Names that
    # JSON writes as they are (printable ASCII without quote or backslash: nearly all) are
    # joined directly, the same text json.dumps gives, without its encoder (an eighth of
    # judging an event); anything else goes through json.dumps, so stored keys never change.
    # (Each test is per character, so the three names are tested as one string.)
    names = promise_id + source + event_id
    if names.isascii() and names.isprintable() and '"' not in names and "\\" not in names:
        return f'["event","{promise_id}","{source}","{event_id}"]'
    return json.dumps(["event", promise_id, source, event_id], separators=(",", ":"))


def deadline_outcome_key(promise_id: str, journey_key: str) -> OutcomeKey:
    """The key of a deadline outcome: one per promise and journey, whatever ends it."""
    return json.dumps(["deadline", promise_id, journey_key], separators=(",", ":"))


def event_ref(event: ExperienceEventV1) -> str:
    """How an outcome names an event behind it: ``source/event_id``, for people to read."""
    return f"{event.source}/{event.event_id}"


@dataclass(frozen=True, slots=True)
class Judgement:
    """The pure arithmetic of one comparison."""

    gap: float
    met: bool
    score: float


@dataclass(frozen=True, slots=True)
class Outcome:
    """One judged promise for one customer; immutable and self-explaining."""

    outcome_key: OutcomeKey
    customer_id: str
    promise_id: str
    catalogue_version: str
    touchpoint: str
    #: The event time (or the due time of a missed deadline): what recency decay uses.
    occurred_at: datetime
    expected: Expected
    #: ``None`` when the awaited event never arrived (a breach by absence).
    actual: float | bool | None
    gap: float
    met: bool
    score: float
    #: Promise weight, times the new-customer multiplier when broken for a new customer.
    weight: float
    #: ``critical`` only for a critical breach; a kept promise is always ``normal``.
    severity: Severity
    #: ``source/event_id`` of every event behind the outcome.
    event_ids: tuple[str, ...]
    #: For a deadline outcome, when the clock it was judged on started (see :mod:`.ledger`).
    opened_at: datetime | None = None

    def __post_init__(self) -> None:
        if not (0.0 <= self.score <= 1.0) or not (self.gap >= 0.0) or not (self.weight >= 0.0):
            raise ValueError(
                f"outcome {self.outcome_key}: score {self.score} must be in [0, 1],"
                f" gap {self.gap} and weight {self.weight} >= 0"
            )

    @property
    def broken(self) -> bool:
        return not self.met


#: (gap, met, score): a judgement before it is wrapped, for the per-event loop.
_Judged = tuple[float, bool, float]
_KEPT: _Judged = (0.0, True, 1.0)
_BROKEN_BOOLEAN: _Judged = (1.0, False, 0.0)


def judge(op: Op, target: float, tolerance: float, actual: float) -> Judgement:
    """Compare a number with a numeric promise; tolerance must be > 0."""
    gap, met, score = _judge_number(op, target, tolerance, actual)
    return Judgement(gap=gap, met=met, score=score)


def _judge_number(op: Op, target: float, tolerance: float, actual: float) -> _Judged:
    if op == "<=":
        gap = actual - target
    elif op == ">=":
        gap = target - actual
    else:
        gap = abs(actual - target)
    if not gap > 0:  # kept (also catches -0.0)
        return _KEPT
    # Two extreme finite floats can differ by more than the largest float.
    gap = min(gap, sys.float_info.max)
    return (gap, False, clamp01(1.0 - gap / tolerance))


def judge_boolean(target: bool, actual: bool) -> Judgement:
    if actual == target:
        return Judgement(gap=0.0, met=True, score=1.0)
    return Judgement(gap=1.0, met=False, score=0.0)


def clamp01(value: float) -> float:
    """Clamp into [0, 1]; NaN (which no caller should produce) counts as 0."""
    if not value > 0.0:
        return 0.0
    return min(value, 1.0)


def evaluate(
    event: ExperienceEventV1,
    catalogue: Catalogue,
    profile: CustomerProfile,
    *,
    checked: bool = False,
) -> list[Outcome]:
    """Judge an event against the measure promises for its touchpoint and type.

    A promise whose measure the event does not carry yields nothing (sources report what they
    measured). A measure of the wrong kind, a boolean where a number is promised or the
    reverse, raises :class:`UnscorableEvent`: the source and the catalogue disagree, and a
    person has to decide which is wrong. Deadline promises are handled in :mod:`.deadlines`.
    ``checked``: the caller has run :func:`check_event` on this event and catalogue.
    """
    if not checked:
        check_event(event, catalogue)
    rules = catalogue.measure_rules(event.touchpoint, event.type, profile.segment)
    if not rules:
        return []
    measures = event.measures
    # The per-event loop of every judgement (scoring, replay, back-test, preview): what
    # does not depend on the promise is computed once per event, what does not depend on
    # the event once per catalogue (the rules).
    source, event_id, at = event.source, event.event_id, event.occurred_at
    names = source + event_id
    plain_key = names.isascii() and names.isprintable() and '"' not in names and "\\" not in names
    key_tail = f'{source}","{event_id}"]'
    refs = (f"{source}/{event_id}",)
    multiplier = (
        catalogue.policy.new_customer_breach_weight
        if is_new(profile, at, catalogue.policy)
        else 1.0
    )
    customer, version = event.customer_id, catalogue.version
    outcomes: list[Outcome] = []
    for rule in rules:
        promise = rule.promise
        actual = measures.get(promise.measure)
        if actual is None:
            continue
        gap, met, score = _judge_rule(rule, actual)
        outcomes.append(
            Outcome(
                outcome_key=rule.key_prefix + key_tail
                if plain_key
                else event_outcome_key(promise.id, source, event_id),
                customer_id=customer,
                promise_id=promise.id,
                catalogue_version=version,
                touchpoint=promise.touchpoint,
                occurred_at=at,
                expected=rule.expected,
                actual=actual,
                gap=gap,
                met=met,
                score=score,
                weight=promise.weight if met else promise.weight * multiplier,
                severity="normal" if met else _breach_severity(promise, actual),
                event_ids=refs,
            )
        )
    return outcomes


def _judge_rule(rule: MeasureRule, actual: float | bool) -> _Judged:
    terms = rule.terms
    target = terms.target
    if isinstance(target, bool):
        if not isinstance(actual, bool):
            raise _wrong_kind(rule.promise, "a boolean", actual)
        return _KEPT if actual == target else _BROKEN_BOOLEAN
    if isinstance(actual, bool) or not math.isfinite(actual):
        raise _wrong_kind(rule.promise, "a finite number", actual)
    # The catalogue guarantees a tolerance > 0 for numeric promises.
    assert terms.tolerance is not None  # noqa: S101 - an invariant, not input checking
    return _judge_number(terms.op, target, terms.tolerance, actual)


def _wrong_kind(promise: MeasurePromise, wanted: str, actual: float | bool) -> UnscorableEvent:
    return UnscorableEvent(
        UnscorableReason.WRONG_MEASURE_KIND,
        f"measure {promise.measure!r} is {json.dumps(actual)} but promise {promise.id!r}"
        f" expects {wanted}",
    )


def _breach_severity(promise: MeasurePromise, actual: float | bool) -> Severity:
    if promise.severity == "normal":
        return "normal"
    if promise.critical_at is None or isinstance(actual, bool):
        return "critical"
    critical = (
        actual >= promise.critical_at
        if promise.expect.op == "<="
        else (actual <= promise.critical_at)
    )
    return "critical" if critical else "normal"

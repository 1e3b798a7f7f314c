"""Deadline promises: breach by absence, and the real gap once the late event comes.

Life of a deadline (one per customer, promise and journey)::

    open --fulfil (on time or late)--> fulfilled
    open --expire (now > due_at)-----> expired --fulfil (late)--> fulfilled

Outcomes are judged in hours since the opening event: expected ``<= allowed hours``, actual
the hours it took, gap the hours late. Expiry records a breach with ``actual=None`` and score
0 at ``due_at``; a late fulfilment records an outcome with the *same* outcome key, which
supersedes that breach with the real gap and its linear score (see :mod:`.ledger`).

**Order independence.** A deadline's outcome is a function of the *set* of its events: it
is judged from the earliest opening and the earliest fulfilment, whatever order they came in:

- a fulfilling event with no deadline yet is remembered (:class:`EarlyFulfilment`, per
  customer, promise and journey) and settles the clock the moment the opening arrives, with
  the real gap (:func:`open_with`);
- an earlier opening arriving after a later one replaces it and re-judges the journey with
  the fulfilment already seen; an earlier fulfilment re-judges a fulfilled deadline
  (:func:`fulfil_with`). Every re-judgement ranks before what it replaces in the ledger, so
  the standing outcome is the one the whole set gives.

Expiry alone depends on time (the sweep's ``now``): a breach by absence recorded while the
fulfilment was still on its way is superseded when it arrives, so the final outcome agrees.

A deadline carries the terms it was opened under (tolerance, weight, new-customer multiplier,
severity, catalogue version), so a catalogue reload never changes a clock already running.

An opening event without ``journey_id`` gets the opening event's ``event_id`` as journey
key, so only an event whose ``journey_id`` is that id can fulfil it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from touchpulse_scoring.domain.catalogue import Catalogue, check_event
from touchpulse_scoring.domain.errors import UnscorableEvent, UnscorableReason
from touchpulse_scoring.domain.outcomes import (
    Outcome,
    OutcomeKey,
    clamp01,
    deadline_outcome_key,
    event_ref,
)
from touchpulse_scoring.domain.profile import CustomerProfile, is_new
from touchpulse_scoring.domain.promises import DeadlinePromise, Expected, Severity
from touchpulse_shared.contract.events import ExperienceEventV1

DeadlineState = Literal["open", "expired", "fulfilled"]

_HOUR = 3600.0
# The shape RFC 3339 allows, and nothing of the wider ISO 8601 that fromisoformat accepts.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)


@dataclass(frozen=True, slots=True)
class DeadlineRef:
    """Which deadline an event could fulfil: unique per customer, promise and journey."""

    customer_id: str
    promise_id: str
    journey_key: str


@dataclass(frozen=True, slots=True, order=True)
class Fulfilment:
    """A fulfilling event: when it happened and which it was (ordered: earliest first)."""

    occurred_at: datetime
    event_ref: str

    @classmethod
    def of(cls, event: ExperienceEventV1) -> Fulfilment:
        return cls(event.occurred_at, event_ref(event))


@dataclass(frozen=True, slots=True)
class EarlyFulfilment:
    """A fulfilling event that came before any opening of its deadline."""

    ref: DeadlineRef
    fulfilment: Fulfilment


def earliest(*fulfilments: Fulfilment | None) -> Fulfilment | None:
    """The earliest of the fulfilments given (None when there is none)."""
    known = [f for f in fulfilments if f is not None]
    return min(known) if known else None


@dataclass(frozen=True, slots=True)
class Deadline:
    """A running (or ended) clock for one deadline promise, one customer and one journey."""

    customer_id: str
    promise_id: str
    journey_key: str
    touchpoint: str
    opened_at: datetime
    due_at: datetime
    opening_event_ids: tuple[str, ...]
    catalogue_version: str
    tolerance_hours: float
    weight: float
    #: The new-customer multiplier fixed when the clock started (1.0 when not new).
    breach_weight: float
    severity: Severity
    state: DeadlineState = "open"
    #: When it stopped being open: the expiry sweep's ``now``, or the fulfilling event's time.
    closed_at: datetime | None = None
    #: ``source/event_id`` of the fulfilling event (the earliest seen), once fulfilled.
    fulfilled_by: str | None = None

    @property
    def fulfilment(self) -> Fulfilment | None:
        if self.state != "fulfilled" or self.closed_at is None or self.fulfilled_by is None:
            return None
        return Fulfilment(self.closed_at, self.fulfilled_by)

    @property
    def ref(self) -> DeadlineRef:
        return DeadlineRef(self.customer_id, self.promise_id, self.journey_key)

    @property
    def outcome_key(self) -> OutcomeKey:
        return deadline_outcome_key(self.promise_id, self.journey_key)

    @property
    def allowed_hours(self) -> float:
        return (self.due_at - self.opened_at).total_seconds() / _HOUR

    def expected(self) -> Expected:
        return Expected(op="<=", target=self.allowed_hours, unit="hours")


def open_deadlines(
    event: ExperienceEventV1,
    catalogue: Catalogue,
    profile: CustomerProfile,
    *,
    checked: bool = False,
) -> list[Deadline]:
    """The deadlines an event starts; raises :class:`UnscorableEvent` for a bad ``due_at``.
    ``checked``: the caller has run :func:`check_event` on this event and catalogue."""
    if not checked:
        check_event(event, catalogue)
    promises = catalogue.deadlines_opened_by(event.type)
    if not promises:
        return []
    policy = catalogue.policy
    multiplier = (
        policy.new_customer_breach_weight if is_new(profile, event.occurred_at, policy) else 1.0
    )
    return [
        Deadline(
            customer_id=event.customer_id,
            promise_id=promise.id,
            journey_key=event.journey_id or event.event_id,
            touchpoint=promise.touchpoint,
            opened_at=event.occurred_at,
            due_at=_due_at(event, promise, profile.segment),
            opening_event_ids=(event_ref(event),),
            catalogue_version=catalogue.version,
            tolerance_hours=promise.terms_for(profile.segment).tolerance_hours,
            weight=promise.weight,
            breach_weight=multiplier,
            severity=promise.severity,
        )
        for promise in promises
    ]


def keep_earliest(existing: Deadline, candidate: Deadline) -> Deadline:
    """Which of two openings of the same deadline stands: the earlier one, whatever order
    they arrived in (an amended order does not restart the clock). The standing deadline
    keeps its state; :func:`open_with` re-judges it when the opening changes."""
    if existing.ref != candidate.ref:
        raise ValueError(f"{existing.ref} and {candidate.ref} are different deadlines")
    if _opening(candidate) < _opening(existing):
        return candidate
    return existing


def open_with(
    existing: Deadline | None, candidate: Deadline, early: Fulfilment | None = None
) -> tuple[Deadline, Outcome | None]:
    """Fold an opening into the deadline: the earliest opening stands, judged at once when a
    fulfilment is already known (``early``, or the one the standing deadline recorded).

    Returns the deadline to keep and the outcome to record, if the opening changed it.
    """
    if existing is None:
        return _settle(candidate, early)
    if existing.ref != candidate.ref:
        raise ValueError(f"{existing.ref} and {candidate.ref} are different deadlines")
    if not _opening(candidate) < _opening(existing):
        # The standing opening is earlier: only an earlier fulfilment changes anything.
        if early is None or (existing.fulfilment is not None and not early < existing.fulfilment):
            return existing, None
        return judge_fulfilment(existing, early)
    fulfilment = earliest(existing.fulfilment, early)
    if fulfilment is not None:
        return judge_fulfilment(candidate, fulfilment)
    if existing.state == "expired" and existing.closed_at is not None:
        # Noticed missing at closed_at: the earlier clock may have run out by then too.
        expired = expire_deadline(candidate, existing.closed_at)
        if expired is not None:
            return expired
    return candidate, None


def _settle(deadline: Deadline, early: Fulfilment | None) -> tuple[Deadline, Outcome | None]:
    if early is None:
        return deadline, None
    return judge_fulfilment(deadline, early)


def _opening(deadline: Deadline) -> tuple[datetime, tuple[str, ...]]:
    return (deadline.opened_at, deadline.opening_event_ids)


def fulfilment_refs(event: ExperienceEventV1, catalogue: Catalogue) -> list[DeadlineRef]:
    """The deadlines this event would fulfil.

    An event without ``journey_id`` fulfils nothing: it cannot say which journey it ends.
    """
    if event.journey_id is None:
        return []
    return [
        DeadlineRef(event.customer_id, promise.id, event.journey_id)
        for promise in catalogue.deadlines_fulfilled_by(event.type)
    ]


def fulfil_with(deadline: Deadline, fulfilment: Fulfilment) -> tuple[Deadline, Outcome] | None:
    """Fold a fulfilling event into a deadline: the earliest fulfilment stands.

    ``None`` when the deadline already records an earlier (or the same) fulfilment.
    """
    standing = deadline.fulfilment
    if standing is not None and not fulfilment < standing:
        return None
    return judge_fulfilment(deadline, fulfilment)


def fulfil_deadline(deadline: Deadline, event: ExperienceEventV1) -> tuple[Deadline, Outcome]:
    """End a deadline with the event that keeps it: on time, or late with the real gap."""
    if deadline.state == "fulfilled":
        raise ValueError(f"deadline {deadline.ref} is already fulfilled")
    if (event.customer_id, event.journey_id) != (deadline.customer_id, deadline.journey_key):
        raise ValueError(f"event {event_ref(event)} is not on deadline {deadline.ref}")
    return judge_fulfilment(deadline, Fulfilment.of(event))


def judge_fulfilment(deadline: Deadline, fulfilment: Fulfilment) -> tuple[Deadline, Outcome]:
    """The deadline fulfilled by ``fulfilment``, and its outcome: on time or the real gap."""
    at = fulfilment.occurred_at
    met = at <= deadline.due_at
    # Straight from the datetimes, so on-time is exact and lateness has no rounding drift.
    late_hours = 0.0 if met else (at - deadline.due_at).total_seconds() / _HOUR
    outcome = Outcome(
        outcome_key=deadline.outcome_key,
        customer_id=deadline.customer_id,
        promise_id=deadline.promise_id,
        catalogue_version=deadline.catalogue_version,
        touchpoint=deadline.touchpoint,
        occurred_at=at,
        expected=deadline.expected(),
        actual=(at - deadline.opened_at).total_seconds() / _HOUR,
        gap=late_hours,
        met=met,
        score=1.0 if met else clamp01(1.0 - late_hours / deadline.tolerance_hours),
        weight=deadline.weight * (1.0 if met else deadline.breach_weight),
        severity="normal" if met else deadline.severity,
        event_ids=(*deadline.opening_event_ids, fulfilment.event_ref),
        opened_at=deadline.opened_at,
    )
    ended = replace(deadline, state="fulfilled", closed_at=at, fulfilled_by=fulfilment.event_ref)
    return ended, outcome


def expire_deadline(deadline: Deadline, now: datetime) -> tuple[Deadline, Outcome] | None:
    """Record a breach by absence once ``now`` is past ``due_at``; ``None`` otherwise.

    Only an open deadline expires, so a second sweep over the same deadline is a no-op.
    The breach is dated ``due_at`` (when the promise broke, so replays decay it alike);
    its gap is the hours late as of ``now``, and the late fulfilment replaces it.
    """
    if now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    if deadline.state != "open" or now <= deadline.due_at:
        return None
    outcome = Outcome(
        outcome_key=deadline.outcome_key,
        customer_id=deadline.customer_id,
        promise_id=deadline.promise_id,
        catalogue_version=deadline.catalogue_version,
        touchpoint=deadline.touchpoint,
        occurred_at=deadline.due_at,
        expected=deadline.expected(),
        actual=None,
        gap=(now - deadline.due_at).total_seconds() / _HOUR,
        met=False,
        score=0.0,
        weight=deadline.weight * deadline.breach_weight,
        severity=deadline.severity,
        event_ids=deadline.opening_event_ids,
        opened_at=deadline.opened_at,
    )
    return replace(deadline, state="expired", closed_at=now), outcome


def _due_at(event: ExperienceEventV1, promise: DeadlinePromise, segment: str) -> datetime:
    within = promise.terms_for(segment).within_hours
    try:
        if within is not None:
            return event.occurred_at + timedelta(hours=within)
        due = _parse_due_at(event, promise)
    except OverflowError:
        raise _bad_due_at(promise, "the deadline falls outside the years 1 to 9999") from None
    if due < event.occurred_at:
        raise _bad_due_at(
            promise,
            f"due_at {due.isoformat()} is before the event that promised it"
            f" ({event.occurred_at.isoformat()})",
        )
    return due


def _parse_due_at(event: ExperienceEventV1, promise: DeadlinePromise) -> datetime:
    name = promise.deadline.due_at_attribute
    assert name is not None  # noqa: S101 - the catalogue guarantees one of the two
    value = event.attributes.get(name)
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise _bad_due_at(
            promise,
            # Never the value: a dead letter's detail must not keep what erasure cannot find.
            f"attribute {name!r} should be an RFC 3339 timestamp with a UTC offset",
        )
    try:
        return datetime.fromisoformat(value.upper()).astimezone(UTC)
    except ValueError:
        raise _bad_due_at(promise, f"attribute {name!r} is not a valid time") from None


def _bad_due_at(promise: DeadlinePromise, detail: str) -> UnscorableEvent:
    return UnscorableEvent(UnscorableReason.BAD_DUE_AT, f"promise {promise.id!r}: {detail}")

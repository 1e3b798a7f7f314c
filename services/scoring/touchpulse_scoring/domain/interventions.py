"""Interventions: the case a person works when a customer needs action.

States and the only legal moves (anything else raises :class:`IllegalTransition`)::

    open ──acknowledge──> acknowledged ──resolve (note required)──> resolved
      │                        │
      └────────expire──────────┴──────────> expired

``attach`` adds later triggers to an open or acknowledged intervention without changing its
state; ``record_follow_up`` fills the "health N days after resolve" slot once. Resolving
straight from ``open`` is illegal: someone must own a case before closing it.

The people's moves besides the state changes — ``add_note`` (open or acknowledged),
``snooze`` (open or acknowledged, until a time in the future), ``reassign`` (acknowledged) —
keep the state. Every move a person or an API key makes (acknowledge, note, snooze,
reassign, resolve) adds one to :attr:`Intervention.version`; scoring's moves (attach,
re-rank, expire, follow-up) never do. So a caller who read version N can ask for its move to
apply only to version N (:func:`check_version`) and learn that someone else moved the case
in between; and scoring, writing a copy it read earlier, can tell that a person moved the
case since and leave that person's fields alone.

Who moved a case is an :class:`Actor` (a person at the desk, an API key, or the system); the
move itself, as the history keeps it, is an :class:`Action`.

Every function takes ``now`` and returns a new value; none reads a clock.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from touchpulse_scoring.domain.errors import IllegalTransition, InvalidCommand, StaleVersion
from touchpulse_scoring.domain.outcomes import Outcome, OutcomeKey
from touchpulse_scoring.domain.policy import InterventionPolicy
from touchpulse_scoring.domain.promises import Expected, Severity

#: A fixed namespace, so that the same case opened again in a replay gets the same id.
_ID_NAMESPACE = uuid.UUID("5f0c6a3e-7d1b-4f57-9c2e-1a8e4b3d9c70")
#: An intervention accumulates gaps while it waits; the oldest go first past this bound.
MAX_GAPS = 100
MAX_NOTE_LENGTH = 4000
MAX_ASSIGNEE_LENGTH = 256
MAX_ACTOR_LENGTH = 256


class InterventionState(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    EXPIRED = "expired"


#: The states in which an intervention counts as the customer's one open intervention.
OPEN_STATES = frozenset({InterventionState.OPEN, InterventionState.ACKNOWLEDGED})

#: Every legal state change; the property tests hold the machine to exactly these.
LEGAL_MOVES: Mapping[InterventionState, frozenset[InterventionState]] = {
    InterventionState.OPEN: frozenset({InterventionState.ACKNOWLEDGED, InterventionState.EXPIRED}),
    InterventionState.ACKNOWLEDGED: frozenset(
        {InterventionState.RESOLVED, InterventionState.EXPIRED}
    ),
    InterventionState.RESOLVED: frozenset(),
    InterventionState.EXPIRED: frozenset(),
}


class ActorKind(StrEnum):
    #: A person signed in at the action desk.
    PERSON = "person"
    #: An integration calling the REST API with its key (named as such, never as a person).
    API_KEY = "api_key"
    #: Touchpulse itself: scoring opening, growing, expiring and following up cases.
    SYSTEM = "system"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made a move: ``id`` is stable (a user id, a key id), ``name`` is for display."""

    kind: ActorKind
    id: str
    name: str

    def __post_init__(self) -> None:
        # Users' and keys' ids and names are bounded where they are made (200 and 128
        # characters); an actor outside these bounds is a caller's bug, refused here
        # rather than as a constraint violation in the middle of a move's transaction.
        for value in (self.id, self.name):
            if not 1 <= len(value) <= MAX_ACTOR_LENGTH:
                raise ValueError(f"an actor's id and name are 1 to {MAX_ACTOR_LENGTH} characters")

    @classmethod
    def person(cls, user_id: str, display_name: str) -> Actor:
        return cls(ActorKind.PERSON, user_id, display_name)

    @classmethod
    def api_key(cls, key_id: str, key_name: str) -> Actor:
        return cls(ActorKind.API_KEY, key_id, key_name)


#: The actor of every move scoring makes.
SYSTEM_ACTOR = Actor(ActorKind.SYSTEM, "scoring", "Touchpulse")

#: What an action's detail may hold: short facts, never nested structures.
DetailValue = str | float | int | bool | None


@dataclass(frozen=True, slots=True)
class Action:
    """One entry of an intervention's history: what was done, by whom, when.

    ``kind`` is the move's event kind (``intervention.noted``, the same name its webhook and
    its ``interventions.v1`` record carry); ``version`` is the intervention's version after
    the move; ``detail`` holds the move's own facts (the note's text, the assignee before
    and after, the snooze's end, the resolution's category and health).
    """

    kind: str
    actor: Actor
    at: datetime
    version: int
    detail: Mapping[str, DetailValue]


class TriggerKind(StrEnum):
    LOW_HEALTH = "low_health"
    CRITICAL_BREACH = "critical_breach"
    REPEATED_BREACH = "repeated_breach"
    SPREAD_BREACH = "spread_breach"


@dataclass(frozen=True, slots=True)
class Trigger:
    """Why an intervention opened or grew; ``promise_id`` is None for low health."""

    kind: TriggerKind
    detail: str
    promise_id: str | None = None


@dataclass(frozen=True, slots=True)
class Gap:
    """A broken promise behind an intervention: expected versus actual, and what to do."""

    outcome_key: OutcomeKey
    promise_id: str
    touchpoint: str
    expected: Expected
    actual: float | bool | None
    gap: float
    score: float
    severity: Severity
    occurred_at: datetime
    event_ids: tuple[str, ...]
    #: The promise's recommended action (None if the promise left the catalogue).
    action: str | None

    @classmethod
    def of(cls, outcome: Outcome, action: str | None) -> Gap:
        return cls(
            outcome_key=outcome.outcome_key,
            promise_id=outcome.promise_id,
            touchpoint=outcome.touchpoint,
            expected=outcome.expected,
            actual=outcome.actual,
            gap=outcome.gap,
            score=outcome.score,
            severity=outcome.severity,
            occurred_at=outcome.occurred_at,
            event_ids=outcome.event_ids,
            action=action,
        )


@dataclass(frozen=True, slots=True)
class Intervention:
    """One case for one customer, from trigger to resolution and follow-up."""

    intervention_id: str
    customer_id: str
    state: InterventionState
    triggers: tuple[Trigger, ...]
    gaps: tuple[Gap, ...]
    #: Recommended actions, deduplicated: critical first, then the worst shortfall.
    actions: tuple[str, ...]
    priority: float
    #: The intervention threshold that applied when it opened (explains the priority).
    threshold: float
    health_at_open: float | None
    opened_at: datetime
    updated_at: datetime
    acknowledged_at: datetime | None = None
    assignee: str | None = None
    resolved_at: datetime | None = None
    outcome_note: str | None = None
    health_at_resolve: float | None = None
    #: When it left the open states: resolved_at, or when it expired.
    closed_at: datetime | None = None
    follow_up_at: datetime | None = None
    follow_up_health: float | None = None
    #: One of the policy's ``resolution_categories`` (None: resolved without one, or open).
    outcome_category: str | None = None
    #: Put aside until then: the queue shows it below the others (or not at all) till then.
    snoozed_until: datetime | None = None
    #: How many moves people and keys have made on it (scoring's moves leave it alone).
    version: int = 0

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES

    @property
    def reasons(self) -> tuple[TriggerKind, ...]:
        """The trigger kinds, each once, in the order they first appeared."""
        return tuple(dict.fromkeys(t.kind for t in self.triggers))


def intervention_id(customer_id: str, opened_at: datetime, first: Trigger, first_gap: str) -> str:
    """A UUID (v5) derived from what opened the case, never random.

    A replay that passes the same ``now`` (the consumer can use the triggering event's time
    or the batch's newest event time) reproduces the same id, so a replayed opening is
    recognisably the same case.
    """
    name = "\x1f".join(
        (customer_id, opened_at.isoformat(), first.kind, first.promise_id or "", first_gap)
    )
    return str(uuid.uuid5(_ID_NAMESPACE, name))


def intervention_priority(
    *,
    threshold: float,
    health: float | None,
    value: float,
    reach: float,
    critical: bool,
    critical_floor: float,
) -> float:
    """``(threshold - health) * value * (1 + ln(1 + reach))``, never below 0.

    A critical breach with health above the threshold would score 0 and sink to the bottom
    of the queue, which is exactly wrong for the CEO's call list, so it gets at least
    ``critical_floor``. An unknown health counts as at the threshold.
    """
    shortfall = 0.0 if health is None else threshold - health
    score = shortfall * value * (1.0 + math.log1p(reach))
    score = score if math.isfinite(score) and score > 0.0 else 0.0
    return max(score, critical_floor) if critical else score


def open_intervention(
    *,
    customer_id: str,
    now: datetime,
    triggers: Iterable[Trigger],
    gaps: Iterable[Gap],
    priority: float,
    threshold: float,
    health: float | None,
) -> Intervention:
    """A new open intervention; the caller has checked that the customer has none open."""
    trigger_list = tuple(triggers)
    if not trigger_list:
        raise ValueError("an intervention needs at least one trigger")
    gap_list = _merge_gaps((), gaps)
    return Intervention(
        intervention_id=intervention_id(
            customer_id, now, trigger_list[0], gap_list[0].outcome_key if gap_list else ""
        ),
        customer_id=customer_id,
        state=InterventionState.OPEN,
        triggers=_merge_triggers((), trigger_list),
        gaps=gap_list,
        actions=recommended_actions(gap_list),
        priority=priority,
        threshold=threshold,
        health_at_open=health,
        opened_at=now,
        updated_at=now,
    )


def attach(
    intervention: Intervention,
    *,
    now: datetime,
    triggers: Iterable[Trigger],
    gaps: Iterable[Gap],
    priority: float,
) -> Intervention:
    """Add later triggers and gaps to the open intervention; priority only ever rises."""
    _require(intervention, OPEN_STATES, "attached to")
    merged = _merge_gaps(intervention.gaps, gaps)
    return replace(
        intervention,
        triggers=_merge_triggers(intervention.triggers, triggers),
        gaps=merged,
        actions=recommended_actions(merged),
        priority=max(intervention.priority, priority),
        updated_at=now,
    )


def check_version(intervention: Intervention, expected: int | None) -> None:
    """Refuse a move meant for another version of the case (``None``: no check).

    The row lock serialises moves; this tells the person whose screen was stale that
    someone else moved the case after they looked, instead of applying their move to a case
    they have not seen.
    """
    if expected is not None and expected != intervention.version:
        raise StaleVersion(intervention.intervention_id, expected, intervention.version)


def acknowledge(intervention: Intervention, *, now: datetime, assignee: str) -> Intervention:
    """Someone owns the case now."""
    _require(intervention, {InterventionState.OPEN}, "acknowledged")
    return replace(
        intervention,
        state=InterventionState.ACKNOWLEDGED,
        acknowledged_at=now,
        assignee=_assignee(assignee),
        updated_at=now,
        version=intervention.version + 1,
    )


def add_note(intervention: Intervention, *, now: datetime, text: str) -> Intervention:
    """A note on a case still being worked; the text itself lives in the history."""
    _require(intervention, OPEN_STATES, "noted")
    _note_text(text, "text")
    return replace(intervention, updated_at=now, version=intervention.version + 1)


def note_text(text: str) -> str:
    """The note as stored: stripped (call after :func:`add_note` accepted it)."""
    return text.strip()


def snooze(intervention: Intervention, *, now: datetime, until: datetime | None) -> Intervention:
    """Put the case aside until ``until`` (in the future); ``None`` wakes it now."""
    _require(intervention, OPEN_STATES, "snoozed")
    if until is not None and until <= now:
        raise InvalidCommand("until", "must be in the future")
    return replace(
        intervention, snoozed_until=until, updated_at=now, version=intervention.version + 1
    )


def reassign(intervention: Intervention, *, now: datetime, assignee: str) -> Intervention:
    """Give an owned case to someone else (an open one is taken, not reassigned)."""
    _require(intervention, {InterventionState.ACKNOWLEDGED}, "reassigned")
    who = _assignee(assignee)
    if who == intervention.assignee:
        raise InvalidCommand("assignee", "is already the assignee")
    return replace(intervention, assignee=who, updated_at=now, version=intervention.version + 1)


def resolve(
    intervention: Intervention,
    *,
    now: datetime,
    note: str,
    health: float | None,
    category: str | None = None,
    categories: Collection[str] = (),
) -> Intervention:
    """Close the case with what was done; the note is what makes the loop learnable.

    ``category`` must be one of ``categories`` (the policy's ``resolution_categories``) when
    given; it is what lets "did our actions help" be read per kind of outcome.
    """
    _require(intervention, {InterventionState.ACKNOWLEDGED}, "resolved")
    text = _note_text(note, "note")
    if category is not None and category not in categories:
        raise InvalidCommand(
            "category", "must be one of " + ", ".join(sorted(categories) or ["(none defined)"])
        )
    return replace(
        intervention,
        state=InterventionState.RESOLVED,
        resolved_at=now,
        outcome_note=text,
        outcome_category=category,
        health_at_resolve=health,
        closed_at=now,
        updated_at=now,
        version=intervention.version + 1,
    )


def _assignee(assignee: str) -> str:
    who = assignee.strip()
    if not who or len(who) > MAX_ASSIGNEE_LENGTH:
        raise InvalidCommand("assignee", f"must be 1 to {MAX_ASSIGNEE_LENGTH} characters")
    return who


def _note_text(note: str, field: str) -> str:
    text = note.strip()
    if not text or len(text) > MAX_NOTE_LENGTH:
        raise InvalidCommand(field, f"a note of 1 to {MAX_NOTE_LENGTH} characters")
    return text


def is_snoozed(intervention: Intervention, now: datetime) -> bool:
    """Whether the case is put aside at ``now``."""
    return intervention.snoozed_until is not None and now < intervention.snoozed_until


def expire_intervention(intervention: Intervention, *, now: datetime) -> Intervention:
    """Close the case unworked (an open or acknowledged one)."""
    _require(intervention, OPEN_STATES, "expired")
    return replace(intervention, state=InterventionState.EXPIRED, closed_at=now, updated_at=now)


def expire_overdue(
    intervention: Intervention, *, now: datetime, policy: InterventionPolicy
) -> Intervention | None:
    """Expire an intervention nobody acknowledged in time; ``None`` if it is not overdue.

    Only ``open`` ones expire on their own: an acknowledged case has an owner, and taking it
    away from them silently would hide it.
    """
    if intervention.state is not InterventionState.OPEN:
        return None
    if now < intervention.opened_at + timedelta(days=policy.expire_unacknowledged_days):
        return None
    return expire_intervention(intervention, now=now)


def follow_up_due(intervention: Intervention, *, now: datetime, policy: InterventionPolicy) -> bool:
    """Whether it is time to record health N days after the resolution."""
    return (
        intervention.state is InterventionState.RESOLVED
        and intervention.follow_up_at is None
        and intervention.resolved_at is not None
        and now >= intervention.resolved_at + timedelta(days=policy.follow_up_days)
    )


def record_follow_up(
    intervention: Intervention, *, now: datetime, health: float | None
) -> Intervention:
    """Record the health some days after resolution: did the action help?"""
    _require(intervention, {InterventionState.RESOLVED}, "followed up")
    if intervention.follow_up_at is not None:
        raise IllegalTransition(intervention.intervention_id, "already followed up", "followed up")
    return replace(intervention, follow_up_at=now, follow_up_health=health, updated_at=now)


def recommended_actions(gaps: Iterable[Gap]) -> tuple[str, ...]:
    """The gaps' actions, each once: critical first, then by shortfall, worst first.

    Gaps are in different units (seconds, hours, true/false), so "worst" is ranked by the
    unit-free score first and the raw gap only breaks ties.
    """
    ordered = sorted(
        (g for g in gaps if g.action),
        key=lambda g: (g.severity != "critical", g.score, -g.gap, g.promise_id),
    )
    return tuple(dict.fromkeys(g.action for g in ordered if g.action))


def _merge_triggers(old: tuple[Trigger, ...], new: Iterable[Trigger]) -> tuple[Trigger, ...]:
    # The same reason about the same promise once, so a long-open case stays readable.
    seen = {(t.kind, t.promise_id) for t in old}
    merged = list(old)
    for trigger in new:
        if (trigger.kind, trigger.promise_id) not in seen:
            seen.add((trigger.kind, trigger.promise_id))
            merged.append(trigger)
    return tuple(merged)


def _merge_gaps(old: tuple[Gap, ...], new: Iterable[Gap]) -> tuple[Gap, ...]:
    # ``new`` is the health explanation now, ranked: it leads, in its own order (a gap with a
    # known key replaces the old one: a late delivery updates "never came"). Earlier gaps no
    # longer in it follow, so the case keeps what brought it here; past the cap the ones
    # that have been out of the explanation longest go first.
    ranked = {g.outcome_key: g for g in new}
    rest = [g for g in old if g.outcome_key not in ranked]
    return (*ranked.values(), *rest)[:MAX_GAPS]


def _require(intervention: Intervention, states: Iterable[InterventionState], verb: str) -> None:
    if intervention.state not in set(states):
        raise IllegalTransition(intervention.intervention_id, intervention.state.value, verb)

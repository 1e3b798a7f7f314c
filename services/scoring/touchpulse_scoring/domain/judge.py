"""One event judged against the whole catalogue: measure outcomes and deadline clocks.

The consumer's per-event step, kept here so that the property tests run the very code the
consumer runs. It reads the customer's deadlines and early fulfilments and returns what
changes; nothing is mutated.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field

from touchpulse_scoring.domain.catalogue import Catalogue, check_event
from touchpulse_scoring.domain.deadlines import (
    Deadline,
    DeadlineRef,
    Fulfilment,
    earliest,
    fulfil_with,
    fulfilment_refs,
    open_deadlines,
    open_with,
)
from touchpulse_scoring.domain.outcomes import Outcome, evaluate
from touchpulse_scoring.domain.profile import CustomerProfile
from touchpulse_shared.contract.events import ExperienceEventV1


@dataclass(frozen=True, slots=True)
class Judged:
    """What one event changes: outcomes to apply, deadlines and early fulfilments to keep
    (an early fulfilment mapped to None is settled and forgotten)."""

    outcomes: tuple[Outcome, ...] = ()
    deadlines: Mapping[DeadlineRef, Deadline] = field(default_factory=dict)
    early: Mapping[DeadlineRef, Fulfilment | None] = field(default_factory=dict)

    def fold_into(
        self,
        deadlines: MutableMapping[DeadlineRef, Deadline],
        early: MutableMapping[DeadlineRef, Fulfilment],
    ) -> None:
        """Carry the changes into a customer's in-memory deadlines and early fulfilments,
        so the next event of the same batch sees them."""
        deadlines.update(self.deadlines)
        for ref, fulfilment in self.early.items():
            if fulfilment is None:
                early.pop(ref, None)
            else:
                early[ref] = fulfilment


def judge_event(
    event: ExperienceEventV1,
    catalogue: Catalogue,
    profile: CustomerProfile,
    deadlines: Mapping[DeadlineRef, Deadline],
    early: Mapping[DeadlineRef, Fulfilment],
    *,
    checked: bool = False,
) -> Judged:
    """Judge ``event``; raises :class:`~.errors.UnscorableEvent` before changing anything.

    ``deadlines`` and ``early`` must hold the customer's standing deadline and early
    fulfilment for every ref the event opens or fulfils (absent: there is none).
    ``checked``: the caller has run :func:`check_event` on this event and catalogue (the
    consumer does, to dead-letter refused records before it loads any state).
    """
    if not checked:
        check_event(event, catalogue)  # once: both steps below would otherwise run it again
    outcomes = evaluate(event, catalogue, profile, checked=True)
    candidates = open_deadlines(event, catalogue, profile, checked=True)
    changed: dict[DeadlineRef, Deadline] = {}
    settled: dict[DeadlineRef, Fulfilment | None] = {}
    for candidate in candidates:
        ref = candidate.ref
        waiting = early.get(ref)
        chosen, outcome = open_with(deadlines.get(ref), candidate, waiting)
        changed[ref] = chosen
        if waiting is not None:
            settled[ref] = None  # the deadline itself remembers its fulfilment from here on
        if outcome is not None:
            outcomes.append(outcome)
    refs = fulfilment_refs(event, catalogue)
    if not refs:  # most events fulfil nothing
        return Judged(outcomes=tuple(outcomes), deadlines=changed, early=settled)
    fulfilment = Fulfilment.of(event)
    for ref in refs:
        standing = changed.get(ref, deadlines.get(ref))
        if standing is None:
            # The opening has not arrived (yet): remember the earliest fulfilment, so the
            # opening settles the clock with the real gap whenever it comes.
            known = early.get(ref)
            if earliest(known, fulfilment) != known:
                settled[ref] = fulfilment
            continue
        fulfilled = fulfil_with(standing, fulfilment)
        if fulfilled is None:
            continue  # an earlier fulfilment already stands
        changed[ref], outcome = fulfilled
        outcomes.append(outcome)
    return Judged(outcomes=tuple(outcomes), deadlines=changed, early=settled)

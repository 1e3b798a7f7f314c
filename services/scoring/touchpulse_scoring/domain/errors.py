"""Errors of the scoring domain, grouped by how the caller reacts to them.

- :class:`CatalogueError`: the promise catalogue is unusable; keep the previous one (on a
  reload) or refuse to start.
- :class:`UnscorableEvent`: this one event cannot be judged; send it to the dead-letter topic
  with :attr:`UnscorableEvent.reason` and go on.
- :class:`IllegalTransition`: an intervention cannot make the move asked for in its current
  state (the API answers 409); :class:`StaleVersion`, one of them, when the caller's copy
  of the case is older than the case (someone else moved it).
- :class:`InvalidCommand`: the move is legal but its input is not (the API answers 422).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import NamedTuple


class ScoringDomainError(Exception):
    """Root of every error the scoring domain raises itself."""


class CatalogueProblem(NamedTuple):
    """One problem in a catalogue, told to people (:meth:`__str__`) and located for tools
    (``touchpulse catalogue check`` turns :attr:`loc` into a line of the file)."""

    message: str
    #: What it is in: ``promise 'call-answer-time'``, ``promise #3 (no id)``, ``policy``, or
    #: empty for the file's other sections (the field then names the section).
    subject: str = ""
    #: The field within the subject as people read it: ``expect.op``, ``segments.premium``.
    field: str = ""
    #: The promise's id when the problem is in a promise that has one.
    promise_id: str | None = None
    #: The path in the decoded document, e.g. ``("promises", 3, "expect", "op")``; as far as
    #: it exists (a missing field's path ends at its parent); empty when it is the file.
    loc: tuple[str | int, ...] = ()
    #: 1-based line, when the YAML parser said where (a syntax error, a duplicate key).
    line: int | None = None

    def __str__(self) -> str:
        return ": ".join(part for part in (self.subject, self.field, self.message) if part)


class CatalogueError(ScoringDomainError):
    """The catalogue text is invalid; each line of the message names a promise and a field."""

    def __init__(self, problems: Sequence[str | CatalogueProblem]) -> None:
        details = tuple(
            p if isinstance(p, CatalogueProblem) else CatalogueProblem(p) for p in problems
        )
        super().__init__("\n".join(str(d) for d in details))
        self.details: tuple[CatalogueProblem, ...] = details
        self.problems: tuple[str, ...] = tuple(str(d) for d in details)


class UnscorableReason(StrEnum):
    """Why an event cannot be scored: the dead-letter reason, a bounded label for metrics."""

    UNKNOWN_TOUCHPOINT = "unknown_touchpoint"
    #: The touchpoint declares its event types (the catalogue's ``events``) and not this one.
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    WRONG_MEASURE_KIND = "wrong_measure_kind"
    #: The catalogue declares this measure required for the event type, and it is absent.
    MISSING_MEASURE = "missing_measure"
    BAD_DUE_AT = "bad_due_at"


class UnscorableEvent(ScoringDomainError):
    """An event that passed the contract but cannot be judged against the catalogue."""

    def __init__(self, reason: UnscorableReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class IllegalTransition(ScoringDomainError):
    """An intervention was asked to move where its state machine has no edge."""

    def __init__(self, intervention_id: str, state: str, command: str) -> None:
        super().__init__(f"intervention {intervention_id} is {state}; it cannot be {command}")
        self.intervention_id = intervention_id
        self.state = state
        self.command = command


class InvalidCommand(ScoringDomainError):
    """A legal intervention move with unusable input, such as a resolution without a note."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class StaleVersion(IllegalTransition):
    """The move was meant for a version of the intervention that someone else has moved on."""

    def __init__(self, intervention_id: str, expected: int, current: int) -> None:
        ScoringDomainError.__init__(
            self,
            f"intervention {intervention_id} is at version {current}, not {expected}: "
            "someone else changed it",
        )
        self.intervention_id = intervention_id
        self.state = f"version {current}"
        self.command = f"moved from version {expected}"
        self.expected = expected
        self.current = current

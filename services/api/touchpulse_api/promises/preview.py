"""One event judged as scoring would judge it, storing nothing.

The judgement is the scoring domain's own :func:`judge_event` (the consumer's per-event
step), given the deadlines and early fulfilments scoring holds for the journeys the event
opens or fulfils: a fulfilment is judged against the clock that stands, as scoring will.
Ingest's rules come first, by the same function ingest answers with
(:func:`event_problems`): an event ingest would refuse is refused here too, naming the same
field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from touchpulse_api.models import Expected
from touchpulse_api.promises.models import (
    PreviewDeadline,
    PreviewFulfilment,
    PreviewOutcome,
)
from touchpulse_scoring.domain import (
    Catalogue,
    CustomerProfile,
    Deadline,
    DeadlinePromise,
    DeadlineRef,
    Fulfilment,
    MeasurePromise,
    Outcome,
    UnscorableEvent,
    deadline_outcome_key,
    fulfilment_refs,
    judge_event,
    open_deadlines,
)
from touchpulse_scoring.domain.catalogue import event_problems
from touchpulse_shared.contract.cloudevents import CloudEventV1
from touchpulse_shared.contract.events import ExperienceEventV1
from touchpulse_shared.http.problems import Problem, field_errors, pointer

EVENT = ("body", "event")
# Where a native event's fields sit in a structured CloudEvent.
_CLOUDEVENT_FIELDS = {
    "touchpoint": ("touchpoint",),
    "type": ("type",),
    "measures": ("data", "measures"),
}


def _invalid(errors: list[dict[str, Any]], detail: str = "The request is not valid") -> Problem:
    return Problem(422, "invalid-request", "Invalid Request", detail, errors=errors)


def _unencodable(node: Any, path: tuple[str | int, ...]) -> tuple[str | int, ...] | None:
    """The path of the first text (key or value) that is not valid Unicode (a lone
    surrogate JSON can spell): no answer could quote it back."""
    if isinstance(node, str):
        try:
            node.encode()
        except UnicodeEncodeError:
            return path
        return None
    if isinstance(node, dict):
        for key, value in node.items():
            found = _unencodable(key, (*path, key)) or _unencodable(value, (*path, key))
            if found:
                return found
    if isinstance(node, list):
        for index, value in enumerate(node):
            found = _unencodable(value, (*path, index))
            if found:
                return found
    return None


def parse_event(raw: dict[str, Any]) -> tuple[ExperienceEventV1, bool]:
    """The event a request carries, and whether it came as a CloudEvent; 422 naming each
    bad field (``/body/event/...``)."""
    bad = _unencodable(raw, EVENT)
    if bad is not None:
        # The pointer itself must be encodable: the bad character shows as "?" in it.
        where = pointer(str(p).encode("utf-8", "replace").decode() for p in bad)
        raise _invalid(
            [
                {
                    "pointer": where,
                    "detail": "must be valid Unicode (no lone surrogates)",
                    "code": "string_unicode",
                }
            ]
        )
    cloud = "specversion" in raw
    try:
        if cloud:
            return CloudEventV1.model_validate(raw).to_event(), True
        return ExperienceEventV1.model_validate(raw), False
    except ValidationError as exc:
        raise _invalid(field_errors(exc.errors(include_url=False), EVENT)) from None


def refuse_what_ingest_would(event: ExperienceEventV1, catalogue: Catalogue, cloud: bool) -> None:
    """422 for what the catalogue refuses in the event (ingest's 422s), by field."""
    problems = event_problems(event, catalogue)
    if not problems:
        return
    errors = []
    for problem in problems:
        head, *rest = problem.field
        located = (*(_CLOUDEVENT_FIELDS[head] if cloud else (head,)), *rest)
        errors.append(
            {
                "pointer": pointer((*EVENT, *located)),
                "detail": problem.message,
                "code": problem.reason.value,
            }
        )
    raise _invalid(errors, f"Catalogue {catalogue.version} refuses this event, as ingest would")


def _outcome(outcome: Outcome, promise: MeasurePromise, profile: CustomerProfile) -> PreviewOutcome:
    return _preview(outcome, promise.description, promise.terms_for(profile.segment).tolerance)


def _preview(outcome: Outcome, description: str, tolerance: float | None) -> PreviewOutcome:
    return PreviewOutcome(
        promise_id=outcome.promise_id,
        touchpoint=outcome.touchpoint,
        description=description,
        expected=Expected(
            op=outcome.expected.op, target=outcome.expected.target, unit=outcome.expected.unit
        ),
        tolerance=tolerance,
        actual=outcome.actual,
        gap=outcome.gap,
        met=outcome.met,
        score=outcome.score,
        weight=outcome.weight,
        severity=outcome.severity,
        critical=outcome.severity == "critical",
    )


def deadline_refs(
    event: ExperienceEventV1, catalogue: Catalogue, profile: CustomerProfile
) -> list[DeadlineRef]:
    """The deadlines the event opens or fulfils: what scoring reads before judging it."""
    try:
        opened = open_deadlines(event, catalogue, profile)
    except UnscorableEvent as exc:
        raise _unscorable(exc) from None
    return [d.ref for d in opened] + fulfilment_refs(event, catalogue)


def _unscorable(exc: UnscorableEvent) -> Problem:
    # A deadline's due_at attribute that is no time or before the event, or a due date past
    # the calendar: scoring would dead-letter the event.
    return _invalid(
        [{"pointer": pointer(EVENT), "detail": exc.detail, "code": exc.reason.value}],
        "Scoring would not judge this event",
    )


def _deadline_outcome(outcome: Outcome, deadline: Deadline, catalogue: Catalogue) -> PreviewOutcome:
    promise = catalogue.promise(outcome.promise_id)
    # A clock started under an earlier catalogue keeps its terms, even for a promise the
    # catalogue in effect no longer has.
    description = "" if promise is None else promise.description
    return _preview(outcome, description, deadline.tolerance_hours)


def judge_one(
    event: ExperienceEventV1,
    catalogue: Catalogue,
    profile: CustomerProfile,
    deadlines: Mapping[DeadlineRef, Deadline],
    early: Mapping[DeadlineRef, Fulfilment],
) -> tuple[list[PreviewOutcome], list[PreviewDeadline], list[PreviewFulfilment]]:
    """What scoring's per-event step makes of ``event``, given the standing deadlines and
    early fulfilments of the refs :func:`deadline_refs` names (as scoring holds them)."""
    try:
        judged = judge_event(event, catalogue, profile, deadlines, early)
    except UnscorableEvent as exc:
        raise _unscorable(exc) from None
    by_key = {d.outcome_key: d for d in judged.deadlines.values()}
    outcomes = []
    for outcome in judged.outcomes:
        deadline = by_key.get(outcome.outcome_key)
        if deadline is not None:
            outcomes.append(_deadline_outcome(outcome, deadline, catalogue))
            continue
        promise = catalogue.promise(outcome.promise_id)
        # judge_event's other outcomes are its measure promises'.
        assert isinstance(promise, MeasurePromise)  # noqa: S101 - judge_event's contract
        outcomes.append(_outcome(outcome, promise, profile))
    opens = []
    for candidate in open_deadlines(event, catalogue, profile):
        deadline = judged.deadlines[candidate.ref]  # the opening that stands: maybe earlier
        promise = catalogue.promise(deadline.promise_id)
        assert isinstance(promise, DeadlinePromise)  # noqa: S101 - opened by the catalogue
        opens.append(
            PreviewDeadline(
                promise_id=deadline.promise_id,
                touchpoint=deadline.touchpoint,
                description=promise.description,
                journey_key=deadline.journey_key,
                opened_at=deadline.opened_at,
                due_at=deadline.due_at,
                tolerance_hours=deadline.tolerance_hours,
                severity=deadline.severity,
                state=deadline.state,
            )
        )
    judged_keys = {o.outcome_key for o in judged.outcomes}
    fulfils = []
    for ref in fulfilment_refs(event, catalogue):
        promise = catalogue.promise(ref.promise_id)
        assert promise is not None  # noqa: S101 - named by the catalogue
        fulfils.append(
            PreviewFulfilment(
                promise_id=ref.promise_id,
                touchpoint=promise.touchpoint,
                journey_key=ref.journey_key,
                judged=deadline_outcome_key(ref.promise_id, ref.journey_key) in judged_keys,
            )
        )
    return outcomes, opens, fulfils

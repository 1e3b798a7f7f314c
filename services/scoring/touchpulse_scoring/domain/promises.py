"""Service promises as the catalogue states them, and the terms they set for one segment.

Two kinds:

- a **measure promise** judges one measure of one event type at one touchpoint
  (``wait_seconds <= 60``, ``invoice_correct == true``);
- a **deadline promise** is kept by an event that must *arrive*: an opening event starts a
  clock, a fulfilling event on the same journey stops it, and the deadline passing first is a
  breach by absence (see :mod:`.deadlines`).

The models only check what one promise can check on its own; rules that need the whole
catalogue (known touchpoints, unique ids) live in :mod:`.catalogue`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from touchpulse_shared.contract.events import EventType, Touchpoint

Op = Literal["<=", ">=", "=="]
Severity = Literal["normal", "critical"]

#: Kebab-case ids survive URLs, metric labels and SQL without quoting.
PROMISE_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")
#: A bound that keeps one promise from drowning every other outcome of a touchpoint, and
#: keeps the health sums far from overflow (see :mod:`.health`).
MAX_PROMISE_WEIGHT = 1000.0

# Strict: YAML turns ``yes`` into True and ``"60"`` stays a string; neither should silently
# become a number. No NaN or infinity: they would poison every sum they enter.
MODEL_CONFIG = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


def _promise_id(value: str) -> str:
    if not PROMISE_ID_PATTERN.fullmatch(value):
        raise PydanticCustomError(
            "promise_id",
            "Input should be 1 to 128 lowercase letters, digits, '.', '_' or '-',"
            " starting with a letter or digit",
        )
    return value


PromiseId = Annotated[
    str,
    AfterValidator(_promise_id),
    # The check above, stated for the catalogue's JSON Schema (editors).
    WithJsonSchema({"type": "string", "pattern": f"^{PROMISE_ID_PATTERN.pattern}$", "title": "Id"}),
]
#: Touchpoint, measure and segment names share the contract's slug rule (and its message).
Slug = Touchpoint
Text = Annotated[str, StringConstraints(min_length=1, max_length=500, strip_whitespace=True)]
Positive = Annotated[float, Field(gt=0)]
Weight = Annotated[float, Field(gt=0, le=MAX_PROMISE_WEIGHT)]
#: Ten years: any longer is a typo, and it keeps due times far from datetime's year 9999.
Hours = Annotated[float, Field(gt=0, le=87_600)]


def _target(value: object) -> bool | float:
    # One clear error instead of pydantic's one-per-union-member.
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    raise PydanticCustomError("target", "Input should be a finite number or a boolean")


Target = Annotated[
    bool | float,
    PlainValidator(_target),
    WithJsonSchema({"type": ["number", "boolean"], "title": "Target"}),
]


class Expect(BaseModel):
    """What was promised: the actual value ``op`` the target."""

    model_config = MODEL_CONFIG

    op: Op
    target: Target


class SegmentTerms(BaseModel):
    """A segment's own target and/or tolerance (a premium customer expects more)."""

    model_config = MODEL_CONFIG

    target: float | None = None
    tolerance: Positive | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> SegmentTerms:
        if self.target is None and self.tolerance is None:
            raise PydanticCustomError("segment_terms", "give target, tolerance or both")
        return self


@dataclass(frozen=True, slots=True)
class Terms:
    """A measure promise's terms for one segment; ``tolerance`` is None for booleans."""

    op: Op
    target: bool | float
    tolerance: float | None


@dataclass(frozen=True, slots=True)
class Expected:
    """What the promise expected: actual ``op`` target, in ``unit``."""

    op: Op
    target: float | bool
    #: The measure's name, or ``hours`` for deadline promises (hours since the opening event).
    unit: str


class MeasurePromise(BaseModel):
    """A promise judged on one measure of one event type at one touchpoint."""

    model_config = MODEL_CONFIG

    id: PromiseId
    touchpoint: Slug
    event_type: EventType
    measure: Slug
    expect: Expect
    #: How far past the target the score reaches 0 (numeric promises only).
    tolerance: float | None = None
    weight: Weight = 1.0
    severity: Severity = "normal"
    #: With ``severity: critical``, only breaches at or beyond this value are critical
    #: (``csat >= 4`` broken at 3 is a normal breach, at 2 a critical one).
    critical_at: float | None = None
    segments: dict[Slug, SegmentTerms] = Field(default_factory=dict)
    action: Text
    description: Text

    @property
    def is_boolean(self) -> bool:
        return isinstance(self.expect.target, bool)

    def terms_for(self, segment: str) -> Terms:
        override = self.segments.get(segment)
        target = self.expect.target
        tolerance = self.tolerance
        if override is not None:
            target = override.target if override.target is not None else target
            tolerance = override.tolerance if override.tolerance is not None else tolerance
        return Terms(op=self.expect.op, target=target, tolerance=tolerance)

    def rule_for(self, segment: str) -> MeasureRule:
        """This promise as it judges a customer of ``segment``."""
        terms = self.terms_for(segment)
        return MeasureRule(
            promise=self,
            terms=terms,
            expected=Expected(op=terms.op, target=terms.target, unit=self.measure),
            # A promise id is a slug (PROMISE_ID_PATTERN), which JSON writes as it is.
            key_prefix=f'["event","{self.id}","',
        )

    def problems(self) -> list[tuple[str, str]]:
        """Rules across this promise's fields, as ``(field path, message)``."""
        if self.is_boolean:
            return self._boolean_problems()
        return self._numeric_problems()

    def _boolean_problems(self) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        if self.expect.op != "==":
            found.append(("expect.op", "a boolean target needs '=='"))
        if self.tolerance is not None:
            found.append(("tolerance", "a boolean promise has no tolerance: it is kept or not"))
        found.extend(
            (f"segments.{name}", "a boolean promise has no segment overrides")
            for name in self.segments
        )
        if self.critical_at is not None:
            found.append(("critical_at", "a boolean promise is critical through severity alone"))
        return found

    def _numeric_problems(self) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        if self.tolerance is None or self.tolerance <= 0:
            found.append(
                (
                    "tolerance",
                    f"a numeric promise needs a tolerance greater than 0, got {self.tolerance}",
                )
            )
        if self.critical_at is not None:
            found.extend(self._critical_at_problems(self.critical_at))
        return found

    def _critical_at_problems(self, critical_at: float) -> list[tuple[str, str]]:
        if self.severity != "critical":
            return [("critical_at", "only a promise with severity critical has critical_at")]
        op = self.expect.op
        if op == "==":
            return [("critical_at", "an '==' promise has no direction to be critical in")]
        targets = {"expect.target": float(self.expect.target)}
        targets.update(
            {
                f"segments.{name}.target": t.target
                for name, t in self.segments.items()
                if t.target is not None
            }
        )
        # The critical region must lie inside the broken region, or a kept promise would
        # count as a critical breach.
        return [
            ("critical_at", f"must be {'above' if op == '<=' else 'below'} {where} ({target})")
            for where, target in targets.items()
            if (critical_at <= target if op == "<=" else critical_at >= target)
        ]


@dataclass(frozen=True, slots=True)
class MeasureRule:
    """A measure promise with its terms for one segment resolved, and the parts of every
    outcome it gives that do not depend on the event: built once per catalogue
    (:meth:`~.catalogue.Catalogue.measure_rules`), read for every event judged."""

    promise: MeasurePromise
    terms: Terms
    #: Shared by every outcome of this rule (immutable).
    expected: Expected
    #: ``["event","<promise id>","``: how each of its outcome keys begins.
    key_prefix: str


class DeadlineSpec(BaseModel):
    """Which events open and fulfil the deadline, and how the due time is set."""

    model_config = MODEL_CONFIG

    opened_by: EventType
    fulfilled_by: EventType
    #: Due this many hours after the opening event...
    within_hours: Hours | None = None
    #: ...or at the RFC 3339 time in this attribute of the opening event.
    due_at_attribute: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None


class DeadlineSegmentTerms(BaseModel):
    """A segment's own deadline and/or tolerance."""

    model_config = MODEL_CONFIG

    within_hours: Hours | None = None
    tolerance: Hours | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> DeadlineSegmentTerms:
        if self.within_hours is None and self.tolerance is None:
            raise PydanticCustomError("segment_terms", "give within_hours, tolerance or both")
        return self


@dataclass(frozen=True, slots=True)
class DeadlineTerms:
    """A deadline promise's terms for one segment; ``within_hours`` is None for due_at ones."""

    within_hours: float | None
    tolerance_hours: float


class DeadlinePromise(BaseModel):
    """A promise kept by an event arriving in time; judged in hours (see :mod:`.deadlines`)."""

    model_config = MODEL_CONFIG

    id: PromiseId
    #: Where the outcome counts, whichever touchpoints the opening and fulfilling events use.
    touchpoint: Slug
    deadline: DeadlineSpec
    #: Hours late at which the score reaches 0.
    tolerance: Hours
    weight: Weight = 1.0
    severity: Severity = "normal"
    segments: dict[Slug, DeadlineSegmentTerms] = Field(default_factory=dict)
    action: Text
    description: Text

    def terms_for(self, segment: str) -> DeadlineTerms:
        override = self.segments.get(segment)
        within = self.deadline.within_hours
        tolerance = self.tolerance
        if override is not None:
            within = override.within_hours if override.within_hours is not None else within
            tolerance = override.tolerance if override.tolerance is not None else tolerance
        return DeadlineTerms(within_hours=within, tolerance_hours=tolerance)

    def problems(self) -> list[tuple[str, str]]:
        """Rules across this promise's fields, as ``(field path, message)``."""
        spec = self.deadline
        found: list[tuple[str, str]] = []
        if (spec.within_hours is None) == (spec.due_at_attribute is None):
            found.append(("deadline", "give exactly one of within_hours and due_at_attribute"))
        if spec.opened_by == spec.fulfilled_by:
            found.append(("deadline.fulfilled_by", "must differ from deadline.opened_by"))
        if spec.due_at_attribute is not None:
            found.extend(
                (
                    f"segments.{name}.within_hours",
                    "the deadline comes from the opening event's due_at attribute",
                )
                for name, terms in self.segments.items()
                if terms.within_hours is not None
            )
        return found


Promise = MeasurePromise | DeadlinePromise

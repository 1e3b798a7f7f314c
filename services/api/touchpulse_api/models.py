"""Wire shapes of the API, apart from storage rows and domain values.

Inputs forbid unknown fields, so computed fields (health, priority, timestamps) can never be
written through them (no mass assignment).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    Strict,
    WithJsonSchema,
    create_model,
)

from touchpulse_shared.contract.events import SLUG_PATTERN

Band = Literal["red", "amber", "green"]

#: Text PostgreSQL can store: no NUL, no lone surrogate (JSON lets both in). The pattern
#: puts the NUL rule in the OpenAPI document; a lone surrogate is no Unicode character, so
#: no JSON Schema string holds one (I-JSON, RFC 7493), and JSON Schema regex engines
#: cannot name one anyway.
STORABLE_PATTERN = r"^[^\x00]*$"


def _storable(text: str) -> str:
    # Let through, either would fail the write as a server error.
    if "\x00" in text:
        raise ValueError("may not contain NUL characters")
    try:
        text.encode()
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None
    return text


# The validator does the work (and says which rule failed); the pattern is for the document.
StorableText = Annotated[
    str, AfterValidator(_storable), Field(json_schema_extra={"pattern": STORABLE_PATTERN})
]

# Request numbers and flags are what JSON says they are: true is not 1, "3" is not 3.
JsonFloat = Annotated[float, Strict()]
JsonBool = Annotated[bool, Strict()]

# RFC 3339 date-time (what the document's format: date-time means): an offset is required.
_DATE_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)
_FULL_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
UTC_MIN = datetime.min.replace(tzinfo=UTC)
UTC_MAX = datetime.max.replace(tzinfo=UTC)


def parse_instant(value: object) -> datetime:
    """An RFC 3339 date-time in UTC. One whose UTC value falls off the calendar Python and
    PostgreSQL share (year 1 with a positive offset, year 9999 with a negative one) is
    the first or last instant there is: as a bound of a time filter it means the same."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC)
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 date-time string")  # noqa: TRY004 - pydantic
    match = _DATE_TIME.fullmatch(value)
    if match is None:
        raise ValueError("must be an RFC 3339 date-time with an offset, e.g. 2026-01-31T09:00:00Z")
    year, month, day, hour, minute, second = (int(g) for g in match.group(1, 2, 3, 4, 5, 6))
    fraction, zulu, sign, off_hours, off_minutes = match.group(7, 8, 9, 10, 11)
    try:
        offset = (
            timedelta(0)
            if zulu
            else (1 if sign == "+" else -1)
            * timedelta(hours=int(off_hours), minutes=int(off_minutes))
        )
        local = datetime(
            year,
            month,
            day,
            hour,
            minute,
            min(second, 59),  # a leap second is the last second of its minute
            int((fraction or "0")[:6].ljust(6, "0")),
            tzinfo=timezone(offset),
        )
    except ValueError:
        raise ValueError("is not a date and time on the calendar") from None
    try:
        return local.astimezone(UTC)
    except OverflowError:
        return UTC_MIN if offset > timedelta(0) else UTC_MAX


def parse_date(value: object) -> date:
    """An RFC 3339 full-date (YYYY-MM-DD), and nothing JSON would spell otherwise."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if not isinstance(value, str) or _FULL_DATE.fullmatch(value) is None:
        raise ValueError("must be an RFC 3339 full-date string, e.g. 2026-09-01")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError("is not a date on the calendar") from None


Instant = Annotated[
    datetime,
    PlainValidator(parse_instant),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
FullDate = Annotated[
    date, PlainValidator(parse_date), WithJsonSchema({"type": "string", "format": "date"})
]


class Expected(BaseModel):
    op: str = Field(examples=["<="])
    target: float | bool = Field(examples=[60])
    unit: str = Field(examples=["wait_seconds"])


class OutcomeOut(BaseModel):
    promise_id: str = Field(examples=["call-answer-time"])
    touchpoint: str = Field(examples=["call_centre"])
    occurred_at: datetime
    expected: Expected
    actual: float | bool | None = Field(
        description="null: the awaited event never came", examples=[420]
    )
    gap: float = Field(description="how far past the target, in the promise's unit", examples=[360])
    met: bool
    score: float = Field(ge=0, le=1, examples=[0.33])
    severity: Literal["normal", "critical"]
    event_ids: list[str] = Field(examples=[["call-centre/call-991"]])
    catalogue_version: str


class JudgedTerms(BaseModel):
    """The terms an outcome was judged by, from a catalogue version no longer in effect."""

    catalogue_version: str = Field(examples=["2026.12.1"])
    promise: dict[str, Any] = Field(
        description="the promise as that version defined it: expect (or deadline), tolerance,"
        " segment overrides, weight, severity",
        examples=[
            {
                "id": "call-answer-time",
                "expect": {"op": "<=", "target": 120.0},
                "tolerance": 540.0,
                "segments": {"premium": {"target": 30.0, "tolerance": 270.0}},
            }
        ],
    )


class Explanation(OutcomeOut):
    impact: float = Field(
        description="journey health points this outcome moves the score by (negative: down)",
        examples=[-12.5],
    )
    # Left out of the answer when the outcome's version is the one in effect (GET
    # /v1/promises has those terms), so the answer stays what it was for most customers.
    judged_by: JudgedTerms | None = Field(
        None,
        exclude_if=lambda terms: terms is None,
        description="only when catalogue_version is not the catalogue in effect: that"
        " version's terms for the promise (absent when that version is not stored)",
    )


class TouchpointHealthOut(BaseModel):
    health: float | None = Field(
        ge=0, le=1, description="with the neutral prior (docs/scoring.md)", examples=[0.42]
    )
    outcomes: int
    evidence_weight: float = Field(
        ge=0,
        description="the decayed outcome weight behind the health, as of the customer's as_of",
        examples=[3.5],
    )


class TrendPoint(BaseModel):
    at: datetime
    score: float | None


class CustomerHealth(BaseModel):
    customer_id: str = Field(examples=["C-104233"])
    score: float | None = Field(
        ge=0, le=100, description="0-100; null while the customer has no outcomes", examples=[47.2]
    )
    band: Band | None = Field(examples=["red"])
    weakest_touchpoint: str | None = Field(examples=["call_centre"])
    evidence_weight: float = Field(
        ge=0,
        description="the decayed outcome weight behind the score, summed over touchpoints;"
        " a low score on thin evidence opens no intervention (policy min_evidence)",
        examples=[6.5],
    )
    confidence: float = Field(
        ge=0,
        le=1,
        description="evidence_weight / (evidence_weight + the priors' weight): how far the"
        " score rests on outcomes rather than on the neutral prior",
        examples=[0.62],
    )
    touchpoints: dict[str, TouchpointHealthOut]
    as_of: datetime | None = Field(description="the newest event time applied: the freshness")
    updated_at: datetime | None
    trend: list[TrendPoint]
    explanation: list[Explanation] = Field(description="the outcomes that move the score most")
    open_intervention_id: str | None


def _part_of_health(name: str, *fields: str) -> type[BaseModel]:
    """A model of some of :class:`CustomerHealth`'s fields, each declared as there (type,
    bounds, description, serializer) and in the answer's order: its JSON members are the
    answer's, byte for byte. The health read writes the answer from these parts, the
    derived ones kept as bytes (touchpulse_api/explanations.py)."""
    declared = CustomerHealth.model_fields
    definitions: dict[str, Any] = {f: (declared[f].annotation, declared[f]) for f in fields}
    return create_model(name, **definitions)


#: The members read from the journey row on every health read.
HealthRowPart = _part_of_health(
    "HealthRowPart",
    "customer_id",
    "score",
    "band",
    "weakest_touchpoint",
    "as_of",
    "updated_at",
    "trend",
    "open_intervention_id",
)
#: The members computed from the touchpoint states (kept between reads): those that
#: follow ``weakest_touchpoint``, and the explanation, before ``open_intervention_id``.
HealthFiguresPart = _part_of_health(
    "HealthFiguresPart", "evidence_weight", "confidence", "touchpoints"
)
HealthExplanationPart = _part_of_health("HealthExplanationPart", "explanation")


class Page(BaseModel):
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null: the end")


class GapsPage(Page):
    customer_id: str
    items: list[OutcomeOut]


class OrgGap(BaseModel):
    touchpoint: str
    promise_id: str
    events: int
    breaches: int
    breach_rate: float = Field(ge=0, le=1)
    median_gap: float | None
    p90_gap: float | None
    customers_affected: int


class OrgGaps(BaseModel):
    since: datetime
    until: datetime
    items: list[OrgGap] = Field(description="weakest link first: highest breach rate")


class AtRiskCustomer(BaseModel):
    customer_id: str
    score: float | None
    band: Band | None
    weakest_touchpoint: str | None
    segment: str
    new_customer: bool
    as_of: datetime
    open_intervention_id: str | None
    priority: float | None


class AtRiskPage(Page):
    items: list[AtRiskCustomer]


class ProfileIn(BaseModel):
    """What a CRM may set. Health and everything computed is not writable here."""

    model_config = ConfigDict(extra="forbid")

    segment: Annotated[str, Strict()] = Field(
        "standard", pattern=SLUG_PATTERN, examples=["premium"]
    )
    customer_since: FullDate | None = Field(None, examples=["2026-09-01"])
    value: JsonFloat = Field(1.0, ge=0, le=1_000_000, allow_inf_nan=False, examples=[3.0])
    reach: JsonFloat = Field(0.0, ge=0, le=1_000_000_000, allow_inf_nan=False, examples=[1500])


class ProfileOut(BaseModel):
    model_config = ConfigDict(extra="ignore")

    segment: str = Field(examples=["premium"])
    customer_since: date | None = Field(examples=["2026-09-01"])
    value: float = Field(examples=[3.0])
    reach: float = Field(examples=[1500])
    customer_id: str
    created_at: datetime
    updated_at: datetime


class Gap(BaseModel):
    promise_id: str
    touchpoint: str
    expected: Expected
    actual: float | bool | None
    gap: float
    score: float
    severity: str
    occurred_at: datetime
    event_ids: list[str]
    action: str | None


class Trigger(BaseModel):
    kind: str
    detail: str
    promise_id: str | None


class ActorOut(BaseModel):
    kind: Literal["person", "api_key", "system"] = Field(
        description="a person at the action desk, an API key, or Touchpulse itself"
    )
    id: str = Field(description="the user id, the key id, or 'scoring'")
    name: str = Field(description="the person's display name, or the key's name")


class ActionOut(BaseModel):
    kind: str = Field(examples=["intervention.acknowledged"])
    at: datetime
    version: int = Field(description="the intervention's version after this move")
    actor: ActorOut
    detail: dict[str, str | int | float | bool | None] = Field(
        description="the move's facts: a note's text, assignee from and to, a snooze's end, "
        "a resolution's category, note and health",
        examples=[{"from": "agent-17", "to": "agent-4"}],
    )


class InterventionOut(BaseModel):
    intervention_id: str
    customer_id: str
    state: Literal["open", "acknowledged", "resolved", "expired"]
    priority: float
    threshold: float
    triggers: list[Trigger]
    gaps: list[Gap] = Field(description="what was promised versus what happened")
    actions: list[str] = Field(description="recommended actions, most urgent first")
    health_at_open: float | None
    opened_at: datetime
    acknowledged_at: datetime | None
    assignee: str | None
    resolved_at: datetime | None
    outcome_note: str | None
    health_at_resolve: float | None
    follow_up_at: datetime | None
    follow_up_health: float | None
    outcome_category: str | None = Field(
        default=None, description="one of the policy's resolution_categories, once resolved"
    )
    snoozed_until: datetime | None = Field(
        default=None, description="put aside until then (listed only with include_snoozed)"
    )
    version: int = Field(
        default=0,
        description="moves made by people and keys so far: send it back as expected_version "
        "(or If-Match) to act only on the case as you saw it",
    )
    health_now: float | None = Field(description="the customer's journey health now")
    history: list[ActionOut] | None = Field(
        default=None,
        description="every move on the case with its actor, oldest first (single reads and "
        "workflow answers; not in lists)",
    )


class InterventionsPage(Page):
    items: list[InterventionOut]


#: The version a move is meant for (the ``version`` the caller read); absent: no check.
ExpectedVersion = Annotated[
    int | None,
    Strict(),
    Field(
        default=None,
        ge=0,
        le=2**31 - 1,
        description="act only if the intervention is still at this version (else 409); the "
        "If-Match header may carry it instead",
    ),
]


class Acknowledge(BaseModel):
    model_config = ConfigDict(extra="forbid")

    assignee: StorableText = Field(min_length=1, max_length=200, examples=["agent-17"])
    expected_version: ExpectedVersion = None


class Resolve(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome_note: StorableText = Field(
        min_length=1, max_length=4000, examples=["Called, refunded the delivery fee"]
    )
    outcome_category: str | None = Field(
        default=None,
        max_length=64,
        description="one of the catalogue policy's resolution_categories (GET /v1/promises: "
        "policy.interventions.resolution_categories); optional for v1 clients",
        examples=["compensated"],
    )
    expected_version: ExpectedVersion = None


class AddNote(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: StorableText = Field(
        min_length=1, max_length=4000, examples=["Left a voicemail, trying again at 3 pm"]
    )
    expected_version: ExpectedVersion = None


class Snooze(BaseModel):
    model_config = ConfigDict(extra="forbid")

    until: Instant | None = Field(
        description="put the case aside until then (in the future); null wakes it now",
        examples=["2026-12-07T09:00:00Z"],
    )
    expected_version: ExpectedVersion = None


class Reassign(BaseModel):
    model_config = ConfigDict(extra="forbid")

    assignee: StorableText = Field(min_length=1, max_length=200, examples=["agent-4"])
    expected_version: ExpectedVersion = None


class Erased(BaseModel):
    customer_id: str
    erased_at: datetime
    removed: dict[str, int] = Field(description="rows removed per kind of data")


class PromisesOut(BaseModel):
    version: str
    touchpoints: dict[str, float]
    policy: dict[str, Any]
    promises: list[dict[str, Any]]

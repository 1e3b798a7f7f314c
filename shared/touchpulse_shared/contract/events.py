"""The native experience event, version 1: the model, its limits and its JSON encoding.

Everything here is pure (no clock, no I/O) so ingest, scoring, replay and tests all judge an
event the same way.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final

import orjson
import pydantic_core
from pydantic import (
    AfterValidator,
    AllowInfNan,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetPydanticSchema,
    Strict,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import ErrorDetails, PydanticCustomError, core_schema

from touchpulse_shared.contract.errors import InvalidBatch

#: Names the native v1 format wherever it travels (Kafka header, JSON Schema ``$id`` stem).
SCHEMA_ID: Final = "touchpulse.event.v1"

MAX_EVENT_ID_LENGTH: Final = 128
MAX_SOURCE_LENGTH: Final = 256
MAX_CUSTOMER_ID_LENGTH: Final = 128
MAX_JOURNEY_ID_LENGTH: Final = 128
MAX_TYPE_LENGTH: Final = 128
MAX_SLUG_LENGTH: Final = 64
MAX_MEASURES: Final = 32
MAX_ATTRIBUTES: Final = 32
MAX_ATTRIBUTE_NAME_LENGTH: Final = 64
MAX_ATTRIBUTE_STRING_LENGTH: Final = 256
# orjson (and most JSON stacks) cannot carry integers beyond 64 bits.
ATTRIBUTE_INT_MIN: Final = -(2**63)
ATTRIBUTE_INT_MAX: Final = 2**63 - 1

#: Identifiers: no whitespace and none of the control characters CloudEvents also forbids,
#: so they survive HTTP headers, Kafka headers, logs and CSV exports unchanged.
IDENTIFIER_PATTERN: Final = r"^[^\s\x00-\x1F\x7F-\x9F]+$"
#: Touchpoints and measure names.
SLUG_PATTERN: Final = r"^[a-z][a-z0-9_]{0,63}$"
#: At least two dot-separated segments, e.g. ``delivery.completed``.
EVENT_TYPE_PATTERN: Final = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"

# Lenient on the separator and fraction length (what parsers accept), strict on the shape, so
# that pydantic's extra inputs (unix timestamps, bare dates) never reach the datetime parser.
# The offset is optional here only so that a naive timestamp gets pydantic's own
# ``timezone_aware`` error rather than a vaguer format error.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})?"
)


def _errors_as(error_type: str, message: str) -> GetPydanticSchema:
    """Replace every error of the annotated type with one clear error.

    pydantic's own messages for these fields would quote a regex or list one error per union
    member; clients need one sentence per field.
    """

    def build(source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.custom_error_schema(
            handler(source), custom_error_type=error_type, custom_error_message=message
        )

    return GetPydanticSchema(build)


def _identifier(max_length: int) -> GetPydanticSchema:
    return _errors_as(
        "identifier_format",
        f"Input should be a string of 1 to {max_length} characters"
        " without whitespace or control characters",
    )


def _require_rfc3339(value: object) -> object:
    if isinstance(value, datetime) or (isinstance(value, str) and _RFC3339.fullmatch(value)):
        return value
    raise PydanticCustomError(
        "timestamp_format",
        "Input should be an RFC 3339 timestamp with a UTC offset, such as 2024-05-01T12:30:00Z",
    )


def _to_utc(value: datetime) -> datetime:
    if value.tzinfo is UTC:
        return value
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise PydanticCustomError(
            "timestamp_range", "Input is outside the years 1 to 9999 once converted to UTC"
        ) from None


EventId = Annotated[
    str,
    Strict(),
    StringConstraints(min_length=1, max_length=MAX_EVENT_ID_LENGTH, pattern=IDENTIFIER_PATTERN),
    _identifier(MAX_EVENT_ID_LENGTH),
]
Source = Annotated[
    str,
    Strict(),
    StringConstraints(min_length=1, max_length=MAX_SOURCE_LENGTH, pattern=IDENTIFIER_PATTERN),
    _identifier(MAX_SOURCE_LENGTH),
]
CustomerId = Annotated[
    str,
    Strict(),
    StringConstraints(min_length=1, max_length=MAX_CUSTOMER_ID_LENGTH, pattern=IDENTIFIER_PATTERN),
    _identifier(MAX_CUSTOMER_ID_LENGTH),
]
JourneyId = Annotated[
    str,
    Strict(),
    StringConstraints(min_length=1, max_length=MAX_JOURNEY_ID_LENGTH, pattern=IDENTIFIER_PATTERN),
    _identifier(MAX_JOURNEY_ID_LENGTH),
]
_SLUG_ERROR = _errors_as(
    "slug_format",
    "Input should be a lowercase letter followed by up to 63 lowercase letters,"
    " digits or underscores",
)
Touchpoint = Annotated[str, Strict(), StringConstraints(pattern=SLUG_PATTERN), _SLUG_ERROR]
MeasureName = Annotated[str, Strict(), StringConstraints(pattern=SLUG_PATTERN), _SLUG_ERROR]
EventType = Annotated[
    str,
    Strict(),
    StringConstraints(max_length=MAX_TYPE_LENGTH, pattern=EVENT_TYPE_PATTERN),
    _errors_as(
        "event_type_format",
        f"Input should be a dotted lowercase event type such as delivery.completed,"
        f" at most {MAX_TYPE_LENGTH} characters",
    ),
]
OccurredAt = Annotated[AwareDatetime, BeforeValidator(_require_rfc3339), AfterValidator(_to_utc)]
# bool comes first and both members are strict, so JSON ``true`` stays a bool and ``1`` a float.
MeasureValue = Annotated[
    Annotated[bool, Strict()] | Annotated[float, Strict(), AllowInfNan(False)],
    _errors_as("measure_value", "Input should be a finite number or a boolean"),
]
Measures = Annotated[
    dict[MeasureName, MeasureValue],
    # patternProperties alone would let other names through in the JSON Schema.
    Field(max_length=MAX_MEASURES, json_schema_extra={"additionalProperties": False}),
]
AttributeName = Annotated[
    str,
    Strict(),
    StringConstraints(min_length=1, max_length=MAX_ATTRIBUTE_NAME_LENGTH),
    _errors_as(
        "attribute_name",
        f"Attribute names should be 1 to {MAX_ATTRIBUTE_NAME_LENGTH} characters",
    ),
]
AttributeValue = Annotated[
    Annotated[str, Strict(), StringConstraints(max_length=MAX_ATTRIBUTE_STRING_LENGTH)]
    | Annotated[int, Strict(), Field(ge=ATTRIBUTE_INT_MIN, le=ATTRIBUTE_INT_MAX)]
    | Annotated[float, Strict(), AllowInfNan(False)]
    | Annotated[bool, Strict()]
    | None,
    _errors_as(
        "attribute_value",
        f"Input should be a string of at most {MAX_ATTRIBUTE_STRING_LENGTH} characters,"
        " a finite number, a boolean or null",
    ),
]
Attributes = Annotated[dict[AttributeName, AttributeValue], Field(max_length=MAX_ATTRIBUTES)]

EXAMPLE_EVENT: Final[dict[str, Any]] = {
    "event_id": "7f1c2a9e-5d1b-4c1e-9a61-2b0f4f3c8d10",
    "source": "call-centre-prod",
    "customer_id": "C-104233",
    "touchpoint": "call_centre",
    "type": "call.answered",
    "occurred_at": "2024-05-01T12:30:00Z",
    "journey_id": "case-88172",
    "measures": {"wait_seconds": 312, "first_contact_resolution": False},
    "attributes": {"queue": "billing", "agent_team": "north", "callback_offered": True},
}


class ExperienceEventV1(BaseModel):
    """One thing that happened to one customer at one touchpoint."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        title="ExperienceEventV1",
        json_schema_extra={"examples": [EXAMPLE_EVENT]},
    )

    event_id: EventId = Field(
        description="Set by the source; (source, event_id) identifies the event, "
        "so a retry with the same pair is the same event."
    )
    source: Source = Field(
        description="The emitting system, e.g. billing-prod or /billing/prod; "
        "bound to the API key that sends it."
    )
    customer_id: CustomerId = Field(description="The customer the event happened to.")
    touchpoint: Touchpoint = Field(
        description="A touchpoint registered in configuration, e.g. call_centre."
    )
    type: EventType = Field(description="What happened, e.g. call.answered.")
    occurred_at: OccurredAt = Field(
        description="When it happened: RFC 3339 with a UTC offset; stored in UTC."
    )
    journey_id: JourneyId | None = Field(
        default=None, description="The order or case that links events of one journey."
    )
    measures: Measures = Field(
        default_factory=dict,
        description="Measured values judged against service promises: name -> finite "
        "number or boolean.",
    )
    attributes: Attributes = Field(
        default_factory=dict,
        description="Small free-form context: name -> string, number, boolean or null.",
    )

    @property
    def identity(self) -> tuple[str, str]:
        """``(source, event_id)``: the CloudEvents rule for "the same event"."""
        return (self.source, self.event_id)


class ExperienceEventBatchV1(BaseModel):
    """A native batch body; each event in it is accepted or rejected on its own."""

    model_config = ConfigDict(frozen=True, extra="forbid", title="ExperienceEventBatchV1")

    events: list[ExperienceEventV1]


EVENT_ADAPTER: Final[TypeAdapter[ExperienceEventV1]] = TypeAdapter(ExperienceEventV1)
EVENT_LIST_ADAPTER: Final[TypeAdapter[list[ExperienceEventV1]]] = TypeAdapter(
    list[ExperienceEventV1]
)

_JSON_OPTIONS: Final = orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z


@dataclass(frozen=True, slots=True)
class ItemError:
    """A batch item that failed; ``errors`` have ``loc`` relative to the item itself."""

    index: int
    errors: list[ErrorDetails]


def parse_event_json(data: bytes) -> ExperienceEventV1:
    """Validate one native event from JSON bytes; raises ``ValidationError``."""
    return EVENT_ADAPTER.validate_json(data)


def event_to_dict(event: ExperienceEventV1) -> dict[str, Any]:
    """The event as JSON-ready values (``occurred_at`` still a ``datetime``)."""
    payload: dict[str, Any] = {
        "event_id": event.event_id,
        "source": event.source,
        "customer_id": event.customer_id,
        "touchpoint": event.touchpoint,
        "type": event.type,
        "occurred_at": event.occurred_at,
        "measures": event.measures,
        "attributes": event.attributes,
    }
    if event.journey_id is not None:
        payload["journey_id"] = event.journey_id
    return payload


def event_to_json(event: ExperienceEventV1) -> bytes:
    """Compact JSON with sorted keys and ``occurred_at`` in UTC with ``Z``."""
    return orjson.dumps(event_to_dict(event), option=_JSON_OPTIONS)


def events_to_batch_json(events: Iterable[ExperienceEventV1]) -> bytes:
    """A native batch body, ``{"events": [...]}``."""
    return orjson.dumps({"events": [event_to_dict(e) for e in events]}, option=_JSON_OPTIONS)


def format_rfc3339(value: datetime) -> str:
    """RFC 3339 in UTC with ``Z``; microseconds only when there are any (as orjson writes)."""
    if value.utcoffset() is None:
        raise ValueError("a timezone-aware datetime is required")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


def load_json_body(body: bytes) -> Any:
    """Parse a request body for a batch; a body that is not JSON fails the whole request.

    NaN and Infinity tokens are let through so that they fail on the measure that holds them.
    """
    try:
        return pydantic_core.from_json(body, allow_inf_nan=True)
    except ValueError as exc:
        raise InvalidBatch("not_json", f"The body is not valid JSON: {exc}") from None


def validate_items(
    items: Sequence[Any],
    validate: Callable[[Any], ExperienceEventV1],
    *,
    max_items: int | None,
) -> list[ExperienceEventV1 | ItemError]:
    """Judge each batch item on its own so that one bad item does not reject the others."""
    if max_items is not None and len(items) > max_items:
        raise InvalidBatch(
            "too_many_items",
            f"The batch holds {len(items)} events; at most {max_items} are accepted",
        )
    results: list[ExperienceEventV1 | ItemError] = []
    for index, item in enumerate(items):
        try:
            results.append(validate(item))
        except ValidationError as exc:
            results.append(ItemError(index, exc.errors(include_url=False)))
    return results


def parse_native_batch(
    body: bytes, *, max_items: int | None = None
) -> list[ExperienceEventV1 | ItemError]:
    """Per-item results for a native batch body ``{"events": [...]}``.

    Raises ``InvalidBatch`` when the body is not JSON, is not that shape, or holds more than
    ``max_items`` events.
    """
    document = load_json_body(body)
    if (
        not isinstance(document, dict)
        or document.keys() != {"events"}
        or not isinstance(document["events"], list)
    ):
        raise InvalidBatch(
            "wrong_shape",
            'A native batch is a JSON object with one member, "events", an array of events',
        )
    return validate_items(document["events"], EVENT_ADAPTER.validate_python, max_items=max_items)


def check_time_window(
    event: ExperienceEventV1,
    *,
    now: datetime,
    max_future: timedelta,
    max_past: timedelta,
) -> str | None:
    """Why ``occurred_at`` is implausibly far from ``now``, or ``None`` if it is within bounds.

    ``now`` is passed in so that the contract never reads a clock (replays judge against the
    time of receipt, tests against a fixed instant). The bounds themselves are accepted.
    """
    if now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    ahead = event.occurred_at - now
    if ahead > max_future:
        return (
            f"occurred_at {format_rfc3339(event.occurred_at)} is {_describe(ahead)} in the "
            f"future; at most {_describe(max_future)} ahead of the receiver's clock is accepted"
        )
    if -ahead > max_past:
        return (
            f"occurred_at {format_rfc3339(event.occurred_at)} is {_describe(-ahead)} in the "
            f"past; at most {_describe(max_past)} old is accepted"
        )
    return None


def _describe(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    parts += [f"{hours}h"] if hours else []
    parts += [f"{minutes}m"] if minutes else []
    parts += [f"{seconds}s"] if seconds or not parts else []
    return " ".join(parts)

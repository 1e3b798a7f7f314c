"""The experience event as a CloudEvent 1.0: structured, binary and batch HTTP content modes.

Mapping: ``id``/``event_id``, ``source``, ``type``, ``time``/``occurred_at`` (required here,
optional in CloudEvents), extension attributes ``customerid``, ``touchpoint`` and
``journeyid``, and ``data`` = ``{"measures": {...}, "attributes": {...}}``. Every other
attribute is rejected, so a typo such as ``customer_id`` or ``touchPoint`` fails loudly
instead of producing an event without its customer. The core attribute ``subject`` is
accepted and ignored because generic CloudEvents producers set it by habit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Final, Literal

import orjson
import pydantic_core
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict, StringConstraints
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

from touchpulse_shared.contract.errors import InvalidBatch
from touchpulse_shared.contract.events import (
    Attributes,
    CustomerId,
    EventId,
    EventType,
    ExperienceEventV1,
    ItemError,
    JourneyId,
    Measures,
    OccurredAt,
    Source,
    Touchpoint,
    format_rfc3339,
    load_json_body,
    validate_items,
)

SPECVERSION: Final = "1.0"
#: What ``data`` adheres to (``dataschema`` names the schema of ``data``, not of the event).
DATASCHEMA: Final = "urn:touchpulse:schema:experience-event-data:v1"

CONTENT_TYPE_JSON: Final = "application/json"
CONTENT_TYPE_CLOUDEVENT: Final = "application/cloudevents+json"
CONTENT_TYPE_CLOUDEVENT_BATCH: Final = "application/cloudevents-batch+json"

#: Extension attributes Touchpulse defines (CloudEvents names: a-z0-9, at most 20 chars).
EXTENSION_ATTRIBUTES: Final = ("customerid", "touchpoint", "journeyid")

_HEADER_PREFIX: Final = "ce-"
# In binary mode these travel as the body and Content-Type, never as ce- headers.
_NOT_HEADERS: Final = frozenset({"data", "data_base64", "datacontenttype"})
_STRAY_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_QUOTED_PAIR = re.compile(r"\\(.)")
_JSON_OPTIONS: Final = orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z


def media_type(content_type: str) -> str:
    """The lowercased ``type/subtype`` of a Content-Type value, parameters dropped."""
    return content_type.split(";", 1)[0].strip().lower()


def is_json_content_type(content_type: str) -> bool:
    """``application/json``, with no charset or with UTF-8 (the only charset JSON allows)."""
    kind, _, parameters = content_type.partition(";")
    if kind.strip().lower() != CONTENT_TYPE_JSON:
        return False
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() != "utf-8":
            return False
    return True


def _require_json_content_type(value: str) -> str:
    if not is_json_content_type(value):
        raise PydanticCustomError(
            "unsupported_datacontenttype",
            "Touchpulse accepts JSON data only: datacontenttype should be application/json",
        )
    return value


EXAMPLE_CLOUDEVENT: Final[dict[str, Any]] = {
    "specversion": "1.0",
    "id": "7f1c2a9e-5d1b-4c1e-9a61-2b0f4f3c8d10",
    "source": "/call-centre/prod",
    "type": "call.answered",
    "time": "2024-05-01T12:30:00Z",
    "customerid": "C-104233",
    "touchpoint": "call_centre",
    "journeyid": "case-88172",
    "datacontenttype": "application/json",
    "dataschema": DATASCHEMA,
    "data": {
        "measures": {"wait_seconds": 312, "first_contact_resolution": False},
        "attributes": {"queue": "billing"},
    },
}


class CloudEventDataV1(BaseModel):
    """The data of a Touchpulse CloudEvent."""

    model_config = ConfigDict(frozen=True, extra="forbid", title="CloudEventDataV1")

    measures: Measures = Field(
        default_factory=dict,
        description="Measured values judged against service promises: name -> finite "
        "number or boolean.",
    )
    attributes: Attributes = Field(
        default_factory=dict,
        description="Small free-form context: name -> string, number, boolean or null.",
    )


class CloudEventV1(BaseModel):
    """A CloudEvent 1.0 (JSON format) as Touchpulse accepts it."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        title="CloudEventV1",
        json_schema_extra={"examples": [EXAMPLE_CLOUDEVENT]},
    )

    specversion: Literal["1.0"] = Field(description="CloudEvents version; must be 1.0.")
    id: EventId = Field(description="The native event_id.")
    source: Source = Field(description="The emitting system (native source).")
    type: EventType = Field(description="What happened, e.g. call.answered.")
    time: OccurredAt = Field(
        description="When it happened (native occurred_at); required by Touchpulse."
    )
    customerid: CustomerId = Field(description="Extension: the native customer_id.")
    touchpoint: Touchpoint = Field(description="Extension: the native touchpoint.")
    journeyid: JourneyId | None = Field(
        default=None, description="Extension: the native journey_id."
    )
    datacontenttype: Annotated[str, Strict(), AfterValidator(_require_json_content_type)] | None = (
        Field(default=None, description="application/json, or absent (JSON is assumed).")
    )
    dataschema: Literal["urn:touchpulse:schema:experience-event-data:v1"] | None = Field(
        default=None, description=f"{DATASCHEMA}, or absent."
    )
    subject: Annotated[str, Strict(), StringConstraints(min_length=1, max_length=256)] | None = (
        Field(default=None, description="Accepted and ignored.")
    )
    data: CloudEventDataV1 | None = Field(
        default=None, description="Measures and attributes; absent means neither."
    )

    def to_event(self) -> ExperienceEventV1:
        # Every field was already validated with the native event's own types.
        data = self.data
        return ExperienceEventV1.model_construct(
            event_id=self.id,
            source=self.source,
            customer_id=self.customerid,
            touchpoint=self.touchpoint,
            type=self.type,
            occurred_at=self.time,
            journey_id=self.journeyid,
            measures=dict(data.measures) if data is not None else {},
            attributes=dict(data.attributes) if data is not None else {},
        )


def _data(event: ExperienceEventV1) -> dict[str, Any]:
    return {"measures": event.measures, "attributes": event.attributes}


def to_structured(event: ExperienceEventV1) -> dict[str, Any]:
    """The event as a structured-mode CloudEvent, JSON-ready (``time`` already a string)."""
    document: dict[str, Any] = {
        "specversion": SPECVERSION,
        "id": event.event_id,
        "source": event.source,
        "type": event.type,
        "time": format_rfc3339(event.occurred_at),
        "customerid": event.customer_id,
        "touchpoint": event.touchpoint,
        "datacontenttype": CONTENT_TYPE_JSON,
        "dataschema": DATASCHEMA,
        "data": _data(event),
    }
    if event.journey_id is not None:
        document["journeyid"] = event.journey_id
    return document


def to_structured_json(event: ExperienceEventV1) -> bytes:
    """A structured-mode body (``application/cloudevents+json``)."""
    return orjson.dumps(to_structured(event), option=_JSON_OPTIONS)


def from_structured(obj: Mapping[str, Any]) -> ExperienceEventV1:
    """Validate a parsed structured-mode CloudEvent; ``loc`` names the CloudEvents attribute."""
    return CloudEventV1.model_validate(obj).to_event()


def parse_structured(body: bytes) -> ExperienceEventV1:
    """Validate a structured-mode body; a body that is not JSON is a ``json_invalid`` error."""
    return CloudEventV1.model_validate_json(body).to_event()


def to_batch(events: Iterable[ExperienceEventV1]) -> bytes:
    """A batch-mode body (``application/cloudevents-batch+json``)."""
    return orjson.dumps([to_structured(e) for e in events], option=_JSON_OPTIONS)


def from_batch(body: bytes, *, max_items: int | None = None) -> list[ExperienceEventV1 | ItemError]:
    """Per-item results for a batch-mode body (a JSON array of structured CloudEvents).

    Raises ``InvalidBatch`` when the body is not JSON, not an array, or longer than
    ``max_items``.
    """
    document = load_json_body(body)
    if not isinstance(document, list):
        raise InvalidBatch("wrong_shape", "A CloudEvents batch is a JSON array of events")
    return validate_items(document, from_structured, max_items=max_items)


def encode_header_value(value: str) -> str:
    """Percent-encode as the CloudEvents HTTP binding requires (section 3.1.3.2)."""
    if all("!" <= ch <= "~" and ch not in '"%' for ch in value):
        return value
    return "".join(
        ch
        if "!" <= ch <= "~" and ch not in '"%'
        else "".join(f"%{byte:02X}" for byte in ch.encode())
        for ch in value
    )


def decode_header_value(value: str) -> str:
    """Undo ``encode_header_value``; also accepts the quoted strings older senders used.

    Raises ``ValueError`` for characters HTTP headers cannot carry, stray ``%`` signs, and
    escapes that do not decode as UTF-8 (the binding says those must be rejected).
    """
    value = value.strip(" \t")
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        value = _QUOTED_PAIR.sub(r"\1", value[1:-1])
    if any(not " " <= ch <= "~" for ch in value):
        raise ValueError("header values must be printable ASCII; percent-encode other characters")
    if "%" not in value:
        return value
    if _STRAY_PERCENT.search(value):
        raise ValueError("a % sign must start a %XX escape")
    try:
        return _percent_decode(value)
    except UnicodeDecodeError:
        raise ValueError("percent-escapes do not decode as UTF-8") from None


def _percent_decode(value: str) -> str:
    out = bytearray()
    index = 0
    while index < len(value):
        ch = value[index]
        if ch == "%":
            out.append(int(value[index + 1 : index + 3], 16))
            index += 3
        else:
            out += ch.encode()
            index += 1
    return out.decode("utf-8")


def to_binary(event: ExperienceEventV1) -> tuple[dict[str, str], bytes]:
    """Binary mode: ``ce-`` headers and ``Content-Type``, with the data as the body."""
    headers = {
        "ce-specversion": SPECVERSION,
        "ce-id": encode_header_value(event.event_id),
        "ce-source": encode_header_value(event.source),
        "ce-type": event.type,
        "ce-time": format_rfc3339(event.occurred_at),
        "ce-customerid": encode_header_value(event.customer_id),
        "ce-touchpoint": event.touchpoint,
        "ce-dataschema": DATASCHEMA,
        "content-type": CONTENT_TYPE_JSON,
    }
    if event.journey_id is not None:
        headers["ce-journeyid"] = encode_header_value(event.journey_id)
    return headers, orjson.dumps(_data(event), option=_JSON_OPTIONS)


def from_binary(headers: Mapping[str, str], body: bytes) -> ExperienceEventV1:
    """Validate a binary-mode request. Header names are case-insensitive; non-``ce-`` headers
    other than Content-Type are ignored.

    Errors are ``ValidationError``s whose ``loc`` uses the CloudEvents attribute name (the
    header ``ce-customerid`` reports as ``("customerid",)``) and ``("data", ...)`` for the
    body. Header-level problems (encoding, duplicates, attributes that cannot be headers, a
    non-JSON Content-Type) are reported before the body is looked at.
    """
    attributes: dict[str, Any] = {}
    problems: list[InitErrorDetails] = []
    for raw_name, raw_value in headers.items():
        name = raw_name.lower()
        if name == "content-type":
            attribute = "datacontenttype"
        elif name.startswith(_HEADER_PREFIX):
            attribute = name[len(_HEADER_PREFIX) :]
            if attribute in _NOT_HEADERS:
                problems.append(
                    _problem(
                        "binary_mode_header",
                        f"{attribute} cannot be sent as a ce- header in binary mode:"
                        " the body is the data and Content-Type is its datacontenttype",
                        attribute,
                        raw_value,
                    )
                )
                continue
        else:
            continue
        if attribute in attributes:
            problems.append(
                _problem("duplicate_header", f"{raw_name} is given more than once", attribute, "")
            )
            continue
        try:
            attributes[attribute] = (
                raw_value if attribute == "datacontenttype" else decode_header_value(raw_value)
            )
        except ValueError as exc:
            problems.append(_problem("header_encoding", str(exc), attribute, raw_value))
    content_type = attributes.get("datacontenttype")
    if isinstance(content_type, str) and not is_json_content_type(content_type):
        problems.append(
            _problem(
                "unsupported_datacontenttype",
                "Touchpulse accepts JSON data only: Content-Type should be application/json",
                "datacontenttype",
                content_type,
            )
        )
    if problems:
        raise ValidationError.from_exception_data("CloudEventV1", problems)
    if body.strip():
        try:
            attributes["data"] = pydantic_core.from_json(body, allow_inf_nan=True)
        except ValueError as exc:
            raise ValidationError.from_exception_data(
                "CloudEventV1",
                [
                    {
                        "type": "json_invalid",
                        "loc": ("data",),
                        "input": body,
                        "ctx": {"error": str(exc)},
                    }
                ],
            ) from None
    return CloudEventV1.model_validate(attributes).to_event()


def _problem(error_type: str, message: str, attribute: str, value: str) -> InitErrorDetails:
    # The message is passed as context so that a header value with braces in it can never be
    # read as a template placeholder.
    return {
        "type": PydanticCustomError(error_type, "{message}", {"message": message}),
        "loc": (attribute,),
        "input": value,
    }

"""Events, built once: the id is chosen and the body serialized when the event is made.

A retry of an event must carry the same ``event_id`` (``(source, event_id)`` is how
Touchpulse recognises a retry of an event it already has), so the id is generated here, at
build time, never when a request is sent. The body is serialized once too: what is queued,
spooled to disk and resent is exactly those bytes.

Only what a client can get wrong by construction is checked here (a timestamp without a
time zone, a measure that is not a finite number or a boolean, text that cannot be UTF-8);
the contract itself (formats, lengths, the promise catalogue) is ingest's to judge, and
its answer for an event comes back as that event's result.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

Measure = bool | int | float
Attribute = str | int | float | bool | None


class EventFormat(StrEnum):
    """How an event is written on the wire: Touchpulse's native JSON or a CloudEvent."""

    NATIVE = "native"
    CLOUDEVENT = "cloudevent"


@dataclass(frozen=True, slots=True)
class Event:
    """One event, ready to send: its identity and its serialized JSON body."""

    source: str
    event_id: str
    customer_id: str
    format: EventFormat
    #: The event's JSON, UTF-8, exactly as it is sent (and spooled).
    body: bytes

    @property
    def identity(self) -> tuple[str, str]:
        """``(source, event_id)``: what makes two sends the same event."""
        return (self.source, self.event_id)

    def to_dict(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.body)
        return loaded


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _timestamp(value: datetime) -> str:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("occurred_at must carry a time zone (Touchpulse never guesses one)")
    return value.isoformat()


def _measures(measures: Mapping[str, Measure] | None) -> dict[str, Measure]:
    checked: dict[str, Measure] = {}
    for name, value in (measures or {}).items():
        if isinstance(value, bool) or (isinstance(value, int | float) and math.isfinite(value)):
            checked[name] = value
        else:
            raise ValueError(f"measure {name!r} must be a finite number or a boolean")
    return checked


def _attributes(attributes: Mapping[str, Attribute] | None) -> dict[str, Attribute]:
    checked: dict[str, Attribute] = {}
    for name, value in (attributes or {}).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"attribute {name!r} must be a finite number")
        if value is not None and not isinstance(value, str | int | float | bool):
            raise ValueError(f"attribute {name!r} must be text, a number, a boolean or None")
        checked[name] = value
    return checked


def _serialize(document: Mapping[str, Any]) -> bytes:
    text = json.dumps(document, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (half of a UTF-16 pair) cannot be sent as UTF-8 at all: better
        # refused to the caller now than a whole batch answered 400 later.
        raise ValueError("the event holds text that is not valid Unicode") from None


def build_event(
    *,
    source: str,
    customer_id: str,
    touchpoint: str,
    type: str,
    occurred_at: datetime | None = None,
    journey_id: str | None = None,
    measures: Mapping[str, Measure] | None = None,
    attributes: Mapping[str, Attribute] | None = None,
    event_id: str | None = None,
    format: EventFormat = EventFormat.NATIVE,
    clock: Callable[[], datetime] = _utc_now,
) -> Event:
    """An event with a new random ``event_id`` (unless one is given: a source that has its
    own stable id, such as a call record's, should pass it, so a resend after a crash of
    the source is recognised as the same event)."""
    event_id = event_id if event_id is not None else str(uuid.uuid4())
    when = _timestamp(occurred_at if occurred_at is not None else clock())
    checked_measures = _measures(measures)
    checked_attributes = _attributes(attributes)
    document: dict[str, Any]
    if format is EventFormat.NATIVE:
        document = {
            "event_id": event_id,
            "source": source,
            "customer_id": customer_id,
            "touchpoint": touchpoint,
            "type": type,
            "occurred_at": when,
            "measures": checked_measures,
            "attributes": checked_attributes,
        }
        if journey_id is not None:
            document["journey_id"] = journey_id
    else:
        document = {
            "specversion": "1.0",
            "id": event_id,
            "source": source,
            "type": type,
            "time": when,
            "customerid": customer_id,
            "touchpoint": touchpoint,
            "datacontenttype": "application/json",
            "data": {"measures": checked_measures, "attributes": checked_attributes},
        }
        if journey_id is not None:
            document["journeyid"] = journey_id
    return Event(source, event_id, customer_id, format, _serialize(document))


@dataclass(frozen=True)
class EventBuilder:
    """Events of one source (and, optionally, one touchpoint), for an integration that
    translates another system's records: ``builder.event(...)`` or
    ``builder.cloudevent(...)``."""

    source: str
    touchpoint: str | None = None
    clock: Callable[[], datetime] = _utc_now

    def event(
        self,
        *,
        customer_id: str,
        type: str,
        touchpoint: str | None = None,
        occurred_at: datetime | None = None,
        journey_id: str | None = None,
        measures: Mapping[str, Measure] | None = None,
        attributes: Mapping[str, Attribute] | None = None,
        event_id: str | None = None,
    ) -> Event:
        """A native event."""
        return self._build(
            EventFormat.NATIVE,
            customer_id=customer_id,
            type=type,
            touchpoint=touchpoint,
            occurred_at=occurred_at,
            journey_id=journey_id,
            measures=measures,
            attributes=attributes,
            event_id=event_id,
        )

    def cloudevent(
        self,
        *,
        customer_id: str,
        type: str,
        touchpoint: str | None = None,
        occurred_at: datetime | None = None,
        journey_id: str | None = None,
        measures: Mapping[str, Measure] | None = None,
        attributes: Mapping[str, Attribute] | None = None,
        event_id: str | None = None,
    ) -> Event:
        """A CloudEvent (structured JSON; batches of them go as ``cloudevents-batch+json``)."""
        return self._build(
            EventFormat.CLOUDEVENT,
            customer_id=customer_id,
            type=type,
            touchpoint=touchpoint,
            occurred_at=occurred_at,
            journey_id=journey_id,
            measures=measures,
            attributes=attributes,
            event_id=event_id,
        )

    def _build(
        self,
        format: EventFormat,
        *,
        customer_id: str,
        type: str,
        touchpoint: str | None,
        occurred_at: datetime | None,
        journey_id: str | None,
        measures: Mapping[str, Measure] | None,
        attributes: Mapping[str, Attribute] | None,
        event_id: str | None,
    ) -> Event:
        chosen = touchpoint or self.touchpoint
        if chosen is None:
            raise ValueError("a touchpoint is needed: give one here or to the EventBuilder")
        return build_event(
            source=self.source,
            customer_id=customer_id,
            touchpoint=chosen,
            type=type,
            occurred_at=occurred_at,
            journey_id=journey_id,
            measures=measures,
            attributes=attributes,
            event_id=event_id,
            format=format,
            clock=self.clock,
        )

"""The Kafka record that carries one experience event on ``touchpoint.events.v1``.

- key: ``customer_id`` as UTF-8, so one customer's events share a partition and scoring
  instances never race on a customer;
- value: the native event JSON, self-contained, so scoring never needs the headers to score;
- headers: identify the format and the producer, and carry CloudEvents Kafka-binding style
  ``ce_id``, ``ce_source`` and ``ce_type`` so tools can route without parsing the value.

There is deliberately no ``ce_specversion`` header: with it, CloudEvents SDKs would take the
record for a binary-mode CloudEvent whose data is the whole value.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from touchpulse_shared.contract.errors import RecordRejected, RejectReason
from touchpulse_shared.contract.events import (
    EVENT_ADAPTER,
    SCHEMA_ID,
    ExperienceEventV1,
    event_to_json,
)

RECORD_CONTENT_TYPE: Final = "application/vnd.touchpulse.event.v1+json"

HEADER_CONTENT_TYPE: Final = "content-type"
HEADER_SCHEMA: Final = "touchpulse-schema"
HEADER_PRODUCER: Final = "touchpulse-producer"
HEADER_RECEIVED_AT: Final = "touchpulse-received-at"
HEADER_CE_ID: Final = "ce_id"
HEADER_CE_SOURCE: Final = "ce_source"
HEADER_CE_TYPE: Final = "ce_type"

MAX_PRODUCER_LENGTH: Final = 64
_PRODUCER = re.compile(rf"[!-~]{{1,{MAX_PRODUCER_LENGTH}}}")


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    """What to hand to ``AIOKafkaProducer.send`` (headers in the list form it expects)."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class DecodedRecord:
    """A record that can be scored."""

    event: ExperienceEventV1
    producer: str
    #: When ingest accepted the event, to millisecond precision, in UTC.
    received_at: datetime


def format_received_at(value: datetime) -> str:
    """RFC 3339 in UTC with exactly three fraction digits (truncated), e.g. ``...00.123Z``."""
    if value.utcoffset() is None:
        raise ValueError("received_at must be timezone-aware")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def encode_record(event: ExperienceEventV1, *, producer: str, received_at: datetime) -> KafkaRecord:
    """The record for ``event``; ``producer`` names the writer (e.g. ``ingest``)."""
    return encode_records([event], producer=producer, received_at=received_at)[0]


def encode_records(
    events: Sequence[ExperienceEventV1], *, producer: str, received_at: datetime
) -> list[KafkaRecord]:
    """The records for events received together: the shared headers are encoded once.

    This is ingest's hot path (a batch is up to thousands of events), so per-event work is
    kept to the value and the three routing headers.
    """
    if not _PRODUCER.fullmatch(producer):
        raise ValueError(
            f"producer must be 1 to {MAX_PRODUCER_LENGTH} printable ASCII characters without spaces"
        )
    shared = (
        (HEADER_CONTENT_TYPE, RECORD_CONTENT_TYPE.encode()),
        (HEADER_SCHEMA, SCHEMA_ID.encode()),
        (HEADER_PRODUCER, producer.encode()),
        (HEADER_RECEIVED_AT, format_received_at(received_at).encode()),
    )
    return [
        KafkaRecord(
            key=event.customer_id.encode(),
            value=event_to_json(event),
            headers=[
                *shared,
                (HEADER_CE_ID, event.event_id.encode()),
                (HEADER_CE_SOURCE, event.source.encode()),
                (HEADER_CE_TYPE, event.type.encode()),
            ],
        )
        for event in events
    ]


def decode_record(
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]],
) -> DecodedRecord:
    """Judge a consumed record; raises ``RecordRejected`` with the dead-letter reason.

    Checks run in this order, so the reason is the most basic thing wrong: producer, schema,
    headers, value present, value JSON, event valid, key, routing headers. When a header
    occurs more than once the last one counts (as Kafka's ``lastHeader``).
    """
    found: dict[str, bytes | None] = dict(headers)

    producer = _header_text(found, HEADER_PRODUCER)
    if not producer:
        raise RecordRejected(
            RejectReason.FOREIGN_PRODUCER,
            f"no {HEADER_PRODUCER} header: the record was not written by a Touchpulse producer",
        )
    schema = _header_text(found, HEADER_SCHEMA)
    content_type = _header_text(found, HEADER_CONTENT_TYPE)
    if schema != SCHEMA_ID or content_type != RECORD_CONTENT_TYPE:
        raise RecordRejected(
            RejectReason.UNKNOWN_SCHEMA,
            f"{HEADER_SCHEMA}={schema!r}, {HEADER_CONTENT_TYPE}={content_type!r};"
            f" this consumer reads {SCHEMA_ID} ({RECORD_CONTENT_TYPE})",
        )
    received_at = _parse_received_at(_header_text(found, HEADER_RECEIVED_AT))

    if value is None:
        raise RecordRejected(RejectReason.MISSING_VALUE, "the record has no value (a tombstone)")
    try:
        event = EVENT_ADAPTER.validate_json(value)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if any(error["type"] == "json_invalid" for error in errors):
            raise RecordRejected(
                RejectReason.NOT_JSON, f"the value is not JSON: {errors[0]['msg']}"
            ) from None
        raise RecordRejected(RejectReason.INVALID_EVENT, _summary(errors), errors) from None

    expected_key = event.customer_id.encode()
    if key != expected_key:
        raise RecordRejected(
            RejectReason.KEY_MISMATCH,
            f"key {key!r} is not the event's customer_id {event.customer_id!r}",
        )
    for header, expected in (
        (HEADER_CE_ID, event.event_id),
        (HEADER_CE_SOURCE, event.source),
        (HEADER_CE_TYPE, event.type),
    ):
        if header in found and found[header] != expected.encode():
            raise RecordRejected(
                RejectReason.BAD_HEADER,
                f"{header}={found[header]!r} disagrees with the value ({expected!r})",
            )
    return DecodedRecord(event=event, producer=producer, received_at=received_at)


def _header_text(found: dict[str, bytes | None], name: str) -> str | None:
    raw = found.get(name)
    if raw is None:
        return None
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return None


def _parse_received_at(text: str | None) -> datetime:
    parsed = _utc_or_none(text) if text is not None else None
    if parsed is None:
        raise RecordRejected(
            RejectReason.BAD_HEADER,
            f"{HEADER_RECEIVED_AT}={text!r} is not an RFC 3339 timestamp with an offset",
        )
    return parsed


def _utc_or_none(text: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text)
        utc = parsed.astimezone(UTC) if parsed.utcoffset() is not None else None
    except (ValueError, OverflowError):
        return None
    return utc


def _summary(errors: list[ErrorDetails], limit: int = 5) -> str:
    parts = [
        f"{'.'.join(str(part) for part in error['loc']) or '(value)'}: {error['msg']}"
        for error in errors[:limit]
    ]
    more = f" (+{len(errors) - limit} more)" if len(errors) > limit else ""
    return "invalid event: " + "; ".join(parts) + more

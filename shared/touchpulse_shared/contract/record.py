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
from datetime import UTC, datetime, timedelta
from typing import Final

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from touchpulse_shared.contract.errors import RecordRejected, RejectReason
from touchpulse_shared.contract.events import (
    EVENT_ADAPTER,
    SCHEMA_ID,
    ExperienceEventV1,
    check_time_window,
    event_to_json,
    format_rfc3339,
)

RECORD_CONTENT_TYPE: Final = "application/vnd.touchpulse.event.v1+json"

HEADER_CONTENT_TYPE: Final = "content-type"
HEADER_SCHEMA: Final = "touchpulse-schema"
HEADER_PRODUCER: Final = "touchpulse-producer"
HEADER_RECEIVED_AT: Final = "touchpulse-received-at"
HEADER_CE_ID: Final = "ce_id"
HEADER_CE_SOURCE: Final = "ce_source"
HEADER_CE_TYPE: Final = "ce_type"
#: The id of the ingest request that carried the event (its X-Request-ID), so one request
#: can be followed from ingest's logs into scoring's.
HEADER_REQUEST_ID: Final = "touchpulse-request-id"
MAX_REQUEST_ID_LENGTH: Final = 128
_REQUEST_ID = re.compile(rf"[!-~]{{1,{MAX_REQUEST_ID_LENGTH}}}")

#: The producer name ingest writes; its receipt time is the instant ingest judged the event at.
INGEST_PRODUCER: Final = "ingest"

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


def receipt_time(value: datetime) -> datetime:
    """``value`` in UTC truncated to the millisecond: exactly what ``touchpulse-received-at``
    carries, so the instant ingest judges an event's time window at is the one it stamps."""
    if value.utcoffset() is None:
        raise ValueError("received_at must be timezone-aware")
    utc = value.astimezone(UTC)
    return utc.replace(microsecond=utc.microsecond - utc.microsecond % 1000)


def window_anchor(decoded: DecodedRecord, timestamp_ms: int | None) -> datetime:
    """The instant a record's ``occurred_at`` is judged against (the time window).

    A time the record carries, never the reader's clock, so that a replay long after the
    fact judges each record exactly as live scoring did: the receipt time ingest stamped
    (the very instant ingest judged the event at) for records ingest wrote, the Kafka
    record timestamp for any other producer's (the broker bounds how far ahead of its clock
    a producer may date a record, ``log.message.timestamp.after.max.ms``), and the receipt
    time when a record has no timestamp.
    """
    if decoded.producer == INGEST_PRODUCER or timestamp_ms is None or timestamp_ms < 0:
        return decoded.received_at
    return datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC)


def check_record_time_window(
    decoded: DecodedRecord,
    timestamp_ms: int | None,
    *,
    max_future: timedelta,
    max_past: timedelta,
) -> str | None:
    """Ingest's time-window rule applied to a consumed record: why it violates it, or None.

    Besides ``occurred_at`` against the anchor (:func:`window_anchor`), a receipt time later
    than the record's own timestamp by more than ``max_future`` is refused: an event cannot
    be received after it was written, so such a header is forged or broken, and trusting it
    would let a record move its own window (a receipt time in 2999 for an event in 2999).
    """
    if timestamp_ms is not None and timestamp_ms >= 0:
        written = datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC)
        if decoded.received_at - written > max_future:
            return (
                f"{HEADER_RECEIVED_AT} {format_rfc3339(decoded.received_at)} is later than the"
                f" record's timestamp {format_rfc3339(written)}: an event cannot be received"
                " after it was written"
            )
    return check_time_window(
        decoded.event,
        now=window_anchor(decoded, timestamp_ms),
        max_future=max_future,
        max_past=max_past,
    )


def encode_record(event: ExperienceEventV1, *, producer: str, received_at: datetime) -> KafkaRecord:
    """The record for ``event``; ``producer`` names the writer (e.g. ``ingest``)."""
    return encode_records([event], producer=producer, received_at=received_at)[0]


def valid_request_id(value: str | None) -> str | None:
    """``value`` when it can serve as a request id (1 to 128 printable ASCII characters, no
    spaces: safe in a header and a log line), else None."""
    return value if value is not None and _REQUEST_ID.fullmatch(value) else None


def request_id_of(headers: Sequence[tuple[str, bytes | None]]) -> str | None:
    """The request id a record carries (the last such header), if it is a valid one."""
    found = None
    for name, value in headers:
        if name == HEADER_REQUEST_ID and value is not None:
            found = value
    if found is None:
        return None
    try:
        return valid_request_id(found.decode("ascii"))
    except UnicodeDecodeError:
        return None


def encode_records(
    events: Sequence[ExperienceEventV1],
    *,
    producer: str,
    received_at: datetime,
    request_id: str | None = None,
) -> list[KafkaRecord]:
    """The records for events received together: the shared headers are encoded once.

    This is ingest's hot path (a batch is up to thousands of events), so per-event work is
    kept to the value and the three routing headers.
    """
    if not _PRODUCER.fullmatch(producer):
        raise ValueError(
            f"producer must be 1 to {MAX_PRODUCER_LENGTH} printable ASCII characters without spaces"
        )
    shared: tuple[tuple[str, bytes], ...] = (
        (HEADER_CONTENT_TYPE, RECORD_CONTENT_TYPE.encode()),
        (HEADER_SCHEMA, SCHEMA_ID.encode()),
        (HEADER_PRODUCER, producer.encode()),
        (HEADER_RECEIVED_AT, format_received_at(received_at).encode()),
    )
    if request_id is not None:
        if valid_request_id(request_id) is None:
            raise ValueError("request_id must be 1 to 128 printable ASCII characters")
        shared = (*shared, (HEADER_REQUEST_ID, request_id.encode()))
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

    Checks run in this order, so the reason is the most basic thing wrong: header names,
    producer, schema, headers, value present, value JSON, event valid, key, routing
    headers. When a header occurs more than once the last one counts (as Kafka's
    ``lastHeader``). A detail names the header or field and the problem, never a value the
    record carries (a header's name is quoted, its value is not): details are listed to
    touchpoint teams, and must not keep a customer's id past their erasure (docs/api.md,
    "Erasure")."""
    for name, _ in headers:
        if not _is_utf8(name):
            # The consumer's fetcher keeps such a name's bytes as lone surrogates.
            raise RecordRejected(
                RejectReason.BAD_HEADER,
                f"a header name is not UTF-8: {name.encode('utf-8', 'surrogateescape')!r}",
            )
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
            f"{_names_of_wrong(schema != SCHEMA_ID, content_type != RECORD_CONTENT_TYPE)}"
            f" missing or not what this consumer reads: {SCHEMA_ID} ({RECORD_CONTENT_TYPE})",
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
            "the record has no key" if key is None else "the key is not the event's customer_id",
        )
    for header, expected in (
        (HEADER_CE_ID, event.event_id),
        (HEADER_CE_SOURCE, event.source),
        (HEADER_CE_TYPE, event.type),
    ):
        if header in found and found[header] != expected.encode():
            raise RecordRejected(
                RejectReason.BAD_HEADER,
                f"{header} disagrees with the value",
            )
    return DecodedRecord(event=event, producer=producer, received_at=received_at)


def _names_of_wrong(schema: bool, content_type: bool) -> str:
    if schema and content_type:
        return f"{HEADER_SCHEMA} and {HEADER_CONTENT_TYPE} are"
    return f"{HEADER_SCHEMA if schema else HEADER_CONTENT_TYPE} is"


def _is_utf8(name: str) -> bool:
    try:
        name.encode()
    except UnicodeEncodeError:
        return False
    return True


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
            f"{HEADER_RECEIVED_AT} is missing or not an RFC 3339 timestamp with an offset",
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

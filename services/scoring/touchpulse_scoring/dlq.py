"""Dead letters: records scoring cannot use, sent on with the reason and their origin.

A dead letter keeps the original key, value and headers untouched (so it can be replayed
once the cause is fixed) and adds headers saying why and where it came from. The one
exception: a header name that is not UTF-8 cannot be written again by this client, so its
undecodable bytes are written as ``\\xNN`` escapes.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson

from touchpulse_shared.contract import ExperienceEventV1, format_rfc3339
from touchpulse_shared.contract.events import (
    IDENTIFIER_PATTERN,
    MAX_CUSTOMER_ID_LENGTH,
    MAX_EVENT_ID_LENGTH,
    MAX_SOURCE_LENGTH,
    MAX_TYPE_LENGTH,
)
from touchpulse_shared.contract.record import HEADER_CE_ID, HEADER_CE_SOURCE, HEADER_CE_TYPE

HEADER_REASON = "touchpulse-dlq-reason"
HEADER_DETAIL = "touchpulse-dlq-detail"
HEADER_TOPIC = "touchpulse-dlq-topic"
HEADER_PARTITION = "touchpulse-dlq-partition"
HEADER_OFFSET = "touchpulse-dlq-offset"
HEADER_FAILED_AT = "touchpulse-dlq-failed-at"
#: A header (and the api's listing), not a log: keep the record small.
MAX_DETAIL = 1000


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]
    reason: str
    detail: str
    #: What the record says it is (:func:`origin`): whose dead letter it is, for the api.
    source: str | None = None
    event_id: str | None = None
    event_type: str | None = None
    #: When the record reached Touchpulse (the hour its dead letter is counted in).
    seen_at: datetime | None = None
    #: The customer the record is about (:func:`customer_named`): what erasure deletes the
    #: stored dead letter by, and what its detail never quotes (:func:`without_customer`).
    customer_id: str | None = None

    def record_headers(self, failed_at: datetime) -> list[tuple[str, bytes]]:
        added = [
            (HEADER_REASON, self.reason.encode()),
            (HEADER_DETAIL, self.detail[:MAX_DETAIL].encode("utf-8", "replace")),
            (HEADER_TOPIC, self.topic.encode()),
            (HEADER_PARTITION, str(self.partition).encode()),
            (HEADER_OFFSET, str(self.offset).encode()),
            (HEADER_FAILED_AT, format_rfc3339(failed_at).encode()),
        ]
        original = [
            (_printable_name(name), value)
            for name, value in self.headers
            if not name.startswith("touchpulse-dlq-")
        ]
        return original + added


_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)


def origin(
    headers: Sequence[tuple[str, bytes]], value: bytes | None, event: ExperienceEventV1 | None
) -> tuple[str | None, str | None, str | None]:
    """``(source, event_id, type)`` of a dead-lettered record, each ``None`` where unknown.

    The decoded event when there is one; else what ingest stamps on every record (the
    ``ce_`` headers), else the value's own fields when it is a JSON object. Only values that
    pass the contract's identifier rules are taken, so a broken record cannot attribute its
    dead letter to a made-up name of any length; a record naming no usable source is listed
    to admin keys alone.
    """
    if event is not None:
        return event.source, event.event_id, event.type
    found = dict(headers)
    fields: dict[str, object] = {}
    if value is not None and value[:1] == b"{":
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            fields = parsed
    return (
        _named(found.get(HEADER_CE_SOURCE), fields.get("source"), MAX_SOURCE_LENGTH),
        _named(found.get(HEADER_CE_ID), fields.get("event_id"), MAX_EVENT_ID_LENGTH),
        _named(found.get(HEADER_CE_TYPE), fields.get("type"), MAX_TYPE_LENGTH),
    )


def customer_named(
    key: bytes | None, value: bytes | None, event: ExperienceEventV1 | None
) -> str | None:
    """The customer a dead-lettered record is about, ``None`` where it names none usable.

    The decoded event's; else the value's ``customer_id`` when it is a JSON object; else
    the key, which ingest sets to the customer id. Only an id the contract would accept is
    taken: erasure matches on it exactly, and anything else names no customer it could erase.
    """
    if event is not None:
        return event.customer_id
    field: object = None
    if value is not None and value[:1] == b"{":
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            field = parsed.get("customer_id")
    return _named(key, field, MAX_CUSTOMER_ID_LENGTH, field_first=True)


#: What a detail says in place of a customer id it would have quoted.
CUSTOMER_PLACEHOLDER = "<customer_id>"


def without_customer(detail: str, customer_id: str | None, key: bytes | None) -> str:
    """``detail`` with every quotation (``repr``) of the customer id and of the record's key
    replaced: a stored dead letter must not keep an id that erasure cannot find it by.

    Details quote values as Python reprs (``'C-1'``, ``b'C-1'``); replacing the repr rather
    than the bare text leaves a short id inside ordinary words alone.
    """
    quoted: set[str] = set()
    if customer_id:
        quoted.add(repr(customer_id))
    if key:
        quoted.add(repr(key))
        with contextlib.suppress(UnicodeDecodeError):
            quoted.add(repr(key.decode()))
    # Longest first: b'C-1' is replaced whole before 'C-1' could be found inside it.
    for text in sorted(quoted, key=len, reverse=True):
        detail = detail.replace(text, CUSTOMER_PLACEHOLDER)
    return detail


def _named(
    header: bytes | None, field: object, limit: int, *, field_first: bool = False
) -> str | None:
    candidates: list[object] = []
    if header is not None:
        with contextlib.suppress(UnicodeDecodeError):
            candidates.append(header.decode())
    if field_first:
        candidates.insert(0, field)
    else:
        candidates.append(field)
    for candidate in candidates:
        if (
            isinstance(candidate, str)
            and 0 < len(candidate) <= limit
            and _IDENTIFIER.fullmatch(candidate) is not None
            and candidate.isprintable()
        ):
            return candidate
    return None


def _printable_name(name: str) -> str:
    """A header name as it can be written again: a name that was not UTF-8 (its bytes kept
    as lone surrogates by the fetcher) gets its undecodable bytes as ``\\xNN`` escapes."""
    try:
        name.encode()
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return name

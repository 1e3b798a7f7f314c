"""CRM profiles as Kafka records on the compacted ``customer.profiles.v1`` topic.

The api writes each profile upsert to ``kafka_outbox`` in the transaction that changes
``customer_profile`` (and erasure a tombstone, a null value), so the topic holds, per
customer, the latest profile Touchpulse received: the record scoring's replay rebuilds
``customer_profile`` from before it replays the events. Live scoring keeps reading the
table (see docs/scoring.md, "Replay"). A wire format written by one service and read by
another, so it lives in the shared contract.

The value is a small versioned JSON document::

    {"v": 1, "customer_id": "C-1", "segment": "premium", "customer_since": "2026-01-31",
     "value": 3.0, "reach": 40.0, "updated_at": "2026-03-01T12:00:00.123456Z"}

``updated_at`` is the database's clock when the profile was written (under the customer's
lock), comparable with ``processed_event.processed_at``. A reader accepts a version it
knows and refuses any other, rather than guessing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import orjson

from touchpulse_shared.db.outbox import OutboxRow, outbox_row

VERSION = 1
CONTENT_TYPE = b"application/json"


class ProfileRecordError(ValueError):
    """A record on the profiles topic that is not a profile this version can read."""


@dataclass(frozen=True, slots=True)
class ProfileRecord:
    customer_id: str
    segment: str
    customer_since: date | None
    value: float
    reach: float
    updated_at: datetime


def encode(profile: ProfileRecord) -> bytes:
    return orjson.dumps(
        {
            "v": VERSION,
            "customer_id": profile.customer_id,
            "segment": profile.segment,
            "customer_since": None
            if profile.customer_since is None
            else profile.customer_since.isoformat(),
            "value": profile.value,
            "reach": profile.reach,
            "updated_at": profile.updated_at.astimezone(UTC)
            .isoformat(timespec="microseconds")
            .replace("+00:00", "Z"),
        }
    )


def decode(key: bytes | None, value: bytes) -> ProfileRecord:
    """The profile in a (non-tombstone) record; :class:`ProfileRecordError` if unreadable."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise ProfileRecordError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("v") != VERSION:
        raise ProfileRecordError(f"not a version {VERSION} profile document")
    try:
        record = ProfileRecord(
            customer_id=_text(doc, "customer_id"),
            segment=_text(doc, "segment"),
            customer_since=None
            if doc.get("customer_since") is None
            else date.fromisoformat(_text(doc, "customer_since")),
            value=_number(doc, "value"),
            reach=_number(doc, "reach"),
            updated_at=datetime.fromisoformat(_text(doc, "updated_at")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ProfileRecordError(f"bad field: {exc}") from None
    if record.updated_at.tzinfo is None:
        raise ProfileRecordError("updated_at has no time zone")
    if key is not None and key != record.customer_id.encode():
        raise ProfileRecordError("the record's key is not its customer_id")
    return record


def from_row(row: Mapping[str, Any] | asyncpg.Record) -> ProfileRecord:
    """A ``customer_profile`` row as a record."""
    return ProfileRecord(
        customer_id=row["customer_id"],
        segment=row["segment"],
        customer_since=row["customer_since"],
        value=row["value"],
        reach=row["reach"],
        updated_at=row["updated_at"],
    )


def profile_outbox_row(topic: str, profile: ProfileRecord) -> OutboxRow:
    return outbox_row(
        topic, profile.customer_id.encode(), encode(profile), [("content-type", CONTENT_TYPE)]
    )


def tombstone_outbox_row(topic: str, customer_id: str) -> OutboxRow:
    return outbox_row(topic, customer_id.encode(), None)


def _text(doc: Mapping[str, Any], name: str) -> str:
    value = doc[name]
    if not isinstance(value, str) or not value:
        raise TypeError(f"{name} is not a non-empty string")
    return value


def _number(doc: Mapping[str, Any], name: str) -> float:
    value = doc[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeError(f"{name} is not a finite number")
    if value < 0:
        raise ValueError(f"{name} is negative")
    return float(value)

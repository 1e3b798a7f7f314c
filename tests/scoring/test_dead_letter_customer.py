"""Which customer a dead letter is about (what erasure deletes it by), and details that
never quote the values a record carries."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from touchpulse_scoring.dlq import CUSTOMER_PLACEHOLDER, customer_named, without_customer
from touchpulse_shared.contract import EVENT_ADAPTER, RecordRejected, decode_record, encode_record

MARK = "zz-secret-9"
NOW = datetime(2026, 12, 5, 10, tzinfo=UTC)


def good() -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    event = EVENT_ADAPTER.validate_python(
        {
            "event_id": "e-1",
            "source": "billing-prod",
            "customer_id": MARK,
            "touchpoint": "call_centre",
            "type": "call.answered",
            "occurred_at": NOW.isoformat(),
            "measures": {"wait_seconds": 20},
        }
    )
    record = encode_record(event, producer="ingest", received_at=NOW)
    return record.key, record.value, record.headers


def test_the_customer_is_the_events_else_the_values_field_else_the_key() -> None:
    key, value, _ = good()
    event = EVENT_ADAPTER.validate_json(value)
    assert customer_named(b"other", value, event) == MARK
    broken = orjson.loads(value)
    broken["measures"] = "x"
    assert customer_named(b"other", orjson.dumps(broken), None) == MARK
    assert customer_named(key, b"{not json", None) == MARK
    assert customer_named(None, b"\x00\xff", None) is None
    # Only an id the contract accepts: anything else names no customer erasure could find.
    assert customer_named(b"a b", b"{not json", None) is None
    assert customer_named(b"\xff\xfe", b'{"customer_id": 7}', None) is None
    assert customer_named(b"k" * 129, None, None) is None
    assert customer_named(b"ok-key", b'{"customer_id": "has space"}', None) == "ok-key"


def test_a_quoted_customer_id_or_key_is_replaced_and_nothing_else() -> None:
    detail = f"key {b'k-1'!r} and {'k-1'!r} and {MARK!r}; the word k-1 and {MARK}x stay"
    assert without_customer(detail, MARK, b"k-1") == (
        f"key {CUSTOMER_PLACEHOLDER} and {CUSTOMER_PLACEHOLDER} and {CUSTOMER_PLACEHOLDER};"
        f" the word k-1 and {MARK}x stay"
    )
    assert without_customer("plain", None, None) == "plain"


def _swap(headers: list[tuple[str, bytes]], name: str, value: bytes) -> list[tuple[str, bytes]]:
    return [(n, value if n == name else v) for n, v in headers]


@pytest.mark.parametrize(
    "case",
    ["key", "ce_id", "ce_source", "received_at", "schema", "content_type"],
)
def test_a_rejected_records_detail_quotes_none_of_its_values(case: str) -> None:
    key, value, headers = good()
    marked = MARK.encode()
    if case == "key":
        key = marked + b"-other"
    elif case == "ce_id":
        headers = _swap(headers, "ce_id", marked)
    elif case == "ce_source":
        headers = _swap(headers, "ce_source", marked)
    elif case == "received_at":
        headers = _swap(headers, "touchpulse-received-at", marked)
    elif case == "schema":
        headers = _swap(headers, "touchpulse-schema", marked)
    else:
        headers = _swap(headers, "content-type", marked)
    with pytest.raises(RecordRejected) as caught:
        decode_record(key, value, headers)
    assert MARK not in caught.value.detail

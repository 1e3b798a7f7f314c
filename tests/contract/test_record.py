"""The Kafka record format: encoding, decoding and the dead-letter reasons."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.contract.test_events import aware_datetimes, events, valid_event
from touchpulse_scoring.dlq import DeadLetter
from touchpulse_shared.contract import (
    RECORD_CONTENT_TYPE,
    SCHEMA_ID,
    DecodedRecord,
    ExperienceEventV1,
    KafkaRecord,
    RecordRejected,
    RejectReason,
    check_record_time_window,
    decode_record,
    encode_record,
    event_to_json,
    receipt_time,
    window_anchor,
)
from touchpulse_shared.contract.record import format_received_at

RECEIVED_AT = datetime(2024, 5, 1, 12, 30, 1, 123456, tzinfo=UTC)
EVENT = ExperienceEventV1.model_validate(valid_event())


def record(header_changes: dict[str, bytes | None] | None = None) -> KafkaRecord:
    """The example record with headers replaced (``None`` removes a header)."""
    encoded = encode_record(EVENT, producer="ingest", received_at=RECEIVED_AT)
    headers = dict(encoded.headers)
    for name, value in (header_changes or {}).items():
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    return KafkaRecord(encoded.key, encoded.value, list(headers.items()))


def rejection(
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, bytes | None]] | list[tuple[str, bytes]],
) -> RecordRejected:
    with pytest.raises(RecordRejected) as caught:
        decode_record(key, value, headers)
    return caught.value


# -- encoding ------------------------------------------------------------------------------------


@given(events, aware_datetimes, st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True))
def test_record_round_trip(event: ExperienceEventV1, received_at: datetime, producer: str) -> None:
    encoded = encode_record(event, producer=producer, received_at=received_at)
    decoded = decode_record(encoded.key, encoded.value, encoded.headers)
    assert decoded.event == event
    assert decoded.producer == producer
    assert decoded.received_at.tzinfo is UTC
    assert decoded.received_at <= received_at < decoded.received_at + timedelta(milliseconds=1)


@given(events)
def test_key_and_value(event: ExperienceEventV1) -> None:
    encoded = encode_record(event, producer="ingest", received_at=RECEIVED_AT)
    assert encoded.key == event.customer_id.encode("utf-8")
    assert encoded.value == event_to_json(event)


def test_headers() -> None:
    encoded = encode_record(EVENT, producer="ingest", received_at=RECEIVED_AT)
    assert isinstance(encoded.headers, list)
    assert encoded.headers == [
        ("content-type", b"application/vnd.touchpulse.event.v1+json"),
        ("touchpulse-schema", b"touchpulse.event.v1"),
        ("touchpulse-producer", b"ingest"),
        ("touchpulse-received-at", b"2024-05-01T12:30:01.123Z"),
        ("ce_id", EVENT.event_id.encode()),
        ("ce_source", EVENT.source.encode()),
        ("ce_type", b"call.answered"),
    ]
    # Without ce_specversion, CloudEvents SDKs do not mistake the record for a CloudEvent.
    assert "ce_specversion" not in dict(encoded.headers)
    assert RECORD_CONTENT_TYPE == "application/vnd.touchpulse.event.v1+json"
    assert SCHEMA_ID == "touchpulse.event.v1"


def test_value_is_self_contained() -> None:
    encoded = encode_record(EVENT, producer="ingest", received_at=RECEIVED_AT)
    assert ExperienceEventV1.model_validate_json(encoded.value) == EVENT


def test_non_ascii_identifiers_travel_as_utf8() -> None:
    event = EVENT.model_copy(update={"customer_id": "kunde-ø", "source": "/fakturering/ø"})
    encoded = encode_record(event, producer="ingest", received_at=RECEIVED_AT)
    assert encoded.key == "kunde-ø".encode()
    assert dict(encoded.headers)["ce_source"] == "/fakturering/ø".encode()
    assert decode_record(encoded.key, encoded.value, encoded.headers).event == event


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2024, 5, 1, 12, 30, tzinfo=UTC), "2024-05-01T12:30:00.000Z"),
        (datetime(2024, 5, 1, 14, 30, 0, 999999, tzinfo=timezone(timedelta(hours=2))), None),
        (datetime(999, 1, 1, tzinfo=UTC), "0999-01-01T00:00:00.000Z"),
    ],
)
def test_format_received_at(moment: datetime, expected: str | None) -> None:
    assert format_received_at(moment) == (expected or "2024-05-01T12:30:00.999Z")


def test_encode_rejects_a_naive_received_at() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        encode_record(EVENT, producer="ingest", received_at=datetime(2024, 5, 1))  # noqa: DTZ001


@pytest.mark.parametrize("producer", ["", "in gest", "x" * 65, "ingest\n"])
def test_encode_rejects_bad_producer_names(producer: str) -> None:
    with pytest.raises(ValueError, match="producer"):
        encode_record(EVENT, producer=producer, received_at=RECEIVED_AT)


# -- decoding: reasons ---------------------------------------------------------------------------


def test_missing_producer_header_is_a_foreign_producer() -> None:
    encoded = record({"touchpulse-producer": None})
    assert rejection(encoded.key, encoded.value, encoded.headers).reason is (
        RejectReason.FOREIGN_PRODUCER
    )


def test_a_record_with_no_headers_is_foreign_even_if_its_value_is_an_event() -> None:
    assert rejection(EVENT.customer_id.encode(), event_to_json(EVENT), []).reason is (
        RejectReason.FOREIGN_PRODUCER
    )


@pytest.mark.parametrize("value", [b"", b"\xff\xfe", None])
def test_unreadable_producer_header_is_a_foreign_producer(value: bytes | None) -> None:
    encoded = record()
    headers: list[tuple[str, bytes | None]] = [
        (name, value if name == "touchpulse-producer" else raw) for name, raw in encoded.headers
    ]
    assert rejection(encoded.key, encoded.value, headers).reason is RejectReason.FOREIGN_PRODUCER


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"touchpulse-schema": b"touchpulse.event.v2"}, id="v2"),
        pytest.param({"touchpulse-schema": None}, id="no-schema"),
        pytest.param({"content-type": b"application/json"}, id="plain-json"),
        pytest.param({"content-type": None}, id="no-content-type"),
    ],
)
def test_unknown_schema(changes: dict[str, bytes | None]) -> None:
    encoded = record(changes)
    rejected = rejection(encoded.key, encoded.value, encoded.headers)
    assert rejected.reason is RejectReason.UNKNOWN_SCHEMA
    assert "touchpulse.event.v1" in rejected.detail


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"touchpulse-received-at": None}, id="missing-received-at"),
        pytest.param({"touchpulse-received-at": b"yesterday"}, id="garbled-received-at"),
        pytest.param({"touchpulse-received-at": b"2024-05-01T12:30:00"}, id="naive-received-at"),
        pytest.param({"ce_id": b"another-id"}, id="ce-id-mismatch"),
        pytest.param({"ce_source": b"another-source"}, id="ce-source-mismatch"),
        pytest.param({"ce_type": b"call.dropped"}, id="ce-type-mismatch"),
    ],
)
def test_bad_headers(changes: dict[str, bytes | None]) -> None:
    encoded = record(changes)
    assert rejection(encoded.key, encoded.value, encoded.headers).reason is RejectReason.BAD_HEADER


def test_routing_headers_are_optional() -> None:
    encoded = record({"ce_id": None, "ce_source": None, "ce_type": None})
    assert decode_record(encoded.key, encoded.value, encoded.headers).event == EVENT


def test_tombstone_is_a_missing_value() -> None:
    encoded = record()
    assert rejection(encoded.key, None, encoded.headers).reason is RejectReason.MISSING_VALUE


@pytest.mark.parametrize("value", [b"", b"not json", b"{", b"\xff"])
def test_value_that_is_not_json(value: bytes) -> None:
    encoded = record()
    assert rejection(encoded.key, value, encoded.headers).reason is RejectReason.NOT_JSON


def test_invalid_event_carries_the_field_errors() -> None:
    encoded = record()
    value = orjson.dumps(valid_event(touchpoint="Call Centre", occurred_at="2024-05-01T12:30:00"))
    rejected = rejection(encoded.key, value, encoded.headers)
    assert rejected.reason is RejectReason.INVALID_EVENT
    assert rejected.errors is not None
    assert [(e["loc"], e["type"]) for e in rejected.errors] == [
        (("touchpoint",), "slug_format"),
        (("occurred_at",), "timezone_aware"),
    ]
    assert "touchpoint" in rejected.detail
    assert str(rejected).startswith("invalid_event: ")


def test_json_that_is_not_an_event_object_is_an_invalid_event() -> None:
    encoded = record()
    rejected = rejection(encoded.key, b"[1, 2]", encoded.headers)
    assert rejected.reason is RejectReason.INVALID_EVENT


@pytest.mark.parametrize("key", [None, b"", b"C-999", b"C-104233 "])
def test_key_must_be_the_customer_id(key: bytes | None) -> None:
    encoded = record()
    assert rejection(key, encoded.value, encoded.headers).reason is RejectReason.KEY_MISMATCH


def test_the_most_basic_problem_is_reported() -> None:
    # A foreign record with a garbage value and no key is foreign first of all.
    assert rejection(None, b"garbage", [("content-type", b"text/plain")]).reason is (
        RejectReason.FOREIGN_PRODUCER
    )
    encoded = record({"touchpulse-schema": b"touchpulse.event.v2"})
    assert rejection(None, b"garbage", encoded.headers).reason is RejectReason.UNKNOWN_SCHEMA


def test_the_last_header_of_a_name_counts() -> None:
    encoded = record()
    headers = [("touchpulse-schema", b"touchpulse.event.v0"), *encoded.headers]
    assert decode_record(encoded.key, encoded.value, headers).event == EVENT
    headers = [*encoded.headers, ("touchpulse-schema", b"touchpulse.event.v0")]
    assert rejection(encoded.key, encoded.value, headers).reason is RejectReason.UNKNOWN_SCHEMA


def test_reasons_are_stable_strings() -> None:
    # They become dead-letter headers and metric labels; renaming one breaks dashboards.
    assert {reason.value for reason in RejectReason} == {
        "foreign_producer",
        "unknown_schema",
        "bad_header",
        "missing_value",
        "not_json",
        "invalid_event",
        "key_mismatch",
    }


# -- header names that are not UTF-8, and the time window's twin ---------------------------------


def test_a_header_name_that_is_not_utf8_is_a_bad_header() -> None:
    # The consumer's fetcher keeps such a name's bytes as lone surrogates.
    encoded = record()
    name = b"x-\xff".decode("utf-8", "surrogateescape")
    caught = rejection(encoded.key, encoded.value, [*encoded.headers, (name, b"v")])
    assert caught.reason is RejectReason.BAD_HEADER
    assert "b'x-\\xff'" in caught.detail


def test_a_dead_letter_escapes_a_header_name_that_is_not_utf8() -> None:
    name = b"x-\xff\xfe".decode("utf-8", "surrogateescape")
    dead = DeadLetter("t", 0, 1, b"k", b"v", [(name, b"\xff"), ("ok", b"1")], "bad_header", "d")
    headers = dead.record_headers(RECEIVED_AT)
    assert headers[:2] == [("x-\\xff\\xfe", b"\xff"), ("ok", b"1")]
    assert all(n.encode() for n, _ in headers)  # every name can be written again


def test_receipt_time_is_what_the_header_carries() -> None:
    stamped = receipt_time(RECEIVED_AT)
    assert stamped == datetime(2024, 5, 1, 12, 30, 1, 123000, tzinfo=UTC)
    decoded = decode_record(*_parts(encode_record(EVENT, producer="ingest", received_at=stamped)))
    assert decoded.received_at == stamped


def _parts(encoded: KafkaRecord) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    return encoded.key, encoded.value, encoded.headers


WINDOW = {"max_future": timedelta(minutes=15), "max_past": timedelta(days=90)}


def _decoded(occurred_at: datetime, producer: str, received_at: datetime) -> DecodedRecord:
    event = EVENT.model_copy(update={"occurred_at": occurred_at})
    return decode_record(*_parts(encode_record(event, producer=producer, received_at=received_at)))


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def test_ingest_records_are_judged_at_their_receipt_time_whenever_they_are_read() -> None:
    # Accepted by ingest at the edge of the window: the same verdict, read at any time.
    stamped = receipt_time(RECEIVED_AT)  # what ingest judged at and stamped
    edge = _decoded(stamped - WINDOW["max_past"], "ingest", stamped)
    written = _ms(stamped + timedelta(milliseconds=3))
    assert window_anchor(edge, written) == stamped
    assert check_record_time_window(edge, written, **WINDOW) is None
    year_2999 = datetime(2999, 1, 1, tzinfo=UTC)
    message = check_record_time_window(
        _decoded(year_2999, "ingest", RECEIVED_AT), written, **WINDOW
    )
    assert message is not None
    assert "in the future" in message


def test_other_producers_are_judged_at_the_record_timestamp() -> None:
    written = RECEIVED_AT - timedelta(days=100)
    decoded = _decoded(written - timedelta(hours=1), "backfill", RECEIVED_AT - timedelta(days=100))
    assert window_anchor(decoded, _ms(written)) == written.replace(microsecond=123000)
    assert check_record_time_window(decoded, _ms(written), **WINDOW) is None
    # No timestamp on the record (-1): the receipt time.
    assert window_anchor(decoded, -1) == decoded.received_at


def test_a_receipt_time_later_than_the_record_is_refused() -> None:
    year_2999 = datetime(2999, 1, 1, tzinfo=UTC)
    forged = _decoded(year_2999, "ingest", year_2999)
    message = check_record_time_window(forged, _ms(RECEIVED_AT), **WINDOW)
    assert message is not None
    assert "cannot be received after it was written" in message

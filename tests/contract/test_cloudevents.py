"""CloudEvents 1.0 mapping: structured, binary and batch content modes."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.contract.test_events import error_summary, events
from touchpulse_shared.contract import (
    CONTENT_TYPE_JSON,
    DATASCHEMA,
    CloudEventV1,
    ExperienceEventV1,
    InvalidBatch,
    ItemError,
    event_to_json,
    from_batch,
    from_binary,
    from_structured,
    is_json_content_type,
    media_type,
    parse_structured,
    to_batch,
    to_binary,
    to_structured,
    to_structured_json,
)
from touchpulse_shared.contract.cloudevents import (
    EXAMPLE_CLOUDEVENT,
    EXTENSION_ATTRIBUTES,
    decode_header_value,
    encode_header_value,
)


def cloudevent(**changes: Any) -> dict[str, Any]:
    """The documented example with some attributes changed (``None`` removes one)."""
    document = {**EXAMPLE_CLOUDEVENT, **changes}
    return {name: value for name, value in document.items() if value is not None}


def structured_errors(document: Any) -> list[tuple[tuple[int | str, ...], str]]:
    with pytest.raises(ValidationError) as caught:
        from_structured(document)
    return error_summary(caught.value)


def binary_errors(headers: dict[str, str], body: bytes) -> list[tuple[tuple[int | str, ...], str]]:
    with pytest.raises(ValidationError) as caught:
        from_binary(headers, body)
    return error_summary(caught.value)


def example_binary() -> tuple[dict[str, str], bytes]:
    return to_binary(from_structured(EXAMPLE_CLOUDEVENT))


# -- round trips ---------------------------------------------------------------------------------


@given(events)
def test_structured_round_trip(event: ExperienceEventV1) -> None:
    assert from_structured(to_structured(event)) == event
    assert parse_structured(to_structured_json(event)) == event
    assert orjson.loads(to_structured_json(event)) == to_structured(event)


@given(events)
def test_binary_round_trip(event: ExperienceEventV1) -> None:
    headers, body = to_binary(event)
    assert all(" " < ch <= "~" for value in headers.values() for ch in value)
    assert from_binary(headers, body) == event


@given(st.lists(events, max_size=5))
def test_batch_round_trip(batch: list[ExperienceEventV1]) -> None:
    assert from_batch(to_batch(batch)) == batch


@given(events)
def test_every_mode_carries_the_same_event(event: ExperienceEventV1) -> None:
    via_structured = from_structured(to_structured(event))
    via_binary = from_binary(*to_binary(via_structured))
    [via_batch] = from_batch(to_batch([via_binary]))
    assert isinstance(via_batch, ExperienceEventV1)
    assert event_to_json(via_batch) == event_to_json(event)


def test_structured_output_mapping() -> None:
    event = from_structured(EXAMPLE_CLOUDEVENT)
    document = to_structured(event)
    assert document["specversion"] == "1.0"
    assert document["id"] == event.event_id
    assert document["source"] == event.source
    assert document["type"] == event.type
    assert document["time"] == "2024-05-01T12:30:00Z"
    assert document["customerid"] == event.customer_id
    assert document["touchpoint"] == event.touchpoint
    assert document["journeyid"] == event.journey_id
    assert document["datacontenttype"] == CONTENT_TYPE_JSON
    assert document["dataschema"] == DATASCHEMA
    assert document["data"] == {"measures": event.measures, "attributes": event.attributes}
    without_journey = event.model_copy(update={"journey_id": None})
    assert "journeyid" not in to_structured(without_journey)


def test_binary_output_headers() -> None:
    headers, body = example_binary()
    assert headers == {
        "ce-specversion": "1.0",
        "ce-id": EXAMPLE_CLOUDEVENT["id"],
        "ce-source": EXAMPLE_CLOUDEVENT["source"],
        "ce-type": "call.answered",
        "ce-time": "2024-05-01T12:30:00Z",
        "ce-customerid": "C-104233",
        "ce-touchpoint": "call_centre",
        "ce-journeyid": "case-88172",
        "ce-dataschema": DATASCHEMA,
        "content-type": "application/json",
    }
    assert orjson.loads(body) == {
        "measures": {"wait_seconds": 312.0, "first_contact_resolution": False},
        "attributes": {"queue": "billing"},
    }


def test_extension_names_follow_the_cloudevents_naming_rule() -> None:
    for name in EXTENSION_ATTRIBUTES:
        assert name.isascii()
        assert name.isalnum()
        assert name.islower()
        assert len(name) <= 20


def test_dataschema_constant_matches_the_model() -> None:
    assert CloudEventV1.model_json_schema()["properties"]["dataschema"]["anyOf"][0] == {
        "const": DATASCHEMA,
        "type": "string",
    }


# -- structured mode: what is accepted -------------------------------------------------------


def test_optional_attributes_may_be_absent() -> None:
    event = from_structured(
        cloudevent(datacontenttype=None, dataschema=None, journeyid=None, data=None)
    )
    assert event.journey_id is None
    assert event.measures == {}
    assert event.attributes == {}


def test_subject_is_accepted_and_ignored() -> None:
    event = from_structured(cloudevent(subject="order/42"))
    assert event == from_structured(EXAMPLE_CLOUDEVENT)


@pytest.mark.parametrize(
    "content_type", ["application/json", "Application/JSON", "application/json; charset=utf-8"]
)
def test_json_datacontenttype_variants_are_accepted(content_type: str) -> None:
    from_structured(cloudevent(datacontenttype=content_type))


def test_structured_time_is_normalised_to_utc() -> None:
    event = from_structured(cloudevent(time="2024-05-01T14:30:00+02:00"))
    assert to_structured(event)["time"] == "2024-05-01T12:30:00Z"


def test_bools_stay_bools_in_cloudevent_data() -> None:
    event = parse_structured(
        orjson.dumps(cloudevent(data={"measures": {"ok": True, "n": 1}, "attributes": {"b": True}}))
    )
    assert event.measures == {"ok": True, "n": 1.0}
    assert event.measures["ok"] is True
    assert event.attributes["b"] is True


# -- structured mode: errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param({"specversion": "0.3"}, (("specversion",), "literal_error"), id="specver"),
        pytest.param({"specversion": None}, (("specversion",), "missing"), id="no-specversion"),
        pytest.param({"specversion": 1.0}, (("specversion",), "literal_error"), id="specver-num"),
        pytest.param({"id": None}, (("id",), "missing"), id="no-id"),
        pytest.param({"id": ""}, (("id",), "identifier_format"), id="empty-id"),
        pytest.param({"time": None}, (("time",), "missing"), id="no-time"),
        pytest.param(
            {"time": "2024-05-01T12:30:00"}, (("time",), "timezone_aware"), id="naive-time"
        ),
        pytest.param({"customerid": None}, (("customerid",), "missing"), id="no-customerid"),
        pytest.param(
            {"customerid": "a b"}, (("customerid",), "identifier_format"), id="bad-customerid"
        ),
        pytest.param(
            {"customerid": 104233}, (("customerid",), "identifier_format"), id="numeric-customer"
        ),
        pytest.param({"touchpoint": "Web Site"}, (("touchpoint",), "slug_format"), id="slug"),
        pytest.param({"type": "CallAnswered"}, (("type",), "event_type_format"), id="type"),
        pytest.param({"priority": "high"}, (("priority",), "extra_forbidden"), id="unknown-ext"),
        pytest.param(
            {"customer_id": "C-1"}, (("customer_id",), "extra_forbidden"), id="native-name"
        ),
        pytest.param(
            {"data_base64": "e30="}, (("data_base64",), "extra_forbidden"), id="data-base64"
        ),
        pytest.param(
            {"datacontenttype": "text/plain"},
            (("datacontenttype",), "unsupported_datacontenttype"),
            id="text-plain",
        ),
        pytest.param(
            {"datacontenttype": "application/json; charset=latin-1"},
            (("datacontenttype",), "unsupported_datacontenttype"),
            id="latin-1",
        ),
        pytest.param(
            {"dataschema": "https://example.com/other.json"},
            (("dataschema",), "literal_error"),
            id="other-dataschema",
        ),
        pytest.param({"data": "text"}, (("data",), "model_type"), id="data-string"),
        pytest.param(
            {"data": {"measures": {}, "extra": 1}},
            (("data", "extra"), "extra_forbidden"),
            id="data-extra",
        ),
        pytest.param(
            {"data": {"measures": {"wait_seconds": "slow"}}},
            (("data", "measures", "wait_seconds"), "measure_value"),
            id="measure",
        ),
        pytest.param(
            {"data": {"measures": {f"m{i}": 1 for i in range(33)}}},
            (("data", "measures"), "too_long"),
            id="too-many-measures",
        ),
    ],
)
def test_structured_errors_name_the_cloudevents_attribute(
    changes: dict[str, Any], expected: tuple[tuple[str, ...], str]
) -> None:
    document = cloudevent(**changes)
    assert structured_errors(document) == [expected]
    with pytest.raises(ValidationError) as caught:
        parse_structured(orjson.dumps(document))
    assert error_summary(caught.value) == [expected]


def test_structured_nan_in_data_points_at_the_measure() -> None:
    body = orjson.dumps(cloudevent(data={"measures": {"wait_seconds": 0}})).replace(
        b'"wait_seconds":0', b'"wait_seconds":NaN'
    )
    with pytest.raises(ValidationError) as caught:
        parse_structured(body)
    assert error_summary(caught.value) == [(("data", "measures", "wait_seconds"), "measure_value")]


@pytest.mark.parametrize("body", [b"", b"<event/>", b"{"])
def test_structured_body_that_is_not_json(body: bytes) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_structured(body)
    assert error_summary(caught.value) == [((), "json_invalid")]


def test_structured_body_that_is_not_an_object() -> None:
    assert structured_errors([EXAMPLE_CLOUDEVENT]) == [((), "model_type")]


# -- binary mode ---------------------------------------------------------------------------------


def test_binary_header_names_are_case_insensitive() -> None:
    headers, body = example_binary()
    shouting = {name.upper(): value for name, value in headers.items()}
    mixed = {name.title(): value for name, value in headers.items()}
    assert from_binary(shouting, body) == from_binary(mixed, body) == from_binary(headers, body)


def test_binary_ignores_other_headers_and_accepts_a_charset() -> None:
    headers, body = example_binary()
    headers |= {
        "authorization": "Bearer x",
        "x-request-id": "1",
        "content-type": "application/json; charset=utf-8",
    }
    assert from_binary(headers, body) == from_structured(EXAMPLE_CLOUDEVENT)


def test_binary_without_content_type_or_body() -> None:
    headers, _ = example_binary()
    del headers["content-type"]
    event = from_binary(headers, b"")
    assert event.measures == {}
    assert event.attributes == {}


def test_binary_header_values_are_percent_decoded() -> None:
    headers, body = example_binary()
    headers["ce-customerid"] = "kunde-%C3%B8%25x"
    headers["ce-source"] = "%2fbilling%2Fprod"  # lower-case hex must be accepted
    event = from_binary(headers, body)
    assert event.customer_id == "kunde-ø%x"
    assert event.source == "/billing/prod"


def test_binary_accepts_quoted_header_values() -> None:
    headers, body = example_binary()
    headers["ce-source"] = '"/billing/\\"prod\\""'
    assert from_binary(headers, body).source == '/billing/"prod"'


@pytest.mark.parametrize(
    ("value", "error_type"),
    [
        pytest.param("%C0%A0", "header_encoding", id="overlong-utf8"),
        pytest.param("%FF", "header_encoding", id="invalid-utf8"),
        pytest.param("100%", "header_encoding", id="stray-percent"),
        pytest.param("%zz", "header_encoding", id="bad-escape"),
        pytest.param("kunde-ø", "header_encoding", id="raw-non-ascii"),
        pytest.param("a%20b", "identifier_format", id="decodes-to-whitespace"),
    ],
)
def test_binary_bad_header_values(value: str, error_type: str) -> None:
    headers, body = example_binary()
    headers["ce-customerid"] = value
    assert binary_errors(headers, body) == [(("customerid",), error_type)]


def test_binary_errors_name_the_attribute() -> None:
    headers, body = example_binary()
    headers["ce-specversion"] = "0.3"
    headers["ce-priority"] = "high"
    del headers["ce-time"]
    assert sorted(binary_errors(headers, body)) == sorted(
        [
            (("specversion",), "literal_error"),
            (("time",), "missing"),
            (("priority",), "extra_forbidden"),
        ]
    )


@pytest.mark.parametrize("attribute", ["datacontenttype", "data"])
def test_binary_rejects_attributes_that_cannot_be_headers(attribute: str) -> None:
    headers, body = example_binary()
    headers[f"ce-{attribute}"] = "application/json"
    assert binary_errors(headers, body) == [((attribute,), "binary_mode_header")]


def test_binary_rejects_duplicate_headers() -> None:
    headers, body = example_binary()
    headers["CE-ID"] = "other"
    assert binary_errors(headers, body) == [(("id",), "duplicate_header")]


def test_binary_rejects_a_non_json_content_type_before_reading_the_body() -> None:
    headers, _ = example_binary()
    headers["content-type"] = "text/plain"
    assert binary_errors(headers, b"plain words") == [
        (("datacontenttype",), "unsupported_datacontenttype")
    ]


@pytest.mark.parametrize("body", [b"not json", b"{", b"\xff"])
def test_binary_body_that_is_not_json(body: bytes) -> None:
    headers, _ = example_binary()
    assert binary_errors(headers, body) == [(("data",), "json_invalid")]


def test_binary_body_errors_point_into_data() -> None:
    headers, _ = example_binary()
    body = b'{"measures": {"wait_seconds": NaN}, "attributes": {"a": [1]}}'
    assert binary_errors(headers, body) == [
        (("data", "measures", "wait_seconds"), "measure_value"),
        (("data", "attributes", "a"), "attribute_value"),
    ]


def test_header_encoding_follows_the_binding_example() -> None:
    assert encode_header_value("Euro € 😀") == "Euro%20%E2%82%AC%20%F0%9F%98%80"
    assert encode_header_value('say "100%"') == "say%20%22100%25%22"
    assert decode_header_value("Euro%20%E2%82%AC%20%F0%9F%98%80") == "Euro € 😀"


@given(st.text())
def test_header_encoding_round_trips(value: str) -> None:
    encoded = encode_header_value(value)
    assert all("!" <= ch <= "~" and ch not in '"' for ch in encoded)
    assert decode_header_value(encoded) == value


# -- batch mode ----------------------------------------------------------------------------------


def test_batch_reports_bad_items_by_index() -> None:
    body = orjson.dumps(
        [
            EXAMPLE_CLOUDEVENT,
            cloudevent(specversion="0.3"),
            cloudevent(id="second"),
            cloudevent(priority="high"),
            42,
        ]
    )
    results = from_batch(body)
    assert isinstance(results[0], ExperienceEventV1)
    assert isinstance(results[2], ExperienceEventV1)
    assert results[2].event_id == "second"
    errors = {
        result.index: [(e["loc"], e["type"]) for e in result.errors]
        for result in results
        if isinstance(result, ItemError)
    }
    assert errors == {
        1: [(("specversion",), "literal_error")],
        3: [(("priority",), "extra_forbidden")],
        4: [((), "model_type")],
    }


def test_batch_nan_is_an_item_error() -> None:
    item = orjson.dumps(cloudevent(data={"measures": {"x": 0}})).replace(b'"x":0', b'"x":NaN')
    [result] = from_batch(b"[" + item + b"]")
    assert isinstance(result, ItemError)
    assert [(e["loc"], e["type"]) for e in result.errors] == [
        (("data", "measures", "x"), "measure_value")
    ]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param(b"not json", "not_json", id="not-json"),
        pytest.param(b"", "not_json", id="empty"),
        pytest.param(b"[{]", "not_json", id="truncated"),
        pytest.param(orjson.dumps(EXAMPLE_CLOUDEVENT), "wrong_shape", id="single-event"),
        pytest.param(b'{"events": []}', "wrong_shape", id="native-batch"),
    ],
)
def test_batch_body_errors_reject_the_whole_request(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidBatch) as caught:
        from_batch(body)
    assert caught.value.reason == reason


def test_batch_size_cap_and_empty_batch() -> None:
    assert from_batch(b"[]") == []
    body = orjson.dumps([EXAMPLE_CLOUDEVENT] * 3)
    assert len(from_batch(body, max_items=3)) == 3
    with pytest.raises(InvalidBatch) as caught:
        from_batch(body, max_items=2)
    assert caught.value.reason == "too_many_items"


# -- content types -------------------------------------------------------------------------------


def test_media_type_drops_parameters() -> None:
    assert media_type("Application/CloudEvents+JSON; charset=UTF-8") == (
        "application/cloudevents+json"
    )
    assert media_type("application/cloudevents-batch+json") == (
        "application/cloudevents-batch+json"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("application/json", True),
        ("application/json;charset=UTF-8", True),
        ('application/json; charset="utf-8"', True),
        ("application/json; charset=iso-8859-1", False),
        ("application/cloudevents+json", False),
        ("text/json", False),
    ],
)
def test_is_json_content_type(value: str, expected: bool) -> None:
    assert is_json_content_type(value) is expected

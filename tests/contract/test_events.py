"""The native event v1: validation, JSON encoding, native batches and the time window.

The hypothesis strategies here are shared by the other contract tests.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from touchpulse_shared.contract import (
    EVENT_ADAPTER,
    EVENT_LIST_ADAPTER,
    MAX_ATTRIBUTES,
    MAX_CUSTOMER_ID_LENGTH,
    MAX_EVENT_ID_LENGTH,
    MAX_MEASURES,
    ExperienceEventV1,
    InvalidBatch,
    ItemError,
    check_time_window,
    event_to_json,
    events_to_batch_json,
    format_rfc3339,
    parse_event_json,
    parse_native_batch,
)
from touchpulse_shared.contract.events import (
    ATTRIBUTE_INT_MAX,
    ATTRIBUTE_INT_MIN,
    EXAMPLE_EVENT,
    MAX_ATTRIBUTE_NAME_LENGTH,
    MAX_ATTRIBUTE_STRING_LENGTH,
)

# Whitespace and control characters are exactly the categories excluded here.
_ID_CHARACTERS = st.characters(exclude_categories=("Cc", "Cs", "Zs", "Zl", "Zp"))


def identifiers(max_size: int) -> st.SearchStrategy[str]:
    return st.one_of(
        st.from_regex(r"[A-Za-z0-9._:/-]{1,40}", fullmatch=True),
        st.text(_ID_CHARACTERS, min_size=1, max_size=max_size),
    )


slugs = st.from_regex(r"[a-z][a-z0-9_]{0,63}", fullmatch=True)
event_types = st.from_regex(r"[a-z][a-z0-9_]{0,12}(\.[a-z][a-z0-9_]{0,12}){1,3}", fullmatch=True)
fixed_offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
aware_datetimes = st.datetimes(
    min_value=datetime(1900, 1, 1),  # noqa: DTZ001 - hypothesis bounds are naive by design
    max_value=datetime(2200, 1, 1),  # noqa: DTZ001
    timezones=fixed_offsets,
)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
measures = st.dictionaries(
    slugs,
    st.one_of(st.booleans(), finite_floats, st.integers(-(10**12), 10**12)),
    max_size=MAX_MEASURES,
)
attributes = st.dictionaries(
    st.text(min_size=1, max_size=MAX_ATTRIBUTE_NAME_LENGTH),
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(ATTRIBUTE_INT_MIN, ATTRIBUTE_INT_MAX),
        finite_floats,
        st.text(max_size=MAX_ATTRIBUTE_STRING_LENGTH),
    ),
    max_size=MAX_ATTRIBUTES,
)
events: st.SearchStrategy[ExperienceEventV1] = st.builds(
    ExperienceEventV1,
    event_id=identifiers(128),
    source=identifiers(256),
    customer_id=identifiers(128),
    touchpoint=slugs,
    type=event_types,
    occurred_at=aware_datetimes,
    journey_id=st.none() | identifiers(128),
    measures=measures,
    attributes=attributes,
)


def valid_event(**changes: Any) -> dict[str, Any]:
    """The documented example with some members changed (``None`` removes a member)."""
    document = {**EXAMPLE_EVENT, **changes}
    return {name: value for name, value in document.items() if value is not None}


def error_summary(exc: ValidationError) -> list[tuple[tuple[int | str, ...], str]]:
    return [(error["loc"], error["type"]) for error in exc.errors()]


def errors_of(data: bytes) -> list[tuple[tuple[int | str, ...], str]]:
    with pytest.raises(ValidationError) as caught:
        parse_event_json(data)
    return error_summary(caught.value)


# -- round trips and encoding ---------------------------------------------------------------


@given(events)
def test_json_round_trip_is_lossless(event: ExperienceEventV1) -> None:
    assert parse_event_json(event_to_json(event)) == event


@given(events)
def test_python_and_json_validation_agree(event: ExperienceEventV1) -> None:
    # Batches validate parsed Python objects while single events validate JSON bytes; both
    # must judge the same document the same way.
    document = orjson.loads(event_to_json(event))
    assert EVENT_ADAPTER.validate_python(document) == parse_event_json(event_to_json(event))


@given(events)
def test_json_is_compact_sorted_and_utc(event: ExperienceEventV1) -> None:
    encoded = event_to_json(event)
    document = orjson.loads(encoded)
    assert list(document) == sorted(document)
    assert document["occurred_at"] == format_rfc3339(event.occurred_at)
    assert document["occurred_at"].endswith("Z")
    assert orjson.dumps(document, option=orjson.OPT_SORT_KEYS) == encoded
    assert ("journey_id" in document) == (event.journey_id is not None)


@given(st.lists(events, max_size=5))
def test_list_adapter_and_native_batch_round_trip(batch: list[ExperienceEventV1]) -> None:
    body = events_to_batch_json(batch)
    assert parse_native_batch(body) == batch
    assert EVENT_LIST_ADAPTER.validate_python(orjson.loads(body)["events"]) == batch


def test_format_rfc3339_matches_orjson() -> None:
    for value in (
        datetime(2024, 5, 1, 12, 30, tzinfo=UTC),
        datetime(2024, 5, 1, 12, 30, 0, 1500, tzinfo=timezone(timedelta(hours=2))),
        datetime(9, 1, 2, tzinfo=UTC),
    ):
        expected = orjson.dumps(value.astimezone(UTC), option=orjson.OPT_UTC_Z).decode()
        assert format_rfc3339(value) == expected.strip('"')
    with pytest.raises(ValueError, match="timezone-aware"):
        format_rfc3339(datetime(2024, 1, 1))  # noqa: DTZ001 - the naive case is the point


def test_occurred_at_is_normalised_to_utc() -> None:
    event = ExperienceEventV1.model_validate(valid_event(occurred_at="2024-05-01T14:30:00+02:00"))
    assert event.occurred_at == datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    assert event.occurred_at.tzinfo is UTC
    assert b'"occurred_at":"2024-05-01T12:30:00Z"' in event_to_json(event)


def test_datetime_objects_are_accepted_from_python() -> None:
    moment = datetime(2024, 5, 1, 14, 30, tzinfo=timezone(timedelta(hours=2)))
    event = ExperienceEventV1.model_validate(valid_event(occurred_at=moment))
    assert event.occurred_at == moment
    assert event.occurred_at.tzinfo is UTC


# -- bools, numbers, identity -----------------------------------------------------------------


def test_bools_stay_bools_and_numbers_stay_numbers() -> None:
    event = parse_event_json(
        orjson.dumps(
            valid_event(
                measures={"invoice_correct": True, "late": False, "csat": 1, "wait": 0.5},
                attributes={"flag": True, "count": 1, "ratio": 1.0, "name": "x", "none": None},
            )
        )
    )
    assert event.measures["invoice_correct"] is True
    assert event.measures["late"] is False
    assert type(event.measures["csat"]) is float
    assert event.measures["csat"] == 1.0
    assert event.attributes["flag"] is True
    assert type(event.attributes["count"]) is int
    assert type(event.attributes["ratio"]) is float
    assert event.attributes["none"] is None
    document = orjson.loads(event_to_json(event))
    assert document["measures"]["invoice_correct"] is True
    assert document["attributes"]["flag"] is True


def test_identity_is_source_and_event_id() -> None:
    event = ExperienceEventV1.model_validate(valid_event())
    assert event.identity == (EXAMPLE_EVENT["source"], EXAMPLE_EVENT["event_id"])


def test_events_are_frozen() -> None:
    event = ExperienceEventV1.model_validate(valid_event())
    with pytest.raises(ValidationError):
        event.customer_id = "someone-else"  # type: ignore[misc]


def test_measures_and_attributes_default_to_empty() -> None:
    event = parse_event_json(orjson.dumps(valid_event(measures=None, attributes=None)))
    assert event.measures == {}
    assert event.attributes == {}


def test_limits_are_inclusive() -> None:
    event = ExperienceEventV1.model_validate(
        valid_event(
            event_id="e" * MAX_EVENT_ID_LENGTH,
            customer_id="c" * MAX_CUSTOMER_ID_LENGTH,
            touchpoint="t" * 64,
            measures={f"m{i}": i for i in range(MAX_MEASURES)},
            attributes={f"a{i}": "x" * MAX_ATTRIBUTE_STRING_LENGTH for i in range(MAX_ATTRIBUTES)},
        )
    )
    assert len(event.measures) == MAX_MEASURES


def test_unicode_identifiers_are_accepted() -> None:
    event = parse_event_json(orjson.dumps(valid_event(customer_id="kunde-øæå-😀")))
    assert event.customer_id == "kunde-øæå-😀"


# -- field-level errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param({"customer_id": None}, (("customer_id",), "missing"), id="missing"),
        pytest.param({"event_id": 42}, (("event_id",), "identifier_format"), id="wrong-type"),
        pytest.param({"event_id": ""}, (("event_id",), "identifier_format"), id="empty-id"),
        pytest.param({"event_id": "a b"}, (("event_id",), "identifier_format"), id="whitespace"),
        pytest.param(
            {"customer_id": "c\u0085"}, (("customer_id",), "identifier_format"), id="control"
        ),
        pytest.param(
            {"customer_id": "c" * (MAX_CUSTOMER_ID_LENGTH + 1)},
            (("customer_id",), "identifier_format"),
            id="too-long",
        ),
        pytest.param({"source": ""}, (("source",), "identifier_format"), id="empty-source"),
        pytest.param(
            {"touchpoint": "Call Centre"}, (("touchpoint",), "slug_format"), id="bad-touchpoint"
        ),
        pytest.param(
            {"touchpoint": "t" * 65}, (("touchpoint",), "slug_format"), id="long-touchpoint"
        ),
        pytest.param({"type": "answered"}, (("type",), "event_type_format"), id="type-no-dot"),
        pytest.param({"type": "Call.Answered"}, (("type",), "event_type_format"), id="type-case"),
        pytest.param(
            {"occurred_at": "2024-05-01T12:30:00"},
            (("occurred_at",), "timezone_aware"),
            id="naive-datetime",
        ),
        pytest.param(
            {"occurred_at": 1714566600}, (("occurred_at",), "timestamp_format"), id="unix-number"
        ),
        pytest.param(
            {"occurred_at": "1714566600"},
            (("occurred_at",), "timestamp_format"),
            id="unix-string",
        ),
        pytest.param(
            {"occurred_at": "2024-05-01"}, (("occurred_at",), "timestamp_format"), id="date-only"
        ),
        pytest.param(
            {"occurred_at": "2024-02-30T00:00:00Z"},
            (("occurred_at",), "datetime_from_date_parsing"),
            id="impossible-date",
        ),
        pytest.param(
            {"occurred_at": "0001-01-01T00:30:00+01:00"},
            (("occurred_at",), "timestamp_range"),
            id="before-year-1-in-utc",
        ),
        pytest.param(
            {"journey_id": ""}, (("journey_id",), "identifier_format"), id="empty-journey"
        ),
        pytest.param(
            {"measures": {"wait_seconds": "45"}},
            (("measures", "wait_seconds"), "measure_value"),
            id="measure-string",
        ),
        pytest.param(
            {"measures": {"wait_seconds": None}},
            (("measures", "wait_seconds"), "measure_value"),
            id="measure-null",
        ),
        pytest.param(
            {"measures": {"Wait Seconds": 1}},
            (("measures", "Wait Seconds", "[key]"), "slug_format"),
            id="measure-name",
        ),
        pytest.param(
            {"measures": {f"m{i}": 1 for i in range(MAX_MEASURES + 1)}},
            (("measures",), "too_long"),
            id="too-many-measures",
        ),
        pytest.param({"measures": [1, 2]}, (("measures",), "dict_type"), id="measures-list"),
        pytest.param(
            {"attributes": {"a": "x" * (MAX_ATTRIBUTE_STRING_LENGTH + 1)}},
            (("attributes", "a"), "attribute_value"),
            id="attribute-too-long",
        ),
        pytest.param(
            {"attributes": {"a": {"nested": 1}}},
            (("attributes", "a"), "attribute_value"),
            id="attribute-nested",
        ),
        pytest.param(
            {"attributes": {"": 1}}, (("attributes", "", "[key]"), "attribute_name"), id="attr-name"
        ),
        pytest.param(
            {"attributes": {f"a{i}": 1 for i in range(MAX_ATTRIBUTES + 1)}},
            (("attributes",), "too_long"),
            id="too-many-attributes",
        ),
        pytest.param({"customer": "C-1"}, (("customer",), "extra_forbidden"), id="unknown-field"),
    ],
)
def test_bad_fields_are_reported_at_their_location(
    changes: dict[str, Any], expected: tuple[tuple[str, ...], str]
) -> None:
    document = {**EXAMPLE_EVENT, **changes}
    document = {name: value for name, value in document.items() if value is not None}
    assert errors_of(orjson.dumps(document)) == [expected]
    # Python-side validation (used for batch items) reports the same.
    with pytest.raises(ValidationError) as caught:
        EVENT_ADAPTER.validate_python(document)
    assert error_summary(caught.value) == [expected]


@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_non_finite_measures_are_rejected(token: bytes) -> None:
    body = orjson.dumps(valid_event(measures={"wait_seconds": 0})).replace(
        b'"wait_seconds":0', b'"wait_seconds":' + token
    )
    assert errors_of(body) == [(("measures", "wait_seconds"), "measure_value")]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_python_floats_are_rejected(value: float) -> None:
    with pytest.raises(ValidationError) as caught:
        ExperienceEventV1.model_validate(valid_event(measures={"x": 1.0}, attributes={"y": value}))
    assert error_summary(caught.value) == [(("attributes", "y"), "attribute_value")]


def test_every_bad_field_is_reported_at_once() -> None:
    errors = errors_of(
        orjson.dumps(valid_event(touchpoint="Bad", occurred_at="2024-05-01T12:30:00"))
    )
    assert errors == [(("touchpoint",), "slug_format"), (("occurred_at",), "timezone_aware")]


@pytest.mark.parametrize("body", [b"", b"not json", b"{", b"\xff\xfe"])
def test_a_body_that_is_not_json_is_a_validation_error(body: bytes) -> None:
    assert errors_of(body) == [((), "json_invalid")]


@pytest.mark.parametrize("body", [b"[]", b"42", b'"event"', b"null"])
def test_a_body_that_is_not_an_object_is_a_validation_error(body: bytes) -> None:
    assert errors_of(body) == [((), "model_type")]


def test_error_messages_are_readable() -> None:
    with pytest.raises(ValidationError) as caught:
        parse_event_json(orjson.dumps(valid_event(customer_id="a b")))
    message = caught.value.errors()[0]["msg"]
    assert "whitespace" in message
    assert "\\s" not in message


# -- native batches ------------------------------------------------------------------------------


def test_native_batch_reports_bad_items_by_index() -> None:
    good = valid_event()
    body = orjson.dumps(
        {"events": [good, valid_event(touchpoint="Nope"), good, "not an event", {}]}
    )
    results = parse_native_batch(body)
    assert [type(result) for result in results] == [
        ExperienceEventV1,
        ItemError,
        ExperienceEventV1,
        ItemError,
        ItemError,
    ]
    second, fourth, fifth = results[1], results[3], results[4]
    assert isinstance(second, ItemError)
    assert second.index == 1
    assert [(e["loc"], e["type"]) for e in second.errors] == [(("touchpoint",), "slug_format")]
    assert isinstance(fourth, ItemError)
    assert [(e["loc"], e["type"]) for e in fourth.errors] == [((), "model_type")]
    assert isinstance(fifth, ItemError)
    assert {e["loc"] for e in fifth.errors} >= {("event_id",), ("customer_id",)}


def test_native_batch_nan_is_an_item_error_not_a_body_error() -> None:
    body = (
        b'{"events": ['
        + orjson.dumps(valid_event(measures={"csat": 1})).replace(b'"csat":1', b'"csat":NaN')
        + b"]}"
    )
    [result] = parse_native_batch(body)
    assert isinstance(result, ItemError)
    assert [(e["loc"], e["type"]) for e in result.errors] == [
        (("measures", "csat"), "measure_value")
    ]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param(b"not json", "not_json", id="not-json"),
        pytest.param(b"", "not_json", id="empty"),
        pytest.param(b"[]", "wrong_shape", id="array"),
        pytest.param(b"{}", "wrong_shape", id="no-events"),
        pytest.param(b'{"events": {}}', "wrong_shape", id="events-object"),
        pytest.param(b'{"events": [], "extra": 1}', "wrong_shape", id="extra-member"),
    ],
)
def test_native_batch_body_errors_reject_the_whole_request(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidBatch) as caught:
        parse_native_batch(body)
    assert caught.value.reason == reason


def test_native_batch_size_cap() -> None:
    body = events_to_batch_json([ExperienceEventV1.model_validate(valid_event())] * 3)
    assert len(parse_native_batch(body, max_items=3)) == 3
    with pytest.raises(InvalidBatch) as caught:
        parse_native_batch(body, max_items=2)
    assert caught.value.reason == "too_many_items"


def test_empty_native_batch_is_empty() -> None:
    assert parse_native_batch(b'{"events": []}') == []


# -- time window ---------------------------------------------------------------------------------

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
FIVE_MINUTES = timedelta(minutes=5)
THIRTY_DAYS = timedelta(days=30)


def _at(moment: datetime) -> ExperienceEventV1:
    return ExperienceEventV1.model_validate(valid_event(occurred_at=moment))


@pytest.mark.parametrize(
    "moment",
    [NOW, NOW + FIVE_MINUTES, NOW - THIRTY_DAYS, NOW - timedelta(days=1)],
)
def test_time_window_accepts_within_bounds(moment: datetime) -> None:
    assert (
        check_time_window(_at(moment), now=NOW, max_future=FIVE_MINUTES, max_past=THIRTY_DAYS)
        is None
    )


def test_time_window_rejects_the_future() -> None:
    message = check_time_window(
        _at(NOW + timedelta(hours=2)), now=NOW, max_future=FIVE_MINUTES, max_past=THIRTY_DAYS
    )
    assert message is not None
    assert "2h in the future" in message
    assert "5m" in message


def test_time_window_rejects_the_distant_past() -> None:
    message = check_time_window(
        _at(NOW - timedelta(days=31, seconds=1)),
        now=NOW,
        max_future=FIVE_MINUTES,
        max_past=THIRTY_DAYS,
    )
    assert message is not None
    assert "31d 1s in the past" in message


def test_time_window_compares_instants_not_wall_clocks() -> None:
    oslo_noon = datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    assert (
        check_time_window(_at(oslo_noon), now=NOW, max_future=timedelta(0), max_past=timedelta(0))
        is None
    )


def test_time_window_needs_an_aware_now() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        check_time_window(
            _at(NOW),
            now=datetime(2024, 5, 1),  # noqa: DTZ001 - the naive case is the point
            max_future=FIVE_MINUTES,
            max_past=THIRTY_DAYS,
        )

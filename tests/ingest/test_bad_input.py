"""Bad input gets a precise 4xx (RFC 9457 problem+json) and never a 5xx; nothing is produced."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from tests.ingest.conftest import EventFactory, IngestClient, read_topic

PROBLEM = "application/problem+json"


def _problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("https://")
    return body


def _pointers(body: dict[str, Any]) -> set[str]:
    return {e["pointer"] for e in body.get("errors", [])}


@pytest.mark.parametrize(
    ("change", "pointer"),
    [
        ({"customer_id": 42}, "/customer_id"),
        ({"customer_id": ""}, "/customer_id"),
        ({"touchpoint": "Call Centre"}, "/touchpoint"),
        ({"type": "nodots"}, "/type"),
        ({"occurred_at": "2024-05-01T12:00:00"}, "/occurred_at"),  # no offset
        ({"occurred_at": "yesterday"}, "/occurred_at"),
        ({"measures": {"wait_seconds": "60"}}, "/measures/wait_seconds"),
        ({"measures": {f"m{i}": i for i in range(40)}}, "/measures"),
        ({"attributes": {"note": "x" * 5000}}, "/attributes/note"),
        ({"unexpected": 1}, "/unexpected"),
        ({"event_id": "has space"}, "/event_id"),
    ],
)
async def test_an_invalid_field_is_named_by_its_pointer(
    client: IngestClient, make_event: EventFactory, change: dict[str, Any], pointer: str
) -> None:
    response = await client.http.post(
        "/v1/events", json=make_event(**change), headers=client.auth()
    )
    body = _problem(response, 422)
    assert pointer in _pointers(body), body


@pytest.mark.parametrize(
    "field", ["event_id", "source", "customer_id", "touchpoint", "type", "occurred_at"]
)
async def test_a_missing_field_is_named(
    client: IngestClient, make_event: EventFactory, field: str
) -> None:
    event = make_event()
    del event[field]
    body = _problem(await client.http.post("/v1/events", json=event, headers=client.auth()), 422)
    assert f"/{field}" in _pointers(body)


async def test_nan_is_refused_not_turned_into_a_server_error(client: IngestClient) -> None:
    body = (
        b'{"event_id":"n1","source":"billing-prod","customer_id":"c","touchpoint":"billing",'
        b'"type":"invoice.issued","occurred_at":"2024-05-01T12:00:00Z","measures":{"x":NaN}}'
    )
    response = await client.http.post(
        "/v1/events", content=body, headers={**client.auth(), "content-type": "application/json"}
    )
    assert response.status_code in (400, 422), response.text


@pytest.mark.parametrize(
    "body", [b"{", b"not json", b"", b"[1,2", '{"a": "\udcff"}'.encode("utf-8", "surrogatepass")]
)
async def test_malformed_json_is_a_400(client: IngestClient, body: bytes) -> None:
    response = await client.http.post(
        "/v1/events", content=body, headers={**client.auth(), "content-type": "application/json"}
    )
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"] == PROBLEM


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/xml", None, "multipart/form-data"]
)
async def test_an_unknown_content_type_is_a_415(
    client: IngestClient, make_event: EventFactory, content_type: str | None
) -> None:
    headers = client.auth()
    if content_type is not None:
        headers["content-type"] = content_type
    response = await client.http.post(
        "/v1/events", content=orjson.dumps(make_event()), headers=headers
    )
    body = _problem(response, 415)
    assert "application/json" in response.headers["accept-post"]
    assert body["detail"]


async def test_an_oversized_body_is_a_413_before_parsing(client: IngestClient) -> None:
    limit = client.settings.ingest_max_body_bytes
    # Not even JSON: a 413 (not a 400) shows the size was judged before any parsing.
    response = await client.http.post(
        "/v1/events/batch",
        content=b"x" * (limit + 1),
        headers={**client.auth(), "content-type": "application/json"},
    )
    _problem(response, 413)


async def test_an_oversized_body_without_a_length_is_a_413(client: IngestClient) -> None:
    limit = client.settings.ingest_max_body_bytes

    async def chunks() -> Any:
        for _ in range(limit // 1024 + 2):
            yield b"y" * 1024

    response = await client.http.post(
        "/v1/events/batch",
        content=chunks(),
        headers={**client.auth(), "content-type": "application/json"},
    )
    _problem(response, 413)


async def test_too_many_events_in_a_batch_is_a_413(
    client: IngestClient, make_event: EventFactory
) -> None:
    events = [make_event() for _ in range(client.settings.ingest_max_batch_items + 1)]
    response = await client.http.post(
        "/v1/events/batch", json={"events": events}, headers=client.auth()
    )
    body = _problem(response, 413)
    assert str(client.settings.ingest_max_batch_items) in body["detail"]


@pytest.mark.parametrize("body", [{"items": []}, [], {"events": {}}, {"events": [], "extra": 1}])
async def test_a_batch_of_the_wrong_shape_is_refused(client: IngestClient, body: Any) -> None:
    response = await client.http.post("/v1/events/batch", json=body, headers=client.auth())
    assert response.status_code == 422, response.text


async def test_an_empty_batch_is_a_400(client: IngestClient) -> None:
    response = await client.http.post(
        "/v1/events/batch", json={"events": []}, headers=client.auth()
    )
    _problem(response, 400)


async def test_a_batch_with_only_bad_items_reports_each(
    client: IngestClient, make_event: EventFactory
) -> None:
    events = [make_event(customer_id=1), make_event(touchpoint="BAD")]
    response = await client.http.post(
        "/v1/events/batch", json={"events": events}, headers=client.auth()
    )
    body = _problem(response, 422)
    assert [item["index"] for item in body["items"]] == [0, 1]
    assert body["items"][0]["errors"][0]["pointer"] == "/events/0/customer_id"
    assert body["items"][1]["errors"][0]["pointer"] == "/events/1/touchpoint"
    # The same item shape as in a partly accepted 202: one parser for both answers.
    assert [(i["status"], i["http_status"]) for i in body["items"]] == [("rejected", 422)] * 2


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [(timedelta(days=-400), False), (timedelta(days=2), False), (timedelta(minutes=5), True)],
)
async def test_timestamps_far_from_now_are_refused(
    client: IngestClient, make_event: EventFactory, offset: timedelta, accepted: bool
) -> None:
    when = (datetime.now(UTC) + offset).isoformat()
    response = await client.http.post(
        "/v1/events", json=make_event(occurred_at=when), headers=client.auth()
    )
    if accepted:
        assert response.status_code == 202, response.text
    else:
        assert "/occurred_at" in _pointers(_problem(response, 422))


async def test_cloudevents_errors_name_the_attribute(client: IngestClient) -> None:
    response = await client.http.post(
        "/v1/events",
        content=orjson.dumps(
            {
                "specversion": "1.0",
                "id": "x",
                "source": "billing-prod",
                "type": "invoice.issued",
                "time": "2024-05-01T12:00:00Z",
                "touchpoint": "billing",
            }
        ),
        headers={**client.auth(), "content-type": "application/cloudevents+json"},
    )
    assert "/customerid" in _pointers(_problem(response, 422))


async def test_a_binary_cloudevent_with_a_bad_header_is_a_422(client: IngestClient) -> None:
    response = await client.http.post(
        "/v1/events",
        content=b'{"measures": {}}',
        headers={
            **client.auth(),
            "content-type": "application/json",
            "ce-specversion": "0.3",
            "ce-id": "x",
            "ce-source": "billing-prod",
            "ce-type": "a.b",
            "ce-time": "2024-05-01T12:00:00Z",
            "ce-customerid": "c",
            "ce-touchpoint": "billing",
        },
    )
    assert "/specversion" in _pointers(_problem(response, 422))


async def test_nothing_bad_reaches_the_topic(
    client: IngestClient, make_event: EventFactory, kafka_bootstrap: str
) -> None:
    await client.http.post("/v1/events", json=make_event(customer_id=7), headers=client.auth())
    await client.http.post(
        "/v1/events", content=b"{", headers={**client.auth(), "content-type": "application/json"}
    )
    marker = make_event(customer_id="marker")
    assert (
        await client.http.post("/v1/events", json=marker, headers=client.auth())
    ).status_code == 202
    records = await read_topic(kafka_bootstrap, client.settings.events_topic, 1)
    assert [r.key for r in records] == [b"marker"]


async def test_unknown_routes_and_methods_are_problems_not_html(client: IngestClient) -> None:
    missing = await client.http.get("/v1/nope")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == PROBLEM
    wrong = await client.http.get("/v1/events")
    assert wrong.status_code == 405


# --- the promise catalogue: the tracking plan, enforced at the edge ---------------------------
# deploy/promises.yaml, which scoring judges by: billing declares invoice.issued (a boolean
# invoice_correct, a number days_after_delivery) and payment.captured; call.answered at
# call_centre requires wait_seconds and judges first_contact_resolution as a boolean.


def _call(**overrides: Any) -> dict[str, Any]:
    return {
        "touchpoint": "call_centre",
        "type": "call.answered",
        "measures": {"wait_seconds": 30, "first_contact_resolution": True},
        **overrides,
    }


CATALOGUE_REFUSALS: list[tuple[str, dict[str, Any], str, str]] = [
    ("unknown touchpoint", {"touchpoint": "teleporter"}, "/touchpoint", "unknown_touchpoint"),
    (
        "a type the touchpoint does not declare",
        {"type": "invoice.paid"},
        "/type",
        "unknown_event_type",
    ),
    (
        "a number where a boolean is promised",
        _call(measures={"wait_seconds": 30, "first_contact_resolution": 1}),
        "/measures/first_contact_resolution",
        "wrong_measure_kind",
    ),
    (
        "a boolean where a number is promised",
        {"measures": {"invoice_correct": True, "days_after_delivery": False}},
        "/measures/days_after_delivery",
        "wrong_measure_kind",
    ),
    (
        "a required measure missing",
        _call(measures={"first_contact_resolution": True}),
        "/measures/wait_seconds",
        "missing_measure",
    ),
]
_REFUSAL_IDS = [c[0] for c in CATALOGUE_REFUSALS]


@pytest.mark.parametrize(
    ("change", "pointer", "code"), [c[1:] for c in CATALOGUE_REFUSALS], ids=_REFUSAL_IDS
)
async def test_what_the_catalogue_refuses_is_a_422_naming_the_field(
    client: IngestClient, make_event: EventFactory, change: dict[str, Any], pointer: str, code: str
) -> None:
    response = await client.http.post(
        "/v1/events", json=make_event(**change), headers=client.auth()
    )
    body = _problem(response, 422)
    assert [(e["pointer"], e["code"]) for e in body["errors"]] == [(pointer, code)]
    assert "2026." in body["errors"][0]["detail"] or code == "wrong_measure_kind", body
    metrics = (await client.http.get("/metrics")).text
    touchpoint = "unknown" if code == "unknown_touchpoint" else change.get("touchpoint", "billing")
    assert (
        f'touchpulse_ingest_events_rejected_total{{reason="{code}",touchpoint="{touchpoint}"}} 1.0'
        in metrics
    )


async def test_an_unknown_touchpoint_is_refused_at_the_edge_not_dead_lettered_later(
    client: IngestClient, make_event: EventFactory, kafka_bootstrap: str
) -> None:
    """The regression of issue 12: this answered 202 and scoring dead-lettered it."""
    response = await client.http.post(
        "/v1/events", json=make_event(touchpoint="teleporter"), headers=client.auth()
    )
    body = _problem(response, 422)
    assert body["errors"][0]["pointer"] == "/touchpoint"
    assert "'teleporter'" in body["errors"][0]["detail"]
    marker = make_event(customer_id="marker")
    assert (
        await client.http.post("/v1/events", json=marker, headers=client.auth())
    ).status_code == 202
    records = await read_topic(kafka_bootstrap, client.settings.events_topic, 1)
    assert [r.key for r in records] == [b"marker"]


async def test_every_problem_of_one_event_is_reported_together(
    client: IngestClient, make_event: EventFactory
) -> None:
    late = (datetime.now(UTC) - timedelta(days=400)).isoformat()
    event = make_event(**_call(measures={"first_contact_resolution": 1}), occurred_at=late)
    body = _problem(await client.http.post("/v1/events", json=event, headers=client.auth()), 422)
    assert [(e["pointer"], e["code"]) for e in body["errors"]] == [
        ("/measures/first_contact_resolution", "wrong_measure_kind"),
        ("/measures/wait_seconds", "missing_measure"),
        ("/occurred_at", "time_window"),
    ]


async def test_a_batch_accepts_the_good_event_beside_every_catalogue_refusal(
    client: IngestClient, make_event: EventFactory, kafka_bootstrap: str
) -> None:
    bad = [make_event(customer_id="bad", **c[1]) for c in CATALOGUE_REFUSALS]
    good = make_event(customer_id="good")
    response = await client.http.post(
        "/v1/events/batch", json={"events": [*bad, good]}, headers=client.auth()
    )
    assert response.status_code == 202, response.text
    result = response.json()
    assert (result["accepted"], result["rejected"]) == (1, len(bad))
    items = result["items"]
    for index, (_, _, pointer, code) in enumerate(CATALOGUE_REFUSALS):
        assert (items[index]["status"], items[index]["http_status"]) == ("rejected", 422)
        assert items[index]["event_id"] == bad[index]["event_id"]
        assert [(e["pointer"], e["code"]) for e in items[index]["errors"]] == [
            (f"/events/{index}{pointer}", code)
        ]
    assert items[-1] == {"index": len(bad), "status": "accepted", "event_id": good["event_id"]}
    records = await read_topic(kafka_bootstrap, client.settings.events_topic, 1)
    assert [r.key for r in records] == [b"good"]


def _cloudevent(native: dict[str, Any]) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": native["event_id"],
        "source": native["source"],
        "type": native["type"],
        "time": native["occurred_at"],
        "customerid": native["customer_id"],
        "touchpoint": native["touchpoint"],
        "data": {"measures": native["measures"]},
    }


def _cloudevent_pointer(native_pointer: str) -> str:
    # The CloudEvents mapping: measures travel in data; touchpoint and type keep their names.
    if native_pointer.startswith("/measures/"):
        return "/data" + native_pointer
    return native_pointer


@pytest.mark.parametrize(
    ("change", "pointer", "code"), [c[1:] for c in CATALOGUE_REFUSALS], ids=_REFUSAL_IDS
)
async def test_a_structured_cloudevent_gets_the_same_refusals(
    client: IngestClient, make_event: EventFactory, change: dict[str, Any], pointer: str, code: str
) -> None:
    response = await client.http.post(
        "/v1/events",
        content=orjson.dumps(_cloudevent(make_event(**change))),
        headers={**client.auth(), "content-type": "application/cloudevents+json"},
    )
    body = _problem(response, 422)
    assert [(e["pointer"], e["code"]) for e in body["errors"]] == [
        (_cloudevent_pointer(pointer), code)
    ]


async def test_a_cloudevents_batch_accepts_the_good_event_beside_the_refused_ones(
    client: IngestClient, make_event: EventFactory, kafka_bootstrap: str
) -> None:
    bad = [_cloudevent(make_event(customer_id="bad", **c[1])) for c in CATALOGUE_REFUSALS]
    good = _cloudevent(make_event(customer_id="good"))
    response = await client.http.post(
        "/v1/events/batch",
        content=orjson.dumps([good, *bad]),
        headers={**client.auth(), "content-type": "application/cloudevents-batch+json"},
    )
    assert response.status_code == 202, response.text
    result = response.json()
    assert (result["accepted"], result["rejected"]) == (1, len(bad))
    for index, (_, _, pointer, code) in enumerate(CATALOGUE_REFUSALS, start=1):
        assert [(e["pointer"], e["code"]) for e in result["items"][index]["errors"]] == [
            (f"/{index}{_cloudevent_pointer(pointer)}", code)
        ]
    records = await read_topic(kafka_bootstrap, client.settings.events_topic, 1)
    assert [r.key for r in records] == [b"good"]


async def test_a_binary_cloudevent_gets_the_same_refusals(client: IngestClient) -> None:
    headers = {
        **client.auth(),
        "content-type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": "binary-1",
        "ce-source": "billing-prod",
        "ce-type": "call.answered",
        "ce-time": datetime.now(UTC).isoformat(),
        "ce-customerid": "c",
        "ce-touchpoint": "call_centre",
    }
    missing = await client.http.post(
        "/v1/events",
        content=b'{"measures": {"first_contact_resolution": true}}',
        headers=headers,
    )
    assert [(e["pointer"], e["code"]) for e in _problem(missing, 422)["errors"]] == [
        ("/data/measures/wait_seconds", "missing_measure")
    ]
    unknown = await client.http.post(
        "/v1/events",
        content=b'{"measures": {"wait_seconds": 3}}',
        headers={**headers, "ce-touchpoint": "teleporter"},
    )
    assert [(e["pointer"], e["code"]) for e in _problem(unknown, 422)["errors"]] == [
        ("/touchpoint", "unknown_touchpoint")
    ]

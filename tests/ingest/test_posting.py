"""Posted events land on the real topic with the right key, value and headers."""

from __future__ import annotations

from typing import Any

import orjson

from tests.ingest.conftest import EventFactory, IngestClient, read_topic
from touchpulse_shared.contract import (
    CONTENT_TYPE_CLOUDEVENT,
    CONTENT_TYPE_CLOUDEVENT_BATCH,
    EVENT_ADAPTER,
    decode_record,
    event_to_json,
    to_batch,
    to_binary,
    to_structured_json,
)


def _on_topic(record: Any) -> dict[str, Any]:
    decoded = decode_record(record.key, record.value, list(record.headers))
    assert decoded.producer == "ingest"
    assert record.key == decoded.event.customer_id.encode()
    return {"event": decoded.event, "partition": record.partition}


async def test_a_native_event_is_on_the_topic_keyed_by_customer(
    client: IngestClient, make_event: EventFactory, kafka_bootstrap: str
) -> None:
    event = make_event(customer_id="cust-native")
    response = await client.http.post("/v1/events", json=event, headers=client.auth())
    assert response.status_code == 202, response.text
    assert response.json() == {
        "status": "accepted",
        "source": event["source"],
        "event_id": event["event_id"],
    }

    (record,) = await read_topic(kafka_bootstrap, client.settings.events_topic, 1)
    assert record.key == b"cust-native"
    expected = EVENT_ADAPTER.validate_python(event)
    assert record.value == event_to_json(expected)
    headers = dict(record.headers)
    assert headers["content-type"] == b"application/vnd.touchpulse.event.v1+json"
    assert headers["touchpulse-producer"] == b"ingest"
    assert headers["ce_id"] == event["event_id"].encode()
    assert _on_topic(record)["event"] == expected


async def test_a_structured_cloudevent_is_on_the_topic(
    client: IngestClient, make_event: EventFactory, kafka_bootstrap: str
) -> None:
    event = EVENT_ADAPTER.validate_python(make_event(customer_id="cust-structured"))
    response = await client.http.post(
        "/v1/events",
        content=to_structured_json(event),
        headers={**client.auth(), "content-type": CONTENT_TYPE_CLOUDEVENT},
    )
    assert response.status_code == 202, response.text
    (record,) = await read_topic(kafka_bootstrap, client.settings.events_topic, 1)
    assert record.key == b"cust-structured"
    assert _on_topic(record)["event"] == event


async def test_a_binary_cloudevent_is_on_the_topic(
    client: IngestClient, make_event: EventFactory, kafka_bootstrap: str
) -> None:
    event = EVENT_ADAPTER.validate_python(make_event(customer_id="cust/binary-ø"))
    headers, body = to_binary(event)
    response = await client.http.post(
        "/v1/events", content=body, headers={**client.auth(), **headers}
    )
    assert response.status_code == 202, response.text
    (record,) = await read_topic(kafka_bootstrap, client.settings.events_topic, 1)
    assert record.key == "cust/binary-ø".encode()
    assert _on_topic(record)["event"] == event


async def test_a_cloudevents_batch_is_on_the_topic(
    client: IngestClient, make_event: EventFactory, kafka_bootstrap: str
) -> None:
    events = [EVENT_ADAPTER.validate_python(make_event(customer_id=f"c{i % 4}")) for i in range(20)]
    response = await client.http.post(
        "/v1/events",
        content=to_batch(events),
        headers={**client.auth(), "content-type": CONTENT_TYPE_CLOUDEVENT_BATCH},
    )
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 20
    records = await read_topic(kafka_bootstrap, client.settings.events_topic, 20)
    assert sorted(e.event_id for e in (_on_topic(r)["event"] for r in records)) == sorted(
        e.event_id for e in events
    )


async def test_a_native_batch_keeps_each_customer_on_one_partition_in_order(
    client: IngestClient, make_event: EventFactory, kafka_bootstrap: str
) -> None:
    events = [make_event(customer_id=f"customer-{i % 7}") for i in range(70)]
    response = await client.http.post(
        "/v1/events/batch",
        content=orjson.dumps({"events": events}),
        headers={**client.auth(), "content-type": "application/json"},
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["accepted"] == 70
    assert [item["status"] for item in body["items"]] == ["accepted"] * 70

    records = await read_topic(kafka_bootstrap, client.settings.events_topic, 70)
    assert len(records) == 70, "each event exactly once"
    seen = [_on_topic(r) for r in sorted(records, key=lambda r: (r.partition, r.offset))]
    by_customer: dict[str, set[int]] = {}
    order: dict[str, list[str]] = {}
    for item in seen:
        by_customer.setdefault(item["event"].customer_id, set()).add(item["partition"])
        order.setdefault(item["event"].customer_id, []).append(item["event"].event_id)
    assert all(len(parts) == 1 for parts in by_customer.values())
    for customer, ids in order.items():
        assert ids == [e["event_id"] for e in events if e["customer_id"] == customer]


async def test_a_batch_with_bad_items_accepts_the_good_ones(
    client: IngestClient, make_event: EventFactory, kafka_bootstrap: str
) -> None:
    good = [make_event(customer_id="mixed-1"), make_event(customer_id="mixed-2")]
    bad_type = make_event(measures={"wait_seconds": "long"})
    missing = make_event()
    del missing["customer_id"]
    body = {"events": [good[0], bad_type, missing, good[1]]}
    response = await client.http.post("/v1/events/batch", json=body, headers=client.auth())
    assert response.status_code == 202, response.text
    result = response.json()
    assert (result["accepted"], result["rejected"]) == (2, 2)
    items = result["items"]
    assert [i["status"] for i in items] == ["accepted", "rejected", "rejected", "accepted"]
    assert items[1]["errors"][0]["pointer"] == "/events/1/measures/wait_seconds"
    assert items[2]["errors"][0]["pointer"] == "/events/2/customer_id"

    records = await read_topic(kafka_bootstrap, client.settings.events_topic, 2)
    assert sorted(r.key for r in records) == [b"mixed-1", b"mixed-2"]

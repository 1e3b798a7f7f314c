"""Erasure holds for the dead letters the api lists: records about a customer that scoring
could not use are deleted with the customer, no stored detail quotes their id, and the same
records read again after the erasure (a late delivery, a replay of the events topic) are
not stored again.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from tests.api.sources.conftest import BILLING, Feeds
from touchpulse_shared.contract import EVENT_ADAPTER, encode_record

ERASED = "erase-me-7431"
KEPT = "keep-me-1"
NOW = datetime.now(UTC).replace(microsecond=0)

Raw = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


def event(n: int, customer: str, **changes: Any) -> dict[str, Any]:
    return {
        "event_id": f"erasure-{n}",
        "source": BILLING,
        "customer_id": customer,
        "touchpoint": "call_centre",
        "type": "call.answered",
        "occurred_at": (NOW - timedelta(minutes=5)).isoformat(),
        "measures": {"wait_seconds": 20},
        **changes,
    }


def records_about(customer: str, first: int) -> list[Raw]:
    """Four dead letters naming ``customer`` four ways: a key that is not the value's
    customer (whose detail quoted both), an invalid event (the value's field), a value that
    is not JSON (the key alone) and an event the catalogue refuses (decoded)."""
    good = encode_record(
        EVENT_ADAPTER.validate_python(event(first, customer)), producer="ingest", received_at=NOW
    )
    invalid = orjson.loads(good.value)
    invalid["measures"] = {"wait_seconds": "fast"}
    unknown = encode_record(
        EVENT_ADAPTER.validate_python(event(first + 1, customer, touchpoint="hologram")),
        producer="ingest",
        received_at=NOW,
    )
    return [
        (b"someone-else", good.value, good.headers),
        (good.key, orjson.dumps(invalid), good.headers),
        (good.key, b"{not json", good.headers),
        (unknown.key, unknown.value, unknown.headers),
    ]


def other_customer(n: int) -> Raw:
    record = encode_record(
        EVENT_ADAPTER.validate_python(event(100 + n, KEPT)), producer="ingest", received_at=NOW
    )
    return (record.key, b"{not json", record.headers)


async def produce(feeds: Feeds, raw: list[Raw], *, timestamp: datetime) -> None:
    """Written with a Kafka timestamp of ``timestamp``: a record read again keeps its own."""
    producer = AIOKafkaProducer(
        bootstrap_servers=feeds.settings.kafka_bootstrap_servers, acks="all"
    )
    await producer.start()
    try:
        for key, value, headers in raw:
            await producer.send_and_wait(
                feeds.settings.events_topic,
                value,
                key=key,
                headers=headers,
                timestamp_ms=int(timestamp.timestamp() * 1000),
            )
    finally:
        await producer.stop()


async def naming(feeds: Feeds, customer: str) -> int:
    """Stored dead letters with the customer's id anywhere in them, any column."""
    found = await feeds.pipeline.fetchval(
        "SELECT count(*) FROM dead_letter d WHERE strpos(row_to_json(d)::text, $1) > 0",
        customer,
    )
    assert isinstance(found, int)
    return found


async def listed(feeds: Feeds) -> list[dict[str, Any]]:
    response = await feeds.api.get(
        "/v1/dead-letters", params={"limit": "100"}, headers=feeds.as_("admin")
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_erasure_deletes_dead_letters_and_replays_do_not_store_them_again(
    feeds: Feeds,
) -> None:
    await produce(feeds, [*records_about(ERASED, 1), other_customer(1)], timestamp=NOW)
    await feeds.pipeline.wait_for("SELECT count(*) FROM dead_letter", 5)
    rows = await feeds.pipeline.fetchval(
        "SELECT json_agg(json_build_array(reason, customer_id, detail)"
        ' ORDER BY customer_id, "offset") FROM dead_letter'
    )
    assert isinstance(rows, str)
    stored = orjson.loads(rows)
    assert [(reason, customer) for reason, customer, _ in stored] == [
        ("key_mismatch", ERASED),
        ("invalid_event", ERASED),
        ("not_json", ERASED),
        ("unknown_touchpoint", ERASED),
        ("not_json", KEPT),
    ]
    # The detail says what is wrong without the ids the record carried.
    assert all(ERASED not in detail for _, _, detail in stored), stored
    assert "someone-else" not in stored[0][2]
    assert stored[0][2] == "the key is not the event's customer_id"
    assert len(await listed(feeds)) == 5

    erased = await feeds.api.delete(f"/v1/customers/{ERASED}", headers=feeds.as_("admin"))
    assert erased.status_code == 200, erased.text
    assert erased.json()["removed"]["dead_letters"] == 4
    erased_at = datetime.fromisoformat(erased.json()["erased_at"])
    assert await naming(feeds, ERASED) == 0
    assert await naming(feeds, KEPT) == 1
    remaining = await listed(feeds)
    assert [i["reason"] for i in remaining] == ["not_json"]
    assert ERASED not in orjson.dumps(remaining).decode()

    # The same records again, received before the erasure (a replay keeps the Kafka
    # timestamp and ingest's receipt time): dropped as the events are, not stored again.
    # The other customer's record after them shows they were read.
    offsets = "SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offset"
    before = await feeds.pipeline.fetchval(offsets)
    assert isinstance(before, int)
    assert erased_at > NOW
    await produce(feeds, [*records_about(ERASED, 1), other_customer(2)], timestamp=NOW)
    await feeds.pipeline.wait_for(offsets, before + 5)
    await feeds.pipeline.wait_for("SELECT count(*) FROM dead_letter", 2)
    assert await naming(feeds, ERASED) == 0
    assert ERASED not in orjson.dumps(await listed(feeds)).decode()

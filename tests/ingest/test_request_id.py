"""Every ingest request has an id (the caller's X-Request-ID when usable, else a new one):
in the answer, and on each event's Kafka record, where scoring reads it."""

from __future__ import annotations

import re

from tests.ingest.conftest import EventFactory, IngestClient, read_topic
from touchpulse_shared.contract.record import HEADER_REQUEST_ID, request_id_of


async def test_the_request_id_is_answered_and_travels_on_every_record(
    client: IngestClient, make_event: EventFactory, kafka_bootstrap: str
) -> None:
    given = {**client.auth(), "X-Request-ID": "crm-sync-2026-12-05#17"}
    one = await client.http.post("/v1/events", json=make_event(customer_id="c-1"), headers=given)
    assert one.status_code == 202, one.text
    assert one.headers["x-request-id"] == "crm-sync-2026-12-05#17"
    batch = {"events": [make_event(customer_id=f"c-{n}", event_id=f"b-{n}") for n in (2, 3)]}
    made = await client.http.post("/v1/events/batch", json=batch, headers=client.auth())
    assert made.status_code == 202, made.text
    generated = made.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated), generated
    # Hostile ids (spaces, control characters, too long, not ASCII) are replaced, never
    # echoed into a header or a log line.
    for hostile in (b"a b", b"x" * 129, "é".encode(), b"a\tb", b""):
        refused = await client.http.post(
            "/v1/events/batch",
            content=b"{",
            headers=[
                *((k.encode(), v.encode()) for k, v in client.auth().items()),
                (b"content-type", b"application/json"),
                (b"x-request-id", hostile),
            ],
        )
        assert refused.status_code == 400, refused.text
        assert re.fullmatch(r"[0-9a-f]{32}", refused.headers["x-request-id"]), hostile

    records = await read_topic(kafka_bootstrap, client.settings.events_topic, 3)
    by_customer = {r.key: request_id_of(list(r.headers)) for r in records}
    assert by_customer == {
        b"c-1": "crm-sync-2026-12-05#17",
        b"c-2": generated,
        b"c-3": generated,
    }
    assert all(dict(r.headers)[HEADER_REQUEST_ID] for r in records)

"""Liveness, readiness and the Prometheus metrics ops teams watch."""

from __future__ import annotations

import orjson
from prometheus_client.parser import text_string_to_metric_families

from tests.ingest.conftest import EventFactory, IngestClient


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_healthz_and_readyz(client: IngestClient) -> None:
    assert (await client.http.get("/healthz")).json() == {"status": "alive"}
    ready = await client.http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["kafka_producer"] is True


async def test_metrics_count_requests_events_latency_and_sizes(
    client: IngestClient, make_event: EventFactory
) -> None:
    await client.http.post("/v1/events", json=make_event(), headers=client.auth())
    await client.http.post("/v1/events", json=make_event(touchpoint="BAD"), headers=client.auth())
    await client.http.post("/v1/events", json=make_event(source="other"), headers=client.auth())
    await client.http.post(
        "/v1/events/batch",
        content=orjson.dumps(
            {
                "events": [
                    make_event(
                        touchpoint="delivery",
                        type="delivery.completed",
                        measures={"damaged": False},
                    )
                    for _ in range(3)
                ]
            }
        ),
        headers={**client.auth(), "content-type": "application/json"},
    )
    await client.http.post("/v1/events", json=make_event())  # no key

    response = await client.http.get("/metrics")
    assert response.status_code == 200
    samples = _samples(response.text)

    def value(name: str, **labels: str) -> float:
        return samples.get((name, frozenset(labels.items())), 0.0)

    assert value("touchpulse_ingest_requests_total", route="/v1/events", status="202") == 1
    assert value("touchpulse_ingest_requests_total", route="/v1/events", status="422") == 1
    assert value("touchpulse_ingest_requests_total", route="/v1/events", status="403") == 1
    assert value("touchpulse_ingest_requests_total", route="/v1/events", status="401") == 1
    assert value("touchpulse_ingest_requests_total", route="/v1/events/batch", status="202") == 1
    assert value("touchpulse_ingest_events_accepted_total", touchpoint="billing") == 1
    assert value("touchpulse_ingest_events_accepted_total", touchpoint="delivery") == 3
    assert (
        value("touchpulse_ingest_events_rejected_total", reason="invalid", touchpoint="unknown")
        == 1
    )
    assert (
        value("touchpulse_ingest_events_rejected_total", reason="forbidden", touchpoint="billing")
        == 1
    )
    assert value("touchpulse_ingest_produce_duration_seconds_count") == 2
    assert value("touchpulse_ingest_request_body_bytes_count", route="/v1/events") == 3
    assert value("touchpulse_ingest_batch_events_sum") == 3
    assert value("touchpulse_ingest_producer_ready") == 1


async def test_the_openapi_document_describes_bodies_and_problems(client: IngestClient) -> None:
    document = (await client.http.get("/openapi.json")).json()
    post = document["paths"]["/v1/events"]["post"]
    assert set(post["requestBody"]["content"]) == {
        "application/json",
        "application/cloudevents+json",
        "application/cloudevents-batch+json",
    }
    assert {"202", "401", "403", "413", "415", "422", "429", "503"} <= set(post["responses"])
    schemas = document["components"]["schemas"]
    assert "customer_id" in schemas["ExperienceEventV1"]["properties"]
    assert "customerid" in schemas["CloudEventV1"]["properties"]

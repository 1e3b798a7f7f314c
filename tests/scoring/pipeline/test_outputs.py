"""What scoring tells the outside world: compacted topics from committed state, probes,
metrics, and a catalogue reloaded without a restart."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer
from prometheus_client.parser import text_string_to_metric_families

from tests.scoring.pipeline.conftest import SETTLE_S, Pipeline, running_scoring
from tests.scoring.pipeline.ledger import corpus
from touchpulse_scoring.service import serve_probes
from touchpulse_shared.stack.procs import free_port


async def _latest_by_key(pipeline: Pipeline, topic: str, count: int) -> dict[bytes, Any]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=pipeline.settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    latest: dict[bytes, Any] = {}
    try:
        async with asyncio.timeout(SETTLE_S):
            while len(latest) < count:
                for batch in (await consumer.getmany(timeout_ms=300)).values():
                    for record in batch:
                        latest[record.key] = orjson.loads(record.value)
            # The newest value per key may still be behind in the stream: read what is there.
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                for record in batch:
                    latest[record.key] = orjson.loads(record.value)
    finally:
        await consumer.stop()
    return latest


async def test_health_and_interventions_are_published_from_committed_state(
    pipeline: Pipeline,
) -> None:
    events = corpus(400, customers=25, seed=31)
    async with running_scoring(pipeline.settings):
        await pipeline.produce(events)
        await pipeline.wait_for(
            "SELECT coalesce(sum(next_offset), 0) FROM consumer_offset", len(events)
        )
        await pipeline.wait_for("SELECT count(*) FROM kafka_outbox", 0)
    scores = {
        r["customer_id"]: r["score"]
        for r in await pipeline.fetch("SELECT customer_id, score FROM journey_health")
    }
    published = await _latest_by_key(pipeline, pipeline.settings.health_topic, len(scores))
    assert {k.decode(): v["score"] for k, v in published.items()} == scores

    opened = {
        r["intervention_id"]
        for r in await pipeline.fetch("SELECT intervention_id FROM intervention")
    }
    assert opened, "the corpus breaks enough promises to open interventions"
    events_out = await _latest_by_key(pipeline, pipeline.settings.interventions_topic, len(opened))
    assert {k.decode() for k in events_out} == opened
    assert all(v["kind"].startswith("intervention.") and v["gaps"] for v in events_out.values())
    webhooks = await pipeline.fetchval("SELECT count(DISTINCT intervention_id) FROM webhook_outbox")
    assert webhooks == len(opened)


def _samples(text: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


async def test_probes_and_metrics(pipeline: Pipeline) -> None:
    events = corpus(200, customers=10, seed=32)
    async with running_scoring(pipeline.settings) as service:
        port = free_port()
        server = await serve_probes(service, "127.0.0.1", port)
        try:
            await pipeline.produce(events)
            await pipeline.wait_for(
                "SELECT coalesce(sum(next_offset), 0) FROM consumer_offset", len(events)
            )
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                assert (await http.get("/readyz")).status_code == 200
                assert (await http.get("/healthz")).status_code == 200
                metrics = _samples((await http.get("/metrics")).text)
                assert metrics["touchpulse_scoring_events_total"] == len(events)
                assert metrics["touchpulse_scoring_outcomes_total"] > len(events)
                assert metrics["touchpulse_scoring_batch_records_count"] >= 1
                assert metrics["touchpulse_scoring_event_to_health_seconds_count"] == len(events)
                assert metrics["touchpulse_scoring_interventions_opened_total"] >= 1
                # A loop that stopped making progress is reported, so an orchestrator restarts it.
                assert service.runner is not None
                service.runner.last_progress -= pipeline.settings.scoring_stuck_after_s + 1
                assert (await http.get("/healthz")).status_code == 503
        finally:
            server.close()
            await server.wait_closed()


async def test_the_catalogue_reloads_without_restart_and_outcomes_keep_its_version(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    catalogue = tmp_path / "promises.yaml"
    shutil.copy("deploy/promises.yaml", catalogue)
    settings = pipeline.settings.model_copy(update={"promise_catalogue": catalogue})
    first, second = corpus(60, customers=5, seed=33)[:30], corpus(60, customers=5, seed=34)[30:]
    async with running_scoring(settings) as service:
        old = service.catalogue().version
        await pipeline.produce(first)
        await pipeline.wait_for("SELECT count(*) FROM processed_event", 30)
        text = catalogue.read_text().replace(f'version: "{old}"', 'version: "reloaded-1"')
        assert text != catalogue.read_text()
        catalogue.write_text(text)
        for _ in range(int(SETTLE_S / 0.2)):  # the service checks the file every 2 s
            if service.catalogue().version == "reloaded-1":
                break
            await asyncio.sleep(0.2)
        assert service.catalogue().version == "reloaded-1"
        await pipeline.produce(second)
        await pipeline.wait_for("SELECT count(*) FROM processed_event", 60)
    versions = {
        r["catalogue_version"]
        for r in await pipeline.fetch("SELECT DISTINCT catalogue_version FROM outcome")
    }
    assert versions == {old, "reloaded-1"}

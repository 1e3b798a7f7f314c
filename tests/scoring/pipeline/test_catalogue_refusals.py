"""Scoring never applies a record ingest would have refused: records written straight onto
the events topic (another producer, or from before a catalogue change) that break the
catalogue's tracking plan go to the dead-letter topic, valid measures and all, by the same
pure rule ingest answers 422 with."""

from __future__ import annotations

import random
from datetime import timedelta

from tests.scoring.pipeline.conftest import Pipeline, running_scoring
from tests.scoring.pipeline.ledger import CATALOGUE, START, make_event
from tests.scoring.pipeline.test_pipeline import _dead_letter_reasons, encode_record_parts
from touchpulse_scoring.domain.catalogue import event_problems


async def test_records_ingest_would_refuse_are_dead_lettered_and_never_applied(
    pipeline: Pipeline,
) -> None:
    rng = random.Random(12)
    good = [
        make_event(n, f"G-{n % 3}", START + timedelta(minutes=n), "call", rng) for n in range(9)
    ]
    call = make_event(100, "R-1", START, "call", rng)
    refused = {
        # call.answered requires wait_seconds: the valid first_contact_resolution beside it
        # must not be judged either.
        "missing_measure": call.model_copy(
            update={"event_id": "r-missing", "measures": {"first_contact_resolution": False}}
        ),
        # call_centre declares its event types, and call.dropped is not one of them.
        "unknown_event_type": call.model_copy(
            update={"event_id": "r-type", "type": "call.dropped", "measures": {}}
        ),
        # first_contact_resolution is judged as a boolean.
        "wrong_measure_kind": call.model_copy(
            update={
                "event_id": "r-kind",
                "measures": {"wait_seconds": 500, "first_contact_resolution": 1},
            }
        ),
    }
    for reason, event in refused.items():
        # What ingest answers with a 422 today, by the same function.
        assert [p.reason.value for p in event_problems(event, CATALOGUE)] == [reason]
    async with running_scoring(pipeline.settings):
        await pipeline.produce(good, raw=[encode_record_parts(e) for e in refused.values()])
        total = len(good) + len(refused)
        await pipeline.wait_for("SELECT coalesce(sum(next_offset), 0) FROM consumer_offset", total)
        await pipeline.wait_for(
            "SELECT count(*) FROM kafka_outbox WHERE topic = $1",
            0,
            pipeline.settings.dead_letter_topic,
        )
        processed = await pipeline.fetch("SELECT event_id FROM processed_event ORDER BY 1")

    assert sorted(await _dead_letter_reasons(pipeline, len(refused))) == sorted(refused)
    # Not recorded as processed: the producer's corrected resend, same event id, is scored.
    assert [r["event_id"] for r in processed] == sorted(e.event_id for e in good)
    touched = await pipeline.fetch(
        "SELECT DISTINCT customer_id FROM outcome WHERE customer_id = 'R-1'"
    )
    assert touched == []
    health = await pipeline.fetch("SELECT customer_id FROM journey_health ORDER BY 1")
    assert [r["customer_id"] for r in health] == ["G-0", "G-1", "G-2"]

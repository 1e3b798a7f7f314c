"""The ingest request id on a record reaches scoring's log: a dead letter names it."""

from __future__ import annotations

from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
from structlog.testing import LogCapture

from tests.scoring.pipeline.conftest import Pipeline, running_scoring
from touchpulse_scoring import engine
from touchpulse_shared.contract import ExperienceEventV1, encode_records


async def test_a_dead_letter_is_logged_with_the_request_that_carried_it(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The engine's own logger, captured here whatever structlog's global configuration.
    captured = LogCapture()
    monkeypatch.setattr(engine, "log", structlog.wrap_logger(None, processors=[captured]))
    event = ExperienceEventV1.model_validate(
        {
            "event_id": "traced-1",
            "source": "billing-prod",
            "customer_id": "C-traced",
            "touchpoint": "billing",
            "type": "invoice.issued",
            "occurred_at": datetime.now(UTC),
            "measures": {"invoice_correct": True, "days_late": 0},
        }
    )
    [record] = encode_records(
        [event], producer="ingest", received_at=datetime.now(UTC), request_id="req-traced-42"
    )
    # A value that is not an event: scoring dead-letters it, headers and all.
    poisoned = (record.key, b"{not json", record.headers)
    async with running_scoring(pipeline.settings):
        await pipeline.produce([], raw=[poisoned])
        await pipeline.wait_for("SELECT count(*) FROM dead_letter", 1)
    lines: list[MutableMapping[str, Any]] = [
        e for e in captured.entries if e["event"] == "scoring.dead_lettered"
    ]
    assert len(lines) == 1, captured.entries
    assert lines[0]["request_id"] == "req-traced-42"
    assert lines[0]["reason"]

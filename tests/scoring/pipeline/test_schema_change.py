"""A migration changes a table under a running consumer: PostgreSQL refuses the statements
the consumer's connections had prepared against the old shape ("cached plan must not change
result type", asyncpg's InvalidCachedStatementError) and aborts the batch's transaction.
Scoring handles that case: logged, the batch applied again at once, every event once."""

from __future__ import annotations

import random
from collections import Counter
from datetime import timedelta

from structlog.testing import capture_logs

from tests.scoring.pipeline.conftest import Pipeline, running_scoring
from tests.scoring.pipeline.ledger import START, make_event
from touchpulse_shared.contract import ExperienceEventV1

CUSTOMERS = [f"C-{i}" for i in range(6)]


async def test_a_table_altered_under_the_consumer_is_handled_and_applied_once(
    pipeline: Pipeline,
) -> None:
    rng = random.Random(13)

    def events(first: int, count: int) -> list[ExperienceEventV1]:
        return [
            make_event(
                n,
                CUSTOMERS[n % len(CUSTOMERS)],
                START + timedelta(minutes=11 * n),
                rng.choice(["call", "invoice", "survey"]),
                rng,
            )
            for n in range(first, first + count)
        ]

    before, after = events(0, 60), events(60, 60)
    with capture_logs() as logs:
        async with running_scoring(pipeline.settings):
            await pipeline.produce(before)
            await pipeline.wait_for("SELECT count(*) FROM processed_event", len(before))
            # Scoring reads touchpoint_health with SELECT * in every batch: a new column
            # changes that statement's result type.
            await pipeline.fetchval(
                "ALTER TABLE touchpoint_health ADD COLUMN reviewed_at timestamptz"
            )
            await pipeline.produce(after)
            await pipeline.wait_for(
                "SELECT count(*) FROM processed_event", len(before) + len(after)
            )
            await pipeline.wait_for(
                "SELECT coalesce(sum(next_offset), 0) FROM consumer_offset",
                len(before) + len(after),
            )

    handled = [e for e in logs if e["event"] == "scoring.batch.statement_cache_invalidated"]
    assert handled, "the invalidated statement was not handled as its own case"
    assert "cached" in handled[0]["error"]
    outages = [e for e in logs if e["event"] == "scoring.database.unavailable"]
    assert outages == [], "a schema change is not a database outage"
    # Every event is behind its outcomes exactly once.
    behind: Counter[str] = Counter()
    for row in await pipeline.fetch("SELECT event_ids FROM outcome"):
        behind.update(set(row["event_ids"]))
    assert set(behind) == {f"test-source/{e.event_id}" for e in before + after}
    assert await pipeline.fetchval("SELECT count(*) FROM processed_event") == len(before) + len(
        after
    )

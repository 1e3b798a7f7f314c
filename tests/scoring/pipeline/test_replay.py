"""Replay rebuilds the state from the topic and says whether it equals the live state."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import unique
from tests.scoring.pipeline.conftest import Pipeline, running_scoring
from tests.scoring.pipeline.ledger import corpus
from touchpulse_shared.stack.services import settings_env


def _replay(pipeline: Pipeline, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - the test's own fixed command line
        [sys.executable, "-m", "touchpulse_scoring.main", "replay", *options],
        env={**os.environ, **settings_env(pipeline.settings), "TOUCHPULSE_LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


async def test_replay_equals_the_live_state_and_notices_a_difference(pipeline: Pipeline) -> None:
    events = corpus(600, customers=40, seed=21)
    async with running_scoring(pipeline.settings):
        await pipeline.produce(events)
        await pipeline.wait_for(
            "SELECT coalesce(sum(next_offset), 0) FROM consumer_offset", len(events)
        )
    opened = await pipeline.fetchval("SELECT count(*) FROM intervention")
    assert isinstance(opened, int)
    assert opened > 0

    scratch = pipeline.database_url.rsplit("/", 1)[0] + "/" + unique("replay").replace("-", "_")
    await pipeline.fetchval(f'CREATE DATABASE "{scratch.rsplit("/", 1)[1]}"')
    agreed = _replay(pipeline, "--scratch-url", scratch)
    assert agreed.returncode == 0, agreed.stdout + agreed.stderr
    assert "replay equals live state" in agreed.stdout
    assert "customers compared:        40" in agreed.stdout
    replayed = Pipeline(pipeline.settings, scratch)
    assert await replayed.fetchval("SELECT count(*) FROM intervention") == 0, "muted in replays"
    await pipeline.fetchval(f'DROP DATABASE "{scratch.rsplit("/", 1)[1]}" WITH (FORCE)')

    conn_customer = "C-3"
    await pipeline.fetchval(
        "UPDATE journey_health SET score = score * 0.5 WHERE customer_id = $1 RETURNING 1",
        conn_customer,
    )
    differs = _replay(pipeline)
    assert differs.returncode == 1, differs.stdout + differs.stderr
    assert "different:                 1 ['C-3']" in differs.stdout

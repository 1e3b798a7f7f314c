"""Scoring keeps every catalogue it judged by in ``catalogue_version``: one period per
catalogue in effect, the previous one closed when a reload brings another, nothing new on a
restart with the same file; the outcomes name the version in effect when they were judged;
an edit that kept the version string is a row of its own and is counted; ``/readyz`` and
``/metrics`` name the catalogue (version and hash) it runs."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.scoring.pipeline.conftest import Pipeline, running_scoring
from touchpulse_scoring.service import ScoringService, serve_probes
from touchpulse_shared.contract import ExperienceEventV1

SHIPPED = Path("deploy/promises.yaml")
# The switchboard promise's target in deploy/promises.yaml, and the tighter one of B.
TRANSFER = 'expect: {op: "<=", target: 20}'
TIGHTER = 'expect: {op: "<=", target: 5}'
TRANSFER_OUTCOMES = "SELECT count(*) FROM outcome WHERE promise_id = 'switchboard-transfer-time'"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _write(path: Path, text: str, *, tick: int) -> None:
    """Write with an mtime of its own: the reload looks at the mtime, and two writes within
    one kernel tick can share one."""
    path.write_text(text)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + tick * 1_000_000_000))


def _transfer(n: int, seconds: float) -> ExperienceEventV1:
    return ExperienceEventV1(
        event_id=f"t-{n}",
        source="switch",
        customer_id=f"V-{n}",
        touchpoint="switchboard",
        type="call.transferred",
        occurred_at=datetime.now(UTC) - timedelta(minutes=1),
        measures={"transfer_seconds": seconds, "transfers": 1},
    )


async def _probe(service: ScoringService, path: str) -> httpx.Response:
    server = await serve_probes(service, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient() as client:
            return await client.get(f"http://127.0.0.1:{port}{path}")
    finally:
        server.close()
        await server.wait_closed()


def _info(metrics: str) -> list[dict[str, str]]:
    return [
        dict(sample.labels)
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "touchpulse_scoring_catalogue_info" and sample.value == 1
    ]


def _reused(metrics: str) -> float:
    return next(
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "touchpulse_scoring_catalogue_version_reused_total"
    )


async def _wait_rows(pipeline: Pipeline, rows: int) -> None:
    await pipeline.wait_for("SELECT count(*) FROM catalogue_version", rows)


async def test_every_catalogue_in_effect_is_kept_and_outcomes_name_theirs(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    path = tmp_path / "promises.yaml"
    shutil.copy(SHIPPED, path)
    a = path.read_text()
    assert TRANSFER in a
    version_a = a.split('version: "', 1)[1].split('"', 1)[0]
    b = a.replace(TRANSFER, TIGHTER, 1).replace(f'version: "{version_a}"', 'version: "B-1"', 1)
    # C forgets to change the version: B's string, other content.
    c = b.replace("tolerance: 100 ", "tolerance: 90 ", 1)
    assert c != b
    settings = pipeline.settings.model_copy(update={"promise_catalogue": path})

    async with running_scoring(settings) as service:
        # Recorded before ready: no wait needed.
        rows = await pipeline.fetch("SELECT * FROM catalogue_version")
        assert [(r["version"], r["content_hash"], r["content"]) for r in rows] == [
            (version_a, _sha(a), a)
        ]
        assert rows[0]["went_out_of_effect"] is None
        ready = await _probe(service, "/readyz")
        assert ready.json() == {
            "status": "ready",
            "catalogue_version": version_a,
            "catalogue_hash": _sha(a),
        }
        assert _info((await _probe(service, "/metrics")).text) == [
            {"version": version_a, "hash": _sha(a)}
        ]
        await pipeline.produce([_transfer(1, 10)])
        await pipeline.wait_for(TRANSFER_OUTCOMES, 1)

        _write(path, b, tick=1)
        await _wait_rows(pipeline, 2)
        await pipeline.produce([_transfer(2, 10)])
        await pipeline.wait_for(TRANSFER_OUTCOMES, 2)
        assert _info((await _probe(service, "/metrics")).text) == [
            {"version": "B-1", "hash": _sha(b)}
        ]

        _write(path, c, tick=2)
        await _wait_rows(pipeline, 3)
        assert _reused((await _probe(service, "/metrics")).text) == 1

    periods = await pipeline.fetch(
        "SELECT version, content_hash, came_into_effect, went_out_of_effect"
        " FROM catalogue_version ORDER BY id"
    )
    assert [(p["version"], p["content_hash"]) for p in periods] == [
        (version_a, _sha(a)),
        ("B-1", _sha(b)),
        ("B-1", _sha(c)),
    ]
    # Each period ends where the next begins; only the last is open.
    assert [p["went_out_of_effect"] for p in periods[:-1]] == [
        p["came_into_effect"] for p in periods[1:]
    ]
    assert periods[-1]["went_out_of_effect"] is None
    # 10 s against 20 kept under A; against B's 5 broken by 5 (the catalogue's numbers).
    outcomes = await pipeline.fetch(
        "SELECT customer_id, catalogue_version, met, gap FROM outcome"
        " WHERE promise_id = 'switchboard-transfer-time' ORDER BY customer_id"
    )
    assert [(o["customer_id"], o["catalogue_version"], o["met"], o["gap"]) for o in outcomes] == [
        ("V-1", version_a, True, 0.0),
        ("V-2", "B-1", False, 5.0),
    ]

    # A restart on the catalogue in effect adds nothing, and counts nothing as reused.
    async with running_scoring(settings) as service:
        assert _reused((await _probe(service, "/metrics")).text) == 0
        assert service.recorded_hash == _sha(c)
    assert await pipeline.fetchval("SELECT count(*) FROM catalogue_version") == 3


async def test_two_members_loading_at_once_leave_one_current_row(pipeline: Pipeline) -> None:
    """Two scoring members starting together on one catalogue: one period, not two."""
    settings = pipeline.settings

    async def member() -> None:
        async with running_scoring(settings):
            pass

    await asyncio.gather(member(), member())
    rows = await pipeline.fetch("SELECT went_out_of_effect FROM catalogue_version")
    assert [r["went_out_of_effect"] for r in rows] == [None]

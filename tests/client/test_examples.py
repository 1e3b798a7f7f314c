"""The three integration examples of docs/client.md, run as their users would run them,
against the real ingest: what each sends is on the topic, what ingest refuses is reported."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.client.conftest import Ingest, read_topic
from touchpulse_shared.stack.procs import free_port, port_open, spawn, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

EXAMPLES = Path(__file__).resolve().parents[2] / "clients" / "python" / "examples"


def _env(ingest: Ingest) -> dict[str, str]:
    return {**os.environ, "INGEST_URL": ingest.url, "INGEST_KEY": ingest.key}


def _run(
    ingest: Ingest, *argv: str | Path, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - the examples, with fixed arguments
        [sys.executable, *map(str, argv)],
        input=stdin,
        env=_env(ingest),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_call_records_in_batches_and_survey_answers_as_cloudevents(
    ingest: Ingest, tmp_path: Path
) -> None:
    calls = tmp_path / "calls.csv"
    calls.write_text(_run(ingest, EXAMPLES / "call_records.py", "--sample").stdout)
    run = _run(ingest, EXAMPLES / "call_records.py", calls, "--source", ingest.source)
    # The sample's last row has a customer id with a space: refused, named, exit status 1.
    assert run.returncode == 1, run.stderr
    summary = json.loads(run.stdout)
    assert summary == {"delivered": 3, "rejected": 1, "unreadable": 0, "pending": 0}
    assert "call-88004" in run.stderr
    assert "/customer_id" in run.stderr
    answers = _run(ingest, EXAMPLES / "survey_answers.py", "--sample").stdout
    run = _run(ingest, EXAMPLES / "survey_answers.py", "--source", ingest.source, stdin=answers)
    assert run.returncode == 0, run.stdout + run.stderr
    assert sorted(run.stdout.split("\n")[:-1]) == [
        "survey-r-1001 accepted",
        "survey-r-1002 accepted",
        "survey-r-1003 accepted",
    ]
    on_topic = await read_topic(ingest.bootstrap, ingest.topic, ingest.source)
    assert on_topic.ids == {
        "call-88001",
        "call-88002",
        "call-88003",
        "survey-r-1001",
        "survey-r-1002",
        "survey-r-1003",
    }


async def test_delivery_webhooks_become_events(ingest: Ingest, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "webhook.log"
    handler = spawn(
        [
            sys.executable,
            str(EXAMPLES / "delivery_webhook.py"),
            "--port",
            str(port),
            "--source",
            ingest.source,
            "--spool",
            str(tmp_path / "spool"),
        ],
        log_path=log,
        env=_env(ingest),
    )
    try:
        wait_until(
            lambda: port_open("127.0.0.1", port),
            timeout=30,
            what="the webhook handler",
            proc=handler,
            log_path=log,
        )
        now = datetime.now(UTC)
        hooks = [
            {
                "id": "wh-1",
                "kind": "slot.promised",
                "order": "O-7",
                "customer": "C-7",
                "at": (now - timedelta(hours=2)).isoformat(),
                "slot_end": (now - timedelta(hours=1)).isoformat(),
            },
            {
                "id": "wh-2",
                "kind": "parcel.delivered",
                "order": "O-7",
                "customer": "C-7",
                "at": now.isoformat(),
                "damaged": True,
                "items_missing": 0,
            },
        ]
        url = f"http://127.0.0.1:{port}/webhooks/delivery"
        # The carrier redelivers a webhook (the third post): the same event id, the same event.
        bodies = [*hooks, hooks[1], {"id": "wh-3", "kind": "lost"}]
        async with httpx.AsyncClient(timeout=10) as http:
            answers = [(await http.post(url, json=body)).status_code for body in bodies]
        assert answers == [202, 202, 202, 422]
    finally:
        handler.send_signal(signal.SIGTERM)
        handler.wait(30)
    *_, last = log.read_text().strip().splitlines()
    report = json.loads(last)
    assert report["rejected"] == []
    assert report["spooled"] == 0
    assert report["delivered"] + report["duplicates"] == 3
    on_topic = await read_topic(ingest.bootstrap, ingest.topic, ingest.source)
    assert on_topic.ids == {"carrier-wh-1", "carrier-wh-2"}

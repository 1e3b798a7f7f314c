"""A survey tool posting answers as CloudEvents, with the asyncio client.

Each answered survey becomes a ``survey.answered`` CloudEvent (``csat`` 1 to 5 and ``nps``
0 to 10 as measures, the channel as an attribute). The response id is the event id. Answers
come as JSON lines, on stdin or from a file:

    {"response": "r-1", "respondent": "C-1", "answered_at": "2026-03-02T10:00:00Z",
     "csat": 2, "nps": 3, "channel": "sms"}

    python survey_answers.py --sample > answers.jsonl   # three answers from the last hour
    INGEST_URL=http://127.0.0.1:8081 INGEST_KEY=tpk_... python survey_answers.py answers.jsonl

Prints each answer's result as it comes back.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from touchpulse_client import (
    AsyncTouchpulseClient,
    ClientConfig,
    Event,
    EventBuilder,
    Outcome,
    Status,
)


def to_event(builder: EventBuilder, answer: dict[str, Any]) -> Event:
    measures = {name: answer[name] for name in ("csat", "nps") if answer.get(name) is not None}
    return builder.cloudevent(
        event_id=f"survey-{answer['response']}",
        customer_id=answer["respondent"],
        type="survey.answered",
        occurred_at=datetime.fromisoformat(answer["answered_at"]),
        measures=measures,
        attributes={"channel": answer.get("channel")},
    )


async def send(lines: list[str], source: str) -> int:
    builder = EventBuilder(source, touchpoint="survey")
    url = os.environ.get("INGEST_URL", "http://127.0.0.1:8081")
    async with AsyncTouchpulseClient(
        url, os.environ["INGEST_KEY"], ClientConfig(linger_s=0.1)
    ) as client:
        futures = await client.send_many(to_event(builder, json.loads(line)) for line in lines)
        refused = 0
        for next_done in asyncio.as_completed(futures):
            outcome: Outcome = await next_done
            detail = f" {json.dumps(outcome.problem)}" if outcome.problem else ""
            print(f"{outcome.event_id} {outcome.status}{detail}", flush=True)
            refused += outcome.status is not Status.ACCEPTED
    return 1 if refused else 0


def sample() -> str:
    """Three answers with recent times (ingest refuses events older than 90 days)."""
    now = datetime.now(UTC).replace(microsecond=0)
    answers = [
        {"response": "r-1001", "respondent": "C-1", "csat": 2, "nps": 3, "channel": "sms"},
        {"response": "r-1002", "respondent": "C-2", "csat": 5, "nps": 10, "channel": "email"},
        {"response": "r-1003", "respondent": "C-3", "nps": 7, "channel": "web"},
    ]
    lines = []
    for minutes, answer in zip((40, 25, 5), answers, strict=True):
        answer["answered_at"] = (now - timedelta(minutes=minutes)).isoformat()
        lines.append(json.dumps(answer))
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("answers", type=Path, nargs="?", help="JSON lines (default: stdin)")
    parser.add_argument("--source", default="demo", help="the source the key is bound to")
    parser.add_argument("--sample", action="store_true", help="print sample answers and stop")
    args = parser.parse_args()
    if args.sample:
        sys.stdout.write(sample())
        return 0
    text = args.answers.read_text(encoding="utf-8") if args.answers else sys.stdin.read()
    return asyncio.run(send([line for line in text.splitlines() if line.strip()], args.source))


if __name__ == "__main__":
    sys.exit(main())

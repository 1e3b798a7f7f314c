"""A call-centre system's call records, sent in batches.

The telephony platform exports one CSV row per answered call. Each row becomes a
``call.answered`` event: the wait is the time from entering the queue to being answered,
first-contact resolution is the agent's wrap-up code. The call id is the event id, so
sending the same export twice (after a crash halfway, say) counts each call once.

    python call_records.py --sample > calls.csv     # an export of the last hour's calls
    INGEST_URL=http://127.0.0.1:8081 INGEST_KEY=tpk_... python call_records.py calls.csv

Prints one line per refused row (with ingest's reasons) and a summary; exits 1 when a row
was refused or an event is left undelivered.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

from touchpulse_client import ClientConfig, Event, EventBuilder, TouchpulseClient

#: Rows queued at once: the client batches them (500 per request by default) in the
#: background, while the file is read.
CHUNK = 1000


def to_event(builder: EventBuilder, row: dict[str, str]) -> Event:
    entered = datetime.fromisoformat(row["entered_queue_at"])
    answered = datetime.fromisoformat(row["answered_at"])
    wrap_up = row.get("first_contact_resolution", "").strip().lower()
    measures: dict[str, bool | float] = {"wait_seconds": (answered - entered).total_seconds()}
    if wrap_up in ("yes", "no"):  # some queues have no wrap-up code: then it is not judged
        measures["first_contact_resolution"] = wrap_up == "yes"
    return builder.event(
        event_id=f"call-{row['call_id']}",
        customer_id=row["customer_id"],
        journey_id=row.get("case_id") or None,
        type="call.answered",
        occurred_at=answered,
        measures=measures,
        attributes={"queue": row.get("queue") or None},
    )


COLUMNS = [
    "call_id",
    "customer_id",
    "case_id",
    "queue",
    "entered_queue_at",
    "answered_at",
    "first_contact_resolution",
]


def sample(out: TextIO) -> None:
    """A small export with recent times (ingest refuses events older than 90 days). The
    last row is one Touchpulse refuses: a customer id with a space in it."""
    now = datetime.now(UTC).replace(microsecond=0)
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for i, (customer, queue, wait, resolved) in enumerate(
        [
            ("C-1", "billing", 65, "yes"),
            ("C-2", "sales", 702, "no"),
            ("C-3", "billing", 28, ""),
            ("C 4", "support", 120, "yes"),
        ]
    ):
        answered = now - timedelta(minutes=50 - 10 * i)
        entered = answered - timedelta(seconds=wait)
        writer.writerow(
            [
                88001 + i,
                customer,
                f"case-{501 + i}",
                queue,
                entered.isoformat(),
                answered.isoformat(),
                resolved,
            ]
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("csv", type=Path, nargs="?")
    parser.add_argument("--source", default="demo", help="the source the key is bound to")
    parser.add_argument("--sample", action="store_true", help="print a sample export and stop")
    args = parser.parse_args()
    if args.sample or args.csv is None:
        sample(sys.stdout)
        return 0
    url = os.environ.get("INGEST_URL", "http://127.0.0.1:8081")
    builder = EventBuilder(args.source, touchpoint="call_centre")
    unreadable = 0
    with (
        TouchpulseClient(url, os.environ["INGEST_KEY"], ClientConfig(linger_s=0.5)) as client,
        args.csv.open(newline="", encoding="utf-8") as rows,
    ):
        chunk: list[Event] = []
        for line, row in enumerate(csv.DictReader(rows), start=2):
            try:
                chunk.append(to_event(builder, row))
            except (KeyError, ValueError) as exc:
                unreadable += 1
                print(f"line {line}: unreadable ({exc})", file=sys.stderr)
            if len(chunk) == CHUNK:
                client.send_many(chunk)
                chunk = []
        client.send_many(chunk)
        report = client.flush(timeout=120)
    for outcome in report.rejected:
        print(f"{outcome.event_id}: refused {json.dumps(outcome.problem)}", file=sys.stderr)
    print(
        json.dumps(
            {
                "delivered": report.delivered,
                "rejected": report.rejected_count,
                "unreadable": unreadable,
                "pending": report.pending,
            }
        )
    )
    return 1 if report.rejected_count or report.pending or unreadable else 0


if __name__ == "__main__":
    sys.exit(main())

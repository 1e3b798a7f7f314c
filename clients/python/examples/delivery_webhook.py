"""A delivery system's webhooks, translated into Touchpulse events.

The carrier calls this handler when a delivery slot is promised and when a parcel is
delivered. Each webhook becomes one event; the webhook's own id is the event id, so a
webhook the carrier redelivers (it does, after a timeout) is the same event to Touchpulse.
The handler answers 202 only once the client has the event in its spool (synced to disk):
from then on the client owns delivery, through an outage of Touchpulse or a restart of
this process.

    INGEST_URL=http://127.0.0.1:8081 INGEST_KEY=tpk_... python delivery_webhook.py --port 8090
    curl -X POST localhost:8090/webhooks/delivery -H 'Content-Type: application/json' -d \
      '{"id": "wh-1", "kind": "parcel.delivered", "order": "O-1", "customer": "C-1",
        "at": "2026-03-01T14:05:00+01:00", "damaged": false, "items_missing": 0}'

Ctrl-C (or SIGTERM) stops it after delivering what it holds (up to 10 s) and prints the
report as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from touchpulse_client import ClientConfig, Event, EventBuilder, Outcome, Status, TouchpulseClient

#: A webhook body larger than this is refused: the carrier's are a few hundred bytes.
MAX_BODY = 64 * 1024


def translate(builder: EventBuilder, hook: dict[str, Any]) -> Event:
    """One webhook → one event (ValueError/KeyError/TypeError when it is not one we know)."""
    event_id = f"carrier-{hook['id']}"
    customer_id = str(hook["customer"])
    journey_id = f"order-{hook['order']}"
    occurred_at = datetime.fromisoformat(hook["at"])
    if hook["kind"] == "slot.promised":
        # delivery-as-promised judges the completion against this due time.
        due = datetime.fromisoformat(hook["slot_end"]).isoformat()
        return builder.event(
            type="delivery.promised",
            event_id=event_id,
            customer_id=customer_id,
            journey_id=journey_id,
            occurred_at=occurred_at,
            attributes={"due_at": due},
        )
    if hook["kind"] == "parcel.delivered":
        return builder.event(
            type="delivery.completed",
            event_id=event_id,
            customer_id=customer_id,
            journey_id=journey_id,
            occurred_at=occurred_at,
            measures={
                "damaged": bool(hook.get("damaged", False)),
                "all_items_delivered": int(hook.get("items_missing", 0)) == 0,
            },
        )
    raise ValueError(f"unknown webhook kind {hook['kind']!r}")


def log_result(outcome: Outcome) -> None:
    if outcome.status is Status.REJECTED:
        # A 4xx is final: the webhook was wrong for Touchpulse. Someone must look at it.
        print(f"rejected {outcome.event_id}: {json.dumps(outcome.problem)}", file=sys.stderr)


def make_handler(client: TouchpulseClient, builder: EventBuilder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.path != "/webhooks/delivery":
                self.send_error(404)
                return
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_BODY:
                self.send_error(413 if length else 411)
                return
            try:
                event = translate(builder, json.loads(self.rfile.read(length)))
            except (ValueError, KeyError, TypeError) as exc:
                self.send_error(422, f"not a delivery webhook: {exc}")
                return
            # Returns once the event is in the spool; a full queue (Touchpulse down for
            # long) raises, and the carrier gets a 503 and redelivers later.
            try:
                client.send(event)
            except Exception:
                self.send_error(503)
                return
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return  # quiet: results are logged by log_result

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--source", default="demo", help="the source the key is bound to")
    parser.add_argument(
        "--spool", type=Path, default=Path(tempfile.gettempdir()) / "touchpulse-delivery-spool"
    )
    args = parser.parse_args()
    url = os.environ.get("INGEST_URL", "http://127.0.0.1:8081")
    key = os.environ["INGEST_KEY"]
    config = ClientConfig(spool_dir=args.spool, linger_s=0.2)
    client = TouchpulseClient(url, key, config, on_result=log_result)
    server = ThreadingHTTPServer(
        ("127.0.0.1", args.port),
        make_handler(client, EventBuilder(args.source, touchpoint="delivery")),
    )
    print(f"listening on http://127.0.0.1:{server.server_address[1]}/webhooks/delivery", flush=True)

    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.serve_forever()
    server.server_close()
    report = client.close(timeout=10)
    print(
        json.dumps(
            {
                "delivered": report.delivered,
                "duplicates": report.duplicates,
                "rejected": [o.event_id for o in report.rejected],
                "spooled": report.spooled,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()

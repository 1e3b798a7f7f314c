"""A touchpoint system that accepts events while Touchpulse is unreachable, then dies.

``python -m tests.client.spool_writer URL KEY SPOOL COUNT IDS_FILE``: sends COUNT events
through a spooled client (ingest at URL is down, so they stay pending), writes their ids to
IDS_FILE once ``send_many`` has returned (the spool is synced by then), and waits to be
killed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from touchpulse_client import ClientConfig, EventBuilder, TouchpulseClient


def main(url: str, key: str, spool: str, count: str, ids_file: str) -> None:
    builder = EventBuilder("client-tests", touchpoint="delivery")
    config = ClientConfig(spool_dir=Path(spool), backoff_cap_s=0.5, linger_s=0)
    client = TouchpulseClient(url, key, config)
    events = [
        builder.event(
            customer_id=f"D-{i % 7}",
            type="delivery.completed",
            journey_id=f"order-{i}",
            measures={"damaged": False},
        )
        for i in range(int(count))
    ]
    client.send_many(events)
    written = Path(ids_file + ".tmp")
    written.write_text("\n".join(e.event_id for e in events))
    written.rename(ids_file)
    while True:  # until SIGKILL: no close(), no flush, nothing delivered
        time.sleep(60)


if __name__ == "__main__":
    main(*sys.argv[1:])

"""A webhook receiver for the fault runs: a minimal HTTP/1.1 server on 127.0.0.1 that
answers every POST ``204`` after ``delay_s`` and counts what it got.

With a subscription pointing here, the interventions the load opens become deliveries, so
the api's dispatcher really claims, sends and records (its transactions exist to be
terminated). The delay is a receiver taking its time, nothing more: the dispatcher holds no
transaction open during a send; it is idle in a transaction only inside the short one that
records an attempt. Signatures are not checked here: the webhook tests do that.
"""

from __future__ import annotations

import asyncio
import contextlib

from touchpulse_shared.stack.procs import free_port

_MAX_HEADER = 64 * 1024


class WebhookReceiver:
    def __init__(self, *, delay_s: float = 0.05) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks/touchpulse"
        self.delay_s = delay_s
        self.received = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: one request after another on the connection
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                if len(head) > _MAX_HEADER:
                    return
                length = 0
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                if length:
                    await reader.readexactly(length)
                self.received += 1
                # A receiver taking its time: the deliberate answer delay, not a wait.
                await asyncio.sleep(self.delay_s)
                writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

"""A TCP fault proxy on loopback, between the services and Kafka or PostgreSQL.

Modes, switched at any time from the proxy's own event loop:

- ``pass``: bytes flow both ways untouched.
- ``cut``: every open connection is reset and new ones are accepted then reset at once, as
  when a link or a firewall drops the peer.
- ``blackhole``: connections stay open but no byte moves (new ones are accepted and held):
  the peer is unreachable yet nothing says so, the worst case for timeouts. Held bytes are
  kept, not dropped, so the streams are intact when the link heals (as TCP retransmission
  would make them).
- ``delay``: every chunk is forwarded ``delay_ms`` after it was read, in order, without
  capping throughput (a slow WAN link, not a slow server).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

CHUNK = 65536


@dataclass(eq=False)  # hashed by identity: kept in a set of open links
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            transport = writer.transport
            if not transport.is_closing():
                transport.abort()  # an RST, not a polite FIN: the link is gone


class FaultProxy:
    def __init__(self, name: str, target_host: str = "127.0.0.1", target_port: int = 0) -> None:
        self.name = name
        self.target_host = target_host
        #: May be set after the proxy starts (Kafka picks its port when it starts).
        self.target_port = target_port
        self.port = 0
        self.mode = "pass"
        self.delay_s = 0.0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None
        self.connections = 0

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.abort()
        self._flowing.set()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    def set_mode(self, mode: str, delay_ms: float = 0.0) -> None:
        if mode not in {"pass", "cut", "blackhole", "delay"}:
            raise ValueError(f"unknown proxy mode {mode}")
        self.mode = mode
        self.delay_s = delay_ms / 1000 if mode == "delay" else 0.0
        if mode == "blackhole":
            self._flowing.clear()
        else:
            self._flowing.set()
        if mode == "cut":
            for link in list(self._links):
                link.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.mode == "cut":
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            # The server itself is down: the client sees what it would see without us.
            writer.transport.abort()
            return
        link = _Link(writer, up_writer)
        self._links.add(link)
        link.tasks = [
            asyncio.create_task(self._pump(reader, up_writer, link)),
            asyncio.create_task(self._pump(up_reader, writer, link)),
        ]
        try:
            await asyncio.gather(*link.tasks, return_exceptions=True)
        finally:
            self._links.discard(link)
            link.abort()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link
    ) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.create_task(self._send(queue, writer))
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                await queue.put((time.monotonic() + self.delay_s, data))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            # Let what was read go out (after its delay), then end this direction.
            await queue.put((0.0, b""))
            with contextlib.suppress(Exception):
                await sender
            # One side closed: the whole link goes, as a real connection would.
            link.abort()

    async def _send(
        self, queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter
    ) -> None:
        while True:
            due, data = await queue.get()
            if not data:
                return
            await self._flowing.wait()  # a blackhole holds the bytes until the link heals
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if writer.transport.is_closing():
                return
            writer.write(data)
            await writer.drain()

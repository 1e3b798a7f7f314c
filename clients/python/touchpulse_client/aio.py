"""The asyncio client: the engine on the caller's event loop.

``await client.send(event)`` returns an :class:`asyncio.Future` at once (it waits only
for room when the queue is full and the policy is ``block``, and for the spool's sync when
there is a spool, which runs in a worker thread so the loop is never blocked on disk).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import TracebackType

import httpx

from touchpulse_client._engine import Engine, OnResult, _Item
from touchpulse_client.client import DEFAULT_CLOSE_S
from touchpulse_client.config import ClientConfig
from touchpulse_client.errors import QueueFull
from touchpulse_client.events import Event
from touchpulse_client.metrics import ClientMetrics
from touchpulse_client.results import DeliveryReport, Outcome


class AsyncTouchpulseClient:
    """``async with AsyncTouchpulseClient(url, key) as client: await client.send(event)``."""

    def __init__(
        self,
        url: str,
        api_key: str,
        config: ClientConfig | None = None,
        *,
        on_result: OnResult | None = None,
        metrics: ClientMetrics | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config or ClientConfig()
        self._engine = Engine(
            url=url,
            api_key=api_key,
            config=self.config,
            on_result=on_result,
            metrics=metrics,
            transport=transport,
        )
        self._started = False
        self._closed: DeliveryReport | None = None

    async def start(self) -> None:
        """Begin delivering (``async with`` does this); resends what the spool holds."""
        if not self._started:
            self._started = True
            await self._engine.start()

    async def _place(self, event: Event) -> _Item | Outcome:
        if not self._started:
            await self.start()
        deadline = asyncio.get_running_loop().time() + self.config.block_timeout_s
        while True:
            placed = self._engine.reserve(event, None)
            if placed is not None:
                return placed
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise QueueFull(
                    f"no room within {self.config.block_timeout_s} s: "
                    f"{self.config.max_queue_events} events are pending"
                )
            try:
                async with asyncio.timeout(left):
                    await self._engine.wait_for_space()
            except TimeoutError:
                continue

    async def _commit(self, items: list[_Item]) -> None:
        if self._engine.spool is not None:
            await asyncio.to_thread(self._engine.commit, items)
        else:
            self._engine.commit(items)

    async def send(self, event: Event) -> asyncio.Future[Outcome]:
        """Queue ``event``; the returned future completes with its result."""
        placed = await self._place(event)
        if isinstance(placed, Outcome):
            done: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
            done.set_result(placed)
            return done
        await self._commit([placed])
        return asyncio.wrap_future(placed.done)

    async def send_many(self, events: Iterable[Event]) -> list[asyncio.Future[Outcome]]:
        """Queue several events with one spool sync."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Outcome]] = []
        items: list[_Item] = []
        try:
            for event in events:
                placed = await self._place(event)
                if isinstance(placed, Outcome):
                    done: asyncio.Future[Outcome] = loop.create_future()
                    done.set_result(placed)
                    futures.append(done)
                else:
                    items.append(placed)
                    futures.append(asyncio.wrap_future(placed.done))
        finally:
            if items:
                await self._commit(items)
        return futures

    @property
    def pending(self) -> int:
        return self._engine.pending_count

    async def flush(self, timeout: float | None = None) -> DeliveryReport:  # noqa: ASYNC109
        """Send everything now; wait until nothing is pending (or ``timeout``); report."""
        if not self._started:
            await self.start()
        return await self._engine.flush(timeout)

    async def close(self, timeout: float | None = DEFAULT_CLOSE_S) -> DeliveryReport:  # noqa: ASYNC109
        """Flush for up to ``timeout``, then stop; what is left is reported (or spooled)."""
        if self._closed is None:
            if not self._started:
                await self.start()
            self._closed = await self._engine.close(timeout)
        return self._closed

    async def __aenter__(self) -> AsyncTouchpulseClient:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

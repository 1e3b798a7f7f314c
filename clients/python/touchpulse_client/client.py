"""The synchronous client: the engine on a background thread with its own event loop.

``send()`` may be called from any thread and returns at once (unless the queue is full
and the policy is ``block``); delivery happens on the client's thread. With a spool,
``send()`` returns only once the event is synced to disk.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine, Iterable
from types import TracebackType
from typing import Any, TypeVar

import httpx

from touchpulse_client._engine import Engine, OnResult, _Item
from touchpulse_client.config import ClientConfig
from touchpulse_client.events import Event
from touchpulse_client.metrics import ClientMetrics
from touchpulse_client.results import DeliveryReport, Outcome

T = TypeVar("T")

#: close() without a timeout: long enough for one retry after a typical Retry-After.
DEFAULT_CLOSE_S = 10.0


def _done(outcome: Outcome) -> concurrent.futures.Future[Outcome]:
    future: concurrent.futures.Future[Outcome] = concurrent.futures.Future()
    future.set_result(outcome)
    return future


class TouchpulseClient:
    """Send events to Touchpulse ingest at ``url`` with ``api_key`` (``events:write``).

    Use it as a context manager, or call :meth:`close` — events still in memory when the
    process exits without it are lost unless a spool is configured.
    """

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
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="touchpulse-client", daemon=True
        )
        self._thread.start()
        self._closed: DeliveryReport | None = None
        self._call(self._engine.start(), None)

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
        # The engine bounds its own wait by ``timeout``; the margin covers its cleanup.
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(None if timeout is None else timeout + 5)

    def send(self, event: Event) -> concurrent.futures.Future[Outcome]:
        """Queue ``event``; the future completes with its result. Raises :class:`QueueFull`
        (policy ``raise``, or ``block`` after ``block_timeout_s``) or :class:`ClientClosed`."""
        placed = self._engine.reserve(event, self.config.block_timeout_s)
        if not isinstance(placed, _Item):
            return _done(self._never_none(placed))
        self._engine.commit([placed])
        return placed.done

    def send_many(self, events: Iterable[Event]) -> list[concurrent.futures.Future[Outcome]]:
        """Queue several events with one spool sync (a spooled ``send()`` syncs each)."""
        futures: list[concurrent.futures.Future[Outcome]] = []
        items: list[_Item] = []
        try:
            for event in events:
                placed = self._engine.reserve(event, self.config.block_timeout_s)
                if not isinstance(placed, _Item):
                    futures.append(_done(self._never_none(placed)))
                else:
                    items.append(placed)
                    futures.append(placed.done)
        finally:
            if items:
                self._engine.commit(items)
        return futures

    @staticmethod
    def _never_none(placed: Outcome | None) -> Outcome:
        # reserve() answers None only when told not to wait; this client always gives it a
        # timeout.
        if placed is None:
            raise RuntimeError("reserve() gave no answer with a timeout")
        return placed

    @property
    def pending(self) -> int:
        """Events waiting in memory for a result."""
        return self._engine.pending_count

    def flush(self, timeout: float | None = None) -> DeliveryReport:
        """Send everything now, wait until nothing is pending (or ``timeout``), and report
        what happened since the previous report."""
        report: DeliveryReport = self._call(self._engine.flush(timeout), timeout)
        return report

    def close(self, timeout: float | None = DEFAULT_CLOSE_S) -> DeliveryReport:
        """Flush for up to ``timeout`` seconds, then stop. Events not delivered by then are
        reported (``undelivered``), or stay in the spool for the next client (``spooled``)."""
        if self._closed is not None:
            return self._closed
        try:
            report: DeliveryReport = self._call(self._engine.close(timeout), timeout)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            if not self._thread.is_alive():
                self._loop.close()
        self._closed = report
        return report

    def __enter__(self) -> TouchpulseClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

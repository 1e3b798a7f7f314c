"""The delivery engine both clients drive: a bounded queue, batching, sending, retrying.

It runs on one asyncio event loop — the caller's, for :class:`AsyncTouchpulseClient`; a
thread of its own, for :class:`TouchpulseClient` — and takes events from any thread.

An event's life, in order:

1. ``admit``: refused as a duplicate when an event with its ``(source, event_id)`` is still
   pending here; otherwise a place in the queue is reserved (or the full-queue policy
   applies), the event is written to the spool and synced (when there is one), and only
   then queued. From here on it is pending until it has a final result.
2. A batch is taken when ``max_batch_events`` or ``max_batch_bytes`` is reached, or when
   its oldest event has waited ``linger_s`` (at once while flushing or closing). Native
   events and CloudEvents go in separate batches (two content types).
3. The batch is posted to ``/v1/events/batch``. A 202 (or a 422 that refused every item)
   settles each event by its index: accepted, or rejected with the item's errors — final,
   never retried. A 413 for a batch of several events splits it in two. Another 4xx
   refuses every event of the request (final). Anything that leaves the outcome unknown
   — a connection error, a timeout, a 5xx, 503 — and 429 sends the same events again, with
   the same ids and bodies, after a full-jitter backoff; a Retry-After (429, 503) holds
   back every request, not only this one, since it speaks for the server.
4. A final result is recorded in the spool (``K``) and only then reported: the future
   completes, ``on_result`` runs, the place in the queue is freed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from touchpulse_client.backoff import Backoff, parse_retry_after
from touchpulse_client.config import ClientConfig, FullPolicy
from touchpulse_client.errors import ClientClosed, QueueFull
from touchpulse_client.events import Event, EventFormat
from touchpulse_client.metrics import ClientMetrics, NoMetrics
from touchpulse_client.results import DeliveryReport, Outcome, Status
from touchpulse_client.spool import Spool

log = logging.getLogger("touchpulse_client")

OnResult = Callable[[Outcome], None]

_CONTENT_TYPES = {
    EventFormat.NATIVE: "application/json",
    EventFormat.CLOUDEVENT: "application/cloudevents-batch+json",
}
#: Outcomes kept in a report's lists; the counts go on beyond.
_REPORT_KEEP = 1000


@dataclass(eq=False)
class _Item:
    event: Event
    #: None for an event recovered from the spool: nobody is waiting on it in this process.
    future: concurrent.futures.Future[Outcome] | None
    seq: int | None = None
    enqueued_at: float = field(default_factory=time.monotonic)

    @property
    def done(self) -> concurrent.futures.Future[Outcome]:
        if self.future is None:
            raise RuntimeError("an event recovered from the spool has no future")
        return self.future


@dataclass
class _Tally:
    delivered: int = 0
    duplicates: int = 0
    rejected: deque[Outcome] = field(default_factory=lambda: deque(maxlen=_REPORT_KEEP))
    rejected_count: int = 0
    dropped: deque[Outcome] = field(default_factory=lambda: deque(maxlen=_REPORT_KEEP))
    dropped_count: int = 0


def _batch_body(batch: list[_Item]) -> bytes:
    joined = b",".join(item.event.body for item in batch)
    if batch[0].event.format is EventFormat.NATIVE:
        return b'{"events":[' + joined + b"]}"
    return b"[" + joined + b"]"


def _retry_reason(status: int) -> str:
    if status == 0:
        return "connection"
    if status in (429, 503):
        return str(status)
    return "5xx" if status >= 500 else "unexpected"


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {"status": response.status_code, "detail": response.text[:500]}
    return body if isinstance(body, dict) else {"status": response.status_code}


class Engine:
    def __init__(
        self,
        *,
        url: str,
        api_key: str,
        config: ClientConfig,
        on_result: OnResult | None,
        metrics: ClientMetrics | None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self._url = url.rstrip("/")
        self._api_key = api_key
        self._on_result = on_result
        self.metrics: ClientMetrics = metrics or NoMetrics()
        self._backoff = Backoff(config.backoff_base_s, config.backoff_cap_s)
        self.spool = (
            Spool(
                config.spool_dir,
                segment_bytes=config.spool_segment_bytes,
                fsync=config.spool_fsync,
            )
            if config.spool_dir is not None
            else None
        )
        # Everything below is guarded by _cond (callers' threads and the loop share it).
        self._cond = threading.Condition()
        self._queues: dict[EventFormat, deque[_Item]] = {f: deque() for f in EventFormat}
        self._queued_bytes: dict[EventFormat, int] = dict.fromkeys(EventFormat, 0)
        self._pending: dict[tuple[str, str], _Item] = {}
        self._closed = False
        self._tally = _Tally()
        # Loop-side state.
        # Loop-side state. asyncio's primitives bind to a loop on first use, not here.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._idle = asyncio.Event()
        self._slots = asyncio.Semaphore(config.max_in_flight)
        self._flushing = 0
        self._not_before = 0.0
        self._http = httpx.AsyncClient(
            base_url=self._url,
            timeout=config.request_timeout_s,
            transport=transport,
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": config.user_agent},
        )
        self._runner: asyncio.Task[None] | None = None
        self._stopping = False
        self._deliveries: set[asyncio.Task[None]] = set()

    # --- life cycle (on the loop) ----------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.spool is not None:
            # What a previous client accepted and Touchpulse never answered for: sent first,
            # with its ids, beyond the queue's bound (it was admitted before).
            with self._cond:
                for spooled in self.spool.recovered():
                    item = _Item(spooled.event, None, spooled.seq)
                    self._pending.setdefault(spooled.event.identity, item)
                    self._push(item)
        self._runner = asyncio.create_task(self._run(), name="touchpulse-client")
        self._signal()

    async def flush(self, timeout: float | None) -> DeliveryReport:  # noqa: ASYNC109 - the public API's bound, as in the sync client
        """Send without lingering until nothing is pending, or ``timeout`` passes."""
        await self._drain(timeout)
        return self.report()

    async def _drain(self, timeout: float | None) -> None:  # noqa: ASYNC109
        self._flushing += 1
        self._signal()
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    while self.pending_count:
                        self._idle.clear()
                        if not self.pending_count:
                            break
                        await self._idle.wait()
        finally:
            self._flushing -= 1

    async def close(self, timeout: float | None) -> DeliveryReport:  # noqa: ASYNC109
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._space.set()  # async senders waiting for room learn that the client closed
        await self._drain(timeout)
        self._stopping = True
        if self._runner is not None:
            self._runner.cancel()
        for task in list(self._deliveries):
            task.cancel()
        await asyncio.gather(
            *([self._runner] if self._runner else []), *self._deliveries, return_exceptions=True
        )
        with self._cond:
            left = list(self._pending.values())
            self._pending.clear()
            for queue in self._queues.values():
                queue.clear()
        spooled = self.spool is not None
        for item in left:
            status = Status.SPOOLED if spooled else Status.UNDELIVERED
            self._complete(item, Outcome(item.event.source, item.event.event_id, status))
        await self._http.aclose()
        report = self.report(undelivered=() if spooled else tuple(i.event.event_id for i in left))
        if self.spool is not None:
            self.spool.close()
        return report

    # --- admission (any thread) ------------------------------------------------------------

    @property
    def pending_count(self) -> int:
        with self._cond:
            return len(self._pending)

    def report(self, undelivered: tuple[str, ...] = ()) -> DeliveryReport:
        with self._cond:
            tally, self._tally = self._tally, _Tally()
            pending = len(self._pending)
        return DeliveryReport(
            delivered=tally.delivered,
            duplicates=tally.duplicates,
            rejected=tuple(tally.rejected),
            rejected_count=tally.rejected_count,
            dropped=tuple(tally.dropped),
            dropped_count=tally.dropped_count,
            pending=pending,
            spooled=self.spool.pending_count if self.spool is not None else 0,
            undelivered=undelivered,
        )

    def reserve(self, event: Event, wait_s: float | None) -> _Item | Outcome | None:
        """A place for ``event``: an item (to be committed), an immediate outcome (a
        duplicate, or dropped), or None when the queue is full, the policy is ``block`` and
        ``wait_s`` is None (the async client waits on the loop instead of blocking it).
        Raises QueueFull or ClientClosed."""
        policy = self.config.full_policy
        with self._cond:
            if self._closed:
                raise ClientClosed("the client is closed")
            if event.identity in self._pending:
                self._tally.duplicates += 1
                return Outcome(event.source, event.event_id, Status.DUPLICATE)
            if self._full():
                if policy is FullPolicy.DROP_NEWEST:
                    return self._drop(event)
                if policy is FullPolicy.RAISE:
                    raise QueueFull(f"{self.config.max_queue_events} events are pending")
                if wait_s is None:
                    return None
                if not self._cond.wait_for(
                    lambda: not self._full() or self._closed, timeout=wait_s
                ):
                    raise QueueFull(
                        f"no room within {wait_s} s: {self.config.max_queue_events} events "
                        "are pending"
                    )
                if self._closed:
                    raise ClientClosed("the client is closed")
                if event.identity in self._pending:
                    self._tally.duplicates += 1
                    return Outcome(event.source, event.event_id, Status.DUPLICATE)
            item = _Item(event, concurrent.futures.Future())
            self._pending[event.identity] = item
        return item

    def commit(self, items: list[_Item]) -> None:
        """Spool (synced) the reserved items, then queue them."""
        try:
            if self.spool is not None:
                for item, seq in zip(items, self.spool.append(i.event for i in items), strict=True):
                    item.seq = seq
        except BaseException:
            with self._cond:
                for item in items:
                    self._pending.pop(item.event.identity, None)
                self._cond.notify_all()
            self._signal_space()
            raise
        with self._cond:
            for item in items:
                self._push(item)
        self._signal()

    def _full(self) -> bool:
        # Reserved events are in _pending already (a duplicate of one must be caught too).
        return len(self._pending) >= self.config.max_queue_events

    def _drop(self, event: Event) -> Outcome:
        outcome = Outcome(event.source, event.event_id, Status.DROPPED)
        self._tally.dropped.append(outcome)
        self._tally.dropped_count += 1
        self._hook(self.metrics.on_drop, outcome)
        self._notify(outcome)
        return outcome

    def _push(self, item: _Item) -> None:
        fmt = item.event.format
        self._queues[fmt].append(item)
        self._queued_bytes[fmt] += len(item.event.body)

    def _signal(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            loop.call_soon_threadsafe(wake.set)

    def _signal_space(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._space.set)

    async def wait_for_space(self) -> None:
        self._space.clear()
        with self._cond:
            if not self._full() or self._closed:
                return
        await self._space.wait()

    # --- the batching loop -----------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while True:
                batch, wait = self._take()
                if batch is None:
                    if wait is not None:
                        # Linger: the oldest queued event may wait a little for company.
                        # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a
                        # cancellation that races its timeout, and close() cancels this task.
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(wait):
                                await self._wake.wait()
                        self._wake.clear()
                        continue
                    break
                await self._slots.acquire()
                if self._stopping:  # close() gave up waiting: what is left stays pending
                    self._slots.release()
                    with self._cond:
                        for item in batch:
                            self._push(item)
                    return
                task = asyncio.create_task(self._deliver_slot(batch))
                self._deliveries.add(task)
                task.add_done_callback(self._deliveries.discard)

    def _take(self) -> tuple[list[_Item] | None, float | None]:
        """The next batch, or None and how long to linger (None: the queue is empty)."""
        config = self.config
        with self._cond:
            heads = [(q[0].enqueued_at, f) for f, q in self._queues.items() if q]
            if not heads:
                return None, None
            oldest, fmt = min(heads)
            queue = self._queues[fmt]
            urgent = self._flushing > 0 or self._closed
            full = (
                len(queue) >= config.max_batch_events
                or self._queued_bytes[fmt] >= config.max_batch_bytes
            )
            if not (urgent or full):
                left = oldest + config.linger_s - time.monotonic()
                if left > 0:
                    return None, left
            batch: list[_Item] = []
            size = 2  # the brackets
            while queue and len(batch) < config.max_batch_events:
                body = len(queue[0].event.body) + 1
                if batch and size + body > config.max_batch_bytes:
                    break
                item = queue.popleft()
                self._queued_bytes[fmt] -= len(item.event.body)
                batch.append(item)
                size += body
            return batch, None

    async def _deliver_slot(self, batch: list[_Item]) -> None:
        try:
            await self._deliver(batch)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug here must not lose the events: they go back to the queue.
            log.exception("touchpulse_client.delivery_failed")
            with self._cond:
                for item in batch:
                    if item.event.identity in self._pending:
                        self._push(item)
        finally:
            self._slots.release()
            self._signal()

    async def _deliver(self, batch: list[_Item]) -> None:
        """Send ``batch`` until every item has a final result (see the module docstring)."""
        attempt = 0
        while batch:
            batch = self._expire(batch)
            if not batch:
                return
            hold = self._not_before - time.monotonic()
            if hold > 0:
                await asyncio.sleep(hold)
            body = _batch_body(batch)
            started = time.monotonic()
            response: httpx.Response | None
            try:
                response = await self._http.post(
                    "/v1/events/batch",
                    content=body,
                    headers={"Content-Type": _CONTENT_TYPES[batch[0].event.format]},
                )
            except httpx.TransportError:
                response = None
            status = 0 if response is None else response.status_code
            self._hook(
                self.metrics.on_batch_sent,
                events=len(batch),
                size_bytes=len(body),
                status=status,
                seconds=time.monotonic() - started,
            )
            if response is not None:
                items = self._items(response)
                if items is not None:
                    # An answer that leaves some items out (never expected of ingest): those
                    # go again after a backoff, like any unknown outcome.
                    batch = self._settle_items(batch, items)
                    if not batch:
                        return
                elif status == 413 and len(batch) > 1:
                    half = len(batch) // 2
                    await self._deliver(batch[:half])
                    batch = batch[half:]
                    continue
                elif 400 <= status < 500 and status != 429:
                    problem = _problem(response)
                    self._settle([(item, Status.REJECTED, status, problem) for item in batch])
                    return
            attempt += 1
            retry_after = None
            if response is not None and status in (429, 503):
                retry_after = parse_retry_after(response.headers.get("retry-after"))
                if retry_after is not None:
                    retry_after = min(retry_after, self.config.max_retry_after_s)
                    self._not_before = max(self._not_before, time.monotonic() + retry_after)
            delay = self._backoff.delay(attempt, retry_after)
            reason = _retry_reason(status)
            self._hook(
                self.metrics.on_retry,
                events=len(batch),
                attempt=attempt,
                delay_s=delay,
                reason=reason,
            )
            await asyncio.sleep(delay)

    def _items(self, response: httpx.Response) -> list[Mapping[str, Any]] | None:
        """The per-item verdicts of a batch answer (202, or 422 refusing every item)."""
        if response.status_code not in (202, 422):
            return None
        try:
            body = response.json()
        except ValueError:
            return None
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list):
            return None
        return [item for item in items if isinstance(item, dict)]

    def _settle_items(self, batch: list[_Item], items: list[Mapping[str, Any]]) -> list[_Item]:
        """Settle what the answer speaks for; the items it does not mention, to retry."""
        settled: list[tuple[_Item, Status, int | None, Mapping[str, Any] | None]] = []
        answered: set[int] = set()
        for verdict in items:
            index = verdict.get("index")
            if not isinstance(index, int) or not 0 <= index < len(batch) or index in answered:
                continue
            answered.add(index)
            if verdict.get("status") == "accepted":
                settled.append((batch[index], Status.ACCEPTED, 202, None))
            else:
                http_status = verdict.get("http_status")
                problem = {k: v for k, v in verdict.items() if k in ("errors", "detail")}
                settled.append(
                    (
                        batch[index],
                        Status.REJECTED,
                        http_status if isinstance(http_status, int) else None,
                        problem,
                    )
                )
        self._settle(settled)
        return [item for i, item in enumerate(batch) if i not in answered]

    def _expire(self, batch: list[_Item]) -> list[_Item]:
        limit = self.config.give_up_after_s
        if limit is None:
            return batch
        now = time.monotonic()
        late = [item for item in batch if now - item.enqueued_at > limit]
        if late:
            self._settle([(item, Status.EXPIRED, None, None) for item in late])
        return [item for item in batch if now - item.enqueued_at <= limit]

    # --- results ---------------------------------------------------------------------------

    def _settle(
        self, results: Iterable[tuple[_Item, Status, int | None, Mapping[str, Any] | None]]
    ) -> None:
        results = list(results)
        if not results:
            return
        if self.spool is not None:
            # Recorded before anyone hears of it: a crash after the ack only resends.
            self.spool.ack(item.seq for item, _, _, _ in results if item.seq is not None)
        outcomes = []
        with self._cond:
            for item, status, http_status, problem in results:
                event = item.event
                outcome = Outcome(event.source, event.event_id, status, http_status, problem)
                self._pending.pop(event.identity, None)
                if status is Status.ACCEPTED:
                    self._tally.delivered += 1
                elif status is Status.REJECTED:
                    self._tally.rejected.append(outcome)
                    self._tally.rejected_count += 1
                else:
                    self._tally.dropped.append(outcome)
                    self._tally.dropped_count += 1
                outcomes.append((item, outcome))
            depth = len(self._pending)
            self._cond.notify_all()
        for item, outcome in outcomes:
            if outcome.status is Status.EXPIRED:
                self._hook(self.metrics.on_drop, outcome)
            self._complete(item, outcome)
        self._hook(self.metrics.on_queue_depth, depth)
        self._space.set()
        if not depth:
            self._idle.set()

    def _complete(self, item: _Item, outcome: Outcome) -> None:
        if item.future is not None and not item.future.done():
            item.future.set_result(outcome)
        self._notify(outcome)

    def _notify(self, outcome: Outcome) -> None:
        if self._on_result is not None:
            self._hook(self._on_result, outcome)

    def _hook(self, hook: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        try:
            hook(*args, **kwargs)
        except Exception:
            log.exception("touchpulse_client.hook_failed")

"""The client side of the proof: every event sent, and the final answer it got.

The load driver posts through ingest as a touchpoint system would — single events and
batches with a real key — and retries an indeterminate answer (503, a timeout, a
connection error) with the same event ids, with backoff, as the contract tells clients
to. Some items are deliberately bad (an invalid field, an event too far in the future,
a source the key may not write, a body that is not JSON, a wrong content type): they must
be answered 4xx, never 5xx, and must never reach the state.

Some good events are orders (``order.placed``, which opens the 48-hour delivery deadline)
back-dated so that their deadline falls due a few seconds after they are sent: the sweep
then expires deadlines all through every phase (a breach it writes and commits). Half of
them get their ``delivery.completed`` later, after the due time (a late fulfilment that
supersedes the breach); the others never do.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

from tests.scoring.pipeline.ledger import KINDS, event_shape

# Indeterminate answers are retried this long after the load stops; a fault is healed
# by then, so only a real bug leaves an event without a definitive answer.
SETTLE_S = 120.0
REQUEST_TIMEOUT_S = 10.0
# Orders: their share of good events, the seconds after sending their deadline falls due,
# and the share of them fulfilled (late).
ORDER_SHARE = 0.06
ORDER_DUE_AFTER_S = (1.0, 10.0)
ORDER_FULFILLED = 0.5
DELIVERY_WITHIN = timedelta(hours=48)  # delivery-within-48h in deploy/promises.yaml


@dataclass
class Ledger:
    #: event id -> phase (the fault it was sent under)
    phase_of: dict[str, str] = field(default_factory=dict)
    acked: set[str] = field(default_factory=set)
    rejected: set[str] = field(default_factory=set)
    #: ids without a definitive answer: may or may not be stored, so never "lost"
    indeterminate: set[str] = field(default_factory=set)
    #: status -> count over every attempt ("timeout"/"conn" for transport errors)
    answers: Counter[str] = field(default_factory=Counter)
    #: 5xx other than 503 to any request: a bug
    server_errors: int = 0
    #: 5xx other than 503 to a request with bad input only: the promise is 4xx
    server_errors_bad_input: int = 0
    #: a bad item answered 2xx, or a good one answered 4xx
    wrong_answers: int = 0
    retries: int = 0

    def ids(self, phase: str, of: set[str]) -> set[str]:
        return {i for i in of if self.phase_of.get(i) == phase}


def _event(event_id: str, customer: str, rng: random.Random, source: str) -> dict[str, Any]:
    kind = rng.choice(KINDS)
    touchpoint, event_type, measures = event_shape(kind, rng)
    at = datetime.now(UTC) - timedelta(seconds=rng.uniform(0, 6 * 3600))
    return {
        "event_id": event_id,
        "source": source,
        "customer_id": customer,
        "touchpoint": touchpoint,
        "type": event_type,
        "occurred_at": at.isoformat(),
        "measures": measures,
    }


@dataclass
class _Request:
    path: str
    body: bytes
    content_type: str
    good: list[str]  # ids that must be accepted
    bad: list[str]  # ids that must be rejected
    bad_only: bool  # every part of it is bad input


class LoadDriver:
    def __init__(
        self,
        *,
        ingest_url: str,
        key: str,
        source: str,
        ledger: Ledger,
        seed: int,
        customers: int = 200,
    ) -> None:
        self.ingest_url = ingest_url
        self.key = key
        self.source = source
        self.ledger = ledger
        self.rng = random.Random(seed)
        self.customers = [f"F-{i}" for i in range(customers)]
        self._seq = 0
        #: orders still to be fulfilled: (due at, customer, journey id)
        self._orders: list[tuple[datetime, str, str]] = []

    def _id(self, phase: str, bad: bool = False) -> str:
        self._seq += 1
        event_id = f"{'bad-' if bad else ''}{phase}-{self._seq}"
        self.ledger.phase_of[event_id] = phase
        return event_id

    def _good(self, phase: str) -> tuple[str, dict[str, Any]]:
        event_id = self._id(phase)
        now = datetime.now(UTC)
        if self._orders and self._orders[0][0] < now - timedelta(seconds=1):
            # The delivery, late: its deadline fell due (and may have been expired) already.
            _, customer, journey = self._orders.pop(0)
            event = _event(event_id, customer, self.rng, self.source)
            event["touchpoint"], event["type"], event["measures"] = event_shape(
                "delivery", self.rng
            )
            event["occurred_at"] = now.isoformat()
            event["journey_id"] = journey
            return event_id, event
        customer = self.rng.choice(self.customers)
        event = _event(event_id, customer, self.rng, self.source)
        if self.rng.random() < ORDER_SHARE:
            due = now + timedelta(seconds=self.rng.uniform(*ORDER_DUE_AFTER_S))
            event["touchpoint"], event["type"], event["measures"] = "sales", "order.placed", {}
            event["occurred_at"] = (due - DELIVERY_WITHIN).isoformat()
            event["journey_id"] = f"order-{event_id}"
            if self.rng.random() < ORDER_FULFILLED:
                self._orders.append((due, customer, event["journey_id"]))
                self._orders.sort()
        return event_id, event

    def _bad_item(self, phase: str) -> tuple[str, dict[str, Any]]:
        event_id = self._id(phase, bad=True)
        event = _event(event_id, self.rng.choice(self.customers), self.rng, self.source)
        how = self.rng.choice(["missing", "future", "type"])
        if how == "missing":
            del event["customer_id"]
        elif how == "future":
            event["occurred_at"] = (datetime.now(UTC) + timedelta(days=2)).isoformat()
        else:
            event["measures"] = {"wait_seconds": "a while"}
            event["touchpoint"], event["type"] = "call_centre", "call.answered"
        return event_id, event

    def next_request(self, phase: str) -> _Request:  # noqa: PLR0911 - one return per kind
        roll = self.rng.random()
        if roll < 0.45:
            event_id, event = self._good(phase)
            return _Request(
                "/v1/events", orjson.dumps(event), "application/json", [event_id], [], False
            )
        if roll < 0.90:
            items = [self._good(phase) for _ in range(self.rng.randint(5, 40))]
            bad = [self._bad_item(phase) for _ in range(self.rng.choice([0, 0, 1, 2]))]
            mixed = items + bad
            self.rng.shuffle(mixed)
            return _Request(
                "/v1/events/batch",
                orjson.dumps({"events": [e for _, e in mixed]}),
                "application/json",
                [i for i, _ in items],
                [i for i, _ in bad],
                False,
            )
        # Bad input alone: must be 4xx whatever else is going on.
        how = self.rng.choice(["invalid", "source", "json", "type", "batch"])
        if how == "invalid":
            event_id, event = self._bad_item(phase)
            return _Request(
                "/v1/events", orjson.dumps(event), "application/json", [], [event_id], True
            )
        if how == "source":
            event_id = self._id(phase, bad=True)
            event = _event(event_id, self.rng.choice(self.customers), self.rng, "not-mine")
            return _Request(
                "/v1/events", orjson.dumps(event), "application/json", [], [event_id], True
            )
        if how == "json":
            return _Request("/v1/events", b'{"event_id": "x",', "application/json", [], [], True)
        if how == "type":
            return _Request("/v1/events", b"event_id=x", "text/plain", [], [], True)
        bad = [self._bad_item(phase) for _ in range(3)]
        return _Request(
            "/v1/events/batch",
            orjson.dumps({"events": [e for _, e in bad]}),
            "application/json",
            [],
            [i for i, _ in bad],
            True,
        )

    async def run(self, phase: str, rate: float, stopping: asyncio.Event, workers: int = 8) -> None:
        """Send at about ``rate`` events a second until ``stopping``; then give every request
        in flight until :data:`SETTLE_S` to get a definitive answer."""
        limits = httpx.Limits(max_connections=workers * 2)
        async with httpx.AsyncClient(
            base_url=self.ingest_url, timeout=REQUEST_TIMEOUT_S, limits=limits
        ) as client:
            queue: asyncio.Queue[_Request | None] = asyncio.Queue(maxsize=workers * 2)

            async def produce() -> None:
                sent = 0.0
                started = time.monotonic()
                while not stopping.is_set():
                    request = self.next_request(phase)
                    await queue.put(request)
                    sent += max(1, len(request.good) + len(request.bad))
                    ahead = sent / rate - (time.monotonic() - started)
                    if ahead > 0:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stopping.wait(), ahead)
                for _ in range(workers):
                    await queue.put(None)

            async def work() -> None:
                while (request := await queue.get()) is not None:
                    await self._send(client, request, stopping)

            await asyncio.gather(produce(), *(work() for _ in range(workers)))

    async def _send(
        self, client: httpx.AsyncClient, request: _Request, stopping: asyncio.Event
    ) -> None:
        ledger = self.ledger
        backoff = 0.2
        give_up: float | None = None
        while True:
            try:
                response = await client.post(
                    request.path,
                    content=request.body,
                    headers={
                        "Authorization": f"Bearer {self.key}",
                        "Content-Type": request.content_type,
                    },
                )
                status = response.status_code
            except httpx.TimeoutException:
                status, response = 0, None
                ledger.answers["timeout"] += 1
            except httpx.TransportError:
                status, response = -1, None
                ledger.answers["conn"] += 1
            else:
                ledger.answers[str(status)] += 1
            if status >= 500 and status != 503:
                ledger.server_errors += 1
                if request.bad_only:
                    ledger.server_errors_bad_input += 1
            if status in {202, 200} or (400 <= status < 500 and status != 429):
                self._settle(request, status, response)
                return
            # Indeterminate (503, 5xx, timeout, connection error) or 429: the same request again.
            if stopping.is_set():
                give_up = give_up or time.monotonic() + SETTLE_S
                if time.monotonic() > give_up:
                    ledger.indeterminate.update(request.good, request.bad)
                    return
            ledger.retries += 1
            retry_after = 0.0
            if response is not None:
                with contextlib.suppress(ValueError):
                    retry_after = float(response.headers.get("Retry-After", "0"))
            await asyncio.sleep(min(max(backoff, retry_after), 2.0) * random.uniform(0.8, 1.2))
            backoff = min(backoff * 2, 2.0)

    def _settle(self, request: _Request, status: int, response: httpx.Response | None) -> None:
        ledger = self.ledger
        if status in {200, 202}:
            if request.bad_only:
                ledger.wrong_answers += 1
            assert response is not None
            body = response.json()
            items = body.get("items")
            if items is None:  # a single event
                ledger.acked.update(request.good)
                ledger.wrong_answers += len(request.bad)
                return
            ids = [*_ids_in_order(request)]
            for item in items:
                event_id = ids[item["index"]]
                if item["status"] == "accepted":
                    ledger.acked.add(event_id)
                    if event_id in request.bad:
                        ledger.wrong_answers += 1
                else:
                    ledger.rejected.add(event_id)
                    if event_id in request.good:
                        ledger.wrong_answers += 1
            return
        # 4xx: nothing of it was accepted.
        ledger.rejected.update(request.bad)
        ledger.rejected.update(request.good)
        ledger.wrong_answers += len(request.good)


def _ids_in_order(request: _Request) -> list[str]:
    events = orjson.loads(request.body)["events"]
    return [str(e["event_id"]) for e in events]

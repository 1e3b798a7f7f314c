"""Synthetic touchpoint traffic posted through the real ingest API.

Customers of two segments meet the company at every touchpoint the default catalogue
knows; each contact keeps or breaks its promise with a configurable probability, orders open
delivery deadlines that are met or missed, and a small share of events is malformed on
purpose (they must come back as per-item 422s and never reach Kafka).

Determinism: the events are a pure function of the seed, the customer count, the rates and
the start time; ``occurred_at`` is measured back from the start time, so the same seed and
start give byte-identical events. Pacing and posting are separate from generation.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx

Event = dict[str, Any]


def _contacts() -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """Kept and broken measures of each measured promise in deploy/promises.yaml."""
    return [
        (
            "call_centre",
            "call.answered",
            {"wait_seconds": 25, "first_contact_resolution": True},
            {"wait_seconds": 420, "first_contact_resolution": False},
        ),
        (
            "switchboard",
            "call.transferred",
            {"transfer_seconds": 8, "transfers": 1},
            {"transfer_seconds": 75, "transfers": 3},
        ),
        ("web", "page.viewed", {"load_seconds": 1.2}, {"load_seconds": 7.5}),
        ("web", "checkout.submitted", {"succeeded": True}, {"succeeded": False}),
        ("app", "session.ended", {"crashed": False}, {"crashed": True}),
        ("app", "screen.loaded", {"load_seconds": 0.6}, {"load_seconds": 4.0}),
        ("sales", "quote.sent", {"turnaround_hours": 4}, {"turnaround_hours": 60}),
        (
            "billing",
            "invoice.issued",
            {"invoice_correct": True, "days_after_delivery": 1},
            {"invoice_correct": False, "days_after_delivery": 9},
        ),
        ("billing", "payment.captured", {"double_charged": False}, {"double_charged": True}),
        ("customer_service", "case.resolved", {"resolution_hours": 12}, {"resolution_hours": 160}),
        ("communication", "message.answered", {"response_hours": 3}, {"response_hours": 70}),
        ("survey", "survey.answered", {"csat": 5, "nps": 9}, {"csat": 1, "nps": 2}),
    ]


@dataclass(frozen=True)
class SimulatorConfig:
    seed: int = 1
    customers: int = 200
    #: Probability that a contact breaks its promise (per touchpoint overrides below).
    breach_rate: float = 0.15
    breach_rates: dict[str, float] = field(default_factory=dict)
    premium_share: float = 0.2
    #: Share of deliberately malformed events.
    bad_rate: float = 0.01
    source: str = "simulator"


class Simulator:
    """Generates events one step at a time; a step is one customer contact (1-2 events)."""

    def __init__(self, config: SimulatorConfig, start: datetime) -> None:
        self.config = config
        self.start = start
        self._rng = random.Random(config.seed)
        self._contacts = _contacts()
        self._step = 0

    def customer(self, index: int) -> str:
        return f"sim-{self.config.seed}-c{index:05d}"

    def segment(self, index: int) -> str:
        # Fixed per customer index, so profiles posted to the api agree with the events.
        return (
            "premium" if random.Random(index).random() < self.config.premium_share else "standard"
        )

    def events(self, count: int) -> list[Event]:
        out: list[Event] = []
        while len(out) < count:
            out.extend(self._next_step())
        return out[:count] if len(out) > count else out

    def _next_step(self) -> Iterator[Event]:
        rng, config = self._rng, self.config
        self._step += 1
        step = self._step
        customer = self.customer(rng.randrange(config.customers))
        # Each step is a second later than the previous one, counted back from the start.
        at = self.start - timedelta(hours=1) + timedelta(seconds=step % 3600)
        if rng.random() < config.bad_rate:
            yield self._bad(step, customer, at, rng)
            return
        if rng.random() < 0.15:
            yield from self._order(step, customer, at, rng)
            return
        touchpoint, kind, kept, broken = self._contacts[rng.randrange(len(self._contacts))]
        rate = config.breach_rates.get(touchpoint, config.breach_rate)
        measures = broken if rng.random() < rate else kept
        yield self._event(
            f"{step}", customer, touchpoint=touchpoint, kind=kind, at=at, measures=measures
        )

    def _order(self, step: int, customer: str, at: datetime, rng: random.Random) -> Iterator[Event]:
        """An order placed some hours ago and its delivery now: on time, late or damaged."""
        late = rng.random() < self.config.breach_rates.get("delivery", self.config.breach_rate)
        placed = at - timedelta(hours=70 if late else 20)
        journey = f"order-{self.config.seed}-{step}"
        yield self._event(
            f"{step}-o",
            customer,
            touchpoint="sales",
            kind="order.placed",
            at=placed,
            measures={"price_matches_quote": True},
            journey=journey,
        )
        damaged = late and rng.random() < 0.3
        yield self._event(
            f"{step}-d",
            customer,
            touchpoint="delivery",
            kind="delivery.completed",
            at=at,
            measures={"damaged": damaged, "all_items_delivered": True},
            journey=journey,
        )

    def _event(
        self,
        suffix: str,
        customer: str,
        *,
        touchpoint: str,
        kind: str,
        at: datetime,
        measures: dict[str, Any],
        journey: str | None = None,
    ) -> Event:
        event: Event = {
            "event_id": f"sim-{self.config.seed}-{suffix}",
            "source": self.config.source,
            "customer_id": customer,
            "touchpoint": touchpoint,
            "type": kind,
            "occurred_at": at.isoformat(),
            "measures": dict(measures),
        }
        if journey is not None:
            event["journey_id"] = journey
        return event

    def _bad(self, step: int, customer: str, at: datetime, rng: random.Random) -> Event:
        event = self._event(
            f"{step}-bad",
            customer,
            touchpoint="web",
            kind="page.viewed",
            at=at,
            measures={"load_seconds": 1},
        )
        flaw = rng.randrange(3)
        if flaw == 0:
            del event["customer_id"]
        elif flaw == 1:
            event["occurred_at"] = "yesterday"
        else:
            event["measures"] = {"load_seconds": "slow"}
        return event


@dataclass
class Sent:
    """What a run posted and what ingest answered, per item."""

    posted: int = 0
    accepted: int = 0
    rejected: int = 0
    unavailable: int = 0
    statuses: Counter[int] = field(default_factory=Counter)


async def post_paced(
    client: httpx.AsyncClient,
    simulator: Simulator,
    *,
    rate: float,
    duration_s: float | None = None,
    total: int | None = None,
    batch: int = 20,
    stop: asyncio.Event | None = None,
) -> Sent:
    """Post batches to ``/v1/events/batch`` at ``rate`` events per second.

    Open loop: each batch is due at its own time whatever the previous answers took, so a
    slow ingest shows as latency rather than a quietly lower offered rate. A 503 batch is
    retried once with the same event ids, as a real client would.
    """
    sent = Sent()
    began = time.monotonic()
    interval = batch / rate
    n = 0
    while (stop is None or not stop.is_set()) and (total is None or sent.posted < total):
        due = began + n * interval
        if duration_s is not None and due - began >= duration_s:
            break
        if (delay := due - time.monotonic()) > 0:
            await asyncio.sleep(delay)  # pacing the offered rate, not waiting for readiness
        size = batch if total is None else min(batch, total - sent.posted)
        events = simulator.events(size)
        await _post(client, events, sent)
        n += 1
    return sent


async def _post(client: httpx.AsyncClient, events: list[Event], sent: Sent) -> None:
    for _attempt in range(2):
        response = await client.post("/v1/events/batch", json={"events": events})
        sent.statuses[response.status_code] += 1
        if response.status_code == 503:
            continue
        sent.posted += len(events)
        if response.status_code in (202, 422) and "items" in response.json():
            body = response.json()
            sent.accepted += body.get("accepted", 0)
            sent.rejected += body.get("rejected", 0)
        else:
            sent.rejected += len(events)
        return
    sent.posted += len(events)
    sent.unavailable += len(events)

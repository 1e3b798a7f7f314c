"""Synthetic customers and their journeys, posted through the real ingest API.

**Customers.** ``customers`` synthetic customers, ``sim-<seed>-c<index>``, each with a
profile derived from the seed and the index alone: a segment (standard, premium,
business), ``customer_since`` (about a quarter joined within the last 90 days, the rest
long ago), a value and a reach. :meth:`Simulator.profiles` lists them and
:func:`post_profiles` PUTs them through the api, so scoring applies the segment terms the
simulator planned with.

**Journeys.** Each journey belongs to one customer and is a small state machine that emits
its events in order on a simulated clock:

- an order: sometimes a ``quote.sent`` first; ``order.placed`` → ``delivery.promised``
  (attribute ``due_at``, the promised slot) → ``delivery.completed`` on time, late, or
  never (nothing is sent: the deadline sweep records the breach by absence), or on time but
  damaged or incomplete → ``invoice.issued`` (correct or not, on time or not) → sometimes
  ``payment.captured`` → sometimes a call (``call.transferred`` through the switchboard,
  then ``call.answered`` with its wait), far more often when something went wrong →
  sometimes ``complaint.received`` → ``complaint.acknowledged`` (in time, late or never) →
  ``case.resolved`` → sometimes a message → ``survey.answered`` whose csat and nps follow
  how the journey went (no broken promise: 4-5; one: 3-4; more, or never delivered: 1-2,
  a critical breach);
- a web session (``page.viewed``…, sometimes ``checkout.submitted``), an app session
  (``screen.loaded``…, ``session.ended``), a call about something else, an e-mail answered,
  a sales quote, a notice of changed terms, or a relationship survey.

**Rates.** Every promise-breaking decision (:data:`DECISIONS`) keeps or breaks its promise
with its own realistic default probability, or the touchpoint's override
(``breach_rates``), or one flat ``breach_rate``; an :class:`Incident` raises that rate for
one touchpoint during a window of the simulated clock (a delivery depot failing for an hour:
the deliveries due in that hour are late or never come). Kept values meet even premium
terms; broken ones break even standard terms. The defaults are approximate industry
figures (docs/simulator.md has the table): on-time delivery about 92 % (parcel carriers and
e-commerce report 90-95 %: ShipMatrix, the Pitney Bowes Parcel Shipping Index), first-contact
resolution 72 % (SQM Group's industry average of 70-75 %), calls over a minute 8 % (the 80/20
service level of ICMI and COPC), wrong invoices 3 % and double charges 0.6 % (accounts-payable
surveys, APQC, Ardent Partners), unhappy surveys 6 % before any broken promise (CSAT mostly
4-5, a few per cent 1-2), poor page loads 8 % (Chrome UX Report, HTTP Archive Web Almanac),
app crashes 0.5 % of sessions (Crashlytics and Instabug report crash-free sessions above
99 %); the rest are stated assumptions.

**Ground truth.** Each generated event carries the promises it breaks and the deadline
clock it opens; :class:`Truth` turns the events that were sent (:attr:`Sent.truth`: those
ingest accepted; :meth:`Simulator.truth`: all handed out) into a :class:`Treatment` per
customer. A customer is *treated badly* with promises broken on two or more distinct
touchpoints, or a critical breach (a survey answered 2 or less, a double charge).
:func:`measure` waits until scoring has judged a run (a readiness condition on the clocks
the run left open, scoring's committed counters and a stable queue) and scores the
intervention queue against the truth (:class:`QueueScore`: recall on critical breaches and
on the treated badly, precision, interventions on a single breach). A measured run drains:
:func:`post_paced` with ``drain`` finishes the journeys begun instead of cutting them off.

**Time.** Simulated time is real time: ``start`` plus the seconds of the simulated clock,
so a run that posts at the timeline's own pace (``rate``: :func:`post_paced` with the same
rate as ``SimulatorConfig.rate``, as the CLI does) posts every live event at the moment it
says it happened. Journeys are compressed around deadlines instead of the clock:

- ``order.placed`` is back-dated so that its delivery clock (48 h, 24 h for premium)
  runs out ``deadline_window_s`` (default 60 s) after the order is posted, and
  ``delivery.promised`` (back-dated a few hours after the order) promises a slot ending a
  little earlier (``due_at`` = 0.9 of the window). An on-time delivery is posted within the
  window, stamped when it is posted; a never-delivered order's clocks run out in front of
  the viewer. A late delivery is back-dated further by its lateness (2-36 h), so its clock
  has already run out when the order arrives (the sweep records the breach at once), and
  the delivery, posted a little after the window, then records the real gap in hours.
- ``complaint.received`` is back-dated the same way for its 24 h (premium: 4 h)
  acknowledgement clock; ``quote.sent`` and ``delivery.promised`` are back-dated into the
  order's past. Everything else is stamped when it is due to be posted.

So a few minutes of a run show orders, on-time and late deliveries, never-delivered ones,
invoices, calls, complaints and surveys. The run joins the world midway: journeys begun up
to a few minutes before the start are simulated too, and only their events due after the
start are sent (a delivery whose order was never sent fulfils nothing in scoring), so the
rate and the mix are steady from the first second. No event is dated more than about six
days back (a quote before a late order), far inside ingest's 90 days, and none is in the
future at its due time. Posting faster than the timeline (``post_paced`` with a higher rate
than ``SimulatorConfig.rate``) runs the clock faster: events get ahead of the wall clock, so
:func:`post_paced` holds a batch whose newest event would be more than ``max_lead_s`` (10
minutes, inside ingest's 15 minutes of allowed skew) ahead of it.

**Sends.** A small share of events is posted out of order (after a later event of the same
journey; never a deadline's opening or fulfilling event, which scoring would take for a
broken promise by design), a small share is posted twice (the same dict, event id and all:
a retry that scoring deduplicates), and ``bad_rate`` of the posted items are malformed on
purpose, of several kinds (:data:`BAD_KINDS`), each failing the contract so ingest refuses
it with a per-item 422.

**Determinism.** Events are a pure function of the configuration, the seed and the start
time; event ids carry the seed and the start (``sim-<seed>-<start>-…``), so two runs with
different starts never collide in scoring's deduplication. Generation is a stream:
``events(a) + events(b) == events(a + b)``, so batch sizes and pacing never change what is
sent. Separate random streams drive the journeys, the malformed events and the send
effects, so the good events do not change with ``bad_rate``.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import signal
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final, Literal

import httpx
import orjson

Event = dict[str, Any]
Format = Literal["native", "cloudevents"]

HOUR: Final = 3600.0

#: Kinds of malformed events, each refused by the contract (and so by ingest, with 422).
BAD_KINDS: Final = (
    "missing_field",
    "bad_timestamp",
    "naive_timestamp",
    "wrong_measure_type",
    "bad_touchpoint",
    "bad_type",
    "bad_identifier",
    "unknown_field",
)

#: The touchpoint of every event type the simulator sends.
TOUCHPOINTS: Final[dict[str, str]] = {
    "quote.sent": "sales",
    "order.placed": "sales",
    "delivery.promised": "delivery",
    "delivery.completed": "delivery",
    "invoice.issued": "billing",
    "payment.captured": "billing",
    "call.transferred": "switchboard",
    "call.answered": "call_centre",
    "complaint.received": "customer_service",
    "complaint.acknowledged": "customer_service",
    "case.resolved": "customer_service",
    "message.answered": "communication",
    "change.notified": "communication",
    "survey.answered": "survey",
    "page.viewed": "web",
    "checkout.submitted": "web",
    "screen.loaded": "app",
    "session.ended": "app",
}

#: Events that open or stop a deadline clock: never sent out of order (see the docstring).
DEADLINE_EVENTS: Final = frozenset(
    {
        "order.placed",
        "delivery.promised",
        "delivery.completed",
        "complaint.received",
        "complaint.acknowledged",
    }
)

#: Every promise-breaking decision the simulator draws: its touchpoint and its default
#: probability of breaking the promise. Approximate industry figures; the sources are in the
#: module docstring and docs/simulator.md. ``breach_rates`` (per touchpoint) and
#: ``breach_rate`` (everywhere) override them.
DECISIONS: Final[dict[str, tuple[str, float]]] = {
    # Late (half), never delivered (a fifth), damaged (a fifth) or incomplete: 92 % perfect.
    "delivery": ("delivery", 0.08),
    "quote": ("sales", 0.10),  # a quote slower than a working day
    "price": ("sales", 0.02),  # the order's price differs from the quote
    # A wrong invoice (some of them also late); a fifth of this rate of payments is a
    # double charge (critical): 0.6 %.
    "invoice": ("billing", 0.03),
    "call_wait": ("call_centre", 0.08),  # over a minute on hold (premium: 30 s)
    "call_resolution": ("call_centre", 0.28),  # not resolved in the first call: FCR 72 %
    "switchboard": ("switchboard", 0.05),  # slow and passed around
    "complaint_ack": ("customer_service", 0.10),  # acknowledged late or never
    "case_resolution": ("customer_service", 0.15),  # open longer than two days (premium: 1)
    "message": ("communication", 0.10),  # an e-mail answered after more than a day
    "change_notice": ("communication", 0.05),  # a price or terms change at short notice
    "survey": ("survey", 0.06),  # unhappy (CSAT 1-3) whatever happened
    "page_load": ("web", 0.08),  # a page over 3.5 s
    "checkout": ("web", 0.03),  # a checkout that fails
    "screen_load": ("app", 0.05),  # an app screen over 2 s
    "app_crash": ("app", 0.005),  # crash-free sessions 99.5 %
}

#: Promises whose clocks the simulator's events open: their touchpoint and the event type
#: that stops each (as deploy/promises.yaml has them).
DEADLINES: Final[dict[str, tuple[str, str]]] = {
    "delivery-within-48h": ("delivery", "delivery.completed"),
    "delivery-as-promised": ("delivery", "delivery.completed"),
    "complaint-acknowledged": ("customer_service", "complaint.acknowledged"),
}

# Journey kinds and how often each starts.
_KINDS: Final = ("order", "web", "app", "call", "message", "quote", "change", "survey")
_KIND_WEIGHTS: Final = (28, 30, 22, 8, 5, 3, 1, 3)

_CLOUDEVENT_NAMES: Final = {
    "event_id": "id",
    "occurred_at": "time",
    "customer_id": "customerid",
    "journey_id": "journeyid",
}
DATASCHEMA: Final = "urn:touchpulse:schema:experience-event-data:v1"
CONTENT_TYPE_CLOUDEVENT_BATCH: Final = "application/cloudevents-batch+json"


@dataclass(frozen=True)
class Incident:
    """A touchpoint failing for a while: its breach rate is ``breach_rate`` from
    ``start_offset_s`` for ``duration_s`` seconds of the simulated clock."""

    touchpoint: str
    start_offset_s: float
    duration_s: float
    breach_rate: float = 0.9

    def __post_init__(self) -> None:
        if self.start_offset_s < 0 or self.duration_s <= 0:
            raise ValueError("an incident starts at 0 s or later and lasts more than 0 s")
        if not 0.0 <= self.breach_rate <= 1.0:
            raise ValueError("an incident's breach rate is between 0 and 1")

    def active(self, at_s: float) -> bool:
        return self.start_offset_s <= at_s < self.start_offset_s + self.duration_s

    @classmethod
    def parse(cls, text: str) -> Incident:
        """``touchpoint:start_s:duration_s[:breach_rate]``, e.g. ``delivery:60:3600:0.9``."""
        parts = text.split(":")
        if len(parts) not in (3, 4) or not parts[0]:
            raise ValueError(
                f"incident {text!r}: expected touchpoint:start_s:duration_s[:breach_rate]"
            )
        try:
            numbers = [float(p) for p in parts[1:]]
        except ValueError:
            raise ValueError(f"incident {text!r}: start, duration and rate are numbers") from None
        return cls(parts[0], *numbers)


@dataclass(frozen=True)
class SimulatorConfig:
    seed: int = 1
    customers: int = 200
    #: Probability that a measured decision breaks its promise, the same everywhere; None
    #: (the default) takes the realistic per-decision rates of :data:`DECISIONS`.
    breach_rate: float | None = None
    #: Per-touchpoint overrides of either: every decision at that touchpoint takes this rate.
    breach_rates: dict[str, float] = field(default_factory=dict)
    premium_share: float = 0.2
    #: Share of the posted items that are malformed on purpose.
    bad_rate: float = 0.01
    source: str = "simulator"
    business_share: float = 0.1
    #: Share of customers who joined within the last 90 days (new customers).
    new_customer_share: float = 0.25
    #: Good events per second of the simulated timeline (malformed ones come on top): post at
    #: this rate to stay in real time.
    rate: float = 20.0
    #: Seconds between an order being posted and its delivery clock running out.
    deadline_window_s: float = 60.0
    incidents: tuple[Incident, ...] = ()
    #: Share of events posted a second time (same event id).
    duplicate_rate: float = 0.01
    #: Share of events posted after a later event of their journey.
    out_of_order_rate: float = 0.02
    #: ``native`` batches to /v1/events/batch, or a ``cloudevents`` batch to /v1/events.
    format: Format = "native"

    def __post_init__(self) -> None:
        if self.customers < 1:
            raise ValueError("customers must be at least 1")
        rates = {
            **({} if self.breach_rate is None else {"breach_rate": self.breach_rate}),
            "premium_share": self.premium_share,
            "business_share": self.business_share,
            "new_customer_share": self.new_customer_share,
            "duplicate_rate": self.duplicate_rate,
            "out_of_order_rate": self.out_of_order_rate,
            **{f"breach_rates[{k}]": v for k, v in self.breach_rates.items()},
        }
        for name, value in rates.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if not 0.0 <= self.bad_rate < 1.0:
            raise ValueError(f"bad_rate must be at least 0 and below 1, got {self.bad_rate}")
        if self.premium_share + self.business_share > 1.0:
            raise ValueError("premium_share + business_share must not exceed 1")
        if not self.rate > 0:
            raise ValueError("rate must be above 0")
        if not 30.0 <= self.deadline_window_s <= 6 * HOUR:
            raise ValueError("deadline_window_s must be between 30 s and 6 h")
        if self.format not in ("native", "cloudevents"):
            raise ValueError(f"format must be native or cloudevents, got {self.format!r}")


@dataclass(frozen=True, slots=True)
class Breach:
    """A promise the simulator broke with one event, as the catalogue judges it."""

    promise: str
    touchpoint: str
    #: A critical breach: a survey answered 2 or less, a double charge.
    critical: bool = False


@dataclass(frozen=True, slots=True)
class Clock:
    """A deadline an event opens: broken unless ``fulfilled_by`` on the same journey
    happened by ``due_s`` (seconds from the start) — and sent, for it to count."""

    promise: str
    touchpoint: str
    fulfilled_by: str
    due_s: float


@dataclass(frozen=True, slots=True)
class Scheduled:
    """One item to post: the event and when, on the simulated clock, it is due."""

    at_s: float
    #: When the event says it happened, in seconds from the start (``at_s`` for bad ones).
    occurred_s: float
    event: Event
    #: The kind of malformation (see :data:`BAD_KINDS`), or None for a good event.
    bad: str | None = None
    duplicate: bool = False
    out_of_order: bool = False
    #: The measure promises this event breaks (its ground truth; deadlines are in ``clock``).
    breaches: tuple[Breach, ...] = ()
    #: The deadline this event opens, if any.
    clock: Clock | None = None


@dataclass
class _Step:
    at_s: float
    occurred_s: float
    event: Event
    breaches: tuple[Breach, ...] = ()
    clock: Clock | None = None


# --- ground truth ------------------------------------------------------------------------


@dataclass
class Treatment:
    """What the simulator did to one customer with the events it sent (ground truth)."""

    customer_id: str
    #: Distinct good events of this customer that were sent.
    events: int = 0
    #: Promises broken, with how often (measure promises by event, deadlines by clock).
    broken: Counter[str] = field(default_factory=Counter)
    #: Breaches per touchpoint.
    touchpoints: Counter[str] = field(default_factory=Counter)
    #: Critical breaches: a survey answered 2 or less, a double charge.
    critical: int = 0

    @property
    def breaches(self) -> int:
        return sum(self.broken.values())

    @property
    def badly_treated(self) -> bool:
        """Promises broken on two or more distinct touchpoints, or a critical breach."""
        return self.critical > 0 or len(self.touchpoints) >= 2

    @property
    def single_breach(self) -> bool:
        """Exactly one broken promise, not a critical one: no reason for a call."""
        return self.breaches == 1 and self.critical == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "events": self.events,
            "broken": dict(sorted(self.broken.items())),
            "touchpoints": dict(sorted(self.touchpoints.items())),
            "critical": self.critical,
            "badly_treated": self.badly_treated,
        }


class Truth:
    """Ground truth of a run: per customer, what the events that were sent did to them.

    :meth:`record` takes each good event sent (first sends and duplicates alike; an event id
    counts once). Measure breaches come with the event; a deadline clock is broken when no
    sent event of its fulfilling type on the same journey happened by its due time — so a
    journey begun before the start whose opening event was not sent opens no clock, and an
    order whose delivery was never sent (never delivered, or the run ended first) is a
    breach by absence, as scoring will judge it.
    """

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._events: Counter[str] = Counter()
        self._breaches: list[tuple[str, Breach]] = []
        #: (customer, journey, promise) -> the clock (the first opening event sent).
        self._clocks: dict[tuple[str, str, str], Clock] = {}
        #: (customer, journey, event type) -> when the earliest such event happened.
        self._fulfilled: dict[tuple[str, str, str], float] = {}

    def record(self, item: Scheduled) -> bool:
        """Count a sent good event; False when it was not one (malformed, or already
        counted)."""
        event = item.event
        if item.bad is not None or event["event_id"] in self._seen:
            return False
        self._seen.add(event["event_id"])
        customer = event["customer_id"]
        self._events[customer] += 1
        self._breaches.extend((customer, breach) for breach in item.breaches)
        journey = event.get("journey_id")
        if journey is not None:
            if item.clock is not None:
                self._clocks.setdefault((customer, journey, item.clock.promise), item.clock)
            key = (customer, journey, event["type"])
            self._fulfilled[key] = min(self._fulfilled.get(key, item.occurred_s), item.occurred_s)
        return True

    def awaits(self, item: Scheduled) -> bool:
        """Whether ``item`` would fulfil a clock a recorded event opened and nothing
        recorded has fulfilled yet."""
        journey = item.event.get("journey_id")
        if journey is None or item.bad is not None:
            return False
        customer, kind = item.event["customer_id"], item.event["type"]
        if (customer, journey, kind) in self._fulfilled:
            return False
        return any(
            (customer, journey, promise) in self._clocks
            for promise, (_, fulfilled_by) in DEADLINES.items()
            if fulfilled_by == kind
        )

    def _clock_broken(self, customer: str, journey: str, clock: Clock) -> bool:
        done = self._fulfilled.get((customer, journey, clock.fulfilled_by))
        return done is None or done > clock.due_s

    def customers(self) -> dict[str, Treatment]:
        """Every customer a sent event was about, with what was done to them."""
        found = {c: Treatment(c, events=n) for c, n in self._events.items()}
        breaches = list(self._breaches)
        for (customer, journey, _), clock in self._clocks.items():
            if self._clock_broken(customer, journey, clock):
                breaches.append((customer, Breach(clock.promise, clock.touchpoint)))
        for customer, breach in breaches:
            treatment = found[customer]
            treatment.broken[breach.promise] += 1
            treatment.touchpoints[breach.touchpoint] += 1
            treatment.critical += breach.critical
        return found

    def unfulfilled_clocks(self) -> list[Clock]:
        """Clocks no sent event stops at all: only scoring's deadline sweep can record
        their breach, once its clock passes ``due_s``."""
        return [
            clock
            for (customer, journey, _), clock in self._clocks.items()
            if (customer, journey, clock.fulfilled_by) not in self._fulfilled
        ]

    def settles_s(self) -> float:
        """When, in seconds from the start, the last unfulfilled clock runs out (0 when
        none does): before it, scoring cannot have judged every breach."""
        return max((c.due_s for c in self.unfulfilled_clocks()), default=0.0)


class _Journey:
    """Collects one journey's events; ``commit`` applies send effects and schedules them."""

    def __init__(self, sim: Simulator, number: int, index: int, at_s: float) -> None:
        self.sim = sim
        self.number = number
        self.index = index
        self.customer = sim.customer(index)
        self.segment = sim.segment(index)
        self.at_s = at_s
        self.steps: list[_Step] = []
        #: Promises broken so far: what the survey at the end reflects.
        self.breaches = 0
        self.never_delivered = False

    @property
    def premium(self) -> bool:
        return self.segment == "premium"

    def breaks(self, decision: str, at_s: float) -> bool:
        """Draw one decision (a key of :data:`DECISIONS`): True when it breaks its promise."""
        broken = self.sim._rng.random() < self.sim.breach_probability(decision, at_s)
        self.breaches += broken
        return broken

    def add(
        self,
        kind: str,
        *,
        at_s: float,
        occurred_s: float | None = None,
        journey: str | None = None,
        measures: dict[str, Any] | None = None,
        attributes: dict[str, Any] | None = None,
        broken: tuple[str, ...] = (),
        critical: tuple[str, ...] = (),
        clock: tuple[str, float] | None = None,
    ) -> float:
        """Add an event; ``broken`` names the measure promises it breaks (``critical`` those
        of them that are critical breaches), ``clock`` the deadline it opens and when that
        runs out (seconds from the start)."""
        sim = self.sim
        occurred = at_s if occurred_s is None else occurred_s
        event: Event = {
            "event_id": f"{sim._prefix}-j{self.number}-{len(self.steps) + 1}",
            "source": sim.config.source,
            "customer_id": self.customer,
            "touchpoint": TOUCHPOINTS[kind],
            "type": kind,
            "occurred_at": sim.timestamp(occurred),
        }
        if journey is not None:
            event["journey_id"] = journey
        event["measures"] = measures or {}
        event["attributes"] = attributes or {}
        touchpoint = TOUCHPOINTS[kind]
        breaches = tuple(Breach(p, touchpoint, p in critical) for p in broken)
        opens = None
        if clock is not None:
            promise, due_s = clock
            opens = Clock(promise, *DEADLINES[promise], due_s)
        self.steps.append(_Step(at_s, occurred, event, breaches, opens))
        return at_s

    def commit(self) -> int:
        """Schedule the journey's events, some out of order, some twice; from the last one
        back, so an event held back lands after the final send of the one it falls behind."""
        sim, rng = self.sim, self.sim._send_rng
        items: list[Scheduled] = []
        steps = sorted(self.steps, key=lambda s: s.at_s)
        sends: dict[int, float] = {}
        following: dict[str, int] = {}  # journey id -> position of its next step
        for position in reversed(range(len(steps))):
            step = steps[position]
            at_s, late = step.at_s, False
            # Drawn for every step, so the rates never shift the other draws.
            ooo, dup, delay = rng.random(), rng.random(), rng.random()
            journey = step.event.get("journey_id")
            after = following.get(journey) if journey is not None else None
            if (
                ooo < sim.config.out_of_order_rate
                and after is not None
                and sends[after] >= 0  # the event it falls behind is sent too
                and steps[after].occurred_s >= step.occurred_s  # and happened later
                and step.event["type"] not in DEADLINE_EVENTS
            ):
                at_s, late = sends[after] + 0.5 + 4.0 * delay, True
            sends[position] = at_s
            if journey is not None:
                following[journey] = position
            if dup < sim.config.duplicate_rate and at_s >= 0:  # a resend of a sent event
                again = at_s + 1.0 + 29.0 * delay
                items.append(
                    Scheduled(
                        again,
                        step.occurred_s,
                        step.event,
                        duplicate=True,
                        breaches=step.breaches,
                        clock=step.clock,
                    )
                )
            items.append(
                Scheduled(
                    at_s,
                    step.occurred_s,
                    step.event,
                    out_of_order=late,
                    breaches=step.breaches,
                    clock=step.clock,
                )
            )
        for item in reversed(items):
            sim._push(item)
        return len(items)


class Simulator:
    """Generates the posting stream of scheduled events, one journey at a time."""

    def __init__(self, config: SimulatorConfig, start: datetime) -> None:
        if start.utcoffset() is None:
            raise ValueError("start must be timezone-aware")
        self.config = config
        self.start = start.astimezone(UTC)
        self._rng = random.Random(config.seed)
        self._bad_rng = random.Random(f"bad/{config.seed}")
        self._send_rng = random.Random(f"send/{config.seed}")
        self._prefix = f"sim-{config.seed}-{self.start:%Y%m%dT%H%M%SZ}"
        self._heap: list[tuple[float, int, Scheduled]] = []
        self._seq = 0
        self._journeys = 0
        self._bad = 0
        self._pushed = 0
        self._truth = Truth()
        self._draining = False
        # Journeys begun before the start are simulated too (see the module docstring), up
        # to some 10,000 events' worth so that a high rate does not take long to start.
        self._preroll_s = min(3.2 * config.deadline_window_s + 150.0, 10_000 / config.rate)
        self._next_journey_s = -self._preroll_s

    # --- customers ---------------------------------------------------------------------

    def customer(self, index: int) -> str:
        return f"sim-{self.config.seed}-c{index:05d}"

    def _customer_rng(self, index: int) -> random.Random:
        return random.Random(f"customer/{self.config.seed}/{index}")

    def segment(self, index: int) -> str:
        # Fixed per seed and customer index, so profiles posted to the api agree with events.
        draw = self._customer_rng(index).random()
        if draw < self.config.premium_share:
            return "premium"
        if draw < self.config.premium_share + self.config.business_share:
            return "business"
        return "standard"

    def profile(self, index: int) -> dict[str, Any]:
        """The customer's profile as ``PUT /v1/customers/{id}/profile`` takes it."""
        rng = self._customer_rng(index)
        rng.random()  # the segment's draw
        segment = self.segment(index)
        if rng.random() < self.config.new_customer_share:
            days = rng.randrange(1, 90)  # new: inside the catalogue's 90 days
        else:
            days = rng.randrange(120, 12 * 365)
        since: date = self.start.date() - timedelta(days=days)
        base = {"standard": 1.0, "premium": 3.0, "business": 5.0}[segment]
        value = round(base * (0.5 + rng.random()), 2)
        reach = float(int(rng.paretovariate(1.2) * 40) - 40)  # most reach few, some many
        return {
            "segment": segment,
            "customer_since": since.isoformat(),
            "value": value,
            "reach": min(reach, 1_000_000.0),
        }

    def profiles(self) -> list[tuple[str, dict[str, Any]]]:
        return [(self.customer(i), self.profile(i)) for i in range(self.config.customers)]

    # --- the stream --------------------------------------------------------------------

    def events(self, count: int) -> list[Event]:
        """The next ``count`` events in posting order (native JSON dicts)."""
        return [item.event for item in self.schedule(count)]

    def schedule(self, count: int) -> list[Scheduled]:
        """The next ``count`` items to post, each with its due time and what it is (fewer
        once :meth:`drain` has been called and the journeys begun are used up)."""
        items = []
        for _ in range(count):
            item = self._next()
            if item is None:
                break
            self._truth.record(item)
            items.append(item)
        return items

    def drain(self) -> None:
        """Start no more journeys, nor malformed items: what follows are the rest of the
        journeys already begun (see :func:`post_paced`'s ``drain``)."""
        self._draining = True

    def pending(self) -> list[Scheduled]:
        """Items generated but not handed out yet, in no particular order."""
        return [entry[2] for entry in self._heap]

    def truth(self) -> dict[str, Treatment]:
        """Per customer, what the items handed out so far (by :meth:`schedule` or
        :meth:`events`) did to them, as if every one was sent. What a run actually got
        accepted is in :attr:`Sent.truth`."""
        return self._truth.customers()

    def breach_probability(self, decision: str, at_s: float) -> float:
        """The probability that ``decision`` (a key of :data:`DECISIONS`) breaks its promise
        at ``at_s``: the touchpoint's override, else the flat rate, else the default; an
        active incident at the touchpoint raises it."""
        touchpoint, default = DECISIONS[decision]
        rate = self.config.breach_rates.get(
            touchpoint, default if self.config.breach_rate is None else self.config.breach_rate
        )
        for incident in self.config.incidents:
            if incident.touchpoint == touchpoint and incident.active(at_s):
                rate = max(rate, incident.breach_rate)
        return rate

    def timestamp(self, offset_s: float) -> str:
        """RFC 3339 in UTC, to the millisecond, ``offset_s`` seconds after the start."""
        at = self.start + timedelta(milliseconds=round(offset_s * 1000))
        return at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

    def _push(self, item: Scheduled) -> None:
        self._pushed += 1
        if item.at_s < 0:
            return  # due before the start: the run joins that journey midway
        self._seq += 1
        heapq.heappush(self._heap, (item.at_s, self._seq, item))

    def _next(self) -> Scheduled | None:
        if self._draining:
            return heapq.heappop(self._heap)[2] if self._heap else None
        self._fill()
        if self._bad_rng.random() < self.config.bad_rate:
            return self._malformed(self._heap[0][0])
        return heapq.heappop(self._heap)[2]

    def _fill(self) -> None:
        """Start journeys until nothing unstarted could come before the next item due."""
        # Malformed items come on top, so that the good events do not depend on bad_rate.
        good_rate = self.config.rate
        while not self._heap or self._heap[0][0] >= self._next_journey_s:
            self._journey(self._next_journey_s)
            # The next journey starts when the timeline holds enough events for the rate.
            self._next_journey_s = max(
                self._next_journey_s, self._pushed / good_rate - self._preroll_s
            )

    def _journey(self, at_s: float) -> None:
        rng = self._rng
        self._journeys += 1
        journey = _Journey(self, self._journeys, rng.randrange(self.config.customers), at_s)
        kind = rng.choices(_KINDS, weights=_KIND_WEIGHTS)[0]
        _BUILDERS[kind](journey, rng)
        journey.commit()

    def _malformed(self, at_s: float) -> Scheduled:
        rng = self._bad_rng
        self._bad += 1
        kind = BAD_KINDS[rng.randrange(len(BAD_KINDS))]
        event: Event = {
            "event_id": f"{self._prefix}-b{self._bad}-bad",
            "source": self.config.source,
            "customer_id": self.customer(rng.randrange(self.config.customers)),
            "touchpoint": "web",
            "type": "page.viewed",
            "occurred_at": self.timestamp(at_s),
            "measures": {"load_seconds": round(0.5 + rng.random() * 2, 2)},
            "attributes": {},
        }
        if kind == "missing_field":
            del event[rng.choice(("customer_id", "touchpoint", "type", "occurred_at"))]
        elif kind == "bad_timestamp":
            event["occurred_at"] = rng.choice(("yesterday", "2026-02-30T10:00:00Z", "1714566600"))
        elif kind == "naive_timestamp":
            event["occurred_at"] = event["occurred_at"].removesuffix("Z")
        elif kind == "wrong_measure_type":
            event["measures"] = {"load_seconds": rng.choice(("slow", "1.5"))}
        elif kind == "bad_touchpoint":
            event["touchpoint"] = rng.choice(("Web Shop", "web-shop", "9web"))
        elif kind == "bad_type":
            event["type"] = rng.choice(("PageViewed", "page", "page viewed"))
        elif kind == "bad_identifier":
            event["customer_id"] = f"{event['customer_id']} x"
        else:
            event["customer"] = event.pop("customer_id")
        return Scheduled(at_s, at_s, event, bad=kind)


# --- journeys ----------------------------------------------------------------------------


def _uniform(rng: random.Random, low: float, high: float, digits: int = 1) -> float:
    return round(low + (high - low) * rng.random(), digits)


def _order(j: _Journey, rng: random.Random) -> None:
    sim = j.sim
    window = sim.config.deadline_window_s
    journey = f"order-{sim._prefix}-{j.number}"
    t = j.at_s
    allowed_h = 24.0 if j.premium else 48.0
    due_s = t + window  # the delivery clock runs out here (for a delivery not already late)
    outcome = "on_time"
    if j.breaks("delivery", due_s):
        outcome = rng.choices(("late", "never", "damaged", "incomplete"), (50, 20, 20, 10))[0]
    lateness_s = _uniform(rng, 2, 36) * HOUR if outcome == "late" else 0.0
    placed_s = due_s - allowed_h * HOUR - lateness_s
    channel = rng.choice(("web", "app", "phone", "store"))

    if rng.random() < 0.3:
        slow = j.breaks("quote", t)
        limit = 7.0 if j.premium else 20.0
        turnaround = _uniform(rng, 30, 90) if slow else _uniform(rng, 0.5, limit)
        j.add(
            "quote.sent",
            at_s=t,
            occurred_s=placed_s - _uniform(rng, 1, 48) * HOUR,
            journey=journey,
            measures={"turnaround_hours": turnaround},
            attributes={"channel": channel},
            broken=("sales-quote-turnaround",) if slow else (),
        )
        t += _uniform(rng, 1, 5)
    price_changed = j.breaks("price", t)
    j.add(
        "order.placed",
        at_s=t,
        occurred_s=placed_s,
        journey=journey,
        measures={"price_matches_quote": not price_changed},
        attributes={"channel": channel, "items": rng.randint(1, 6)},
        broken=("sales-price-as-quoted",) if price_changed else (),
        clock=("delivery-within-48h", placed_s + allowed_h * HOUR),
    )
    depot = rng.choice(("north", "south", "east", "west"))
    slot_s = due_s - lateness_s - 0.1 * window
    t += _uniform(rng, 2, 8)
    j.add(
        "delivery.promised",
        at_s=t,
        occurred_s=placed_s + _uniform(rng, 0.2, 3) * HOUR,
        journey=journey,
        attributes={"due_at": sim.timestamp(slot_s), "depot": depot},
        clock=("delivery-as-promised", slot_s),
    )
    if outcome == "never":
        j.never_delivered = True
        after_s = due_s + _uniform(rng, 2, 10)
    else:
        if outcome == "late":
            after_s = due_s + window * _uniform(rng, 0.1, 0.6, 3)
        else:
            after_s = t + (slot_s - t) * _uniform(rng, 0.2, 0.9, 3)
        j.add(
            "delivery.completed",
            at_s=after_s,
            journey=journey,
            measures={
                "damaged": outcome == "damaged",
                "all_items_delivered": outcome != "incomplete",
            },
            attributes={"depot": depot},
            broken=(
                ("delivery-undamaged",)
                if outcome == "damaged"
                else ("delivery-complete",)
                if outcome == "incomplete"
                else ()
            ),
        )
    t = _bill(j, rng, after_s + _uniform(rng, 3, 15), journey)
    trouble = j.breaches > 0 or outcome != "on_time"
    if rng.random() < (0.6 if trouble else 0.1):
        t = _call(j, rng, t + _uniform(rng, 5, 20), queue="delivery" if trouble else "orders")
    if trouble and rng.random() < (0.6 if j.never_delivered else 0.3):
        t = _complaint(j, rng, t + _uniform(rng, 5, 20), journey)
    if rng.random() < 0.1:
        t = _message(j, rng, t + _uniform(rng, 5, 20), journey)
    if rng.random() < (0.8 if trouble else 0.5):
        _survey(j, rng, t + _uniform(rng, 10, 30), journey)


def _bill(j: _Journey, rng: random.Random, t: float, journey: str) -> float:
    """The invoice (correct or not, on time or not) and sometimes the payment."""
    wrong = j.breaks("invoice", t)
    late_invoice = wrong and rng.random() < 0.4
    correct = not wrong or (late_invoice and rng.random() < 0.5)
    j.add(
        "invoice.issued",
        at_s=t,
        journey=journey,
        measures={
            "invoice_correct": correct,
            "days_after_delivery": float(rng.randint(6, 25) if late_invoice else rng.randint(0, 3)),
        },
        broken=(() if correct else ("invoice-correct",))
        + (("invoice-on-time",) if late_invoice else ()),
    )
    if rng.random() < 0.4:
        t += _uniform(rng, 2, 10)
        # Double charges are rarer than other billing failures, and critical.
        double = rng.random() < 0.2 * j.sim.breach_probability("invoice", t)
        j.breaches += double
        j.add(
            "payment.captured",
            at_s=t,
            journey=journey,
            measures={"double_charged": double},
            attributes={"method": rng.choice(("card", "invoice", "wallet"))},
            broken=("payment-charged-once",) if double else (),
            critical=("payment-charged-once",),
        )
    return t


def _call(j: _Journey, rng: random.Random, t: float, *, queue: str) -> float:
    case = f"call-{j.sim._prefix}-{j.number}"
    if rng.random() < 0.5:
        misrouted = j.breaks("switchboard", t)
        j.add(
            "call.transferred",
            at_s=t,
            journey=case,
            measures={
                "transfer_seconds": _uniform(rng, 30, 150) if misrouted else _uniform(rng, 2, 18),
                "transfers": float(rng.randint(2, 5) if misrouted else 1),
            },
            attributes={"queue": queue},
            broken=("switchboard-transfer-time", "switchboard-right-first-time")
            if misrouted
            else (),
        )
        t += _uniform(rng, 1, 4)
    # Two decisions: the wait (a service level) and the resolution (first-contact resolution).
    long_wait = j.breaks("call_wait", t)
    unresolved = j.breaks("call_resolution", t)
    limit = 28.0 if j.premium else 55.0
    j.add(
        "call.answered",
        at_s=t,
        journey=case,
        measures={
            "wait_seconds": _uniform(rng, 90, 900, 0) if long_wait else _uniform(rng, 3, limit, 0),
            "first_contact_resolution": not unresolved,
        },
        attributes={"queue": queue, "callback_offered": long_wait},
        broken=(("call-answer-time",) if long_wait else ())
        + (("call-first-contact-resolution",) if unresolved else ()),
    )
    return t


def _complaint(j: _Journey, rng: random.Random, t: float, journey: str) -> float:
    window = j.sim.config.deadline_window_s
    allowed_h = 4.0 if j.premium else 24.0
    due_s = t + window
    outcome = "in_time"
    if j.breaks("complaint_ack", due_s):
        outcome = rng.choice(("late", "late", "never"))
    lateness_s = _uniform(rng, 2, 30) * HOUR if outcome == "late" else 0.0
    j.add(
        "complaint.received",
        at_s=t,
        occurred_s=due_s - allowed_h * HOUR - lateness_s,
        journey=journey,
        attributes={"channel": rng.choice(("phone", "email", "chat"))},
        clock=("complaint-acknowledged", due_s - lateness_s),
    )
    if outcome == "never":
        return t
    if outcome == "late":
        t = due_s + window * _uniform(rng, 0.1, 0.5, 3)
    else:
        t += window * _uniform(rng, 0.2, 0.85, 3)
    j.add("complaint.acknowledged", at_s=t, journey=journey)
    t += _uniform(rng, 5, 20)
    slow = j.breaks("case_resolution", t)
    limit = 20.0 if j.premium else 40.0
    j.add(
        "case.resolved",
        at_s=t,
        journey=journey,
        measures={"resolution_hours": _uniform(rng, 60, 240) if slow else _uniform(rng, 1, limit)},
        broken=("case-resolution-time",) if slow else (),
    )
    return t


def _message(j: _Journey, rng: random.Random, t: float, journey: str | None) -> float:
    slow = j.breaks("message", t)
    limit = 7.0 if j.premium else 20.0
    j.add(
        "message.answered",
        at_s=t,
        journey=journey,
        measures={"response_hours": _uniform(rng, 30, 120) if slow else _uniform(rng, 0.2, limit)},
        attributes={"channel": rng.choice(("email", "chat", "sms"))},
        broken=("message-response-time",) if slow else (),
    )
    return t


def _survey(j: _Journey, rng: random.Random, t: float, journey: str | None) -> None:
    before = j.breaches
    unhappy = j.breaks("survey", t)  # a bad mood whatever happened, at the survey's rate
    if j.never_delivered or before >= 2:
        csat, nps = rng.randint(1, 2), rng.randint(0, 4)
    elif before == 1:
        csat, nps = rng.randint(3, 4), rng.randint(3, 8)
    elif unhappy:
        csat, nps = rng.randint(1, 3), rng.randint(2, 6)
    else:
        csat, nps = rng.randint(4, 5), rng.randint(7, 10)
    j.add(
        "survey.answered",
        at_s=t,
        journey=journey,
        measures={"csat": float(csat), "nps": float(nps)},
        attributes={"channel": rng.choice(("email", "sms", "app"))},
        # The catalogue's survey-csat expects 4 or more and is critical at 2 or less.
        broken=(("survey-csat",) if csat < 4 else ()) + (("survey-nps",) if nps < 7 else ()),
        critical=("survey-csat",) if csat <= 2 else (),
    )


def _relationship_survey(j: _Journey, rng: random.Random) -> None:
    """A periodic survey outside any order: the customer's mood, set by the survey's rate."""
    _survey(j, rng, j.at_s, None)


def _web(j: _Journey, rng: random.Random) -> None:
    session = f"web-{j.sim._prefix}-{j.number}"
    t = j.at_s
    device = rng.choice(("desktop", "mobile", "tablet"))
    for _ in range(rng.randint(1, 4)):
        slow = j.breaks("page_load", t)
        j.add(
            "page.viewed",
            at_s=t,
            journey=session,
            measures={
                "load_seconds": _uniform(rng, 3.5, 12, 2) if slow else _uniform(rng, 0.4, 2.4, 2)
            },
            attributes={
                "page": rng.choice(("/", "/products", "/cart", "/account", "/help")),
                "device": device,
            },
            broken=("web-page-load",) if slow else (),
        )
        t += _uniform(rng, 3, 20)
    if rng.random() < 0.25:
        failed = j.breaks("checkout", t)
        j.add(
            "checkout.submitted",
            at_s=t,
            journey=session,
            measures={"succeeded": not failed},
            broken=("web-checkout-succeeds",) if failed else (),
        )


def _app(j: _Journey, rng: random.Random) -> None:
    session = f"app-{j.sim._prefix}-{j.number}"
    t = j.at_s
    platform = rng.choice(("ios", "android"))
    for _ in range(rng.randint(1, 4)):
        slow = j.breaks("screen_load", t)
        j.add(
            "screen.loaded",
            at_s=t,
            journey=session,
            measures={
                "load_seconds": _uniform(rng, 2, 9, 2) if slow else _uniform(rng, 0.1, 1.4, 2)
            },
            attributes={
                "screen": rng.choice(("home", "orders", "tracking", "profile")),
                "platform": platform,
            },
            broken=("app-screen-load",) if slow else (),
        )
        t += _uniform(rng, 2, 15)
    crashed = j.breaks("app_crash", t)
    j.add(
        "session.ended",
        at_s=t,
        journey=session,
        measures={"crashed": crashed},
        attributes={"platform": platform},
        broken=("app-no-crash",) if crashed else (),
    )


def _standalone_call(j: _Journey, rng: random.Random) -> None:
    _call(j, rng, j.at_s, queue=rng.choice(("general", "billing", "technical")))


def _standalone_message(j: _Journey, rng: random.Random) -> None:
    _message(j, rng, j.at_s, None)


def _quote(j: _Journey, rng: random.Random) -> None:
    slow = j.breaks("quote", j.at_s)
    limit = 7.0 if j.premium else 20.0
    j.add(
        "quote.sent",
        at_s=j.at_s,
        journey=f"quote-{j.sim._prefix}-{j.number}",
        measures={"turnaround_hours": _uniform(rng, 30, 90) if slow else _uniform(rng, 0.5, limit)},
        broken=("sales-quote-turnaround",) if slow else (),
    )


def _change(j: _Journey, rng: random.Random) -> None:
    short = j.breaks("change_notice", j.at_s)
    j.add(
        "change.notified",
        at_s=j.at_s,
        measures={"notice_days": float(rng.randint(0, 20) if short else rng.randint(30, 60))},
        attributes={"change": rng.choice(("price", "terms"))},
        broken=("change-notice-period",) if short else (),
    )


_BUILDERS: Final[dict[str, Callable[[_Journey, random.Random], None]]] = {
    "order": _order,
    "web": _web,
    "app": _app,
    "call": _standalone_call,
    "message": _standalone_message,
    "quote": _quote,
    "change": _change,
    "survey": _relationship_survey,
}


# --- formats -----------------------------------------------------------------------------


def to_cloudevent(event: Event) -> dict[str, Any]:
    """The native event as a structured-mode CloudEvent (docs/event-contract.md, section 2).

    Works on malformed events too, keeping their flaw: a missing field becomes a missing
    attribute, an unknown member an unknown attribute.
    """
    document: dict[str, Any] = {"specversion": "1.0"}
    data: dict[str, Any] = {}
    for name, value in event.items():
        if name in ("measures", "attributes"):
            data[name] = value
        else:
            document[_CLOUDEVENT_NAMES.get(name, name)] = value
    document["datacontenttype"] = "application/json"
    document["dataschema"] = DATASCHEMA
    document["data"] = data
    return document


def request_body(events: list[Event], fmt: Format) -> tuple[str, bytes, str]:
    """Path, body and content type of one batch in the given format."""
    if fmt == "cloudevents":
        body = orjson.dumps([to_cloudevent(e) for e in events])
        return "/v1/events", body, CONTENT_TYPE_CLOUDEVENT_BATCH
    return "/v1/events/batch", orjson.dumps({"events": events}), "application/json"


# --- posting -----------------------------------------------------------------------------


@dataclass
class Sent:
    """What a run posted and what ingest answered.

    Every posted item, duplicates included, is counted once in ``posted`` however many
    attempts it took, and once in exactly one of ``accepted``, ``rejected`` (refused per item
    or with the whole request; ``item_statuses`` says with which status) or ``unavailable``
    (503 twice, or no answer). A duplicate is accepted by ingest like any retry and dropped
    by scoring, so distinct accepted events are about ``accepted - duplicates``.
    ``posted == sum(by_touchpoint) + duplicates + sum(bad)``.
    """

    posted: int = 0
    accepted: int = 0
    rejected: int = 0
    unavailable: int = 0
    #: The HTTP status of every answer (a retried request counts each answer).
    statuses: Counter[int] = field(default_factory=Counter)
    #: Requests made, retries and unanswered ones included.
    requests: int = 0
    #: Rejected items by the status they were refused with (422, 403, 429, …).
    item_statuses: Counter[int] = field(default_factory=Counter)
    #: Good events posted (first sends, not duplicates) by touchpoint and by type.
    by_touchpoint: Counter[str] = field(default_factory=Counter)
    by_type: Counter[str] = field(default_factory=Counter)
    #: Malformed items posted, by kind.
    bad: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    out_of_order: int = 0
    #: Malformed items ingest accepted, and good ones it refused: both should stay 0.
    bad_accepted: int = 0
    good_rejected: int = 0
    #: Transport errors by exception name.
    errors: Counter[str] = field(default_factory=Counter)
    #: Why the run stopped early (ingest refused the key), if it did.
    stopped: str | None = None
    elapsed_s: float = 0.0
    #: Ground truth of the events ingest accepted: what the run did to each customer.
    truth: Truth = field(default_factory=Truth)

    def summary(self) -> str:
        rate = self.posted / self.elapsed_s if self.elapsed_s > 0 else 0.0
        lines = [
            f"posted {self.posted} in {self.requests} requests over {self.elapsed_s:.1f} s "
            f"({rate:.1f}/s): accepted {self.accepted}, rejected {self.rejected}, "
            f"unavailable {self.unavailable}",
            "  by touchpoint: " + _counts(self.by_touchpoint),
            "  by type: " + _counts(self.by_type),
            f"  malformed {sum(self.bad.values())}: " + _counts(self.bad),
            f"  duplicates {self.duplicates}, out of order {self.out_of_order}",
            f"  answers {dict(sorted(self.statuses.items()))}; rejected items by status "
            f"{dict(sorted(self.item_statuses.items()))}",
        ]
        if self.bad_accepted or self.good_rejected:
            lines.append(
                f"  unexpected: {self.bad_accepted} malformed accepted, "
                f"{self.good_rejected} good refused"
            )
        if self.errors:
            lines.append("  transport errors: " + _counts(self.errors))
        if self.stopped:
            lines.append(f"  stopped: {self.stopped}")
        return "\n".join(lines)


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items())) or "none"


#: A batch waits at most this long for its last event to fall due.
MAX_HOLD_S: Final = 1.0


async def post_paced(
    client: httpx.AsyncClient,
    simulator: Simulator,
    *,
    rate: float,
    duration_s: float | None = None,
    total: int | None = None,
    batch: int = 20,
    stop: asyncio.Event | None = None,
    sent: Sent | None = None,
    max_lead_s: float = 600.0,
    drain: bool = False,
) -> Sent:
    """Post the simulator's stream at ``rate`` events per second until ``duration_s``,
    ``total`` items, or ``stop``.

    With ``drain``, reaching ``duration_s`` or ``total`` starts no new journey but goes on
    posting the journeys already begun, on their schedule, until no deadline clock that a
    sent event opened still waits for its fulfilling event (at most about 1.6
    ``deadline_window_s``): a measured run then ends without breaches by absence that only
    the end of the run caused. ``stop`` ends a drain too.

    Each item is posted when it falls due on the simulated clock, run at
    ``rate / config.rate`` times real time, in batches of up to ``batch`` (a batch waits at
    most a second for its last item). Open loop: items are due at their own time whatever
    the previous answers took, so a slow ingest shows as latency rather than a quietly lower
    offered rate. A 503 batch is retried once with the same event ids, a 429 after its
    Retry-After; a 401 or whole-request 403 stops the run. Pass ``sent`` to see the counts
    even when the task is cancelled.
    """
    if rate <= 0 or batch < 1:
        raise ValueError("rate must be above 0 and batch at least 1")
    sent = Sent() if sent is None else sent
    pacer = _Pacer(simulator, rate / simulator.config.rate, duration_s)
    try:
        while sent.stopped is None and (stop is None or not stop.is_set()):
            size = pacer.size(batch, total, sent, drain)
            if size == 0:
                break
            fire = pacer.fire_at(size)
            if await _sleep(fire - time.monotonic(), stop):
                break
            items = pacer.take(size, fire)
            lead = max(i.occurred_s for i in items) - _wall_s(simulator)
            if lead > max_lead_s and await _sleep(lead - max_lead_s, stop):
                pacer.pending.extendleft(reversed(items))
                break
            await _post(client, simulator.config.format, items, sent, stop)
    finally:
        sent.elapsed_s = time.monotonic() - pacer.origin
    return sent


class _Pacer:
    """The items of :func:`post_paced` waiting to be posted, and when each falls due."""

    def __init__(self, simulator: Simulator, speed: float, duration_s: float | None) -> None:
        self.simulator = simulator
        self.speed = speed
        self.origin = time.monotonic()
        self.pending: deque[Scheduled] = deque()
        self.fill(1)
        self.base_s = self.pending[0].at_s
        self.horizon = None if duration_s is None else self.origin + duration_s
        self.draining = False

    def fill(self, size: int) -> None:
        if len(self.pending) < size:
            self.pending.extend(self.simulator.schedule(size - len(self.pending)))

    def due(self, item: Scheduled) -> float:
        return self.origin + (item.at_s - self.base_s) / self.speed

    def size(self, batch: int, total: int | None, sent: Sent, drain: bool) -> int:
        """How many items the next batch may hold; 0 when the run is over."""
        if not self.draining:
            size = batch if total is None else min(batch, total - sent.posted)
            if size > 0:
                self.fill(size)
                if self.horizon is None or self.due(self.pending[0]) < self.horizon:
                    return size
            if not drain:
                return 0
            # The journeys begun are in ``pending`` and the simulator; none starts now.
            self.draining, self.horizon = True, None
            self.simulator.drain()
            kept = [i for i in self.pending if i.bad is None]
            self.pending.clear()
            self.pending.extend(kept)
        if not _awaited([*self.pending, *self.simulator.pending()], sent.truth):
            return 0
        self.fill(batch)
        return min(batch, len(self.pending))

    def fire_at(self, size: int) -> float:
        fire = min(self.due(self.pending[size - 1]), self.due(self.pending[0]) + MAX_HOLD_S)
        return fire if self.horizon is None else min(fire, self.horizon)

    def take(self, size: int, fire: float) -> list[Scheduled]:
        items = [self.pending.popleft()]
        while len(items) < size and self.pending and self.due(self.pending[0]) <= fire:
            items.append(self.pending.popleft())
        return items


def _awaited(items: list[Scheduled], truth: Truth) -> bool:
    """Whether any of ``items`` is the fulfilling event of a clock a sent event opened."""
    return any(truth.awaits(item) for item in items)


def _wall_s(simulator: Simulator) -> float:
    return (datetime.now(UTC) - simulator.start).total_seconds()


async def _sleep(delay: float, stop: asyncio.Event | None) -> bool:
    """Sleep ``delay`` seconds (pacing, not waiting for readiness); True when stopped."""
    if delay <= 0:
        return stop is not None and stop.is_set()
    if stop is None:
        await asyncio.sleep(delay)
        return False
    try:
        async with asyncio.timeout(delay):
            await stop.wait()
    except TimeoutError:
        return False
    return True


async def _post(
    client: httpx.AsyncClient,
    fmt: Format,
    items: list[Scheduled],
    sent: Sent,
    stop: asyncio.Event | None,
) -> None:
    sent.posted += len(items)
    for item in items:
        if item.bad is not None:
            sent.bad[item.bad] += 1
        elif item.duplicate:
            sent.duplicates += 1
        else:
            sent.by_touchpoint[item.event["touchpoint"]] += 1
            sent.by_type[item.event["type"]] += 1
        sent.out_of_order += item.out_of_order
    path, body, content_type = request_body([i.event for i in items], fmt)
    unavailable_once = False
    for _attempt in range(6):
        sent.requests += 1
        try:
            response = await client.post(path, content=body, headers={"Content-Type": content_type})
        except httpx.TransportError as exc:
            sent.errors[type(exc).__name__] += 1
            sent.unavailable += len(items)
            return
        except asyncio.CancelledError:
            sent.unavailable += len(items)  # no answer: they may or may not have arrived
            raise
        status = response.status_code
        sent.statuses[status] += 1
        if status in (503, 429):
            if status == 503 and unavailable_once:
                sent.unavailable += len(items)
                return
            unavailable_once |= status == 503
            if await _sleep(_retry_after(response), stop):
                sent.unavailable += len(items)
                return
            continue
        _tally(response, items, sent)
        return
    sent.rejected += len(items)
    sent.item_statuses[429] += len(items)


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(max(float(response.headers.get("Retry-After", "1")), 0.1), 5.0)
    except ValueError:
        return 1.0


def _tally(response: httpx.Response, items: list[Scheduled], sent: Sent) -> None:
    status = response.status_code
    results: list[dict[str, Any]] | None = None
    if status in (202, 422):
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("items"), list):
            results = body["items"]
    if results is None:
        sent.rejected += len(items)
        sent.item_statuses[status] += len(items)
        sent.good_rejected += sum(i.bad is None for i in items)
        if status in (401, 403):
            sent.stopped = f"ingest refused the request with {status}: {response.text[:200]}"
        return
    accepted = {r["index"] for r in results if r.get("status") == "accepted"}
    for result in results:
        if result.get("status") != "accepted":
            code = result.get("http_status", result.get("status"))
            sent.item_statuses[code if isinstance(code, int) else status] += 1
    for index, item in enumerate(items):
        if index in accepted:
            sent.accepted += 1
            sent.bad_accepted += item.bad is not None
            sent.truth.record(item)
        else:
            sent.rejected += 1
            sent.good_rejected += item.bad is None


async def post_profiles(client_api: httpx.AsyncClient, simulator: Simulator) -> int:
    """PUT every customer's profile through the api (the client carries an admin key);
    returns how many were written (created or updated). Raises on any other answer."""
    written = 0
    for customer, profile in simulator.profiles():
        for _attempt in range(10):
            response = await client_api.put(f"/v1/customers/{customer}/profile", json=profile)
            if response.status_code != 429:
                break
            await asyncio.sleep(_retry_after(response))  # the api's rate limit, not readiness
        response.raise_for_status()
        written += 1
    return written


def parse_breach_rates(items: list[str]) -> dict[str, float]:
    """``TOUCHPOINT=RATE`` items (the CLI's ``--touchpoint-breach-rate``) as a mapping."""
    rates: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = None
        if not sep or not name or number is None:
            raise ValueError(f"breach rate {item!r}: expected TOUCHPOINT=RATE")
        rates[name] = number
    return rates


async def run(
    config: SimulatorConfig,
    *,
    ingest_url: str,
    api_key: str,
    rate: float,
    duration_s: float | None = None,
    total: int | None = None,
    batch: int = 20,
    api_url: str | None = None,
    admin_key: str | None = None,
    sent: Sent,
    echo: Callable[[str], None],
    measure_queue: bool = False,
    scoring_urls: tuple[str, ...] = (),
    measure_timeout_s: float = 300.0,
) -> QueueScore | None:
    """What ``touchpulse simulate`` does: profiles first (with ``api_url``), then post until
    done. SIGINT or SIGTERM stops after the batch in flight; a second one cancels at once.
    ``sent`` is filled in place, so the caller can report it either way.

    With ``measure_queue`` (and ``api_url``; the admin key then needs ``health:read`` too) a
    run that ends by its duration or total drains its journeys, waits for scoring (see
    :func:`measure`) and returns the queue's score against the ground truth; None otherwise.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()

    def on_signal() -> None:
        if stop.is_set() and task is not None:
            task.cancel()
        stop.set()

    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, on_signal)
    try:
        if api_url is not None:
            headers = {"Authorization": f"Bearer {admin_key}"}
            async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=10) as api:
                written = await post_profiles(api, Simulator(config, datetime.now(UTC)))
            echo(f"profiles written: {written}")
        # Started after the profiles, so the simulated clock starts when posting does.
        measuring = measure_queue and api_url is not None
        baseline = None
        if measuring:
            async with httpx.AsyncClient(timeout=5) as client:
                baseline = await read_scoring(client, list(scoring_urls))
            if baseline is None:
                echo("scoring's /metrics did not answer: readiness falls back to a quiet queue")
        simulator = Simulator(config, start=datetime.now(UTC))
        headers = {"Authorization": f"Bearer {api_key}"}
        async with httpx.AsyncClient(base_url=ingest_url, headers=headers, timeout=10) as client:
            await post_paced(
                client,
                simulator,
                rate=rate,
                duration_s=duration_s,
                total=total,
                batch=batch,
                stop=stop,
                sent=sent,
                drain=measuring,
            )
        if not measuring or stop.is_set() or sent.stopped is not None:
            return None
        echo("waiting for scoring to judge the run…")
        headers = {"Authorization": f"Bearer {admin_key}"}
        async with httpx.AsyncClient(base_url=api_url or "", headers=headers, timeout=10) as api:
            return await measure(
                api,
                simulator,
                sent,
                scoring_urls=list(scoring_urls),
                baseline=baseline,
                timeout_s=measure_timeout_s,
                stop=stop,
            )
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


# --- scoring the queue against the ground truth ------------------------------------------

#: The bar of issue 12: every critical breach gets an intervention, nine in ten customers
#: treated badly do, and the queue holds at most 1.5 times as many customers as were.
RECALL_CRITICAL_TARGET: Final = 1.0
RECALL_BADLY_TARGET: Final = 0.9
PRECISION_TARGET: Final = 2 / 3
INTERVENTION_STATES: Final = ("open", "acknowledged", "resolved", "expired")
SCORING_EVENTS: Final = "touchpulse_scoring_events_total"
SCORING_EXPIRED: Final = "touchpulse_scoring_deadlines_expired_total"


@dataclass(frozen=True)
class QueueScore:
    """The intervention queue judged against what the simulator did (see docs/simulator.md)."""

    #: Customers the run sent an accepted event about.
    customers: int
    badly_treated: int
    critical: int
    #: The run's customers with an intervention opened during the run.
    queued: int
    queued_badly: int
    queued_critical: int
    #: Queued although the run broke a single non-critical promise of theirs (target 0).
    queued_single: int
    #: Queued although the run broke nothing of theirs.
    queued_unharmed: int
    #: False when the readiness condition did not hold before the time-out.
    settled: bool = True
    waited_s: float = 0.0
    missed_critical: tuple[str, ...] = ()
    missed_badly: tuple[str, ...] = ()
    single: tuple[str, ...] = ()

    @property
    def recall_critical(self) -> float:
        return self.queued_critical / self.critical if self.critical else 1.0

    @property
    def recall_badly(self) -> float:
        return self.queued_badly / self.badly_treated if self.badly_treated else 1.0

    @property
    def precision(self) -> float:
        return self.queued_badly / self.queued if self.queued else 1.0

    def meets_targets(self) -> bool:
        return (
            self.settled
            and self.recall_critical >= RECALL_CRITICAL_TARGET
            and self.recall_badly >= RECALL_BADLY_TARGET
            and self.precision >= PRECISION_TARGET
            and self.queued_single == 0
        )

    def summary(self) -> str:
        def mark(ok: bool) -> str:
            return "ok" if ok else "BELOW TARGET"

        lines = [
            f"queue against ground truth ({'settled' if self.settled else 'NOT SETTLED'} "
            f"after {self.waited_s:.1f} s): {self.customers} customers, "
            f"{self.badly_treated} treated badly ({self.critical} with a critical breach), "
            f"{self.queued} with an intervention",
            f"  recall, critical breaches {self.recall_critical:.1%} "
            f"({self.queued_critical}/{self.critical}; target 100%) "
            f"{mark(self.recall_critical >= RECALL_CRITICAL_TARGET)}",
            f"  recall, treated badly {self.recall_badly:.1%} "
            f"({self.queued_badly}/{self.badly_treated}; target 90%) "
            f"{mark(self.recall_badly >= RECALL_BADLY_TARGET)}",
            f"  precision {self.precision:.1%} ({self.queued_badly}/{self.queued}; "
            f"target 66.7%) {mark(self.precision >= PRECISION_TARGET)}",
            f"  queued on a single non-critical breach {self.queued_single} (target 0) "
            f"{mark(self.queued_single == 0)}; queued with no breach {self.queued_unharmed}",
        ]
        if self.missed_critical:
            lines.append("  critical, no intervention: " + ", ".join(self.missed_critical[:10]))
        if self.single:
            lines.append("  single breach, intervention: " + ", ".join(self.single[:10]))
        return "\n".join(lines)


def score_queue(
    truth: dict[str, Treatment],
    queued: set[str],
    *,
    settled: bool = True,
    waited_s: float = 0.0,
) -> QueueScore:
    """Judge ``queued`` (customers with an intervention) against ``truth``; a queued
    customer the run sent nothing about counts as queued without a breach."""
    none = Treatment("")
    badly = {c for c, t in truth.items() if t.badly_treated}
    critical = {c for c, t in truth.items() if t.critical}
    single = {c for c in queued if truth.get(c, none).single_breach}
    return QueueScore(
        customers=len(truth),
        badly_treated=len(badly),
        critical=len(critical),
        queued=len(queued),
        queued_badly=len(badly & queued),
        queued_critical=len(critical & queued),
        queued_single=len(single),
        queued_unharmed=sum(truth.get(c, none).breaches == 0 for c in queued),
        settled=settled,
        waited_s=waited_s,
        missed_critical=tuple(sorted(critical - queued)),
        missed_badly=tuple(sorted(badly - queued)),
        single=tuple(sorted(single)),
    )


#: One intervention as the readiness check compares them: id, state and number of gaps.
QueueEntry = tuple[str, str, int]


async def read_queue(
    api: httpx.AsyncClient, *, prefix: str, since: datetime
) -> dict[str, list[QueueEntry]]:
    """Every intervention of a customer whose id starts with ``prefix``, opened at or after
    ``since``, in any state, by customer (``GET /v1/interventions``, every page; the client
    carries a ``health:read`` key)."""
    found: dict[str, list[QueueEntry]] = {}
    cursor: str | None = None
    while True:
        params: list[tuple[str, str | int | float | bool | None]] = [
            ("state", s) for s in INTERVENTION_STATES
        ]
        params.append(("limit", "200"))
        if cursor is not None:
            params.append(("cursor", cursor))
        response = await api.get("/v1/interventions", params=params)
        if response.status_code == 429:
            await asyncio.sleep(_retry_after(response))  # the api's rate limit
            continue
        response.raise_for_status()
        page = response.json()
        for item in page["items"]:
            opened = datetime.fromisoformat(item["opened_at"])
            if item["customer_id"].startswith(prefix) and opened >= since:
                entry = (item["intervention_id"], item["state"], len(item["gaps"]))
                found.setdefault(item["customer_id"], []).append(entry)
        cursor = page.get("next_cursor")
        if cursor is None:
            return {c: sorted(entries) for c, entries in found.items()}


@dataclass(frozen=True)
class ScoringProgress:
    """Scoring's counters, summed over its instances: records consumed (committed) and
    deadlines breached by absence."""

    events: float
    expired: float


async def read_scoring(client: httpx.AsyncClient, urls: list[str]) -> ScoringProgress | None:
    """The counters from every scoring instance's ``/metrics``; None when one does not
    answer."""
    totals = {SCORING_EVENTS: 0.0, SCORING_EXPIRED: 0.0}
    for url in urls:
        try:
            response = await client.get(f"{url.rstrip('/')}/metrics")
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        for line in response.text.splitlines():
            if line.startswith("#"):
                continue
            head, _, value = line.rpartition(" ")
            name = head.split("{")[0]
            if name in totals:
                totals[name] += float(value)
    return ScoringProgress(totals[SCORING_EVENTS], totals[SCORING_EXPIRED])


async def measure(
    api: httpx.AsyncClient,
    simulator: Simulator,
    sent: Sent,
    *,
    scoring_urls: list[str],
    baseline: ScoringProgress | None,
    timeout_s: float,
    poll_s: float = 0.5,
    quiet_s: float = 5.0,
    stop: asyncio.Event | None = None,
) -> QueueScore:
    """Wait until scoring has judged everything the run sent, then score the queue.

    Ready when (1) the wall clock is past the last clock the run opened and nothing
    fulfilled (:meth:`Truth.settles_s`); (2) scoring has committed at least as many records
    as ingest accepted from the run, and expired at least as many deadlines as the run left
    unfulfilled, since ``baseline`` (from ``scoring_urls``' ``/metrics``, read before the run);
    and (3) the queue read after that is the same as the one read a poll before. Without
    scoring's metrics, (2) becomes: the queue unchanged for ``quiet_s``. Gives up after
    ``timeout_s``: the score then says it is not settled.
    """
    began = time.monotonic()
    truth = sent.truth
    settles = simulator.start + timedelta(seconds=truth.settles_s())
    expiring = len(truth.unfulfilled_clocks())
    prefix = f"sim-{simulator.config.seed}-c"
    previous: dict[str, list[QueueEntry]] | None = None
    quiet_since = time.monotonic()
    settled = False
    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            ready = datetime.now(UTC) >= settles
            progress = await read_scoring(client, scoring_urls) if baseline else None
            if progress is not None and baseline is not None:
                ready = (
                    ready
                    and progress.events - baseline.events >= sent.accepted
                    and progress.expired - baseline.expired >= expiring
                )
            queue = await read_queue(api, prefix=prefix, since=simulator.start)
            if queue != previous:
                quiet_since = time.monotonic()
            if progress is None:
                ready = ready and time.monotonic() - quiet_since >= quiet_s
            if ready and queue == previous:
                settled = True
                break
            previous = queue if ready or progress is None else None
            if time.monotonic() - began > timeout_s or await _sleep(poll_s, stop):
                break
    return score_queue(
        truth.customers(), set(queue), settled=settled, waited_s=time.monotonic() - began
    )

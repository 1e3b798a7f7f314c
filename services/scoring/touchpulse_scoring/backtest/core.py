"""Re-judge retained events under two catalogues, in memory, and say what would change.

Pure: events, profiles, both catalogues and the moment the run treats as now come in; a
:class:`BacktestReport` comes out. Nothing is read or written anywhere else, so the same
inputs give the same report, byte for byte (``to_json``).

Each customer's events are folded through the very steps scoring applies to an event
(``judge_event`` -> ``apply_outcomes`` -> ``assess`` -> ``explanation_needed`` ->
``explain`` -> ``decide``, see :mod:`touchpulse_scoring.engine`), once under the live
catalogue and once under the candidate, one event at a time in event-time order (the
order scoring applies a batch in). Both sides are re-judged here, never read from the
database: the live side is what the live catalogue gives on the same events with the same
profiles, so every difference in the report is the catalogue's.

What stands in for the services' clocks, all taken from the events (a replay decides
alike):

- a deadline expires (a breach by absence, dated at its due time) before the customer's
  first event later than its due time, and at the end if due before ``now``;
- an open intervention nobody took expires (``expire_overdue``) at the time of the next
  decision after its expiry days. People's takes and resolutions are not known to a
  back-test: cases stay open until they expire.

Per customer the two runs are compared and only the summary is kept (the 20 most affected
customers in full, and the gap of every breach for the percentiles), so memory grows with
customers and breaches, not with events; :class:`Backtest` takes the customers in batches.

Two shortcuts keep the cost near one judgement per event, each exact (a test compares the
report with both off, byte for byte): when the catalogues differ only in promises, a
customer none of whose events a changed promise judges, opens or fulfils is judged once for
both sides, and so is such an event of a customer who has others.
"""

from __future__ import annotations

import heapq
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from touchpulse_scoring.domain import (
    NO_GUARD,
    NO_PROFILE,
    Catalogue,
    CustomerProfile,
    Deadline,
    DeadlineRef,
    Fulfilment,
    Intervention,
    Judged,
    Outcome,
    ReopenGuard,
    TouchpointHealth,
    UnscorableEvent,
    apply_outcomes,
    assess,
    decide,
    expire_deadline,
    expire_overdue,
    explain,
    explanation_needed,
    is_new,
    judge_event,
    record_breaches,
)
from touchpulse_scoring.domain.profile import DEFAULT_SEGMENT
from touchpulse_shared.contract.events import ExperienceEventV1

#: How many customers the report lists in full, most affected first.
MOST_AFFECTED = 20
#: How many gaps each of them shows per side (the health explanation's worst first).
GAPS_SHOWN = 3
#: The band of a customer with no score (no outcome at all).
NO_BAND = "none"
BANDS = ("red", "amber", "green", NO_BAND)
#: The segment column of a promise row that covers every segment.
ALL_SEGMENTS = "*"

Progress = Callable[[int, int], None]


# --- the report ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rates:
    """One promise's standing outcomes under one catalogue: how many, how many broken, and
    the gap of the broken ones (in the promise's unit; hours late for deadlines)."""

    outcomes: int
    breaches: int
    breach_rate: float | None
    median_gap: float | None
    p90_gap: float | None


@dataclass(frozen=True, slots=True)
class PromiseRow:
    promise_id: str
    #: The customers' segment, or :data:`ALL_SEGMENTS`.
    segment: str
    live: Rates
    candidate: Rates

    @property
    def changed(self) -> bool:
        return self.live != self.candidate


@dataclass(frozen=True, slots=True)
class GapRow:
    promise_id: str
    touchpoint: str
    op: str
    target: float | bool
    unit: str
    actual: float | bool | None
    gap: float
    occurred_at: str


@dataclass(frozen=True, slots=True)
class CustomerSide:
    score: float | None
    band: str
    breaches: int
    interventions_opened: int
    gaps: tuple[GapRow, ...]


@dataclass(frozen=True, slots=True)
class CustomerRow:
    customer_id: str
    segment: str
    live: CustomerSide
    candidate: CustomerSide


@dataclass(frozen=True, slots=True)
class InterventionDiff:
    """Cases opened over the window under each catalogue."""

    opened_live: int
    opened_candidate: int
    #: Opened (at least once more) under the candidate: a case that would have opened.
    would_open: tuple[str, ...]
    #: Opened (at least once more) under live: a case that would not have opened.
    would_not_open: tuple[str, ...]
    #: Trigger kind -> [under live, under the candidate], over the cases opened.
    triggers: Mapping[str, tuple[int, int]]


@dataclass(frozen=True)
class BacktestReport:
    live_version: str
    candidate_version: str
    events: int
    duplicates: int
    customers: int
    first_event: str | None
    last_event: str | None
    #: Per catalogue, events it refuses (reason -> count): dead letters under it.
    unscorable: Mapping[str, Mapping[str, int]]
    promises: tuple[PromiseRow, ...]
    #: Live band -> candidate band -> customers (every band, zeros included).
    bands: Mapping[str, Mapping[str, int]]
    interventions: InterventionDiff
    most_affected: tuple[CustomerRow, ...]
    #: Customers whose score, band, breaches or openings differ.
    customers_changed: int

    @property
    def moved(self) -> int:
        """Customers whose band differs."""
        return sum(n for a, row in self.bands.items() for b, n in row.items() if a != b)

    @property
    def empty(self) -> bool:
        """Nothing differs: the candidate judges these events exactly as live does."""
        return (
            self.customers_changed == 0
            and not any(row.changed for row in self.promises)
            and not self.interventions.would_open
            and not self.interventions.would_not_open
            and self.unscorable["live"] == self.unscorable["candidate"]
        )

    def as_dict(self) -> dict[str, Any]:
        found = asdict(self)
        found["moved"] = self.moved
        found["empty"] = self.empty
        return found

    def to_json(self) -> str:
        return orjson.dumps(
            self.as_dict(), option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2
        ).decode()


# --- one customer under one catalogue -----------------------------------------------------


@dataclass(slots=True)
class _Run:
    """A customer's state under one catalogue, as scoring's rows would hold it."""

    catalogue: Catalogue
    profile: CustomerProfile
    health: dict[str, TouchpointHealth] = field(default_factory=dict)
    standing: dict[str, Outcome] = field(default_factory=dict)
    deadlines: dict[DeadlineRef, Deadline] = field(default_factory=dict)
    early: dict[DeadlineRef, Fulfilment] = field(default_factory=dict)
    #: Promise -> times of the standing breaches (scoring's breach history, before pruning).
    breaches: dict[str, list[datetime]] = field(default_factory=lambda: defaultdict(list))
    current: Intervention | None = None
    guard: ReopenGuard = NO_GUARD
    score: float | None = None
    as_of: datetime | None = None
    opened: list[Intervention] = field(default_factory=list)
    unscorable: Counter[str] = field(default_factory=Counter)

    def event(self, event: ExperienceEventV1) -> None:
        self.apply(event, self.judge(event))

    def judge(self, event: ExperienceEventV1) -> Judged | UnscorableEvent:
        """Scoring's per-event step on this run's state, once the deadlines due before the
        event have expired; what it refuses is returned, not raised."""
        if self.deadlines:
            self.expire_before(event.occurred_at)
        try:
            return judge_event(event, self.catalogue, self.profile, self.deadlines, self.early)
        except UnscorableEvent as exc:
            return exc

    def apply(self, event: ExperienceEventV1, judged: Judged | UnscorableEvent) -> None:
        if isinstance(judged, UnscorableEvent):
            self.unscorable[judged.reason.value] += 1
            return
        judged.fold_into(self.deadlines, self.early)
        at = event.occurred_at
        if self.as_of is None or at > self.as_of:
            self.as_of = at
        self.settle(judged.outcomes)

    def expire_before(self, now: datetime) -> None:
        """Expire the open deadlines due before ``now`` (scoring's sweep, once the
        partition is applied past their due time), earliest due first."""
        due = sorted(
            (d for d in self.deadlines.values() if d.state == "open" and d.due_at < now),
            key=lambda d: (d.due_at, d.promise_id, d.journey_key),
        )
        for deadline in due:
            expired = expire_deadline(deadline, now)
            if expired is None:
                continue
            ended, outcome = expired
            self.deadlines[deadline.ref] = ended
            if self.as_of is None or ended.due_at > self.as_of:
                self.as_of = ended.due_at
            self.settle((outcome,))

    def settle(self, outcomes: Sequence[Outcome]) -> None:
        """Scoring's ``_settle`` and ``_decide`` for one customer and one event, reduced to
        what the report can see: the standing outcomes, the final health and the cases
        that open (with their triggers at opening).

        Two shortcuts, each exact for those:

        - while a case is open nothing new can open (at most one open case per customer;
          the next waits for this one's expiry, which depends on when it opened only), so
          the attachments and re-rankings scoring would make to it are not computed;
        - the journey is read only for a decision: the previous score feeds only the
          reopen guard, and a guard never waits in a back-test (cases are not resolved
          here, only expired, and an expired case damps nothing).
        """
        as_of = self.as_of
        assert as_of is not None  # noqa: S101 - set by every caller before settling
        if not outcomes:
            return  # only the freshness of health moves: read at the end
        catalogue = self.catalogue
        policy = catalogue.policy
        standing = self.standing
        given = {
            o.outcome_key: standing[o.outcome_key] for o in outcomes if o.outcome_key in standing
        }
        applied = apply_outcomes(self.health, given, outcomes, half_life_days=policy.half_life_days)
        self.health = applied.health  # type: ignore[assignment] # a fresh dict, ours now
        broken = any(not o.met for o in applied.recorded)
        # The breach history the decision reads is the one before these outcomes.
        history = self._history() if broken else {}
        self._record(applied.recorded, applied.superseded)
        current = self.current
        if current is not None:
            overdue = expire_overdue(current, now=as_of, policy=policy.interventions)
            if overdue is None:
                return
            self.guard = ReopenGuard.after_close(overdue)
            self.current = None
        if not broken:
            return
        journey = assess(applied.health, catalogue, as_of)
        arguments: dict[str, Any] = {
            "catalogue": catalogue,
            "health": journey.score,
            "previous_health": None,
            "is_new": is_new(self.profile, as_of, policy),
            "outcomes": applied.recorded,
            "breaches": history,
            "current": None,
            "guard": self.guard,
            "evidence": journey.evidence,
        }
        if not explanation_needed(**arguments):
            return
        explained = explain(applied.health, standing.values(), catalogue, as_of, assessed=journey)
        decision = decide(
            **arguments,
            customer_id=outcomes[0].customer_id,
            now=as_of,
            profile=self.profile,
            explained=[e.outcome for e in explained],
        )
        self.guard = decision.guard
        if decision.kind == "opened" and decision.intervention is not None:
            self.opened.append(decision.intervention)
            self.current = decision.intervention

    def _history(self) -> dict[str, tuple[datetime, ...]]:
        return {p: tuple(ts) for p, ts in self.breaches.items() if ts}

    def _record(self, recorded: Sequence[Outcome], superseded: Sequence[Outcome]) -> None:
        record_breaches(self.breaches, recorded, superseded)
        standing = self.standing
        for new in recorded:
            standing[new.outcome_key] = new

    def finish(self, now: datetime) -> None:
        if self.deadlines:
            self.expire_before(now)
        if self.as_of is not None and self.health:
            self.score = assess(self.health, self.catalogue, self.as_of).score

    @property
    def band(self) -> str:
        if self.score is None:
            return NO_BAND
        return self.catalogue.policy.bands.of(self.score)

    def gaps(self) -> tuple[GapRow, ...]:
        if self.as_of is None:
            return ()
        worst = explain(self.health, self.standing.values(), self.catalogue, self.as_of)
        return tuple(_gap_row(e.outcome) for e in worst[:GAPS_SHOWN])


def _gap_row(outcome: Outcome) -> GapRow:
    return GapRow(
        promise_id=outcome.promise_id,
        touchpoint=outcome.touchpoint,
        op=outcome.expected.op,
        target=outcome.expected.target,
        unit=outcome.expected.unit,
        actual=outcome.actual,
        gap=outcome.gap,
        occurred_at=outcome.occurred_at.isoformat(),
    )


# --- the whole run ------------------------------------------------------------------------


@dataclass
class _Tally:
    """Gaps of breaches and counts of outcomes, per (promise, segment), for one catalogue."""

    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    gaps: dict[tuple[str, str], list[float]] = field(default_factory=lambda: defaultdict(list))

    def add(self, run: _Run, segment: str) -> int:
        breaches = 0
        outcomes, gaps = self.outcomes, self.gaps
        for outcome in run.standing.values():
            key = (outcome.promise_id, segment)
            outcomes[key] += 1
            if not outcome.met:
                gaps[key].append(outcome.gap)
                breaches += 1
        return breaches


#: What the comparison keeps of one customer under one catalogue: score, band, standing
#: breaches, cases opened.
_Summary = tuple[float | None, str, int, int]
LIVE, CANDIDATE = "live", "candidate"


class _Changes:
    """Which events the candidate can judge differently from live.

    When the two catalogues differ only in promises (the policy, touchpoints and tracking
    plan equal), an event that no changed promise judges, opens or fulfils is judged alike
    under both, and a customer with only such events gets the same outcomes, health and
    decisions (the catalogue's other lookups, priors and actions, are those of unchanged
    promises): the live run stands for the candidate's, exactly, at half the cost.
    """

    def __init__(self, live: Catalogue, candidate: Catalogue) -> None:
        self.live = live
        self.candidate = candidate
        self.promises: frozenset[str] | None = None
        same_frame = (
            live.policy == candidate.policy
            and dict(live.touchpoints) == dict(candidate.touchpoints)
            and {t: dict(d) for t, d in live.events.items()}
            == {t: dict(d) for t, d in candidate.events.items()}
        )
        if same_frame:
            old = {p.id: p for p in live.promises}
            new = {p.id: p for p in candidate.promises}
            self.promises = frozenset(
                i for i in old.keys() | new.keys() if old.get(i) != new.get(i)
            )
        self._kinds: dict[tuple[str, str], bool] = {}

    def touches(self, events: Sequence[ExperienceEventV1]) -> bool:
        """Whether any of these events can be judged differently under the candidate."""
        return any(self.touched(event) for event in events)

    def touched(self, event: ExperienceEventV1) -> bool:
        """Whether this event can be judged differently under the candidate. When not,
        live's judgement of it stands for the candidate's, on the same customer: the
        deadlines and early fulfilments it reads are those of unchanged promises, the same
        in both runs (their copies differ only in the catalogue version they name)."""
        if self.promises is None:
            return True
        kind = (event.touchpoint, event.type)
        found = self._kinds.get(kind)
        if found is None:
            found = self._kinds[kind] = self._touches(*kind)
        return found

    def _touches(self, touchpoint: str, event_type: str) -> bool:
        changed = self.promises
        assert changed is not None  # noqa: S101 - only asked when promises alone differ
        for catalogue in (self.live, self.candidate):
            for group in (
                catalogue.measure_promises(touchpoint, event_type),
                catalogue.deadlines_opened_by(event_type),
                catalogue.deadlines_fulfilled_by(event_type),
            ):
                if any(p.id in changed for p in group):
                    return True
        return False


@dataclass
class _Comparison:
    """The report's figures, customer by customer."""

    tallies: dict[str, _Tally] = field(
        default_factory=lambda: {LIVE: _Tally(), CANDIDATE: _Tally()}
    )
    unscorable: dict[str, Counter[str]] = field(
        default_factory=lambda: {LIVE: Counter(), CANDIDATE: Counter()}
    )
    bands: dict[str, dict[str, int]] = field(
        default_factory=lambda: {a: dict.fromkeys(BANDS, 0) for a in BANDS}
    )
    triggers: dict[str, list[int]] = field(default_factory=dict)
    opened: dict[str, int] = field(default_factory=lambda: {LIVE: 0, CANDIDATE: 0})
    would_open: list[str] = field(default_factory=list)
    would_not_open: list[str] = field(default_factory=list)
    changed: int = 0
    #: A min-heap of the most affected: (how much, customer), row; the least first out.
    affected: list[tuple[tuple[float, int, str], CustomerRow]] = field(default_factory=list)

    def count(self, side: str, run: _Run, segment: str) -> _Summary:
        breaches = self.tallies[side].add(run, segment)
        self.unscorable[side].update(run.unscorable)
        self.opened[side] += len(run.opened)
        for case in run.opened:
            for kind in case.reasons:
                self.triggers.setdefault(kind.value, [0, 0])[side == CANDIDATE] += 1
        return (run.score, run.band, breaches, len(run.opened))

    def compare(
        self,
        customer: str,
        segment: str,
        runs: Mapping[str, _Run],
        live: _Summary,
        candidate: _Summary,
    ) -> None:
        self.bands[live[1]][candidate[1]] += 1
        if candidate[3] > live[3]:
            self.would_open.append(customer)
        elif candidate[3] < live[3]:
            self.would_not_open.append(customer)
        if live == candidate:
            return
        self.changed += 1
        rank = _affected(live, candidate)
        heap = self.affected
        key = (*rank, _Reverse(customer))
        if len(heap) == MOST_AFFECTED and key <= heap[0][0]:
            return  # ties go to the smaller customer id
        row = CustomerRow(
            customer_id=customer,
            segment=segment,
            live=_customer_side(runs[LIVE], live),
            candidate=_customer_side(runs[CANDIDATE], candidate),
        )
        entry = (key, row)
        if len(heap) < MOST_AFFECTED:
            heapq.heappush(heap, entry)
        else:
            heapq.heapreplace(heap, entry)


def _by_customer(
    events: Iterable[ExperienceEventV1],
) -> tuple[dict[str, list[ExperienceEventV1]], int]:
    """Each customer's events, each ``(source, event_id)`` once; how many were duplicates."""
    by_customer: dict[str, list[ExperienceEventV1]] = defaultdict(list)
    seen: set[tuple[str, str]] = set()
    duplicates = 0
    for event in events:
        identity = event.identity
        if identity in seen:
            duplicates += 1
            continue
        seen.add(identity)
        by_customer[event.customer_id].append(event)
    return by_customer, duplicates


class Backtest:
    """A back-test fed in batches of customers, so that a long window need not be held in
    memory at once: a partition of the events topic holds every event of its customers
    (the key is the customer), so each partition can be one batch.

    A customer's events must all come in one batch; duplicates are found within a batch
    (a retry has the same key, so the same partition, as its first copy).
    """

    def __init__(self, live: Catalogue, candidate: Catalogue, *, now: datetime) -> None:
        self.live = live
        self.candidate = candidate
        self.now = now
        self._changes = _Changes(live, candidate)
        self._found = _Comparison()
        self._events = 0
        self._duplicates = 0
        self._customers = 0
        self._first: datetime | None = None
        self._last: datetime | None = None

    def add(
        self,
        events: Iterable[ExperienceEventV1],
        profiles: Mapping[str, CustomerProfile],
        *,
        progress: Progress | None = None,
    ) -> None:
        """Re-judge one batch of customers' events; ``progress(customers_done, customers)``
        now and then."""
        by_customer, duplicates = _by_customer(events)
        self._duplicates += duplicates
        customers = sorted(by_customer)
        step = max(1, len(customers) // 100)
        for index, customer in enumerate(customers):
            pending = by_customer.pop(customer)
            pending.sort(key=lambda e: (e.occurred_at, e.identity))
            self._customer(customer, pending, profiles.get(customer, NO_PROFILE))
            if progress is not None and (index + 1) % step == 0:
                progress(index + 1, len(customers))
        if progress is not None:
            progress(len(customers), len(customers))

    def _customer(
        self, customer: str, pending: list[ExperienceEventV1], profile: CustomerProfile
    ) -> None:
        self._events += len(pending)
        self._customers += 1
        first, last = pending[0].occurred_at, pending[-1].occurred_at
        if self._first is None or first < self._first:
            self._first = first
        if self._last is None or last > self._last:
            self._last = last
        segment = profile.segment or DEFAULT_SEGMENT
        live = _Run(self.live, profile)
        runs = {LIVE: live, CANDIDATE: live}
        changes = self._changes
        if not changes.touches(pending):
            for event in pending:
                live.event(event)
        else:
            # Side by side, event by event: an event no changed promise concerns is
            # judged once, and live's judgement applied to both.
            candidate = runs[CANDIDATE] = _Run(self.candidate, profile)
            for event in pending:
                judged = live.judge(event)
                live.apply(event, judged)
                if changes.touched(event):
                    candidate.event(event)
                else:
                    if candidate.deadlines:
                        candidate.expire_before(event.occurred_at)
                    candidate.apply(event, judged)
            candidate.finish(self.now)
        live.finish(self.now)
        found = self._found
        summary = {side: found.count(side, run, segment) for side, run in runs.items()}
        found.compare(customer, segment, runs, summary[LIVE], summary[CANDIDATE])

    def report(self) -> BacktestReport:
        found = self._found
        first, last = self._first, self._last
        return BacktestReport(
            live_version=self.live.version,
            candidate_version=self.candidate.version,
            events=self._events,
            duplicates=self._duplicates,
            customers=self._customers,
            first_event=None if first is None else first.isoformat(),
            last_event=None if last is None else last.isoformat(),
            unscorable={side: dict(sorted(n.items())) for side, n in found.unscorable.items()},
            promises=_promise_rows(found.tallies[LIVE], found.tallies[CANDIDATE]),
            bands=found.bands,
            interventions=InterventionDiff(
                opened_live=found.opened[LIVE],
                opened_candidate=found.opened[CANDIDATE],
                would_open=tuple(sorted(found.would_open)),
                would_not_open=tuple(sorted(found.would_not_open)),
                triggers={k: (v[0], v[1]) for k, v in sorted(found.triggers.items())},
            ),
            most_affected=tuple(row for _, row in sorted(found.affected, reverse=True)),
            customers_changed=found.changed,
        )


def backtest(
    events: Iterable[ExperienceEventV1],
    profiles: Mapping[str, CustomerProfile],
    live: Catalogue,
    candidate: Catalogue,
    *,
    now: datetime | None = None,
    progress: Progress | None = None,
) -> BacktestReport:
    """Re-judge ``events`` (duplicates by ``(source, event_id)`` count once) under both
    catalogues, all in one batch; ``now`` (default: the newest event's time) is when open
    deadlines are expired for the last time. ``progress(customers_done, customers)`` is
    called now and then."""
    events = list(events)
    if now is None:
        now = max((e.occurred_at for e in events), default=None)
    if now is None:
        return Backtest(live, candidate, now=datetime.min.replace(tzinfo=UTC)).report()
    run = Backtest(live, candidate, now=now)
    run.add(events, profiles, progress=progress)
    return run.report()


def _affected(live: _Summary, candidate: _Summary) -> tuple[float, int]:
    """How much a customer changed: score points moved (a score appearing or vanishing
    counts as 100), then breaches added or removed."""
    a, b = live[0], candidate[0]
    moved = (0.0 if a is b else 100.0) if a is None or b is None else round(abs(a - b), 6)
    return (moved, abs(live[2] - candidate[2]) + abs(live[3] - candidate[3]))


class _Reverse(str):
    """Ties among the most affected go to the smaller customer id: in the min-heap the
    larger id must rank lower."""

    __slots__ = ()

    def __lt__(self, other: object) -> bool:
        return str.__gt__(self, other) if isinstance(other, str) else NotImplemented

    def __gt__(self, other: object) -> bool:
        return str.__lt__(self, other) if isinstance(other, str) else NotImplemented

    def __le__(self, other: object) -> bool:
        return str.__ge__(self, other) if isinstance(other, str) else NotImplemented

    def __ge__(self, other: object) -> bool:
        return str.__le__(self, other) if isinstance(other, str) else NotImplemented


def _customer_side(run: _Run, side: _Summary) -> CustomerSide:
    return CustomerSide(
        score=None if side[0] is None else round(side[0], 6),
        band=side[1],
        breaches=side[2],
        interventions_opened=side[3],
        gaps=run.gaps(),
    )


def _promise_rows(live: _Tally, candidate: _Tally) -> tuple[PromiseRow, ...]:
    keys = set(live.outcomes) | set(candidate.outcomes)
    promises = sorted({p for p, _ in keys})
    rows: list[PromiseRow] = []
    for promise in promises:
        segments = sorted(s for p, s in keys if p == promise)
        for segment in [ALL_SEGMENTS, *segments]:
            chosen = [s for s in segments if segment in (ALL_SEGMENTS, s)]
            rows.append(
                PromiseRow(
                    promise_id=promise,
                    segment=segment,
                    live=_rates(live, promise, chosen),
                    candidate=_rates(candidate, promise, chosen),
                )
            )
    return tuple(rows)


def _rates(tally: _Tally, promise: str, segments: Sequence[str]) -> Rates:
    outcomes = sum(tally.outcomes.get((promise, s), 0) for s in segments)
    gaps = sorted(g for s in segments for g in tally.gaps.get((promise, s), ()))
    return Rates(
        outcomes=outcomes,
        breaches=len(gaps),
        breach_rate=None if not outcomes else round(len(gaps) / outcomes, 6),
        median_gap=None if not gaps else round(statistics.median(gaps), 6),
        p90_gap=None if not gaps else round(_nearest_rank(gaps, 0.9), 6),
    )


def _nearest_rank(ordered: Sequence[float], q: float) -> float:
    """The q-quantile by nearest rank: a value that occurred, never an interpolation."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

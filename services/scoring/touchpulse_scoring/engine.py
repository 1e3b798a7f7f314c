"""One batch (or one deadline sweep) through the domain, inside the caller's transaction.

``Engine.handle`` is the consumer's batch handler. Within the batch transaction it:
decodes each record and applies ingest's rules to it — the contract, the promise catalogue
and the time window (a record that breaks one becomes a dead letter, written to the outbox),
locks the batch's customers, dedupes events on ``(source, event_id)``, loads the customers'
state, runs the pure domain per customer in event-time order, and writes the outcomes,
health, deadlines, interventions and outbox rows, and — in one more statement — the
per-source counters and the dead letters the api lists (touchpulse_shared.db.quality).
Only applied events are recorded as
processed: a dead letter, fixed and replayed with the same ``(source, event_id)``, is
applied then. ``Engine.sweep`` does the same
for deadlines that passed with no event.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import structlog

from touchpulse_scoring.dlq import DeadLetter, customer_named, origin, without_customer
from touchpulse_scoring.domain import (
    Applied,
    Catalogue,
    Deadline,
    DeadlineRef,
    Fulfilment,
    Intervention,
    Journey,
    Outcome,
    TouchpointHealth,
    UnscorableEvent,
    apply_outcomes,
    assess,
    check_event,
    decide,
    expire_deadline,
    expire_overdue,
    explain,
    explanation_needed,
    fulfilment_refs,
    is_new,
    judge_event,
    record_follow_up,
    with_breaches,
)
from touchpulse_scoring.intervention_table import (
    intervention_record,
    record_interventions,
    write_interventions,
    write_webhook_events,
)
from touchpulse_scoring.store import (
    CustomerState,
    JourneyRow,
    breach_window_start,
    claim_events,
    follow_up_customers,
    load_due_deadlines,
    load_erasures,
    load_follow_ups,
    load_outcomes_by_key,
    load_recent_outcomes,
    load_state,
    load_unacknowledged,
    load_watermarks,
    record_feedback,
    release_events,
    unacknowledged_customers,
    write_deadlines,
    write_early_fulfilments,
    write_health,
    write_journeys,
    write_outcomes,
)
from touchpulse_scoring.windows import KeptInterventions, Windows
from touchpulse_shared.contract import (
    ExperienceEventV1,
    RecordRejected,
    check_record_time_window,
    decode_record,
    format_rfc3339,
)
from touchpulse_shared.contract.record import request_id_of
from touchpulse_shared.db import Conn
from touchpulse_shared.db.locks import lock_customers
from touchpulse_shared.db.outbox import insert_outbox, outbox_row
from touchpulse_shared.db.quality import Tally
from touchpulse_shared.kafka import records as kafka_records
from touchpulse_shared.kafka.partitioner import partition_of
from touchpulse_shared.settings import Settings

log = structlog.get_logger(__name__)

# A header name that is not UTF-8 must reach decode_record (a dead letter), not fail the
# fetch inside aiokafka on every poll: every consumer of this process fetches leniently.
kafka_records.install()

#: The dead-letter reason of an event outside ingest's time window (ingest's problem code).
TIME_WINDOW = "time_window"
#: Dead letters logged one by one per batch; the flood line and metric count the rest.
LOGGED_DEAD_LETTERS = 20


@dataclass(frozen=True)
class TimeWindow:
    """Ingest's time window, which scoring applies to every record it reads."""

    max_future: timedelta
    max_past: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> TimeWindow:
        return cls(
            max_future=timedelta(seconds=settings.ingest_max_clock_skew_s),
            max_past=timedelta(hours=settings.ingest_max_event_age_hours),
        )


@dataclass(frozen=True)
class Topics:
    health: str
    interventions: str
    dead_letters: str


@dataclass(frozen=True)
class Source:
    """Where events come from: whose watermarks say how far in time they are applied."""

    group: str
    topic: str
    partitions: Callable[[], int | None]


@dataclass
class Report:
    """What a batch did, for metrics and logs (the state itself is in the database)."""

    records: int = 0
    applied: int = 0
    duplicates: int = 0
    #: Events skipped because their customer was erased after they were received.
    erased: int = 0
    outcomes: list[Outcome] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    opened: list[Intervention] = field(default_factory=list)
    #: When ingest received each applied event; the service measures event-to-health
    #: from these once the batch has committed.
    received: list[datetime] = field(default_factory=list)
    #: The per-source counters this batch adds (docs/operations.md, "Source quality").
    quality: Tally = field(default_factory=Tally)


@dataclass
class _Work:
    """The pending effect on one customer."""

    events: list[ExperienceEventV1] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    deadlines: dict[DeadlineRef, Deadline] = field(default_factory=dict)
    #: Early fulfilments to remember (a value) or forget (None, the opening came).
    early: dict[DeadlineRef, Fulfilment | None] = field(default_factory=dict)
    as_of: datetime | None = None
    #: Per event applied, in order: its time and where its outcomes end in ``outcomes``.
    steps: list[tuple[datetime, int]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Step:
    """One customer's state after one of its events in the batch, as a decision sees it."""

    as_of: datetime
    applied: Applied
    journey: Journey


class Engine:
    def __init__(
        self,
        *,
        catalogue: Callable[[], Catalogue],
        topics: Topics,
        source: Source,
        clock: Callable[[], datetime],
        window: TimeWindow | None = None,
        mute_interventions: bool = False,
        window_capacity: int = 250_000,
    ) -> None:
        self.catalogue = catalogue
        # None only where a test feeds records by hand; the services pass their settings'.
        self.window = window
        self.topics = topics
        self.source = source
        self.clock = clock
        # Replays rebuild state without opening interventions or sending webhooks.
        self.mute_interventions = mute_interventions
        self.windows = Windows(window_capacity)
        # Bounded in gaps by the same setting: a case's gaps are outcomes of its window.
        self.interventions = KeptInterventions(window_capacity)

    async def handle(self, conn: Conn, records: list[Any]) -> Report:
        catalogue = self.catalogue()
        now = self.clock()
        report = Report(records=len(records))
        decoded: list[tuple[Any, ExperienceEventV1, datetime]] = []
        for record in records:
            try:
                result = decode_record(record.key, record.value, list(record.headers or ()))
            except RecordRejected as exc:
                report.dead_letters.append(_dead(record, exc.reason.value, exc.detail, now))
                continue
            try:
                check_event(result.event, catalogue)
            except UnscorableEvent as exc:
                report.dead_letters.append(
                    _dead(
                        record,
                        exc.reason.value,
                        str(exc),
                        now,
                        event=result.event,
                        received=result.received_at,
                    )
                )
                continue
            late = self._time_problem(record, result)
            if late is not None:
                report.dead_letters.append(
                    _dead(
                        record,
                        TIME_WINDOW,
                        late,
                        now,
                        event=result.event,
                        received=result.received_at,
                    )
                )
                continue
            decoded.append((record, result.event, result.received_at))

        named = [d.customer_id for d in report.dead_letters if d.customer_id is not None]
        if decoded or named:
            # Locks first: erasure and the deadline sweep take the same locks, so what is
            # read below cannot change before this transaction commits. A dead letter's
            # customer too: its row must not be stored after an erasure that deleted them.
            await lock_customers(conn, [*(e.customer_id for _, e, _ in decoded), *named])
            decoded = await self._drop_erased(conn, decoded, report)
        fresh = await self._dedupe(conn, decoded)
        report.duplicates = len(decoded) - len(fresh)
        if report.duplicates:
            kept = {id(record) for record, _, _ in fresh}
            for record, event, received in decoded:
                if id(record) not in kept:
                    report.quality.add(event.source, received, "duplicate", shard=record.partition)
        if fresh:
            await self._apply_events(conn, catalogue, fresh, now, report)
        await insert_outbox(
            conn,
            [
                outbox_row(self.topics.dead_letters, d.key, d.value, d.record_headers(now))
                for d in report.dead_letters
            ],
        )
        for d in report.dead_letters:
            if d.source is not None:
                report.quality.add(
                    d.source, d.seen_at or now, "dead_lettered", d.reason, shard=d.partition
                )
        # The counters and the dead letters the api lists, with the batch: exactly once.
        await record_feedback(conn, report.quality, report.dead_letters, now)
        _log_dead_letters(report.dead_letters)
        if len(report.dead_letters) * 2 > len(records) >= 20:
            # Most of a batch unusable is an incident (a broken producer, a bad deploy), not
            # noise: say so loudly; the flood metric drives an alert.
            log.error(
                "scoring.dead_letter_flood", dead=len(report.dead_letters), batch=len(records)
            )
        return report

    def _time_problem(self, record: Any, result: Any) -> str | None:
        """Ingest's time window, anchored on a time the record carries (never this clock):
        a replay long after the fact judges the record as live scoring did."""
        if self.window is None:
            return None
        timestamp = getattr(record, "timestamp", None)
        return check_record_time_window(
            result,
            timestamp if isinstance(timestamp, int) else None,
            max_future=self.window.max_future,
            max_past=self.window.max_past,
        )

    async def _drop_erased(
        self,
        conn: Conn,
        decoded: list[tuple[Any, ExperienceEventV1, datetime]],
        report: Report,
    ) -> list[tuple[Any, ExperienceEventV1, datetime]]:
        """Events of an erased customer received before the erasure are never applied, and
        such records that are dead letters are neither stored nor sent on: a replay must not
        bring back what the erasure deleted (one query for both)."""
        letters = report.dead_letters
        erased = await load_erasures(
            conn,
            {e.customer_id for _, e, _ in decoded}
            | {d.customer_id for d in letters if d.customer_id is not None},
        )
        if not erased:
            return decoded
        report.dead_letters = [
            d
            for d in letters
            if d.customer_id not in erased
            or (d.seen_at is not None and d.seen_at > erased[d.customer_id])
        ]
        dropped = len(letters) - len(report.dead_letters)
        kept = [
            item
            for item in decoded
            if item[1].customer_id not in erased or item[2] > erased[item[1].customer_id]
        ]
        report.erased = len(decoded) - len(kept) + dropped
        return kept

    async def _dedupe(
        self, conn: Conn, decoded: Sequence[tuple[Any, ExperienceEventV1, datetime]]
    ) -> list[tuple[Any, ExperienceEventV1, datetime]]:
        """Keep the events not applied before; duplicates inside the batch collapse first."""
        firsts: dict[tuple[str, str], tuple[Any, ExperienceEventV1, datetime]] = {}
        for item in decoded:
            firsts.setdefault(item[1].identity, item)
        if not firsts:
            return []
        items = list(firsts.values())
        new = await claim_events(conn, [(record, event) for record, event, _ in items])
        return [item for item in items if item[1].identity in new]

    async def _release(self, conn: Conn, refused: Sequence[ExperienceEventV1]) -> None:
        """Events claimed by the dedupe but dead-lettered while judged are not processed:
        their rows go in the same transaction, so a corrected resend is applied."""
        await release_events(conn, [e.identity for e in refused])

    async def _apply_events(
        self,
        conn: Conn,
        catalogue: Catalogue,
        fresh: Sequence[tuple[Any, ExperienceEventV1, datetime]],
        now: datetime,
        report: Report,
    ) -> None:
        work: dict[str, _Work] = defaultdict(_Work)
        refs: set[DeadlineRef] = set()
        for _, event, _ in sorted(fresh, key=lambda item: (item[1].occurred_at, item[1].identity)):
            work[event.customer_id].events.append(event)
            refs.update(fulfilment_refs(event, catalogue))
            refs.update(
                DeadlineRef(event.customer_id, p.id, event.journey_id or event.event_id)
                for p in catalogue.deadlines_opened_by(event.type)
            )
        states = await self._load(conn, catalogue, list(work), refs, [e for _, e, _ in fresh])
        by_event = {e.identity: (r, received) for r, e, received in fresh}
        refused: list[ExperienceEventV1] = []
        for customer, pending in work.items():
            state = states[customer]
            for event in pending.events:
                try:
                    self._judge_event(event, catalogue, state, pending)
                except UnscorableEvent as exc:
                    record, received = by_event[event.identity]
                    report.dead_letters.append(
                        _dead(
                            record, exc.reason.value, str(exc), now, event=event, received=received
                        )
                    )
                    refused.append(event)
                    continue
                record, received = by_event[event.identity]
                report.applied += 1
                report.received.append(received)
                report.quality.add(
                    event.source, received, "accepted", shard=record.partition, seen=received
                )
                if not catalogue.matches_a_promise(event.touchpoint, event.type):
                    report.quality.add(
                        event.source, received, "unmatched", event.type, shard=record.partition
                    )
                # The newest event time applied: what health is read at (see _settle).
                pending.as_of = max(pending.as_of or event.occurred_at, event.occurred_at)
                pending.steps.append((event.occurred_at, len(pending.outcomes)))
        await self._release(conn, refused)
        await self._settle(
            conn, catalogue=catalogue, states=states, work=work, now=now, report=report
        )

    def _judge_event(
        self, event: ExperienceEventV1, catalogue: Catalogue, state: CustomerState, pending: _Work
    ) -> None:
        # handle() ran check_event on every event it kept, under this same catalogue.
        judged = judge_event(
            event, catalogue, state.profile, state.deadlines, state.early, checked=True
        )
        judged.fold_into(state.deadlines, state.early)
        pending.deadlines.update(judged.deadlines)
        pending.early.update(judged.early)
        pending.outcomes.extend(judged.outcomes)

    async def _load(
        self,
        conn: Conn,
        catalogue: Catalogue,
        customers: list[str],
        refs: Iterable[DeadlineRef],
        events: Sequence[ExperienceEventV1],
    ) -> dict[str, CustomerState]:
        policy = catalogue.policy
        window = policy.interventions.history_days
        return await load_state(
            conn,
            customers,
            deadline_refs=refs,
            breach_window_start=breach_window_start((e.occurred_at for e in events), window),
            recovery_margin=policy.interventions.recovery_margin,
            kept=self.interventions,
        )

    async def _settle(
        self,
        conn: Conn,
        *,
        catalogue: Catalogue,
        states: dict[str, CustomerState],
        work: dict[str, _Work],
        now: datetime,
        report: Report,
    ) -> None:
        """Fold each customer's pending outcomes into health and decide on interventions.

        Health is read at the customer's newest event time applied (``as_of``), a function
        of the set of events: an event that changes no outcome can still move it, as the
        evidence behind the health decays toward the prior.
        """
        keys = {(o.customer_id, o.outcome_key) for w in work.values() for o in w.outcomes}
        for found in await load_outcomes_by_key(conn, keys):
            states[found.customer_id].outcomes[found.outcome_key] = found
        policy = catalogue.policy
        outcome_rows: list[Outcome] = []
        health_rows: list[tuple[str, str, TouchpointHealth]] = []
        journeys: list[JourneyRow] = []
        deadlines: list[Deadline] = []
        early: list[tuple[DeadlineRef, Fulfilment | None]] = []
        outbox = []
        judged: list[tuple[str, list[_Step]]] = []
        work_applied: dict[str, Applied] = {}
        for customer, pending in work.items():
            state = states[customer]
            deadlines.extend(pending.deadlines.values())
            early.extend(pending.early.items())
            # Only times of applied events (or due times swept) count; the wall clock only
            # for a customer with neither, who then has no health to read.
            known = [t for t in (state.as_of, pending.as_of) if t is not None]
            as_of = max(known, default=now)
            advanced = state.as_of is None or as_of > state.as_of
            if not pending.outcomes and not (advanced and state.health):
                continue
            applied = apply_outcomes(
                state.health, state.outcomes, pending.outcomes, half_life_days=policy.half_life_days
            )
            work_applied[customer] = applied
            recorded = {o.outcome_key: applied.current[o.outcome_key] for o in applied.recorded}
            outcome_rows.extend(recorded.values())
            report.outcomes.extend(recorded.values())
            touched = {o.touchpoint for o in (*applied.recorded, *applied.superseded)}
            health_rows.extend((customer, t, applied.health[t]) for t in sorted(touched))
            journey = assess(applied.health, catalogue, as_of)
            if not applied.recorded and journey.score == state.journey_score:
                if advanced:  # freshness only
                    journeys.append(_journey_row(customer, journey, as_of, changed=False))
                continue
            journeys.append(
                _journey_row(customer, journey, as_of, changed=journey.score != state.journey_score)
            )
            outbox.append(_health_record(self.topics.health, customer, journey, as_of, catalogue))
            if self.mute_interventions:
                continue
            if state.current is not None or any(not o.met for o in applied.recorded):
                # Triggers need a fresh breach; an open case follows every change.
                judged.append(
                    (customer, _steps(state, pending, catalogue, _Step(as_of, applied, journey)))
                )
        moves, windows = await self._decide(conn, catalogue, states, judged)
        report.opened.extend(iv for kind, iv in moves if kind == "intervention.opened")
        outbox.extend(intervention_record(self.topics.interventions, k, iv) for k, iv in moves)
        await write_outcomes(conn, outcome_rows)
        await write_health(conn, health_rows, now)
        revisions = await write_journeys(conn, journeys, now)
        self._keep_windows(states, work_applied, windows, revisions)
        await write_deadlines(conn, deadlines)
        await write_early_fulfilments(conn, early)
        await write_interventions(conn, [iv for _, iv in moves])
        # A re-ranking of an open case's gaps asks nothing of anyone: no webhook for it.
        await write_webhook_events(conn, [m for m in moves if m[0] != "intervention.updated"])
        await insert_outbox(conn, outbox)

    async def _decide(
        self,
        conn: Conn,
        catalogue: Catalogue,
        states: dict[str, CustomerState],
        judged: Sequence[tuple[str, list[_Step]]],
    ) -> tuple[list[tuple[str, Intervention]], dict[str, list[Outcome]]]:
        """Open or attach interventions; each case carries the health explanation's breaches
        at this moment (the same set and ranking the api explains health with).

        A customer's decisions are taken after each of its events in the batch, in the
        order they were applied, as if every event had been a batch of its own: whether a
        case opens, when, and with what, must not depend on how records were batched (a
        dip below the line that the batch's later events lift again still opens the case;
        a case opens at the time of the event that tipped it).

        Also returns, per customer explained, its standing outcomes after this batch (a
        superset of its newest), for the windows kept in memory."""
        policy = catalogue.policy
        # A customer of one step whose explanation cannot matter decides "none": neither
        # read nor scored. One of several steps may need it at any step (a case opened at
        # one is followed at the next): read for all of those.
        needed = [
            (customer, steps)
            for customer, steps in judged
            if len(steps) > 1
            or explanation_needed(**self._arguments(catalogue, states[customer], steps[0]))
        ]
        recent: dict[str, Sequence[Outcome]] = {}
        for customer, _ in needed:
            kept = self.windows.get(customer, states[customer].revision)
            if kept is not None:
                recent[customer] = kept
        recent.update(await load_recent_outcomes(conn, [c for c, _ in needed if c not in recent]))
        moves: list[tuple[str, Intervention]] = []
        windows: dict[str, list[Outcome]] = {}
        for customer, steps in needed:
            state = states[customer]
            # The customer's standing outcomes: the stored ones, with this batch's in place.
            standing = {o.outcome_key: o for o in recent.get(customer, ())}
            # What the next step reads as stored: the state a batch of the previous event
            # alone would have left.
            before = state
            for step in steps:
                standing.update(step.applied.current)
                arguments = self._arguments(catalogue, before, step)
                if len(steps) == 1 or explanation_needed(**arguments):
                    explained = explain(
                        step.applied.health,
                        standing.values(),
                        catalogue,
                        step.as_of,
                        assessed=step.journey,
                    )
                    decision = decide(
                        **arguments,
                        customer_id=customer,
                        # The event's time, not the wall clock: a replay decides alike.
                        now=step.as_of,
                        profile=state.profile,
                        explained=[e.outcome for e in explained],
                    )
                    guard = decision.guard
                    current = before.current
                    if decision.kind != "none" and decision.intervention is not None:
                        moves.append((f"intervention.{decision.kind}", decision.intervention))
                        current = decision.intervention
                else:
                    # decide would answer "none"; the guard still sees the health.
                    guard = arguments["guard"].observe(
                        step.journey.score, policy.interventions, is_new=arguments["is_new"]
                    )
                    current = before.current
                before = replace(
                    before,
                    journey_score=step.journey.score,
                    breaches=with_breaches(
                        before.breaches, step.applied.recorded, step.applied.superseded
                    ),
                    current=current,
                    guard=guard,
                )
            windows[customer] = list(standing.values())
        return moves, windows

    @staticmethod
    def _arguments(catalogue: Catalogue, state: CustomerState, step: _Step) -> dict[str, Any]:
        """What :func:`explanation_needed` and :func:`decide` both read of one step."""
        return {
            "catalogue": catalogue,
            "health": step.journey.score,
            "previous_health": state.journey_score,
            "is_new": is_new(state.profile, step.as_of, catalogue.policy),
            "outcomes": step.applied.recorded,
            "breaches": state.breaches,
            "current": state.current,
            "guard": state.guard,
            "evidence": step.journey.evidence,
        }

    def _keep_windows(
        self,
        states: dict[str, CustomerState],
        applied: dict[str, Applied],
        explained: dict[str, list[Outcome]],
        revisions: dict[str, str],
    ) -> None:
        """Keep each written customer's newest outcomes as of its new journey revision.

        Known exactly only where nothing was superseded (a superseded outcome can leave the
        window and let an older, unread one in) and where the outcomes before the batch were
        known: read for the explanation, or kept and still current."""
        for customer, revision in revisions.items():
            done = applied.get(customer)
            before: Sequence[Outcome] | None = explained.get(customer)
            if before is None:
                before = self.windows.get(customer, states[customer].revision)
            if done is None or done.superseded or before is None:
                self.windows.drop(customer)
                continue
            standing = {o.outcome_key: o for o in before}
            standing.update(done.current)
            self.windows.put(customer, revision, standing.values())

    async def _applied_past_due(
        self, conn: Conn, refs: set[DeadlineRef], rows: Sequence[Any]
    ) -> set[DeadlineRef]:
        """Only deadlines whose customer's partition is applied past the due time: before
        that, the fulfilling event may be waiting in the topic (a backlog, a restart)."""
        partitions = self.source.partitions()
        if not partitions:
            return set()
        marks = await load_watermarks(conn, self.source.group, self.source.topic)
        due = {
            DeadlineRef(r["customer_id"], r["promise_id"], r["journey_key"]): r["due_at"]
            for r in rows
        }
        ready = set()
        for ref in refs:
            mark = marks.get(partition_of(ref.customer_id.encode(), partitions))
            if mark is not None and mark >= due[ref]:
                ready.add(ref)
        return ready

    async def sweep(self, conn: Conn, *, limit: int = 500) -> Report:
        """Expire the deadlines that passed: a breach by absence, with its full effect.

        Candidates are read without locks, then the customers are locked (the order every
        writer uses) and each deadline is re-read: whoever got there first (another
        instance's sweep, or a fulfilling event) has changed its state, and expiry of a
        deadline that is no longer open is a no-op — so nothing fires twice.
        """
        catalogue = self.catalogue()
        now = self.clock()
        report = Report()
        rows = await load_due_deadlines(conn, now, limit)
        if not rows:
            return report
        refs = {DeadlineRef(r["customer_id"], r["promise_id"], r["journey_key"]) for r in rows}
        refs = await self._applied_past_due(conn, refs, rows)
        if not refs:
            return report
        customers = sorted({r.customer_id for r in refs})
        await lock_customers(conn, customers)
        window = catalogue.policy.interventions.history_days
        states = await load_state(
            conn,
            customers,
            deadline_refs=refs,
            # The breaches are dated at their due times: the history reaches back from those.
            breach_window_start=breach_window_start([r["due_at"] for r in rows], window),
            recovery_margin=catalogue.policy.interventions.recovery_margin,
            kept=self.interventions,
        )
        work: dict[str, _Work] = defaultdict(_Work)
        for ref in sorted(refs, key=lambda r: (r.customer_id, r.promise_id, r.journey_key)):
            deadline = states[ref.customer_id].deadlines.get(ref)
            expired = None if deadline is None else expire_deadline(deadline, now)
            if expired is None:
                continue
            ended, outcome = expired
            pending = work[ref.customer_id]
            pending.deadlines[ref] = ended
            pending.outcomes.append(outcome)
            pending.as_of = max(pending.as_of or ended.due_at, ended.due_at)
        if work:
            await self._settle(
                conn, catalogue=catalogue, states=states, work=work, now=now, report=report
            )
        return report


async def expire_interventions(conn: Conn, catalogue: Catalogue, now: datetime, topic: str) -> int:
    """Expire open interventions nobody acknowledged within the policy's days.

    Same discipline as the deadline sweep: candidates without locks, then the customers
    locked and each row re-read, so two instances never expire (and announce) one twice.
    """
    policy = catalogue.policy.interventions
    cutoff = now - timedelta(days=policy.expire_unacknowledged_days)
    customers = await unacknowledged_customers(conn, cutoff)
    if not customers:
        return 0
    await lock_customers(conn, customers)
    expired: list[Intervention] = []
    for found in await load_unacknowledged(conn, customers, cutoff):
        ended = expire_overdue(found, now=now, policy=policy)
        if ended is not None:
            expired.append(ended)
    await record_interventions(conn, topic, [("intervention.expired", iv) for iv in expired])
    return len(expired)


async def record_follow_ups(conn: Conn, catalogue: Catalogue, now: datetime) -> int:
    """Record each resolved intervention's health some days later: did the action help?"""
    policy = catalogue.policy.interventions
    cutoff = now - timedelta(days=policy.follow_up_days)
    customers = await follow_up_customers(conn, cutoff)
    if not customers:
        return 0
    await lock_customers(conn, customers)
    done = [
        record_follow_up(found, now=now, health=health)
        for found, health in await load_follow_ups(conn, customers, cutoff)
    ]
    await write_interventions(conn, done)
    await write_webhook_events(conn, [("intervention.followed_up", iv) for iv in done])
    return len(done)


def _health_record(
    topic: str, customer: str, journey: Journey, as_of: datetime, catalogue: Catalogue
) -> tuple[str, bytes | None, bytes | None, str]:
    """The ``journey.health.v1`` outbox row for one customer's new health."""
    return outbox_row(
        topic,
        customer.encode(),
        orjson.dumps(
            {
                "customer_id": customer,
                "score": journey.score,
                "band": journey.band,
                "weakest_touchpoint": journey.weakest_touchpoint,
                "touchpoints": dict(journey.touchpoints),
                "evidence_weight": journey.evidence,
                "as_of": format_rfc3339(as_of),
                "catalogue_version": catalogue.version,
            }
        ),
        [("content-type", b"application/json")],
    )


def _steps(state: CustomerState, pending: _Work, catalogue: Catalogue, whole: _Step) -> list[_Step]:
    """The customer's batch event by event, for the decisions (``whole``: the batch's own
    result, which a single event's batch, or a sweep's, is already). Folding the same
    outcomes in the same order group by group gives the batch's floats exactly, and the
    last step is the batch's state."""
    bounds = pending.steps
    if len(bounds) <= 1:
        return [whole]
    half_life = catalogue.policy.half_life_days
    health: Mapping[str, TouchpointHealth] = state.health
    current: Mapping[str, Outcome] = state.outcomes
    as_of = state.as_of
    steps: list[_Step] = []
    start = 0
    for at, end in bounds:
        as_of = at if as_of is None or at > as_of else as_of
        applied = apply_outcomes(
            health, current, pending.outcomes[start:end], half_life_days=half_life
        )
        start = end
        health, current = applied.health, applied.current
        steps.append(_Step(as_of, applied, assess(health, catalogue, as_of)))
    return steps


def _journey_row(customer: str, journey: Journey, as_of: datetime, *, changed: bool) -> JourneyRow:
    return JourneyRow(
        customer_id=customer,
        score=journey.score,
        band=journey.band,
        weakest_touchpoint=journey.weakest_touchpoint,
        as_of=as_of,
        changed=changed,
    )


def _log_dead_letters(dead_letters: list[DeadLetter]) -> None:
    """Each named with the ingest request that carried it, so a team can follow one of
    their requests from ingest's log to here; past a few, the flood line sums them up."""
    for d in dead_letters[:LOGGED_DEAD_LETTERS]:
        log.info(
            "scoring.dead_lettered",
            reason=d.reason,
            source=d.source,
            event_id=d.event_id,
            partition=d.partition,
            offset=d.offset,
            request_id=request_id_of(d.headers),
        )


def _dead(
    record: Any,
    reason: str,
    detail: str,
    now: datetime,
    *,
    event: ExperienceEventV1 | None = None,
    received: datetime | None = None,
) -> DeadLetter:
    headers = [(name, value or b"") for name, value in (record.headers or ())]
    source, event_id, event_type = origin(headers, record.value, event)
    customer = customer_named(record.key, record.value, event)
    return DeadLetter(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        headers=headers,
        reason=reason,
        detail=without_customer(detail, customer, record.key),
        source=source,
        event_id=event_id,
        event_type=event_type,
        seen_at=_seen_at(record, received, now),
        customer_id=customer,
    )


def _seen_at(record: Any, received: datetime | None, now: datetime) -> datetime:
    """When a dead-lettered record reached Touchpulse, for its counter's hour: ingest's
    receipt time when it could be read, else the record's Kafka timestamp; never later than
    now (a forged timestamp must not open a counter row in the year 9999)."""
    if received is not None:
        return min(received, now)
    timestamp = getattr(record, "timestamp", None)
    if isinstance(timestamp, int) and 0 <= timestamp <= now.timestamp() * 1000:
        return datetime.fromtimestamp(timestamp / 1000, tz=UTC)
    return now

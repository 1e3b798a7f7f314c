"""Lifecycle: every table that grows with events keeps what something can still need, no more.

One round (:func:`prune_round`, driven by scoring's ``lifecycle`` loop with the wall clock,
and by the tests with a ``now`` of their choosing) does, each step in its own short
transaction under a try-lock of its own (so two scoring instances never do the same step at
once, and a step another instance holds is skipped, not waited for):

1. **processed_event** (the dedupe window): rows processed more than the window before the
   oldest partition watermark go, oldest first along ``processed_event_processed_at``.
2. **journey_health_history, partitions**: the monthly partitions of the next months are
   created (rows the default partition caught moved in), and every partition wholly older
   than the history horizon is detached and dropped.
3. **journey_health_history, downsampling**: past the full-resolution days, each
   customer's points of one UTC day are cut to the last of the day and the highest of the
   day, on each side of the customer's last intervention close.
4. **outcome** and **deadline**, once a day, customer by customer: outcomes outside the
   customer's :data:`EXPLAIN_WINDOW` newest and older than anything a rule can still read,
   and fulfilled deadlines no event can change any more.
5. **early_fulfilment**, once a day: orphan fulfilments older than any opening that can
   still arrive.
6. **dead_letter** and **source_quality** (what touchpoint owners read back through the
   api): dead letters stored longer ago than their keep days, and hourly counters whose
   hour is older than theirs. Plain retention by time, nothing reads them back.

Every delete removes at most ``batch_rows`` rows in its transaction, so row locks are short
and the WAL of one step is bounded; a round reports whether a step stopped at its bound and
the loop then runs the next round at once. Whole partitions are dropped only where a table
can be split by time; docs/scoring.md ("Lifecycle") says, table by table, what is kept, for
how long, and why the others are pruned by rows.

The bounds are derived, not guessed: ``reach`` is how old an event that scoring can still
apply may be (ingest's age window, plus how long a record can wait on the dead-letter and
events topics before it is re-sent and read); a rule that reads outcomes back from an
event's time reaches back from there. Every rule below is in the SQL of this module and
nowhere else.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import asyncpg
import structlog

from touchpulse_scoring.domain import EXPLAIN_WINDOW, Catalogue
from touchpulse_scoring.domain.policy import InterventionPolicy
from touchpulse_shared.db import Conn
from touchpulse_shared.settings import Settings

if TYPE_CHECKING:
    from touchpulse_scoring.metrics import ScoringMetrics

log = structlog.get_logger(__name__)

HISTORY = "journey_health_history"
#: The partition rows outside every monthly partition land in (see migration 0008).
HISTORY_DEFAULT = "journey_health_history_default"
#: lifecycle_mark's task for downsampling: points before its time are downsampled.
DOWNSAMPLED = "journey_health_history.downsampled"

# Kafka deletes a topic's records by whole segments, so a record can outlive the topic's
# retention by up to a segment's span (segment.ms, 7 days by the broker's default): added
# once for each topic a record may wait on (dead-letter, then events).
SEGMENT_MARGIN = timedelta(days=7)
# On top of every derived bound: clock skew between hosts and a catalogue reload that widens
# a rule's window by a little must not find the rows it reads gone.
MARGIN = timedelta(days=1)
# Record timestamps in one partition are not strictly ordered (several ingest hosts, their
# clocks, producer retries): a watermark is trusted only this much behind itself.
WATERMARK_SLACK = timedelta(hours=1)
# The per-customer pass and the orphan sweep run once a day: their bounds move a day a day.
PASS_EVERY = timedelta(days=1)
# Customers per round of the per-customer pass: each costs up to EXPLAIN_WINDOW index
# entries to find its window's edge, so a round stays well under a second.
PASS_CUSTOMERS = 500
# History partitions created per round at most (each may move rows out of the default).
PARTITIONS_PER_ROUND = 2
#: How often the loop ticks: an idle tick does nothing but report progress.
TICK_S = 1.0
# Every statement of a round is bounded; the loop's stuck bound is far above this.
STATEMENT_TIMEOUT = "30s"
# Detaching a partition takes a brief ACCESS EXCLUSIVE lock on the history table (there is a
# default partition, so DETACH CONCURRENTLY is not possible). Waiting longer would queue
# scoring's batches behind the request; the drop is tried again next round instead.
DDL_LOCK_TIMEOUT = "2s"
# Row deletes wait at most this for a row another transaction holds (an erasure).
ROW_LOCK_TIMEOUT = "5s"

# Any fixed 64-bit number: "lifecycle step N" among advisory locks (one per step).
_LOCK_BASE = 0x6C6966656379_00
_STEPS = (
    "processed_event",
    "history_partitions",
    "history_downsample",
    "customers",
    "early",
    "source_feedback",
)


@dataclass(frozen=True)
class Terms:
    """The settings a round needs, in the units it uses."""

    group: str
    events_topic: str
    dedupe_window: timedelta
    #: How old an event scoring can still apply may be (see the module doc).
    reach: timedelta
    batch_rows: int
    history_full: timedelta
    history_keep: timedelta
    outcome_keep: timedelta
    dead_letter_keep: timedelta = timedelta(days=14)
    quality_keep: timedelta = timedelta(days=90)

    @classmethod
    def from_settings(cls, settings: Settings) -> Terms:
        return cls(
            group=settings.scoring_group_id,
            events_topic=settings.events_topic,
            dedupe_window=timedelta(hours=settings.scoring_dedupe_window_hours),
            reach=event_reach(settings),
            batch_rows=settings.scoring_lifecycle_batch_rows,
            history_full=timedelta(days=settings.scoring_history_full_days),
            history_keep=timedelta(days=settings.scoring_history_keep_days),
            outcome_keep=timedelta(days=settings.scoring_outcome_keep_days),
            dead_letter_keep=timedelta(days=settings.source_dead_letter_keep_days),
            quality_keep=timedelta(days=settings.source_quality_keep_days),
        )


def event_reach(settings: Settings) -> timedelta:
    """How far before now an event scoring can still apply may have happened.

    Ingest refuses events older than ``ingest_max_event_age_hours`` when it receives them,
    and scoring applies the same bound from the receipt time the record carries — so a
    record re-sent from the dead-letter topic (up to its retention later) and then read
    from the events topic (up to its retention later) is judged against its first receipt.
    """
    return (
        timedelta(hours=settings.ingest_max_event_age_hours)
        + timedelta(hours=settings.dead_letter_retention_hours)
        + timedelta(hours=settings.events_retention_hours)
        + 2 * SEGMENT_MARGIN
        + timedelta(seconds=settings.ingest_max_clock_skew_s)
    )


@dataclass(frozen=True)
class Horizons:
    """The cut-off times of one round."""

    #: processed_event rows processed before this go; None: a watermark is unknown, keep all.
    dedupe_before: datetime | None
    #: outcomes (outside the explanation's window, not a standing breach by absence) that
    #: happened — and whose deadline opened — before this go.
    outcomes_before: datetime
    #: fulfilled deadlines and orphan early fulfilments whose events are all before this go.
    events_before: datetime
    #: history points before this (a UTC midnight) are downsampled; after it, all kept.
    full_since: datetime
    #: history partitions wholly before this are dropped.
    history_before: datetime


@dataclass
class Pruned:
    """What one round removed, by table, and whether work is left for the next one."""

    rows: Counter[str] = field(default_factory=Counter)
    partitions: Counter[str] = field(default_factory=Counter)
    more: bool = False


async def horizons(
    conn: Conn, *, now: datetime, terms: Terms, policy: InterventionPolicy
) -> Horizons:
    """The round's cut-offs: from the settings, the catalogue's policy and the state."""
    marks = await conn.fetchrow(
        """
        SELECT count(*) AS partitions, count(watermark) AS marked, min(watermark) AS oldest
        FROM consumer_offset WHERE consumer_group = $1 AND topic = $2
        """,
        terms.group,
        terms.events_topic,
    )
    assert marks is not None  # noqa: S101 - an aggregate always returns a row
    dedupe_before: datetime | None
    if marks["partitions"] == 0:
        # Nothing applied by this group yet: whatever it reads will be newer than now, and
        # rows of an earlier group name are covered by the window alone.
        dedupe_before = now - terms.dedupe_window
    elif marks["marked"] < marks["partitions"]:
        dedupe_before = None
    else:
        # A retry still waiting in a partition that lags must still find its first copy:
        # the window runs back from how far the slowest partition is applied, not from now.
        anchor = min(now, marks["oldest"] - WATERMARK_SLACK)
        dedupe_before = anchor - terms.dedupe_window
    oldest_due = await conn.fetchval("SELECT min(due_at) FROM deadline WHERE state = 'open'")
    events_before = now - terms.reach - MARGIN
    # The triggers read a customer's breaches back `history_days` from the oldest event of a
    # batch (at most `reach` old) or from the oldest due time the sweep expires.
    reads_from = now - terms.reach
    if oldest_due is not None:
        reads_from = min(reads_from, oldest_due)
    outcomes_before = min(
        reads_from - timedelta(days=policy.history_days) - MARGIN, now - terms.outcome_keep
    )
    # The reopen guard reads history since the customer's last close, and matters only
    # while a decision's time (an event's) is within the cooldown of that close.
    guard_needs = terms.reach + timedelta(days=policy.cooldown_days) + MARGIN
    return Horizons(
        dedupe_before=dedupe_before,
        outcomes_before=min(outcomes_before, events_before),
        events_before=events_before,
        full_since=_midnight(now - terms.history_full),
        history_before=now - max(terms.history_keep, guard_needs),
    )


async def prune_round(
    pool: asyncpg.Pool, *, now: datetime, terms: Terms, policy: InterventionPolicy
) -> Pruned:
    """One round of every step; ``now`` is the only clock read."""
    if now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    async with pool.acquire() as conn:
        cut = await horizons(conn, now=now, terms=terms, policy=policy)
    pruned = Pruned()
    await _dedupe(pool, cut, terms, pruned)
    await _history_partitions(pool, now, cut, terms, pruned)
    await _downsample(pool, cut, terms, pruned)
    await _customers(pool, now, cut, terms, pruned)
    await _orphans(pool, now, cut, terms, pruned)
    await _source_feedback(pool, now, terms, pruned)
    if pruned.rows or pruned.partitions:
        log.info(
            "scoring.lifecycle.pruned",
            rows=dict(pruned.rows),
            partitions=dict(pruned.partitions),
            more=pruned.more,
        )
    return pruned


def lifecycle_job(
    pool: asyncpg.Pool,
    *,
    settings: Settings,
    catalogue: Callable[[], Catalogue],
    clock: Callable[[], datetime],
    metrics: ScoringMetrics,
    monotonic: Callable[[], float] = time.monotonic,
) -> Callable[[], Awaitable[bool]]:
    """The loop's round, run every :data:`TICK_S`: prune with the wall clock and the
    catalogue in effect once ``scoring_lifecycle_interval_s`` has passed since a round that
    found no more work (at once after one that did), and count what went.

    The ticks in between do nothing but report progress, so the loop's heartbeat stays a
    second old however long the interval is, and a round that blocks is seen as stuck.
    """
    terms = Terms.from_settings(settings)
    interval = settings.scoring_lifecycle_interval_s
    due = monotonic()

    async def job() -> bool:
        nonlocal due
        if monotonic() < due:
            return False
        pruned = await prune_round(
            pool, now=clock(), terms=terms, policy=catalogue().policy.interventions
        )
        metrics.count_pruned(pruned.rows, pruned.partitions)
        if not pruned.more:
            due = monotonic() + interval
        return pruned.more

    return job


# --- steps ------------------------------------------------------------------------------


async def _claim(conn: Conn, step: str, *, lock_timeout: str = ROW_LOCK_TIMEOUT) -> bool:
    """Inside a transaction: this step's lock if free, and the round's bounds on waiting."""
    await conn.execute(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'")
    await conn.execute(f"SET LOCAL lock_timeout = '{lock_timeout}'")
    taken: bool = await conn.fetchval(
        "SELECT pg_try_advisory_xact_lock($1)", _LOCK_BASE + _STEPS.index(step)
    )
    return taken


def _count(status: str) -> int:
    return int(status.rsplit(maxsplit=1)[-1])


async def _dedupe(pool: asyncpg.Pool, cut: Horizons, terms: Terms, pruned: Pruned) -> None:
    if cut.dedupe_before is None:
        log.info("scoring.lifecycle.dedupe_held", reason="a partition has no watermark yet")
        return
    async with pool.acquire() as conn, conn.transaction():
        if not await _claim(conn, "processed_event"):
            return
        removed = _count(
            await conn.execute(
                """
                DELETE FROM processed_event WHERE ctid = ANY(ARRAY(
                    SELECT ctid FROM processed_event WHERE processed_at < $1
                    ORDER BY processed_at LIMIT $2))
                """,
                cut.dedupe_before,
                terms.batch_rows,
            )
        )
    _add(pruned, "processed_event", removed, terms)


async def _history_partitions(
    pool: asyncpg.Pool, now: datetime, cut: Horizons, terms: Terms, pruned: Pruned
) -> None:
    async with pool.acquire() as conn:
        parts = await _partitions(conn)
    if parts is None:
        return  # not partitioned (a database before migration 0008 finished)
    ranges = [(name, lower, upper) for name, lower, upper, default in parts if not default]
    # The months scoring will write next, and any month since the newest partition that
    # has none (the loop was stopped): their rows wait in the default partition.
    newest = max((upper for _, _, upper in ranges if upper is not None), default=None)
    start = _month(now) if newest is None else min(_month(now), newest)
    wanted: list[datetime] = []
    month = start
    while month <= _add_months(_month(now), 2):
        # A month already past the horizon is not worth a partition: its rows leave the
        # default partition by the row delete below.
        past = _add_months(month, 1) <= cut.history_before
        covered = past or any(
            (lower is None or lower < _add_months(month, 1)) and (upper is None or upper > month)
            for _, lower, upper in ranges
        )
        if not covered:
            wanted.append(month)
        month = _add_months(month, 1)
    for month in wanted[:PARTITIONS_PER_ROUND]:
        await _create_partition(pool, month)
    if len(wanted) > PARTITIONS_PER_ROUND:
        pruned.more = True
    expired = sorted(
        (upper, name)
        for name, _, upper in ranges
        if upper is not None and upper <= cut.history_before
    )
    if expired:
        await _drop_partition(pool, expired[0][1], pruned)
        pruned.more = pruned.more or len(expired) > 1
    if any(default for *_, default in parts):
        # Rows the default partition caught stay only as long as any other history.
        async with pool.acquire() as conn, conn.transaction():
            if await _claim(conn, "history_partitions"):
                removed = _count(
                    await conn.execute(
                        f"""
                        DELETE FROM {HISTORY_DEFAULT} WHERE ctid = ANY(ARRAY(
                            SELECT ctid FROM {HISTORY_DEFAULT} WHERE at < $1 LIMIT $2))
                        """,  # noqa: S608 - a fixed table name
                        cut.history_before,
                        terms.batch_rows,
                    )
                )
                _add(pruned, HISTORY, removed, terms)


async def _partitions(
    conn: Conn,
) -> list[tuple[str, datetime | None, datetime | None, bool]] | None:
    """History's partitions: name, lower and upper bound (None: unbounded), is default."""
    kind = await conn.fetchval(
        "SELECT relkind::text FROM pg_class WHERE oid = $1::regclass", HISTORY
    )
    if kind != "p":
        return None
    # The bounds are read back as timestamptz by the server that printed them, so the
    # session's time zone and date style cannot garble them.
    rows = await conn.fetch(
        """
        SELECT c.relname,
               (regexp_match(b.bound, 'FROM \\(''([^'']+)''\\)'))[1]::timestamptz AS lower,
               (regexp_match(b.bound, 'TO \\(''([^'']+)''\\)'))[1]::timestamptz AS upper,
               b.bound = 'DEFAULT' AS is_default
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        CROSS JOIN LATERAL (SELECT pg_get_expr(c.relpartbound, c.oid) AS bound) AS b
        WHERE i.inhparent = $1::regclass
        """,
        HISTORY,
    )
    return [(r["relname"], r["lower"], r["upper"], r["is_default"]) for r in rows]


async def _create_partition(pool: asyncpg.Pool, month: datetime) -> None:
    """The month's partition, with the rows the default partition holds for it moved in.

    Created apart and then attached: ATTACH takes only SHARE UPDATE EXCLUSIVE on the history
    table (scoring keeps writing), where CREATE TABLE ... PARTITION OF would take ACCESS
    EXCLUSIVE. The default partition is scanned under its own lock to prove it holds no row
    of the month any more; it is empty unless the loop was stopped for months.
    """
    name = f"{HISTORY}_p{month:%Y%m}"
    following = _add_months(month, 1)
    try:
        async with pool.acquire() as conn, conn.transaction():
            if not await _claim(conn, "history_partitions", lock_timeout=DDL_LOCK_TIMEOUT):
                return
            await conn.execute(
                f"CREATE TABLE {name} (LIKE {HISTORY} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
            )
            await conn.execute(
                f"""
                WITH moved AS (
                    DELETE FROM {HISTORY_DEFAULT} WHERE at >= $1 AND at < $2
                    RETURNING customer_id, at, score, band)
                INSERT INTO {name} (customer_id, at, score, band) SELECT * FROM moved
                """,  # noqa: S608 - names built here from a date, never from input
                month,
                following,
            )
            await conn.execute(
                f"ALTER TABLE {HISTORY} ATTACH PARTITION {name}"
                f" FOR VALUES FROM ('{month.isoformat()}') TO ('{following.isoformat()}')"
            )
    except asyncpg.LockNotAvailableError:
        log.info("scoring.lifecycle.partition_deferred", partition=name, action="create")
        return
    log.info("scoring.lifecycle.partition_created", partition=name)


async def _drop_partition(pool: asyncpg.Pool, name: str, pruned: Pruned) -> None:
    try:
        async with pool.acquire() as conn, conn.transaction():
            if not await _claim(conn, "history_partitions", lock_timeout=DDL_LOCK_TIMEOUT):
                return
            await conn.execute(f"ALTER TABLE {HISTORY} DETACH PARTITION {name}")
            await conn.execute(f"DROP TABLE {name}")
    except asyncpg.LockNotAvailableError:
        log.info("scoring.lifecycle.partition_deferred", partition=name, action="drop")
        return
    pruned.partitions[HISTORY] += 1
    log.info("scoring.lifecycle.partition_dropped", partition=name)


async def _downsample(pool: asyncpg.Pool, cut: Horizons, terms: Terms, pruned: Pruned) -> None:
    """One chunk of at most ``batch_rows`` history points, in time order, from where the
    last chunk ended (``lifecycle_mark``) up to the full-resolution days.

    Of each customer's points of one UTC day, on one side of the customer's last
    intervention close, the last and the highest stay; the others go. The highest keeps
    the reopen guard's answer — "has health reached threshold + margin since the close",
    ``max(score)`` over the points after ``closed_at`` — exactly what it was: every group
    lies wholly before or after the close, and every group after it keeps its maximum. A
    later close happens at the wall clock of its day, after every point downsampled by
    then, so its answer reads full-resolution points only. The last of the day is what a
    daily trend shows. Neither is ever deleted, so the condition "another point of the
    group is later / higher" still holds after the statement removes its rows.
    """
    async with pool.acquire() as conn, conn.transaction():
        if not await _claim(conn, "history_downsample"):
            return
        position = await conn.fetchval(
            "SELECT at_position FROM lifecycle_mark WHERE task = $1", DOWNSAMPLED
        )
        if position is None:
            oldest = await conn.fetchval(f"SELECT min(at) FROM {HISTORY}")  # noqa: S608
            if oldest is None:
                return
            position = _midnight(oldest)
        if position >= cut.full_since:
            return
        # The chunk ends where the (batch_rows + 1)-th point is; points written in one batch
        # share their time, so a run of equal times longer than a chunk is taken whole.
        upto = await conn.fetchval(
            f"""
            SELECT at FROM {HISTORY} WHERE at >= $1 AND at < $2
            ORDER BY at OFFSET $3 LIMIT 1
            """,  # noqa: S608 - a fixed table name
            position,
            cut.full_since,
            terms.batch_rows,
        )
        if upto is None:
            upto = cut.full_since
        elif upto == position:
            upto = position + timedelta(microseconds=1)
        removed = _count(
            await conn.execute(
                f"""
                WITH chunk AS (
                    SELECT h.customer_id, h.at, h.score,
                           date_trunc('day', h.at, 'UTC') AS day_start,
                           coalesce((SELECT max(i.closed_at) FROM intervention i
                                     WHERE i.customer_id = h.customer_id
                                       AND i.state IN ('resolved', 'expired')),
                                    '-infinity') AS closed_at
                    FROM {HISTORY} h
                    WHERE h.at >= $1 AND h.at < $2
                ), doomed AS (
                    SELECT c.customer_id, c.at, c.score FROM chunk c
                    WHERE EXISTS (  -- not the last of its day and side
                        SELECT FROM {HISTORY} l
                        WHERE l.customer_id = c.customer_id
                          AND l.at > c.at AND l.at < c.day_start + interval '1 day'
                          AND (l.at > c.closed_at) = (c.at > c.closed_at))
                      AND EXISTS (  -- not the highest of its day and side (later wins ties)
                        SELECT FROM {HISTORY} m
                        WHERE m.customer_id = c.customer_id
                          AND m.at >= c.day_start AND m.at < c.day_start + interval '1 day'
                          AND (m.at > c.closed_at) = (c.at > c.closed_at)
                          AND (m.score > c.score
                               OR (m.score IS NOT NULL AND c.score IS NULL)
                               OR (m.score IS NOT DISTINCT FROM c.score AND m.at > c.at)))
                )
                DELETE FROM {HISTORY} h USING doomed d
                WHERE h.customer_id = d.customer_id AND h.at = d.at
                  AND h.score IS NOT DISTINCT FROM d.score
                """,  # noqa: S608 - a fixed table name
                position,
                upto,
            )
        )
        await _mark(conn, DOWNSAMPLED, at=upto)
    _add(pruned, HISTORY, removed, terms)
    pruned.more = pruned.more or upto < cut.full_since


async def _customers(
    pool: asyncpg.Pool, now: datetime, cut: Horizons, terms: Terms, pruned: Pruned
) -> None:
    """One batch of the daily pass over customers: outcomes, then fulfilled deadlines.

    An outcome goes only when all of these hold:

    - it is not among the customer's :data:`EXPLAIN_WINDOW` newest (by occurred_at, then
      outcome_key in code-point order: the order scoring's store, the api and the domain's
      window read them in), so
      both stay what they were; outcomes only ever join a customer's history at a time
      within ``reach`` of now, so one outside the window never returns to it;
    - it and its deadline's opening are older than ``outcomes_before``: no trigger reads a
      breach that old (they look ``history_days`` back from an event or a due time), and no
      event that could supersede it or repeat it can still be applied;
    - it is not a breach by absence (``actual`` null): its deadline can still be fulfilled,
      however late, and the fulfilment replaces it with the real gap.

    A fulfilled deadline goes once its opening and fulfilment are both older than
    ``events_before``: only an earlier opening or an earlier fulfilment could change it.
    Touchpoint health keeps every outcome's decayed sum, so health does not move.
    """
    async with pool.acquire() as conn, conn.transaction():
        if not await _claim(conn, "customers"):
            return
        mark = await conn.fetchrow(
            "SELECT key_position, pass_finished_at FROM lifecycle_mark WHERE task = 'customers'"
        )
        after = None if mark is None else mark["key_position"]
        finished = None if mark is None else mark["pass_finished_at"]
        if after is None and finished is not None and now - finished < PASS_EVERY:
            return
        customers: list[str] = [
            r["customer_id"]
            for r in await conn.fetch(
                """
                SELECT customer_id FROM journey_health WHERE customer_id > $1
                ORDER BY customer_id LIMIT $2
                """,
                after or "",
                PASS_CUSTOMERS,
            )
        ]
        outcomes = _count(
            await conn.execute(
                """
                WITH edge AS (
                    SELECT c.id AS customer_id, e.occurred_at, e.outcome_key
                    FROM unnest($1::text[]) AS c(id)
                    CROSS JOIN LATERAL (
                        SELECT occurred_at, outcome_key FROM outcome
                        WHERE customer_id = c.id
                        ORDER BY occurred_at DESC, outcome_key COLLATE "C" DESC
                        OFFSET $2 LIMIT 1
                    ) AS e
                ), doomed AS (
                    SELECT o.customer_id, o.outcome_key
                    FROM edge e
                    JOIN outcome o ON o.customer_id = e.customer_id
                     AND o.occurred_at <= e.occurred_at
                     AND (o.occurred_at, o.outcome_key COLLATE "C")
                         < (e.occurred_at, e.outcome_key COLLATE "C")
                    WHERE o.occurred_at < $3 AND coalesce(o.opened_at, o.occurred_at) < $3
                      AND o.actual <> 'null'::jsonb
                    LIMIT $4
                )
                DELETE FROM outcome o USING doomed d
                WHERE o.customer_id = d.customer_id AND o.outcome_key = d.outcome_key
                """,
                customers,
                EXPLAIN_WINDOW - 1,
                cut.outcomes_before,
                terms.batch_rows,
            )
        )
        deadlines = _count(
            await conn.execute(
                """
                DELETE FROM deadline WHERE ctid = ANY(ARRAY(
                    SELECT ctid FROM deadline
                    WHERE customer_id = ANY($1::text[]) AND state = 'fulfilled'
                      AND greatest(opened_at, closed_at) < $2
                    LIMIT $3))
                """,
                customers,
                cut.events_before,
                terms.batch_rows,
            )
        )
        # A batch stopped at its bound takes the same customers again next round.
        if outcomes < terms.batch_rows and deadlines < terms.batch_rows:
            if len(customers) < PASS_CUSTOMERS:
                await _mark(conn, "customers", key=None, finished=now)
            else:
                await _mark(conn, "customers", key=customers[-1])
    _add(pruned, "outcome", outcomes, terms)
    _add(pruned, "deadline", deadlines, terms)
    pruned.more = pruned.more or len(customers) == PASS_CUSTOMERS


async def _orphans(
    pool: asyncpg.Pool, now: datetime, cut: Horizons, terms: Terms, pruned: Pruned
) -> None:
    """Early fulfilments whose opening never came, once no opening before them can arrive.

    Global rather than per customer: an orphan's customer may have no journey row at all.
    The table holds only fulfilments still waiting, so a daily scan of it is small.
    """
    async with pool.acquire() as conn, conn.transaction():
        if not await _claim(conn, "early"):
            return
        finished = await conn.fetchval(
            "SELECT pass_finished_at FROM lifecycle_mark WHERE task = 'early_fulfilment'"
        )
        if finished is not None and now - finished < PASS_EVERY:
            return
        removed = _count(
            await conn.execute(
                """
                DELETE FROM early_fulfilment WHERE ctid = ANY(ARRAY(
                    SELECT ctid FROM early_fulfilment WHERE occurred_at < $1 LIMIT $2))
                """,
                cut.events_before,
                terms.batch_rows,
            )
        )
        if removed < terms.batch_rows:
            await _mark(conn, "early_fulfilment", finished=now)
    _add(pruned, "early_fulfilment", removed, terms)


async def _source_feedback(pool: asyncpg.Pool, now: datetime, terms: Terms, pruned: Pruned) -> None:
    """Dead letters kept for the api, and the per-source counters, past their keep days.

    Rows rather than partitions: both tables are small (a dead letter is an incident, a
    counter row is per source, hour and reason), and both are keyed for their readers, not
    by time alone.
    """
    async with pool.acquire() as conn, conn.transaction():
        if not await _claim(conn, "source_feedback"):
            return
        letters = _count(
            await conn.execute(
                """
                DELETE FROM dead_letter WHERE ctid = ANY(ARRAY(
                    SELECT ctid FROM dead_letter WHERE dead_lettered_at < $1
                    ORDER BY dead_lettered_at LIMIT $2))
                """,
                now - terms.dead_letter_keep,
                terms.batch_rows,
            )
        )
        counters = _count(
            await conn.execute(
                """
                DELETE FROM source_quality WHERE ctid = ANY(ARRAY(
                    SELECT ctid FROM source_quality WHERE hour < $1 LIMIT $2))
                """,
                # A counter's hour ends an hour after it starts: gone once wholly past.
                now - terms.quality_keep - timedelta(hours=1),
                terms.batch_rows,
            )
        )
    _add(pruned, "dead_letter", letters, terms)
    _add(pruned, "source_quality", counters, terms)


async def _mark(
    conn: Conn,
    task: str,
    *,
    at: datetime | None = None,
    key: str | None = None,
    finished: datetime | None = None,
) -> None:
    await conn.execute(
        """
        INSERT INTO lifecycle_mark (task, at_position, key_position, pass_finished_at, updated_at)
        VALUES ($1, $2, $3, $4, now())
        ON CONFLICT (task) DO UPDATE SET
            at_position = EXCLUDED.at_position, key_position = EXCLUDED.key_position,
            pass_finished_at = coalesce(EXCLUDED.pass_finished_at,
                                        lifecycle_mark.pass_finished_at),
            updated_at = now()
        """,
        task,
        at,
        key,
        finished,
    )


def _add(pruned: Pruned, table: str, removed: int, terms: Terms) -> None:
    if removed:
        pruned.rows[table] += removed
    if removed >= terms.batch_rows:
        pruned.more = True


def _midnight(at: datetime) -> datetime:
    utc = at.astimezone(UTC)
    return utc.replace(hour=0, minute=0, second=0, microsecond=0)


def _month(at: datetime) -> datetime:
    return _midnight(at).replace(day=1)


def _add_months(month: datetime, months: int) -> datetime:
    index = month.year * 12 + month.month - 1 + months
    return month.replace(year=index // 12, month=index % 12 + 1)


__all__ = [
    "TICK_S",
    "Horizons",
    "Pruned",
    "Terms",
    "event_reach",
    "horizons",
    "lifecycle_job",
    "prune_round",
]

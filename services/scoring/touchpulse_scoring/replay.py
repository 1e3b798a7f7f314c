"""Rebuild scoring state from the events topic into a scratch database and compare it with
the live state.

Health is order independent, so a replay of the same events must give the same health per
customer as the live pipeline did, whatever crashes, retries and rebalances happened live.
Interventions and webhooks are muted in the replay (nothing reaches a CRM), and its outbox
is never published. Customers whose live state moved past the replay's snapshot of the
topic are left out of the comparison and counted separately.

Profiles (segment, tenure, value, reach) change how events are judged, so before any event
the replay reads the compacted profiles topic to its end offsets into the scratch
``customer_profile``: the latest profile per customer, tombstones honoured, and a profile
older than the customer's erasure dropped (its tombstone may still be in the outbox). The
topic keeps only the latest profile, so a customer whose profile changed after some of
their events were scored live is replayed with the latest one: such a customer is still
compared, and when the health differs it is reported apart (``profile_changed``) rather
than as an unexplained difference. The replay first waits for the live outbox to publish
the profiles written before it began; a customer whose profile was written later is counted,
not compared, and one whose earlier profile the topic lacks is a failure.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from touchpulse_scoring.domain import Catalogue
from touchpulse_scoring.engine import Engine, Source, TimeWindow, Topics
from touchpulse_scoring.store import claim_batch, mark_caught_up, store_offsets
from touchpulse_shared.contract import profiles
from touchpulse_shared.db.migrate import migrate_url

log = structlog.get_logger(__name__)

_GROUP = "touchpulse-replay"
_BATCH = 2000
#: How long the replay waits for the live outbox to publish the profiles written before it.
OUTBOX_WAIT_S = 60.0


@dataclass
class ReplayReport:
    records: int = 0
    customers_compared: int = 0
    equal: int = 0
    different: list[str] = field(default_factory=list)
    only_live: list[str] = field(default_factory=list)
    only_replay: list[str] = field(default_factory=list)
    changed_since_snapshot: int = 0
    #: Profiles read from the profiles topic into the rebuild (after tombstones, erasures).
    profiles: int = 0
    #: Customers whose latest record on the profiles topic could not be read.
    unreadable_profiles: list[str] = field(default_factory=list)
    #: Health differs, and the profile replayed was written after some of the customer's
    #: events were scored live (with an older profile, or none): explained, not a fault.
    profile_changed: list[str] = field(default_factory=list)
    #: Live profile written after the replay began (its record may not be in the snapshot
    #: of the profiles topic): not compared.
    profile_pending: list[str] = field(default_factory=list)
    #: Live profile written before the replay began that the topic does not hold (or holds
    #: an older version of): the topic is missing state. A failure.
    profile_missing: list[str] = field(default_factory=list)

    @property
    def matches(self) -> bool:
        return not (
            self.different
            or self.only_live
            or self.only_replay
            or self.unreadable_profiles
            or self.profile_missing
        )


class ReplayError(RuntimeError):
    """The replay cannot be done as asked (e.g. the profiles topic does not exist)."""


async def replay(
    *,
    live_url: str,
    scratch_url: str,
    bootstrap_servers: str,
    topic: str,
    profiles_topic: str,
    catalogue: Catalogue,
    now: datetime | None = None,
    outbox_wait_s: float = OUTBOX_WAIT_S,
    window: TimeWindow | None = None,
) -> ReplayReport:
    """Load ``profiles_topic`` into ``scratch_url``, replay ``topic`` from its beginning
    there, and compare with ``live_url``."""
    await migrate_url(scratch_url)
    report = ReplayReport()
    cutoff = await _await_profile_outbox(live_url, profiles_topic, outbox_wait_s)
    # After the wait: every erasure whose tombstone the profiles snapshot may hold is known.
    await _copy_erasures(live_url, scratch_url)
    await _load_profiles(bootstrap_servers, profiles_topic, scratch_url, report)
    partition_count = 0
    engine = Engine(
        catalogue=lambda: catalogue,
        # Read when the sweep runs, by then the topic's partitions are known.
        source=Source(group=_GROUP, topic=topic, partitions=lambda: partition_count),
        topics=Topics(
            health="replay.health", interventions="replay.interventions", dead_letters="replay.dlq"
        ),
        clock=lambda: now or datetime.now(UTC),
        # Live scoring's window, anchored on times the records carry: judged alike.
        window=window,
        mute_interventions=True,
    )
    consumer = _reader(bootstrap_servers)
    await consumer.start()
    scratch = await asyncpg.connect(scratch_url)
    try:
        partitions = await _partitions(consumer, topic)
        consumer.assign(partitions)
        partition_count = len(partitions)
        await consumer.seek_to_beginning(*partitions)
        snapshot: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        remaining = {tp for tp in partitions if snapshot[tp] > await consumer.position(tp)}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000, max_records=_BATCH)
            records = [r for tp, part in batches.items() for r in part if r.offset < snapshot[tp]]
            if records:
                async with scratch.transaction():
                    fresh = await claim_batch(scratch, _GROUP, records)
                    await engine.handle(scratch, fresh)
                    await store_offsets(scratch, _GROUP, records)
                report.records += len(records)
            for tp in list(remaining):
                if await consumer.position(tp) >= snapshot[tp]:
                    remaining.discard(tp)
        # Everything up to the snapshot is applied: deadlines that passed with no event are
        # breaches in the replay too, as they are live.
        await mark_caught_up(scratch, _GROUP, partitions, now or datetime.now(UTC))
        while True:
            async with scratch.transaction():
                swept = await engine.sweep(scratch)
            if not swept.outcomes:
                break
    finally:
        await consumer.stop()
        await scratch.close()
    await _compare(live_url, scratch_url, snapshot, cutoff, report)
    return report


async def _await_profile_outbox(live_url: str, topic: str, within_s: float) -> datetime:
    """Wait until every profile written before now (the database's clock) is on the topic;
    return that moment.

    First every transaction of the live database that began before it has ended (a profile
    write in flight commits or rolls back), then the outbox holds none of their profile
    records. Profiles written after it may or may not be in the snapshot the replay is
    about to take: their customers are not compared. Profiles written before it must be.
    """
    live = await asyncpg.connect(live_url)
    try:
        cutoff: datetime = await live.fetchval("SELECT now()")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        for what, query in (
            (
                "transactions that began before the replay have not ended",
                """
                SELECT count(*) FROM pg_stat_activity
                WHERE datname = current_database() AND backend_type = 'client backend'
                  AND pid <> pg_backend_pid()
                  AND xact_start < $2 AND $1::text IS NOT NULL
                """,
            ),
            (
                "profiles written before the replay are still in the outbox: is scoring "
                "(which publishes the outbox) running?",
                "SELECT count(*) FROM kafka_outbox WHERE topic = $1 AND created_at < $2",
            ),
        ):
            while await live.fetchval(query, topic, cutoff):
                if loop.time() > deadline:
                    raise ReplayError(f"after {within_s:g} s, {what}")
                await asyncio.sleep(0.2)  # other sessions' progress, polled
        return cutoff
    finally:
        await live.close()


async def _copy_erasures(live_url: str, scratch_url: str) -> None:
    """Erased customers stay erased in the rebuild too."""
    live = await asyncpg.connect(live_url)
    try:
        rows = await live.fetch("SELECT customer_id, erased_at FROM erased_customer")
    finally:
        await live.close()
    scratch = await asyncpg.connect(scratch_url)
    try:
        await scratch.executemany(
            "INSERT INTO erased_customer VALUES ($1, $2) ON CONFLICT DO NOTHING",
            [(r["customer_id"], r["erased_at"]) for r in rows],
        )
    finally:
        await scratch.close()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    found = consumer.partitions_for_topic(topic)
    if not found:
        await consumer._client.force_metadata_update()
        found = consumer.partitions_for_topic(topic)
    return [TopicPartition(topic, p) for p in sorted(found or [])]


def _decode_profile(key: bytes, value: bytes) -> profiles.ProfileRecord | str:
    """The record's profile, or why it cannot be read."""
    try:
        return profiles.decode(key, value)
    except profiles.ProfileRecordError as exc:
        return str(exc)


def _reader(bootstrap_servers: str) -> AIOKafkaConsumer:
    """A consumer that reads topics from their beginning, committed records only, no group."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=_BATCH,
        isolation_level="read_committed",
    )


async def _load_profiles(
    bootstrap_servers: str, topic: str, scratch_url: str, report: ReplayReport
) -> None:
    """The profiles topic up to its end offsets at start into the scratch database."""
    consumer = _reader(bootstrap_servers)
    await consumer.start()
    latest: dict[str, profiles.ProfileRecord | str | None] = {}
    try:
        partitions = await _partitions(consumer, topic)
        if not partitions:
            raise ReplayError(
                f"the profiles topic {topic} does not exist: create it (touchpulse topics) "
                "and re-send the profiles, or every profiled customer would differ"
            )
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        remaining = {tp for tp in partitions if ends[tp] > await consumer.position(tp)}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000, max_records=_BATCH)
            for tp, part in batches.items():
                for record in part:
                    if record.offset >= ends[tp] or record.key is None:
                        continue
                    customer = record.key.decode("utf-8", "replace")
                    if record.value is None:
                        latest[customer] = None  # a tombstone: erased
                        continue
                    latest[customer] = _decode_profile(record.key, record.value)
                    if isinstance(latest[customer], str):
                        log.error(
                            "replay.profile_unreadable",
                            customer_id=customer,
                            partition=tp.partition,
                            offset=record.offset,
                            error=latest[customer],
                        )
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    report.unreadable_profiles = sorted(c for c, p in latest.items() if isinstance(p, str))
    scratch = await asyncpg.connect(scratch_url)
    try:
        erased = {
            r["customer_id"]: r["erased_at"]
            for r in await scratch.fetch("SELECT customer_id, erased_at FROM erased_customer")
        }
        rows = [
            (p.customer_id, p.segment, p.customer_since, p.value, p.reach, p.updated_at)
            for p in latest.values()
            if isinstance(p, profiles.ProfileRecord)
            # Erased after this profile was written: its tombstone is still on its way.
            and not (p.customer_id in erased and p.updated_at <= erased[p.customer_id])
        ]
        await scratch.executemany(
            """
            INSERT INTO customer_profile
                (customer_id, segment, customer_since, value, reach, created_at, updated_at)
            VALUES ($1, $2, $3, $4, $5, $6, $6)
            """,
            rows,
        )
    finally:
        await scratch.close()
    report.profiles = len(rows)


async def _compare(
    live_url: str,
    scratch_url: str,
    snapshot: dict[TopicPartition, int],
    cutoff: datetime,
    report: ReplayReport,
) -> None:
    live = await asyncpg.connect(live_url)
    scratch = await asyncpg.connect(scratch_url)
    try:
        moved = {
            r["customer_id"]
            for r in await live.fetch(
                """
                SELECT DISTINCT p.customer_id FROM processed_event p
                JOIN unnest($1::text[], $2::int[], $3::bigint[]) AS s(t, part, end_offset)
                  ON p.topic = s.t AND p.partition = s.part AND p."offset" >= s.end_offset
                """,
                [tp.topic for tp in snapshot],
                [tp.partition for tp in snapshot],
                list(snapshot.values()),
            )
        }
        live_scores = {
            r["customer_id"]: r["score"]
            for r in await live.fetch("SELECT customer_id, score FROM journey_health")
        }
        replay_scores = {
            r["customer_id"]: r["score"]
            for r in await scratch.fetch("SELECT customer_id, score FROM journey_health")
        }
        replayed_profiles = {
            r["customer_id"]: r["updated_at"]
            for r in await scratch.fetch("SELECT customer_id, updated_at FROM customer_profile")
        }
        live_profiles = {
            r["customer_id"]: r["updated_at"]
            for r in await live.fetch("SELECT customer_id, updated_at FROM customer_profile")
        }
        pending = {c for c, at in live_profiles.items() if at > cutoff}
        missing = {
            c for c, at in live_profiles.items() if at <= cutoff and replayed_profiles.get(c) != at
        }
        # When each customer's first event still on record was scored live: a profile
        # written after it was not the one that event was judged with.
        first_scored = {
            r["customer_id"]: r["first"]
            for r in await live.fetch(
                """
                SELECT customer_id, min(processed_at) AS first FROM processed_event
                WHERE customer_id = ANY($1::text[]) GROUP BY customer_id
                """,
                sorted(replayed_profiles),
            )
        }
    finally:
        await live.close()
        await scratch.close()
    report.changed_since_snapshot = len(moved)
    report.profile_pending = sorted(pending - moved)
    report.profile_missing = sorted(missing)
    for customer in sorted((set(live_scores) | set(replay_scores)) - moved - pending - missing):
        if customer not in replay_scores:
            report.only_live.append(customer)
        elif customer not in live_scores:
            report.only_replay.append(customer)
        else:
            report.customers_compared += 1
            a, b = live_scores[customer], replay_scores[customer]
            if (a is None) != (b is None) or (
                a is not None
                and b is not None
                and not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
            ):
                written = replayed_profiles.get(customer)
                first = first_scored.get(customer)
                if written is not None and first is not None and written > first:
                    report.profile_changed.append(customer)
                else:
                    report.different.append(customer)
            else:
                report.equal += 1

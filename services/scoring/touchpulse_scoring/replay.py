"""Rebuild scoring state from the events topic into a scratch database and compare it with
the live state.

Health is order independent, so a replay of the same events must give the same health per
customer as the live pipeline did, whatever crashes, retries and rebalances happened live.
Interventions and webhooks are muted in the replay (nothing reaches a CRM), and its outbox
is never published. Customers whose live state moved past the replay's snapshot of the
topic are left out of the comparison and counted separately.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from touchpulse_scoring.consumer import claim_batch, mark_caught_up, store_offsets
from touchpulse_scoring.domain import Catalogue
from touchpulse_scoring.engine import Engine, Source, Topics
from touchpulse_shared.db.migrate import migrate_url

log = structlog.get_logger(__name__)

_GROUP = "touchpulse-replay"
_BATCH = 2000


@dataclass
class ReplayReport:
    records: int = 0
    customers_compared: int = 0
    equal: int = 0
    different: list[str] = field(default_factory=list)
    only_live: list[str] = field(default_factory=list)
    only_replay: list[str] = field(default_factory=list)
    changed_since_snapshot: int = 0

    @property
    def matches(self) -> bool:
        return not (self.different or self.only_live or self.only_replay)


async def replay(
    *,
    live_url: str,
    scratch_url: str,
    bootstrap_servers: str,
    topic: str,
    catalogue: Catalogue,
    now: datetime | None = None,
) -> ReplayReport:
    """Replay ``topic`` from its beginning into ``scratch_url`` and compare with ``live_url``."""
    await migrate_url(scratch_url)
    await _copy_erasures(live_url, scratch_url)
    partition_count = 0
    engine = Engine(
        catalogue=lambda: catalogue,
        # Read when the sweep runs, by then the topic's partitions are known.
        source=Source(group=_GROUP, topic=topic, partitions=lambda: partition_count),
        topics=Topics(
            health="replay.health", interventions="replay.interventions", dead_letters="replay.dlq"
        ),
        clock=lambda: now or datetime.now(UTC),
        mute_interventions=True,
    )
    report = ReplayReport()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=_BATCH,
        isolation_level="read_committed",
    )
    await consumer.start()
    scratch = await asyncpg.connect(scratch_url)
    try:
        partitions = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])
        ]
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = [
                TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])
            ]
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
    await _compare(live_url, scratch_url, snapshot, report)
    return report


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


async def _compare(
    live_url: str, scratch_url: str, snapshot: dict[TopicPartition, int], report: ReplayReport
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
    finally:
        await live.close()
        await scratch.close()
    report.changed_since_snapshot = len(moved)
    for customer in sorted((set(live_scores) | set(replay_scores)) - moved):
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
                report.different.append(customer)
            else:
                report.equal += 1

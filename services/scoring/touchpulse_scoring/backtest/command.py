"""``touchpulse catalogue backtest``: the events topic and the profiles in, a report out.

Reads, never writes: the events topic without a consumer group (:mod:`.topic`), the
customers' profiles and erasures from PostgreSQL in a read-only transaction, the live
catalogue from ``TOUCHPULSE_PROMISE_CATALOGUE``. Then the pure core re-judges in memory,
one partition at a time (a partition holds all of its customers' events), so that only one
partition's events are held at once.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from aiokafka.errors import KafkaError

from touchpulse_scoring.backtest.core import Backtest, BacktestReport
from touchpulse_scoring.backtest.topic import TopicReadError, read_by_partition
from touchpulse_scoring.domain import Catalogue, CustomerProfile
from touchpulse_scoring.store import load_erasures, load_profiles
from touchpulse_shared.contract import ExperienceEventV1
from touchpulse_shared.settings import Settings

Say = Callable[[str], None]
#: Progress lines at most this often: a long read says it is alive without flooding stderr.
PROGRESS_EVERY_S = 1.0


@dataclass(frozen=True)
class Window:
    """What the back-test read, beside its report."""

    records: int
    undecodable: dict[str, int]
    erased: int
    read_s: float
    judged_s: float


class BacktestError(RuntimeError):
    """The back-test cannot run: a setting missing, the broker or database unreachable."""


def stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class _Throttled:
    def __init__(self, say: Say, what: str) -> None:
        self.say = say
        self.what = what
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY_S or done >= total:
            self.last = now
            share = 100.0 if not total else 100.0 * done / total
            self.say(f"backtest: {self.what} {done:,} of {total:,} ({share:.0f} %)")


async def read_profiles(
    database_url: str, events: list[tuple[ExperienceEventV1, datetime]]
) -> tuple[dict[str, CustomerProfile], list[ExperienceEventV1], int]:
    """The events' customers' profiles, and the events without those of erased customers
    received before their erasure (live scoring never applied them)."""
    customers = {e.customer_id for e, _ in events}
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction(readonly=True):
            profiles = await load_profiles(conn, customers)
            erased = await load_erasures(conn, customers)
    finally:
        await conn.close()
    kept = [
        e
        for e, received in events
        if not (e.customer_id in erased and received <= erased[e.customer_id])
    ]
    return profiles, kept, len(events) - len(kept)


async def run(
    settings: Settings,
    live: Catalogue,
    candidate: Catalogue,
    *,
    since: datetime | None,
    say: Say = stderr,
) -> tuple[BacktestReport, Window]:
    if settings.kafka_bootstrap_servers is None or settings.database_url is None:
        raise BacktestError(
            "TOUCHPULSE_KAFKA_BOOTSTRAP_SERVERS and TOUCHPULSE_DATABASE_URL must be set"
        )
    try:
        return await _run(settings, live, candidate, since=since, say=say)
    except (TopicReadError, KafkaError, OSError, asyncpg.PostgresError) as exc:
        raise BacktestError(f"{type(exc).__name__}: {exc}") from exc


async def _run(
    settings: Settings,
    live: Catalogue,
    candidate: Catalogue,
    *,
    since: datetime | None,
    say: Say,
) -> tuple[BacktestReport, Window]:
    assert settings.kafka_bootstrap_servers is not None  # noqa: S101 - checked by run
    assert settings.database_url is not None  # noqa: S101 - checked by run
    # Live scoring expires a deadline once the wall clock and its partition are past the
    # due time; everything on the topic up to now is applied, so now is that moment here.
    now = datetime.now(UTC)
    say(
        f"backtest: reading {settings.events_topic}"
        + (f" since {since.isoformat()}" if since else " from its beginning")
        + f", re-judging under {live.version} and {candidate.version}, a partition at a time"
    )
    judging = Backtest(live, candidate, now=now)
    records = erased = 0
    undecodable: dict[str, int] = {}
    read_s = judged_s = 0.0
    partitions = read_by_partition(
        settings.kafka_bootstrap_servers,
        settings.events_topic,
        since=since,
        progress=_Throttled(say, "records read"),
    )
    async for index, count, retained in partitions:
        began = time.monotonic()
        profiles, events, left_out = await read_profiles(settings.database_url, retained.events)
        retained.events.clear()  # only the kept ones are held from here
        records += retained.records
        erased += left_out
        for reason, n in retained.undecodable.items():
            undecodable[reason] = undecodable.get(reason, 0) + n
        say(f"backtest: partition {index + 1} of {count}: {len(events):,} events")
        read_s += time.monotonic() - began
        began = time.monotonic()
        await asyncio.to_thread(
            judging.add, events, profiles, progress=_Throttled(say, "customers")
        )
        judged_s += time.monotonic() - began
    report = judging.report()
    return report, Window(
        records=records,
        undecodable=dict(sorted(undecodable.items())),
        erased=erased,
        read_s=read_s,
        judged_s=judged_s,
    )

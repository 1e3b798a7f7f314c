"""Per-source quality counters (table ``source_quality``): what a touchpoint owner reads back
through ``GET /v1/sources/{source}/quality``.

Two writers add to the same rows: ingest (edge rejections, flushed every few seconds) and
scoring (accepted, duplicates, dead letters and unmatched types, in each batch
transaction). Both aggregate in memory into a :class:`Tally` and add it in one statement,
:func:`counts_upsert`, so the rule for adding (counts summed, the newest receipt time kept)
is written once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Literal

import orjson

from touchpulse_shared.db import Conn

Kind = Literal["accepted", "duplicate", "rejected", "dead_lettered", "unmatched"]
KINDS: Final[tuple[Kind, ...]] = ("accepted", "duplicate", "rejected", "dead_lettered", "unmatched")
#: The shard ingest writes under; scoring writes under the Kafka partition (0 and up).
INGEST_SHARD: Final = -1

_Key = tuple[str, datetime, Kind, str, int]


def hour_of(at: datetime) -> datetime:
    """The start of ``at``'s UTC hour: the counters' bucket."""
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


@dataclass
class Tally:
    """Counts waiting to be added: per source, hour, kind, reason and shard."""

    counts: dict[_Key, int] = field(default_factory=dict)
    last_seen: dict[_Key, datetime] = field(default_factory=dict)
    # The events of one ingest request share a receipt time: its hour is worked out once
    # per run of equal times rather than once per event (scoring's hot path).
    _at: datetime | None = field(default=None, repr=False, compare=False)
    _hour: datetime | None = field(default=None, repr=False, compare=False)

    def add(
        self,
        source: str,
        at: datetime,
        kind: Kind,
        reason: str = "",
        *,
        shard: int = INGEST_SHARD,
        count: int = 1,
        seen: datetime | None = None,
    ) -> None:
        if at != self._at or self._hour is None:
            self._at, self._hour = at, hour_of(at)
        key = (source, self._hour, kind, reason, shard)
        self.counts[key] = self.counts.get(key, 0) + count
        if seen is not None:
            before = self.last_seen.get(key)
            self.last_seen[key] = seen if before is None else max(before, seen)

    def merge(self, other: Tally) -> None:
        """Add ``other``'s counts (a flush that failed goes back into the next one)."""
        for (source, hour, kind, reason, shard), count in other.counts.items():
            key = (source, hour, kind, reason, shard)
            self.add(source, hour, kind, reason, shard=shard, count=count)
            seen = other.last_seen.get(key)
            if seen is not None:
                before = self.last_seen.get(key)
                self.last_seen[key] = seen if before is None else max(before, seen)

    def __bool__(self) -> bool:
        return bool(self.counts)

    def __len__(self) -> int:
        return len(self.counts)

    def rows(self) -> Iterator[list[object]]:
        # Sorted: the rows are locked in this order, the same in every writer.
        for key in sorted(self.counts, key=lambda k: (k[0], k[1], k[2], k[3], k[4])):
            source, hour, kind, reason, shard = key
            yield [source, hour, kind, reason, shard, self.counts[key], self.last_seen.get(key)]

    def as_json(self) -> str:
        """The rows as one JSON array, as :func:`counts_upsert` reads them."""
        return orjson.dumps(list(self.rows()), option=orjson.OPT_UTC_Z).decode()


def counts_upsert(param: int) -> str:
    """The statement adding a :meth:`Tally.as_json` passed as ``$param`` to the counters.

    ON CONFLICT may touch a row once per statement: a tally holds each key once. The rows
    come sorted, so two writers lock shared rows in one order and never deadlock.
    """
    return f"""
        INSERT INTO source_quality AS q
            (source, hour, kind, reason, shard, events, last_event_at)
        SELECT r->>0, (r->>1)::timestamptz, r->>2, r->>3, (r->>4)::int, (r->>5)::bigint,
               (r->>6)::timestamptz
        FROM jsonb_array_elements(${param}::jsonb) WITH ORDINALITY AS t(r, n)
        ORDER BY n
        ON CONFLICT (source, hour, kind, reason, shard) DO UPDATE SET
            events = q.events + EXCLUDED.events,
            last_event_at = greatest(q.last_event_at, EXCLUDED.last_event_at)
        """  # noqa: S608 - only a parameter number is formatted in


async def add_counts(conn: Conn, tally: Tally) -> None:
    """Add ``tally`` in one statement (ingest's flush; scoring adds its own with its batch)."""
    if tally:
        await conn.execute(counts_upsert(1), tally.as_json())


def clean_text(value: str, limit: int) -> str:
    """Text PostgreSQL can store (no NUL, no lone surrogate), at most ``limit`` characters."""
    return (
        value[:limit]
        .encode("utf-8", "replace")
        .decode("utf-8")
        .replace("\x00", "\N{REPLACEMENT CHARACTER}")
    )

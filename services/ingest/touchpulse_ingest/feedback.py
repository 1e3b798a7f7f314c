"""Edge rejections per source, for touchpoint owners (``GET /v1/sources/{source}/quality``).

Ingest refuses events before they reach Kafka, so scoring never sees them: they are counted
here, in memory, per source (the API key's, which every ``events:write`` key is bound to),
hour and reason, and added to ``source_quality`` every ``TOUCHPULSE_INGEST_QUALITY_FLUSH_S``
in one statement from a pool of their own (a slow database never holds up a request, and a
request never waits for a flush). They are counts, not events: a crash of the process
loses at most the last interval's counts, and that is accepted rather than a write per
request. A flush that fails keeps its counts for the next one, up to
:data:`MAX_PENDING_KEYS` counter rows (then the oldest hours are dropped, logged).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import asyncpg
import structlog

from touchpulse_shared.db.quality import Tally, add_counts

log = structlog.get_logger(__name__)

#: Counter rows (one per source, hour and reason) held while PostgreSQL is away: sources are
#: bound by the keys and reasons are a fixed set, so this is days of an outage for many.
MAX_PENDING_KEYS = 50_000


class EdgeRejections:
    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock
        self.pending = Tally()

    def count(self, source: str | None, reason: str, count: int = 1) -> None:
        """``count`` events from ``source``'s key refused for ``reason`` (a problem code)."""
        if source is not None and count > 0:
            self.pending.add(source, self.clock(), "rejected", reason, count=count)

    async def flush(self, pool: asyncpg.Pool) -> bool:
        """Add what was counted since the last flush; on failure keep it for the next."""
        taken, self.pending = self.pending, Tally()
        if not taken:
            return False
        try:
            async with pool.acquire() as conn:
                await add_counts(conn, taken)
        except BaseException:
            # Counts made meanwhile join the ones that failed: nothing is counted twice,
            # since the statement either added all of its rows or none.
            taken.merge(self.pending)
            self.pending = taken
            self._bound()
            raise
        return False

    def _bound(self) -> None:
        if len(self.pending) <= MAX_PENDING_KEYS:
            return
        keys = sorted(self.pending.counts, key=lambda k: k[1])
        dropped = keys[: len(keys) - MAX_PENDING_KEYS]
        for key in dropped:
            del self.pending.counts[key]
            self.pending.last_seen.pop(key, None)
        log.warning("ingest.quality.dropped", rows=len(dropped))

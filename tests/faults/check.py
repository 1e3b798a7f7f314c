"""The ledger against the database, after a drain.

All read in one REPEATABLE READ snapshot, so a batch committing meanwhile cannot make the
tables disagree with each other:

- ``lost``: acknowledged (202) but not in ``processed_event``, less what scoring itself
  reported as deleted by retention (``reported_lost``): silent loss is what must be 0.
- ``twice``: an event with two outcomes for one promise, or a touchpoint whose incremental
  count disagrees with its stored outcomes (a double application, or a lost one).
- ``rejected_present``: answered 4xx (or rejected by index in a batch) yet stored.
- ``drift``: a customer's journey health that differs from a recomputation from the
  stored outcomes with the brief's formulas.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from tests.faults.ledger import Ledger
from tests.scoring.pipeline.ledger import recompute

DRAIN_S = 180.0


@dataclass
class Result:
    fault: str
    acked: int = 0
    rejected: int = 0
    indeterminate: int = 0
    lost: int = 0
    reported_lost: int = 0
    twice: int = 0
    rejected_present: int = 0
    drift: int = 0
    server_errors: int = 0
    server_errors_bad_input: int = 0
    wrong_answers: int = 0
    retries: int = 0
    drain_s: float = 0.0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.twice
            or self.rejected_present
            or self.drift
            or self.server_errors
            or self.server_errors_bad_input
            or self.wrong_answers
            or any(n.startswith("FAIL") for n in self.notes)
        )


async def drain(
    database_url: str, source: str, acked: set[str], *, within_s: float = DRAIN_S
) -> tuple[int, float]:
    """Wait until every acknowledged id is applied (or the deadline); the ids still missing
    and the time it took. The state is the signal, not a sleep."""
    started = time.monotonic()
    ids = sorted(acked)
    missing = len(ids)
    while True:
        try:
            conn = await asyncpg.connect(database_url, timeout=10)
            try:
                found = await conn.fetchval(
                    "SELECT count(*) FROM processed_event WHERE source = $1 AND event_id = ANY($2)",
                    source,
                    ids,
                )
            finally:
                await conn.close()
            missing = len(ids) - int(found)
        except (OSError, asyncpg.PostgresError):
            pass  # the database may be coming back from a fault
        if missing == 0 or time.monotonic() - started > within_s:
            return missing, time.monotonic() - started
        await asyncio.sleep(0.25)


async def check(
    database_url: str, source: str, ledger: Ledger, phase: str | None
) -> dict[str, int]:
    """The counts for ``phase``'s events (all phases when None); twice and drift are over
    the whole state, since a fault can corrupt any customer's."""

    def mine(ids: set[str]) -> set[str]:
        return ids if phase is None else ledger.ids(phase, ids)

    acked, rejected = mine(ledger.acked), mine(ledger.rejected)
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            stored = {
                r["event_id"]
                for r in await conn.fetch(
                    "SELECT event_id FROM processed_event WHERE source = $1", source
                )
            }
            # A 403'd event (another source) must not be stored under any source.
            anywhere = {
                r["event_id"]
                for r in await conn.fetch(
                    "SELECT event_id FROM processed_event WHERE event_id = ANY($1)",
                    sorted(rejected),
                )
            }
            outcomes = await conn.fetch("SELECT * FROM outcome")
            health = await conn.fetch("SELECT * FROM touchpoint_health")
            journeys = await conn.fetch("SELECT customer_id, score, as_of FROM journey_health")
    finally:
        await conn.close()
    return {
        "lost": len(acked - stored),
        "rejected_present": len(rejected & (stored | anywhere)),
        "twice": _twice(outcomes, health),
        "drift": _drift(outcomes, journeys),
    }


def _twice(outcomes: list[Any], health: list[Any]) -> int:
    per_promise: Counter[tuple[str, str]] = Counter()
    per_touchpoint: dict[tuple[str, str], int] = defaultdict(int)
    for o in outcomes:
        per_touchpoint[(o["customer_id"], o["touchpoint"])] += 1
        for event_id in o["event_ids"]:
            per_promise[(event_id, o["promise_id"])] += 1
    twice = sum(1 for n in per_promise.values() if n > 1)
    for row in health:
        if row["outcomes"] != per_touchpoint[(row["customer_id"], row["touchpoint"])]:
            twice += 1
    return twice


def _drift(outcomes: list[Any], journeys: list[Any]) -> int:
    expected = recompute(outcomes, {r["customer_id"]: r["as_of"] for r in journeys})
    drift = 0
    for row in journeys:
        want = expected.get(row["customer_id"])
        got = row["score"]
        if want is None or got is None:
            drift += int(want is not got)
        elif not math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9):
            drift += 1
    return drift


def table(results: list[Result]) -> str:
    cols = [
        ("fault", 30),
        ("acked", 7),
        ("4xx", 6),
        ("indet", 6),
        ("lost", 5),
        ("rep.lost", 8),
        ("twice", 6),
        ("4xx.in", 6),
        ("drift", 6),
        ("5xx", 4),
        ("5xx.bad", 7),
        ("retries", 7),
        ("drain_s", 7),
        ("secs", 6),
        ("ok", 4),
    ]
    lines = ["  ".join(f"{name:<{w}}" for name, w in cols)]
    for r in results:
        values = [
            r.fault,
            r.acked,
            r.rejected,
            r.indeterminate,
            r.lost,
            r.reported_lost,
            r.twice,
            r.rejected_present,
            r.drift,
            r.server_errors,
            r.server_errors_bad_input,
            r.retries,
            f"{r.drain_s:.1f}",
            f"{r.seconds:.0f}",
            "yes" if r.ok else "NO",
        ]
        lines.append("  ".join(f"{v!s:<{w}}" for v, (_, w) in zip(values, cols, strict=True)))
        for note in r.notes:
            lines.append(f"    {note}")
    return "\n".join(lines)

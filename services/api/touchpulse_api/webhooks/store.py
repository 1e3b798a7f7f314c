"""The webhook tables (migration 0005_webhooks): subscriptions, deliveries and their attempt log."""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

from touchpulse_shared.db import Conn

Executor: TypeAlias = asyncpg.Pool | Conn

KINDS = (
    "intervention.opened",
    "intervention.attached",
    "intervention.acknowledged",
    "intervention.noted",
    "intervention.snoozed",
    "intervention.reassigned",
    "intervention.resolved",
    "intervention.expired",
)

# Base32 with its alphabet in ASCII order, so that ids sort by the time at their start.
_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_SORTED = "234567abcdefghijklmnopqrstuvwxyz"
_TO_SORTED = str.maketrans(_B32, _SORTED)


def new_subscription_id() -> str:
    """``wh_`` + 26 characters: 48 bits of milliseconds, then 80 random bits."""
    raw = (time.time_ns() // 1_000_000).to_bytes(6, "big") + secrets.token_bytes(10)
    return "wh_" + base64.b32encode(raw).decode().rstrip("=").translate(_TO_SORTED)


@dataclass(frozen=True)
class Subscription:
    id: str
    url: str
    kinds: tuple[str, ...]
    description: str | None
    enabled: bool
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime
    nonce: bytes
    previous_nonce: bytes | None
    previous_until: datetime | None


_SUBSCRIPTION = """
    id, url, kinds, description, enabled, disabled_reason, created_at, updated_at,
    nonce, previous_nonce, previous_until
"""


def _subscription(row: asyncpg.Record) -> Subscription:
    return Subscription(
        id=row["id"],
        url=row["url"],
        kinds=tuple(row["kinds"]),
        description=row["description"],
        enabled=row["enabled"],
        disabled_reason=row["disabled_reason"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        nonce=bytes(row["nonce"]),
        previous_nonce=None if row["previous_nonce"] is None else bytes(row["previous_nonce"]),
        previous_until=row["previous_until"],
    )


async def create_subscription(
    db: Executor,
    *,
    url: str,
    kinds: Sequence[str],
    description: str | None,
    nonce: bytes,
    now: datetime,
) -> Subscription:
    row = await db.fetchrow(
        f"""
        INSERT INTO webhook_subscription
            (id, url, kinds, description, nonce, enabled, created_at, updated_at)
        VALUES ($1, $2, $3, $4, $5, true, $6, $6)
        RETURNING {_SUBSCRIPTION}
        """,  # noqa: S608 - the interpolation is a constant column list
        new_subscription_id(),
        url,
        sorted(set(kinds)),
        description,
        nonce,
        now,
    )
    assert row is not None  # noqa: S101 - INSERT … RETURNING always returns the row
    return _subscription(row)


async def get_subscription(db: Executor, subscription_id: str) -> Subscription | None:
    row = await db.fetchrow(
        f"SELECT {_SUBSCRIPTION} FROM webhook_subscription WHERE id = $1",  # noqa: S608
        subscription_id,
    )
    return None if row is None else _subscription(row)


async def list_subscriptions(db: Executor, *, after: str | None, limit: int) -> list[Subscription]:
    rows = await db.fetch(
        f"""
        SELECT {_SUBSCRIPTION} FROM webhook_subscription
        WHERE $1::text IS NULL OR id > $1
        ORDER BY id
        LIMIT $2
        """,  # noqa: S608 - the interpolation is a constant column list
        after,
        limit,
    )
    return [_subscription(r) for r in rows]


async def update_subscription(
    db: Executor, subscription_id: str, changes: Mapping[str, Any], *, now: datetime
) -> Subscription | None:
    """Apply ``changes`` (url, kinds, description, enabled); re-enabling clears the reason."""
    allowed = {"url", "kinds", "description", "enabled"}
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    values = dict(changes)
    if "kinds" in values:
        values["kinds"] = sorted(set(values["kinds"]))
    assignments = ["updated_at = $2"]
    args: list[Any] = [subscription_id, now]
    for column in sorted(values):  # names checked against `allowed` above
        args.append(values[column])
        assignments.append(f"{column} = ${len(args)}")
    if values.get("enabled") is True:
        assignments.append("disabled_reason = NULL")
    elif values.get("enabled") is False:
        assignments.append("disabled_reason = coalesce(disabled_reason, 'disabled by an admin')")
    row = await db.fetchrow(
        f"""
        UPDATE webhook_subscription SET {", ".join(assignments)}
        WHERE id = $1
        RETURNING {_SUBSCRIPTION}
        """,  # noqa: S608 - column names come from the fixed set above, values are bound
        *args,
    )
    return None if row is None else _subscription(row)


async def rotate_nonce(
    db: Executor, subscription_id: str, nonce: bytes, *, now: datetime, previous_until: datetime
) -> Subscription | None:
    row = await db.fetchrow(
        f"""
        UPDATE webhook_subscription
        SET previous_nonce = nonce, previous_until = $3, nonce = $2, updated_at = $4
        WHERE id = $1
        RETURNING {_SUBSCRIPTION}
        """,  # noqa: S608 - the interpolation is a constant column list
        subscription_id,
        nonce,
        previous_until,
        now,
    )
    return None if row is None else _subscription(row)


async def delete_subscription(db: Executor, subscription_id: str) -> bool:
    status = await db.execute("DELETE FROM webhook_subscription WHERE id = $1", subscription_id)
    return status == "DELETE 1"


# --- deliveries --------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    id: str
    seq: int
    subscription_id: str
    kind: str
    intervention_id: str
    customer_id: str
    state: str
    attempts: int
    next_attempt_at: datetime | None
    give_up_at: datetime
    last_status: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    event_at: datetime
    payload: str  # JSON text


@dataclass(frozen=True)
class Attempt:
    attempt: int
    attempted_at: datetime
    status: int | None
    error: str | None
    duration_ms: float


_DELIVERY = """
    d.id, d.seq, d.subscription_id, d.kind, d.intervention_id, d.customer_id, d.state,
    d.attempts, d.next_attempt_at, d.give_up_at, d.last_status, d.last_error, d.created_at,
    d.delivered_at, d.event_at, d.payload::text AS payload
"""


def _delivery(row: asyncpg.Record) -> Delivery:
    return Delivery(**{field: row[field] for field in Delivery.__dataclass_fields__})


async def list_deliveries(
    db: Executor,
    subscription_id: str,
    *,
    before_seq: int | None,
    limit: int,
    state: str | None = None,
) -> list[Delivery]:
    """The subscription's deliveries, newest first."""
    rows = await db.fetch(
        f"""
        SELECT {_DELIVERY} FROM webhook_delivery d
        WHERE d.subscription_id = $1
          AND ($2::bigint IS NULL OR d.seq < $2)
          AND ($3::text IS NULL OR d.state = $3)
        ORDER BY d.seq DESC
        LIMIT $4
        """,  # noqa: S608 - the interpolation is a constant column list
        subscription_id,
        before_seq,
        state,
        limit,
    )
    return [_delivery(r) for r in rows]


async def get_delivery(db: Executor, delivery_id: str) -> Delivery | None:
    row = await db.fetchrow(
        f"SELECT {_DELIVERY} FROM webhook_delivery d WHERE d.id = $1",  # noqa: S608
        delivery_id,
    )
    return None if row is None else _delivery(row)


async def list_attempts(db: Executor, delivery_id: str, *, limit: int) -> list[Attempt]:
    """The delivery's latest attempts, newest first."""
    rows = await db.fetch(
        """
        SELECT attempt, attempted_at, status, error, duration_ms FROM webhook_attempt
        WHERE delivery_id = $1 ORDER BY attempt DESC LIMIT $2
        """,
        delivery_id,
        limit,
    )
    return [Attempt(**dict(r)) for r in rows]


class ResendConflict(Exception):
    """The delivery cannot be re-sent now; the message says why."""


async def resend(
    conn: Conn, delivery_id: str, *, now: datetime, give_up_at: datetime
) -> Delivery | None:
    """Schedule a finished delivery again, now, with the same id (receivers dedupe on it)."""
    async with conn.transaction():
        row = await conn.fetchrow(
            """
            SELECT d.state, s.enabled FROM webhook_delivery d
            JOIN webhook_subscription s ON s.id = d.subscription_id
            WHERE d.id = $1
            FOR UPDATE OF d
            """,
            delivery_id,
        )
        if row is None:
            return None
        if row["state"] == "pending":
            raise ResendConflict("the delivery is still pending: it will be attempted again")
        if not row["enabled"]:
            raise ResendConflict(
                "the subscription is disabled; enable it first (PATCH enabled=true)"
            )
        updated = await conn.fetchrow(
            f"""
            UPDATE webhook_delivery d
            SET state = 'pending', next_attempt_at = $2, give_up_at = $3, failures = 0,
                delivered_at = NULL
            WHERE d.id = $1
            RETURNING {_DELIVERY}
            """,  # noqa: S608 - the interpolation is a constant column list
            delivery_id,
            now,
            give_up_at,
        )
    assert updated is not None  # noqa: S101 - the row is locked above
    return _delivery(updated)


# --- the dispatcher's side ---------------------------------------------------------------


async def fan_out(
    db: Executor, *, now: datetime, give_up_at: datetime, limit: int
) -> tuple[int, int]:
    """Move up to ``limit`` committed outbox rows into deliveries; return how many rows
    were taken and how many deliveries made.

    One statement, so one transaction: a row leaves the outbox exactly when its deliveries
    exist. Rows of transactions not yet committed are invisible and taken on a later call,
    whatever their ids; SKIP LOCKED lets several dispatchers take disjoint rows.
    """
    row = await db.fetchrow(
        """
        WITH taken AS (
            DELETE FROM webhook_outbox
            WHERE id IN (
                SELECT id FROM webhook_outbox ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED
            )
            RETURNING id, kind, intervention_id, customer_id, payload, created_at
        ), made AS (
            INSERT INTO webhook_delivery
                (id, subscription_id, outbox_id, kind, intervention_id, customer_id, payload,
                 event_at, state, next_attempt_at, give_up_at, created_at)
            SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), s.id, t.id, t.kind,
                   t.intervention_id, t.customer_id, t.payload, t.created_at, 'pending', $1,
                   $2, $1
            FROM taken t
            JOIN webhook_subscription s ON s.enabled AND t.kind = ANY (s.kinds)
            ORDER BY t.id, s.id
            ON CONFLICT (subscription_id, outbox_id) DO NOTHING
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM taken) AS taken, (SELECT count(*) FROM made) AS made
        """,
        now,
        give_up_at,
        limit,
    )
    assert row is not None  # noqa: S101 - a SELECT without FROM returns one row
    return int(row["taken"]), int(row["made"])


@dataclass(frozen=True)
class Claimed:
    """A delivery leased to one dispatcher for one attempt."""

    id: str
    attempt: int
    failures: int
    kind: str
    payload: str
    event_at: datetime
    give_up_at: datetime
    subscription_id: str
    url: str
    nonce: bytes
    previous_nonce: bytes | None
    previous_until: datetime | None


async def claim(db: Executor, *, now: datetime, lease_until: datetime, limit: int) -> list[Claimed]:
    """Lease due deliveries of enabled subscriptions: until ``lease_until`` nobody else
    takes them; if this dispatcher dies, they are due again then (same id)."""
    rows = await db.fetch(
        """
        UPDATE webhook_delivery d
        SET next_attempt_at = $2, attempts = d.attempts + 1
        FROM (
            SELECT d2.id, s.url, s.nonce, s.previous_nonce, s.previous_until
            FROM webhook_delivery d2
            JOIN webhook_subscription s ON s.id = d2.subscription_id
            WHERE d2.state = 'pending' AND d2.next_attempt_at <= $1 AND s.enabled
            ORDER BY d2.next_attempt_at
            LIMIT $3
            FOR UPDATE OF d2 SKIP LOCKED
        ) c
        WHERE d.id = c.id
        RETURNING d.id, d.attempts AS attempt, d.failures, d.kind, d.payload::text AS payload,
                  d.event_at, d.give_up_at, d.subscription_id, c.url, c.nonce,
                  c.previous_nonce, c.previous_until
        """,
        now,
        lease_until,
        limit,
    )
    return [
        Claimed(
            **{
                **dict(r),
                "nonce": bytes(r["nonce"]),
                "previous_nonce": None
                if r["previous_nonce"] is None
                else bytes(r["previous_nonce"]),
            }
        )
        for r in rows
    ]


async def _log_attempt(
    conn: Conn,
    claimed: Claimed,
    *,
    at: datetime,
    status: int | None,
    error: str | None,
    duration_ms: float,
) -> None:
    # The delivery may be gone (its subscription deleted meanwhile): then nothing to log.
    await conn.execute(
        """
        INSERT INTO webhook_attempt (delivery_id, attempt, attempted_at, status, error, duration_ms)
        SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT FROM webhook_delivery WHERE id = $1)
        ON CONFLICT DO NOTHING
        """,
        claimed.id,
        claimed.attempt,
        at,
        status,
        error,
        duration_ms,
    )


async def record_delivered(
    conn: Conn, claimed: Claimed, *, at: datetime, status: int, duration_ms: float
) -> None:
    async with conn.transaction():
        await _log_attempt(conn, claimed, at=at, status=status, error=None, duration_ms=duration_ms)
        # A 2xx settles it even if the lease ran out and another attempt is under way.
        await conn.execute(
            """
            UPDATE webhook_delivery
            SET state = 'delivered', delivered_at = $2, next_attempt_at = NULL, failures = 0,
                last_status = $3, last_error = NULL
            WHERE id = $1 AND state = 'pending'
            """,
            claimed.id,
            at,
            status,
        )


async def record_final(
    conn: Conn,
    claimed: Claimed,
    *,
    state: str,
    at: datetime,
    status: int | None,
    error: str,
    duration_ms: float,
    disable_reason: str | None = None,
) -> bool:
    """Finish the delivery as ``failed`` or ``forbidden``; with ``disable_reason`` also
    disable its subscription. False when a newer attempt owns the delivery now."""
    async with conn.transaction():
        await _log_attempt(
            conn, claimed, at=at, status=status, error=error, duration_ms=duration_ms
        )
        if disable_reason is not None:
            await conn.execute(
                """
                UPDATE webhook_subscription SET enabled = false, disabled_reason = $2,
                    updated_at = $3
                WHERE id = $1 AND enabled
                """,
                claimed.subscription_id,
                disable_reason,
                at,
            )
        result = await conn.execute(
            """
            UPDATE webhook_delivery
            SET state = $3, next_attempt_at = NULL, last_status = $4, last_error = $5,
                failures = failures + 1
            WHERE id = $1 AND attempts = $2 AND state = 'pending'
            """,
            claimed.id,
            claimed.attempt,
            state,
            status,
            error,
        )
    return bool(result == "UPDATE 1")


async def record_retry(
    conn: Conn,
    claimed: Claimed,
    *,
    at: datetime,
    status: int | None,
    error: str,
    duration_ms: float,
    next_attempt_at: datetime,
) -> bool:
    """Schedule the next attempt. False when a newer attempt owns the delivery now."""
    async with conn.transaction():
        await _log_attempt(
            conn, claimed, at=at, status=status, error=error, duration_ms=duration_ms
        )
        result = await conn.execute(
            """
            UPDATE webhook_delivery
            SET next_attempt_at = $3, last_status = $4, last_error = $5,
                failures = failures + 1
            WHERE id = $1 AND attempts = $2 AND state = 'pending'
            """,
            claimed.id,
            claimed.attempt,
            next_attempt_at,
            status,
            error,
        )
    return bool(result == "UPDATE 1")


async def prune(db: Executor, *, older_than: datetime, limit: int = 1000) -> int:
    """Forget finished deliveries (and their attempts) created before ``older_than``."""
    status = await db.execute(
        """
        DELETE FROM webhook_delivery WHERE id IN (
            SELECT id FROM webhook_delivery
            WHERE created_at < $1 AND state <> 'pending'
            LIMIT $2
        )
        """,
        older_than,
        limit,
    )
    return int(status.split()[-1])

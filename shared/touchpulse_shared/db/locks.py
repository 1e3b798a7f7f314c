"""The per-customer lock every writer of a customer's state takes.

Scoring's batches and sweeps and the api's writes (profile upserts, intervention moves,
erasure) each lock the customers they touch with transaction-scoped advisory locks before
reading or writing anything about them: a batch never interleaves with an api write on one
customer, and whatever took the lock last sees what the one before it committed. One
definition, so the lock key (``hashtextextended(customer_id, 7)``) and the acquisition order
cannot drift apart between writers — two orders would deadlock, two keys would not lock.
"""

from __future__ import annotations

from collections.abc import Iterable

from touchpulse_shared.db import Conn


async def lock_customers(conn: Conn, customers: Iterable[str]) -> None:
    """Lock ``customers`` until the caller's transaction ends (sorted by key: no deadlock)."""
    # Sorted by the lock key itself, so every writer acquires in the same order.
    await conn.execute(
        """
        SELECT pg_advisory_xact_lock(k) FROM (
            SELECT DISTINCT hashtextextended(c, 7) AS k FROM unnest($1::text[]) AS c ORDER BY 1
        ) AS keys
        """,
        sorted(set(customers)),
    )

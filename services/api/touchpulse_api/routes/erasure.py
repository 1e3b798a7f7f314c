"""Erasure: a customer's data removed, tombstones on the compacted topics (health,
profiles, interventions), and kept erased.

One transaction, under the customer's lock (the one scoring takes), so no batch can write
the customer back between the deletes. The erasure is recorded in ``erased_customer``:
scoring, live or replaying, skips every event of the customer received before it.
"""

from __future__ import annotations

from fastapi import APIRouter

from touchpulse_api.context import Admin, ContextDep
from touchpulse_api.models import Erased
from touchpulse_scoring.outbox import insert_outbox, outbox_row
from touchpulse_scoring.profiles import tombstone_outbox_row
from touchpulse_scoring.store import lock_customers

router = APIRouter(prefix="/v1/customers", tags=["customers"])

# Each table holding anything about a customer, and what it is called in the answer.
_TABLES = (
    ("customer_profile", "profile"),
    ("outcome", "outcomes"),
    ("touchpoint_health", "touchpoint_health"),
    ("journey_health", "journey_health"),
    ("journey_health_history", "health_history"),
    ("deadline", "deadlines"),
    ("early_fulfilment", "early_fulfilments"),
    ("processed_event", "processed_events"),
    ("webhook_outbox", "pending_webhooks"),
    ("webhook_delivery", "webhook_deliveries"),
)


@router.delete("/{customer_id}", response_model=Erased)
async def erase_customer(customer_id: str, context: ContextDep, _: Admin) -> Erased:
    """Remove everything about the customer; idempotent (erasing twice is fine)."""
    now = context.clock()
    settings = context.settings
    removed: dict[str, int] = {}
    async with context.pool.acquire() as conn, conn.transaction():
        await lock_customers(conn, [customer_id])
        await conn.execute(
            """
            INSERT INTO erased_customer (customer_id, erased_at) VALUES ($1, $2)
            ON CONFLICT (customer_id) DO UPDATE SET erased_at = EXCLUDED.erased_at
            """,
            customer_id,
            now,
        )
        for table, label in _TABLES:
            status = await conn.execute(
                f"DELETE FROM {table} WHERE customer_id = $1",  # noqa: S608 - fixed names
                customer_id,
            )
            removed[label] = int(status.split()[-1])
        interventions = [
            r["intervention_id"]
            for r in await conn.fetch(
                "DELETE FROM intervention WHERE customer_id = $1 RETURNING intervention_id",
                customer_id,
            )
        ]
        removed["interventions"] = len(interventions)
        # Unpublished records about the customer must not go out after the tombstones.
        await conn.execute(
            """
            DELETE FROM kafka_outbox
            WHERE (topic = ANY($1::text[]) AND key = $2)
               OR (topic = $3 AND key = ANY($4::bytea[]))
            """,
            [settings.health_topic, settings.profiles_topic],
            customer_id.encode(),
            settings.interventions_topic,
            [i.encode() for i in interventions],
        )
        await insert_outbox(
            conn,
            [
                outbox_row(settings.health_topic, customer_id.encode(), None),
                tombstone_outbox_row(settings.profiles_topic, customer_id),
            ]
            + [outbox_row(settings.interventions_topic, i.encode(), None) for i in interventions],
        )
    return Erased(customer_id=customer_id, erased_at=now, removed=removed)

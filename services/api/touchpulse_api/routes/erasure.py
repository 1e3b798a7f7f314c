"""Erasure: a customer's data removed, tombstones on the compacted topics (health,
profiles, interventions), and kept erased.

One transaction, under the customer's lock (the one scoring takes), so no batch can write
the customer back between the deletes. The erasure is recorded in ``erased_customer``:
scoring, live or replaying, skips every event of the customer received before it.
"""

from __future__ import annotations

from fastapi import APIRouter

from touchpulse_api import queries
from touchpulse_api.context import Admin, ContextDep
from touchpulse_api.models import Erased
from touchpulse_shared.http.app import AUTHENTICATED, problem_responses

router = APIRouter(prefix="/v1/customers", tags=["customers"])


@router.delete(
    "/{customer_id}",
    response_model=Erased,
    operation_id="erase_customer",
    responses=problem_responses(*AUTHENTICATED),
)
async def erase_customer(customer_id: str, context: ContextDep, _: Admin) -> Erased:
    """Remove everything about the customer; idempotent (erasing twice is fine)."""
    now = context.clock()
    async with context.pool.acquire() as conn, conn.transaction():
        removed = await queries.erase(conn, customer_id, now=now, settings=context.settings)
    return Erased(customer_id=customer_id, erased_at=now, removed=removed)

"""The api's writes reach scoring's next judgement while scoring keeps the customer's
explanation window in memory: acknowledge and resolve, a profile change, erasure.

One running pipeline (ingest, scoring and the api), so scoring's engine is the one that
judged the customer before and keeps its window between batches.
"""

from __future__ import annotations

from typing import Any

from tests.api.endpoints.conftest import World, event, scored

CUSTOMER = "C-kept"


async def _open_case(world: World) -> dict[str, Any]:
    cases = (
        await world.api.get(
            "/v1/interventions", params={"state": "open"}, headers=world.as_("reader")
        )
    ).json()["items"]
    (case,) = [c for c in cases if c["customer_id"] == CUSTOMER]
    found: dict[str, Any] = case
    return found


async def test_api_writes_reach_the_next_batch_of_a_customer_scoring_keeps(world: World) -> None:
    # Slow calls, then a critical survey: a case opens, and scoring has explained the
    # customer (its window is kept in memory for the next batch).
    await world.post([event(n, CUSTOMER, "call", 120 - n, wait_seconds=700) for n in range(1, 6)])
    await world.post([event(6, CUSTOMER, "survey", 60, csat=1, nps=0)])
    await scored(world, 6)
    case = await _open_case(world)
    path = f"/v1/interventions/{case['intervention_id']}"

    # Resolved through the api: the next breach opens no attachment to the closed case.
    assert (
        await world.api.post(
            f"{path}/acknowledge", json={"assignee": "agent-1"}, headers=world.as_("agent")
        )
    ).status_code == 200
    assert (
        await world.api.post(
            f"{path}/resolve", json={"outcome_note": "called back"}, headers=world.as_("agent")
        )
    ).status_code == 200
    await world.post([event(7, CUSTOMER, "call", 50, wait_seconds=800)])
    await scored(world, 7)
    resolved = (await world.api.get(path, headers=world.as_("reader"))).json()
    assert resolved["state"] == "resolved"
    assert len(resolved["gaps"]) == len(case["gaps"]), "nothing attached after the resolve"

    # A profile change through the api: the next call is judged on premium's 30 s target.
    assert (
        await world.api.put(
            f"/v1/customers/{CUSTOMER}/profile",
            json={"segment": "premium"},
            headers=world.as_("admin"),
        )
    ).status_code in (200, 201)
    await world.post([event(8, CUSTOMER, "call", 40, wait_seconds=45)])
    await scored(world, 8)
    gaps = (
        await world.api.get(f"/v1/customers/{CUSTOMER}/gaps", headers=world.as_("reader"))
    ).json()["items"]
    premium = [g for g in gaps if g["event_ids"] == ["billing-prod/api-8"]]
    assert premium, "45 s breaks premium's 30 s promise (standard's is 60 s)"
    assert premium[0]["expected"]["target"] == 30

    # Erased through the api, then seen again: judged as a new customer, its explanation
    # and any new case hold only what came after the erasure.
    assert (
        await world.api.delete(f"/v1/customers/{CUSTOMER}", headers=world.as_("admin"))
    ).status_code in (200, 202, 204)
    await world.post([event(9, CUSTOMER, "survey", 5, csat=1, nps=0)])
    await world.pipeline.wait_for(
        "SELECT count(*) FROM outcome WHERE customer_id = $1 AND outcome_key LIKE '%api-9%'",
        2,
        CUSTOMER,
    )
    health = (
        await world.api.get(f"/v1/customers/{CUSTOMER}/health", headers=world.as_("reader"))
    ).json()
    assert {e["event_ids"][0] for e in health["explanation"]} == {"billing-prod/api-9"}
    fresh = await _open_case(world)
    assert fresh["intervention_id"] != case["intervention_id"]
    assert {g["event_ids"][0] for g in fresh["gaps"]} == {"billing-prod/api-9"}

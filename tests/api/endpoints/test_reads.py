"""Health, gaps, the at-risk list and the promises, read back after the real pipeline."""

from __future__ import annotations

from datetime import datetime

from tests.api.endpoints.conftest import World, event, scored


async def _scenario(world: World) -> None:
    await world.post(
        [
            event(1, "C-angry", "survey", 30, csat=1, nps=0),  # critical: the CEO's call list
            event(2, "C-angry", "call", 40, wait_seconds=600, first_contact_resolution=False),
            event(3, "C-slow", "call", 20, wait_seconds=300),
            event(4, "C-slow", "invoice", 10, invoice_correct=True, days_after_delivery=1),
            event(5, "C-happy", "survey", 5, csat=5, nps=10),
        ]
    )
    await scored(world, 5)


async def test_customer_health_explains_itself(world: World) -> None:
    await _scenario(world)
    response = await world.api.get("/v1/customers/C-angry/health", headers=world.as_("reader"))
    assert response.status_code == 200, response.text
    health = response.json()
    assert 0 <= health["score"] < 50
    assert health["band"] == "red"
    assert set(health["touchpoints"]) == {"survey", "call_centre"}
    assert health["weakest_touchpoint"] in {"survey", "call_centre"}
    assert datetime.fromisoformat(health["as_of"]) == datetime.fromisoformat(
        event(2, "C-angry", "call", 30)["occurred_at"]
    )
    explanation = health["explanation"]
    assert explanation, "the outcomes that move the score most"
    assert all(e["impact"] < 0 for e in explanation)
    assert {ref for e in explanation for ref in e["event_ids"]} <= {
        "billing-prod/api-1",
        "billing-prod/api-2",
    }
    worst = explanation[0]
    assert worst["met"] is False
    assert health["open_intervention_id"] is not None
    assert health["trend"], "every change is kept for the trend"

    happy = (
        await world.api.get("/v1/customers/C-happy/health", headers=world.as_("reader"))
    ).json()
    # Kept promises read green; the neutral prior keeps two outcomes short of certainty.
    assert happy["band"] == "green"
    assert 80 < happy["score"] < 100
    assert 0 < happy["confidence"] < 1
    assert happy["evidence_weight"] > 0
    missing = await world.api.get("/v1/customers/C-nobody/health", headers=world.as_("reader"))
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


async def test_gaps_expected_versus_actual_with_filters(world: World) -> None:
    await _scenario(world)
    everything = (
        await world.api.get("/v1/customers/C-slow/gaps", headers=world.as_("reader"))
    ).json()
    promises = {g["promise_id"] for g in everything["items"]}
    assert {"call-answer-time", "invoice-correct", "invoice-on-time"} <= promises
    broken = (
        await world.api.get(
            "/v1/customers/C-slow/gaps",
            params={"breaches_only": "true"},
            headers=world.as_("reader"),
        )
    ).json()["items"]
    assert [g["promise_id"] for g in broken] == ["call-answer-time"]
    assert broken[0]["expected"] == {"op": "<=", "target": 60.0, "unit": "wait_seconds"}
    assert broken[0]["actual"] == 300.0
    assert broken[0]["gap"] == 240.0

    page = (
        await world.api.get(
            "/v1/customers/C-slow/gaps", params={"limit": 1}, headers=world.as_("reader")
        )
    ).json()
    assert len(page["items"]) == 1
    rest = (
        await world.api.get(
            "/v1/customers/C-slow/gaps",
            params={"limit": 50, "cursor": page["next_cursor"]},
            headers=world.as_("reader"),
        )
    ).json()
    assert len(rest["items"]) == len(everything["items"]) - 1
    assert rest["next_cursor"] is None
    bad = await world.api.get(
        "/v1/customers/C-slow/gaps", params={"cursor": "nonsense"}, headers=world.as_("reader")
    )
    assert bad.status_code == 400


async def test_organisation_gaps_weakest_link_first(world: World) -> None:
    await _scenario(world)
    gaps = (await world.api.get("/v1/gaps", headers=world.as_("reader"))).json()["items"]
    rates = [g["breach_rate"] for g in gaps]
    assert rates == sorted(rates, reverse=True)
    answer = next(g for g in gaps if g["promise_id"] == "call-answer-time")
    assert (answer["events"], answer["breaches"], answer["customers_affected"]) == (2, 2, 2)
    assert answer["median_gap"] == 390.0  # gaps of 540 and 240 seconds


async def test_at_risk_customers_by_priority(world: World) -> None:
    await _scenario(world)
    page = (
        await world.api.get(
            "/v1/customers/at-risk", params={"below": 90}, headers=world.as_("reader")
        )
    ).json()
    ids = [c["customer_id"] for c in page["items"]]
    assert ids[0] == "C-angry"
    assert "C-happy" not in ids
    priorities = [c["priority"] for c in page["items"]]
    assert priorities == sorted(priorities, reverse=True)
    with_case = (
        await world.api.get(
            "/v1/customers/at-risk",
            params={"below": 90, "open_intervention": "true"},
            headers=world.as_("reader"),
        )
    ).json()["items"]
    assert all(c["open_intervention_id"] for c in with_case)
    capped = await world.api.get(
        "/v1/customers/at-risk", params={"limit": 10_000}, headers=world.as_("reader")
    )
    assert capped.status_code == 200


async def test_promises_in_effect(world: World) -> None:
    promises = (await world.api.get("/v1/promises", headers=world.as_("reader"))).json()
    assert promises["version"] == "2026.12.2"
    assert any(p["id"] == "survey-csat" for p in promises["promises"])

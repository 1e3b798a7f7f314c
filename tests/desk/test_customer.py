"""The customer page and acting on its case: take, note, resolve, a concurrent take, a
lead's reassign; and the API seeing the same with the person as actor."""

from __future__ import annotations

import re

from tests.desk.conftest import Desk, case, csrf_of, signed_in
from touchpulse_shared.people import Role


def version_of(html: str) -> str:
    found = re.search(r'name="expected_version" value="(\d+)"', html)
    assert found is not None, html
    return found.group(1)


async def test_the_page_shows_health_case_and_profile(desk: Desk) -> None:
    await case(
        desk,
        "i-1",
        "C-1",
        priority=42,
        segment="gold",
        touchpoint="call_centre",
        actions=("call back within a day", "offer a credit"),
    )
    agent = await signed_in(desk, "agent@example.com", Role.AGENT)
    page = await agent.get("/desk/customers/C-1")
    assert page.status_code == 200
    html = page.text
    assert 'data-testid="customer-id">C-1<' in html
    assert 'data-testid="profile-segment">gold<' in html
    assert "call back within a day" in html
    assert "offer a credit" in html
    assert 'id="take-form"' in html
    assert 'id="resolve-form"' in html
    assert 'id="reassign-form"' not in html  # leads only
    assert 'data-intervention-id="i-1"' in html
    missing = await agent.get("/desk/customers/C-nobody")
    assert missing.status_code == 404


async def test_take_note_resolve_and_the_api_agrees(desk: Desk) -> None:
    await case(desk, "i-1", "C-1")
    agent = await signed_in(desk, "agent@example.com", Role.AGENT)
    html = (await agent.get("/desk/customers/C-1")).text
    token = csrf_of(html)
    took = await agent.post(
        "/desk/interventions/i-1/take",
        data={"csrf_token": token, "expected_version": version_of(html)},
    )
    assert took.status_code == 303
    assert took.headers["location"] == "/desk/customers/C-1"
    html = (await agent.get("/desk/customers/C-1")).text
    assert 'data-testid="case-assignee">agent@example.com<' in html
    noted = await agent.post(
        "/desk/interventions/i-1/note",
        data={
            "csrf_token": token,
            "expected_version": version_of(html),
            "note": "left a voicemail",
        },
    )
    assert noted.status_code == 303
    html = (await agent.get("/desk/customers/C-1")).text
    assert "left a voicemail" in html
    no_note = await agent.post(
        "/desk/interventions/i-1/resolve",
        data={
            "csrf_token": token,
            "expected_version": version_of(html),
            "outcome": "reached_and_fixed",
            "note": "",
        },
    )
    assert no_note.status_code == 422  # a resolve needs its note
    resolved = await agent.post(
        "/desk/interventions/i-1/resolve",
        data={
            "csrf_token": token,
            "expected_version": version_of(html),
            "outcome": "reached_and_fixed",
            "note": "called, refunded the fee",
        },
    )
    assert resolved.status_code == 303
    row = await desk.fetchval(
        "SELECT row(state, assignee, outcome_category, outcome_note)::text"
        " FROM intervention WHERE intervention_id = 'i-1'"
    )
    assert row == '(resolved,agent@example.com,reached_and_fixed,"called, refunded the fee")'
    actors = await desk.fetchval(
        "SELECT array_agg(DISTINCT actor_kind || ':' || actor_id)::text"
        " FROM intervention_action WHERE intervention_id = 'i-1'"
    )
    assert actors == "{person:agent@example.com}"


async def test_a_concurrent_take_names_who_won(desk: Desk) -> None:
    await case(desk, "i-1", "C-1")
    await desk.person("kari@example.com", Role.AGENT)
    kari = await signed_in(desk, "kari2@example.com", Role.AGENT)
    ola = await signed_in(desk, "ola@example.com", Role.AGENT)
    # Both have the page open at the same version.
    kari_page = (await kari.get("/desk/customers/C-1")).text
    ola_page = (await ola.get("/desk/customers/C-1")).text
    first = await kari.post(
        "/desk/interventions/i-1/take",
        data={"csrf_token": csrf_of(kari_page), "expected_version": version_of(kari_page)},
    )
    assert first.status_code == 303
    second = await ola.post(
        "/desk/interventions/i-1/take",
        data={"csrf_token": csrf_of(ola_page), "expected_version": version_of(ola_page)},
    )
    assert second.status_code == 409
    assert "Kari2@Example.Com took this case a moment ago" in second.text
    assignee = await desk.fetchval(
        "SELECT assignee FROM intervention WHERE intervention_id = 'i-1'"
    )
    assert assignee == "kari2@example.com"  # never overwritten by the later take


async def test_only_leads_reassign(desk: Desk) -> None:
    await case(desk, "i-1", "C-1", state="acknowledged", assignee="agent@example.com")
    agent = await signed_in(desk, "agent@example.com", Role.AGENT)
    lead = await signed_in(desk, "lead@example.com", Role.LEAD)
    html = (await agent.get("/desk/customers/C-1")).text
    refused = await agent.post(
        "/desk/interventions/i-1/reassign",
        data={
            "csrf_token": csrf_of(html),
            "expected_version": version_of(html),
            "assignee": "agent@example.com",
        },
    )
    assert refused.status_code == 403
    html = (await lead.get("/desk/customers/C-1")).text
    assert 'id="reassign-form"' in html
    moved = await lead.post(
        "/desk/interventions/i-1/reassign",
        data={
            "csrf_token": csrf_of(html),
            "expected_version": version_of(html),
            "assignee": "other@example.com",
        },
    )
    assert moved.status_code == 303
    assert (
        await desk.fetchval("SELECT assignee FROM intervention WHERE intervention_id = 'i-1'")
        == "other@example.com"
    )


async def test_call_list_and_organisation(desk: Desk) -> None:
    await case(desk, "i-crit", "C-crit", priority=30, severity="critical", touchpoint="survey")
    await case(desk, "i-plain", "C-plain", priority=90)
    lead = await signed_in(desk, "lead@example.com", Role.LEAD)
    calls = (await lead.get("/desk/call-list")).text
    assert 'data-customer-id="C-crit"' in calls
    assert 'data-customer-id="C-plain"' not in calls  # no critical breach
    assert "p at survey: expected" in calls  # the one line that says why
    organisation = await lead.get("/desk/organisation?days=30")
    assert organisation.status_code == 200
    assert "Did our actions help?" in organisation.text

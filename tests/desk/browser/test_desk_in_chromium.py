"""The action desk in Debian's chromium, on the real pipeline: events posted through ingest,
cases opened by scoring, worked by people signed in at the desk, and read back through the
REST API with the person as the actor."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import asyncpg
import pytest
from playwright.async_api import Page, expect

from tests.api.endpoints.conftest import event
from tests.desk.browser.conftest import DESKTOP, PASSWORD, PEOPLE, PHONE, Desk
from tests.desk.test_backtest import _tightened
from touchpulse_api.webhooks import store as webhook_store

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

#: Scripts that would run if the desk rendered customer data as markup: each sets a flag.
TIGHTENED = _tightened("call-answer-tightened")
HOSTILE_ID = "<script>window.__tp_xss=1</script>"
HOSTILE_EVENT = '"><img/src=x/onerror=window.__tp_xss=2>'
HOSTILE_NOTE = '<script>window.__tp_xss=3</script>"><img src=x onerror="window.__tp_xss=4">'


async def open_case(desk: Desk, customer: str, first: int) -> str:
    """Slow calls and a critical survey through ingest; the case scoring opens for them."""
    events = [event(first + i, customer, "call", 120 - i, wait_seconds=700) for i in range(3)]
    events.append(event(first + 3, customer, "survey", 60, csat=1, nps=0))
    await desk.world.post(events)
    await desk.world.pipeline.wait_for(
        "SELECT count(*) FROM intervention WHERE customer_id = $1 AND state = 'open'",
        1,
        customer,
    )
    found = await desk.world.pipeline.fetchval(
        "SELECT intervention_id FROM intervention WHERE customer_id = $1", customer
    )
    assert isinstance(found, str)
    return found


async def read_case(desk: Desk, intervention_id: str) -> dict[str, Any]:
    response = await desk.world.api.get(
        f"/v1/interventions/{intervention_id}", headers=desk.world.as_("reader")
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def case_row(page: Page, intervention_id: str) -> Any:
    return page.locator(f'[data-testid="case"][data-intervention-id="{intervention_id}"]')


async def test_an_agent_takes_notes_and_resolves_a_case_and_the_api_names_them(
    desk: Desk,
) -> None:
    case = await open_case(desk, "C-desk-1", 1)
    agent = await desk.sign_in("agent")
    page = agent.page

    # The queue shows the case scoring opened; its customer link opens the customer page.
    row = case_row(page, case)
    await expect(row).to_be_visible()
    await row.get_by_role("link", name="C-desk-1").click()
    await page.wait_for_url(f"{desk.url}/desk/customers/C-desk-1")
    await expect(page.get_by_test_id("customer-id")).to_have_text("C-desk-1")
    # What went wrong, expected versus actual, with the events behind it.
    broken = page.get_by_test_id("broken-promise")
    await expect(broken.first).to_be_visible()
    await expect(page.locator("#explanation")).to_contain_text("billing-prod/api-4")
    await expect(page.get_by_test_id("case-state")).to_have_text("open")

    await page.get_by_role("button", name="Take this case").click()
    await expect(page.get_by_test_id("case-state")).to_have_text("acknowledged")
    await page.get_by_label("Note", exact=True).fill("Called, no answer; trying again at four")
    await page.get_by_role("button", name="Add note").click()
    await expect(page.locator("#history")).to_contain_text("trying again at four")
    await page.get_by_label("Outcome").select_option("compensated")
    await page.get_by_label("What was done").fill("Reached her; refunded the delivery fee")
    await page.get_by_role("button", name="Resolve").click()
    await expect(page.get_by_test_id("intervention").first).to_contain_text("resolved")
    await expect(page.locator("#act")).to_have_count(0)
    assert not agent.errors, agent.errors

    # The REST API holds the same state, every move with the agent as its actor.
    read = await read_case(desk, case)
    assert read["state"] == "resolved"
    assert read["outcome_category"] == "compensated"
    assert read["outcome_note"] == "Reached her; refunded the delivery fee"
    login, name, _ = PEOPLE["agent"]
    moves = [a for a in read["history"] if a["actor"]["kind"] != "system"]
    assert [m["kind"] for m in moves] == [
        "intervention.acknowledged",
        "intervention.noted",
        "intervention.resolved",
    ], moves
    for move in moves:
        assert move["actor"]["kind"] == "person", move
        assert move["actor"]["name"] == name, move
    assert read["assignee"] in (login, name)
    # Gone from the open queue.
    await page.goto("/desk")
    await expect(page.get_by_test_id("count-all")).to_have_attribute("data-count", "0")
    await expect(case_row(page, case)).to_have_count(0)


async def test_a_lead_reassigns_and_sees_the_call_list_and_organisation_an_agent_may_not(
    desk: Desk,
) -> None:
    case = await open_case(desk, "C-desk-lead", 101)

    agent = await desk.sign_in("agent")
    for path in ("/desk/call-list", "/desk/organisation", "/desk/people"):
        response = await agent.page.goto(path)
        assert response is not None
        assert response.status == 403, path
        await expect(agent.page.locator("#forbidden-message")).to_be_visible()
    # Nor are the lead's links offered to an agent.
    await agent.page.goto("/desk")
    await expect(agent.page.get_by_test_id("nav-call-list")).to_have_count(0)
    # The agent takes the case (a case is reassigned from someone).
    await agent.page.goto("/desk/customers/C-desk-lead")
    await agent.page.get_by_role("button", name="Take this case").click()
    await expect(agent.page.get_by_test_id("case-state")).to_have_text("acknowledged")

    lead = await desk.sign_in("lead")
    page = lead.page
    response = await page.goto("/desk/people")
    assert response is not None
    assert response.status == 403, "people are for admins"

    # The call list: the customer with the critical survey, with why.
    await page.get_by_test_id("nav-call-list").first.click()
    await page.wait_for_url(f"{desk.url}/desk/call-list")
    call = page.locator('[data-testid="call"][data-customer-id="C-desk-lead"]')
    await expect(call).to_be_visible()
    await expect(call).to_contain_text("survey")
    # The organisation view: the weakest promises over the window.
    await page.get_by_test_id("nav-organisation").first.click()
    await page.wait_for_url(f"{desk.url}/desk/organisation")
    await expect(page.get_by_test_id("weak-promise").first).to_be_visible()
    await expect(page.locator("#weakest")).to_contain_text("call_centre")

    # Reassign to the other agent.
    other_login, other_name, _ = PEOPLE["agent2"]
    await page.goto("/desk/customers/C-desk-lead")
    await page.get_by_label("Reassign to").select_option(other_login)
    await page.get_by_role("button", name="Reassign").click()
    await expect(page.get_by_test_id("case-assignee")).to_contain_text(other_login)
    read = await read_case(desk, case)
    assert read["assignee"] == other_login
    _, lead_name, _ = PEOPLE["lead"]
    reassigned = [a for a in read["history"] if a["kind"] == "intervention.reassigned"]
    assert len(reassigned) == 1, read["history"]
    assert reassigned[0]["actor"] == {
        "kind": "person",
        "id": reassigned[0]["actor"]["id"],
        "name": lead_name,
    }
    # The agent it went to finds it under "mine".
    other = await desk.sign_in("agent2")
    await other.page.goto("/desk?scope=mine")
    await expect(case_row(other.page, case)).to_be_visible()
    assert other_name


async def test_an_open_queue_shows_new_cases_and_drops_taken_ones_without_a_reload(
    desk: Desk,
) -> None:
    first = await open_case(desk, "C-live-1", 201)
    agent = await desk.sign_in("agent")
    page = agent.page
    await page.goto("/desk?scope=unassigned")
    await expect(case_row(page, first)).to_be_visible()
    # A flag on this document: a reload or a navigation would lose it.
    await page.evaluate("() => { window.__sameDocument = true; }")

    second = await open_case(desk, "C-live-2", 211)
    await expect(case_row(page, second)).to_be_visible()
    await expect(page.get_by_test_id("count-unassigned")).to_have_attribute("data-count", "2")

    # Someone else takes the first case (through the API, as a CRM would): it leaves
    # "unassigned" in the open page.
    taken = await desk.world.api.post(
        f"/v1/interventions/{first}/acknowledge",
        json={"assignee": "someone-else"},
        headers=desk.world.as_("agent"),
    )
    assert taken.status_code == 200, taken.text
    await expect(case_row(page, first)).to_have_count(0)
    await expect(case_row(page, second)).to_be_visible()
    assert await page.evaluate("() => window.__sameDocument === true")
    assert not agent.errors, agent.errors


async def test_hostile_customer_data_renders_as_text_and_runs_nothing(desk: Desk) -> None:
    agent = await desk.sign_in("agent")
    page = agent.page
    await expect(page.locator("#queue-empty")).to_be_visible()

    hostile_event = event(301, HOSTILE_ID, "survey", 30, csat=1, nps=0)
    hostile_event["event_id"] = HOSTILE_EVENT
    hostile_event["attributes"] = {"comment": HOSTILE_NOTE}
    await desk.world.post([hostile_event])
    await desk.world.pipeline.wait_for(
        "SELECT count(*) FROM intervention WHERE customer_id = $1", 1, HOSTILE_ID
    )
    # The open queue brings the case in through its live update (server HTML swapped in),
    # then a fresh load: both show the id as a link's text.
    await expect(page.get_by_role("link", name=HOSTILE_ID)).to_be_visible()
    assert await page.locator("img[src='x']").count() == 0
    await page.reload()
    await expect(page.get_by_role("link", name=HOSTILE_ID)).to_be_visible()
    # The customer page: the id, the event id and (once written) a note, all as text.
    response = await page.goto(f"/desk/customers/{quote(HOSTILE_ID, safe='')}")
    assert response is not None
    assert response.status == 200
    csp = response.headers.get("content-security-policy", "")
    assert "script-src 'self'" in csp, csp
    assert "unsafe-inline" not in csp, csp
    await expect(page.get_by_test_id("customer-id")).to_have_text(HOSTILE_ID)
    await expect(page.locator("#explanation")).to_contain_text(f"billing-prod/{HOSTILE_EVENT}")
    await page.get_by_label("Note", exact=True).fill(HOSTILE_NOTE)
    await page.get_by_role("button", name="Add note").click()
    await expect(page.locator("#history")).to_contain_text(HOSTILE_NOTE)

    # Nothing ran and no element was made of the data.
    assert await page.evaluate("() => window.__tp_xss === undefined")
    assert await page.locator("img[src='x']").count() == 0
    assert not agent.dialogs, agent.dialogs
    assert not agent.errors, agent.errors


async def test_every_page_passes_axe_and_is_photographed_at_desktop_and_phone_width(
    desk: Desk,
) -> None:
    await open_case(desk, "C-1042", 401)
    # A subscription for the webhooks page to list, written by the store the API uses. A
    # delivery fanned out to it fails (no such host offline) and waits for a retry: nothing
    # in this test reads deliveries.
    conn = await asyncpg.connect(desk.world.pipeline.database_url)
    try:
        await webhook_store.create_subscription(
            conn,
            url="https://crm.example.com/touchpulse/hooks",
            kinds=["intervention.opened", "intervention.resolved"],
            description="CRM: open a task for each new case",
            nonce=b"screenshot-nonce",
            now=datetime.now(UTC),
        )
    finally:
        await conn.close()
    for size, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        visitor = await desk.open(viewport=viewport)
        await visitor.page.goto("/desk/sign-in")
        await desk.check_accessibility(visitor.page)
        await desk.screenshot(visitor.page, f"sign-in-{size}")

        admin = await desk.sign_in("admin", viewport=viewport)
        pages = {
            "queue": "/desk",
            "customer": "/desk/customers/C-1042",
            "call-list": "/desk/call-list",
            "organisation": "/desk/organisation",
            "people": "/desk/people",
            "keys": "/desk/keys",
            "webhooks": "/desk/webhooks",
            "backtest": "/desk/backtest",
        }
        for name, path in pages.items():
            response = await admin.page.goto(path)
            assert response is not None
            assert response.status == 200, (path, response.status)
            await desk.check_accessibility(admin.page)
            await desk.screenshot(admin.page, f"{name}-{size}")
        # The back-test's report, as a lead sees it after pasting a candidate that tightens
        # the call-answer promise (the events are the case opened above).
        await admin.page.goto("/desk/backtest")
        await admin.page.get_by_label("Candidate catalogue (YAML)").fill(TIGHTENED)
        await admin.page.get_by_role("button", name="Run the back-test").click()
        await expect(admin.page.locator("#report")).to_be_visible()
        await desk.check_accessibility(admin.page)
        await desk.screenshot(admin.page, f"backtest-report-{size}")

        agent = await desk.sign_in("agent", viewport=viewport)
        response = await agent.page.goto("/desk/people")
        assert response is not None
        assert response.status == 403
        await desk.check_accessibility(agent.page)
        await desk.screenshot(agent.page, f"forbidden-{size}")
        for watched in (visitor, admin, agent):
            assert not watched.errors, watched.errors
    taken = sorted(p.name for p in desk.screenshots.glob("*.png"))
    assert len([n for n in taken if n.endswith("-desktop.png")]) >= 11, taken
    assert len([n for n in taken if n.endswith("-phone.png")]) >= 11, taken


async def test_without_a_session_a_page_leads_to_sign_in_and_back_and_sign_out_ends_it(
    desk: Desk,
) -> None:
    visitor = await desk.open()
    page = visitor.page
    await page.goto("/desk/customers/C-after-sign-in")
    await page.wait_for_url(f"{desk.url}/desk/sign-in**")
    await page.get_by_label("Login").fill(desk.logins["agent"])
    await page.get_by_label("Password").fill("not the password at all")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#sign-in-error")).to_be_visible()

    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    # Back where the visitor was going (no such customer yet: the desk says so).
    await page.wait_for_url(f"{desk.url}/desk/customers/C-after-sign-in")
    await expect(page.get_by_test_id("signed-in-as")).to_contain_text(PEOPLE["agent"][1])

    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url(f"{desk.url}/desk/sign-in**")
    await page.goto("/desk")
    await page.wait_for_url(f"{desk.url}/desk/sign-in**")
    assert not visitor.errors, visitor.errors


async def test_two_agents_taking_one_case_the_second_is_told_and_nothing_is_lost(
    desk: Desk,
) -> None:
    case = await open_case(desk, "C-race", 501)
    first = await desk.sign_in("agent")
    second = await desk.sign_in("agent2")
    for each in (first, second):
        await each.page.goto("/desk/customers/C-race")
        await expect(each.page.get_by_test_id("case-state")).to_have_text("open")

    await first.page.get_by_role("button", name="Take this case").click()
    await expect(first.page.get_by_test_id("case-state")).to_have_text("acknowledged")
    # The second page still shows the case open; its take is refused, saying who took it.
    await second.page.get_by_role("button", name="Take this case").click()
    await expect(second.page.get_by_test_id("action-message")).to_contain_text(
        f"{PEOPLE['agent'][1]} took this case"
    )
    read = await read_case(desk, case)
    assert read["assignee"] == desk.logins["agent"]
    takes = [a for a in read["history"] if a["kind"] == "intervention.acknowledged"]
    assert len(takes) == 1, read["history"]
    assert takes[0]["actor"]["name"] == PEOPLE["agent"][1]

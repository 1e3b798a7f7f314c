"""The queue: filters and their counts, order, paging, and the live feed."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta

import httpx

from tests.desk.conftest import NOW, Desk, case, csrf_of, served, sign_in, signed_in
from touchpulse_api.desk.routes import SESSION_COOKIE
from touchpulse_shared.people import Role

_CASE = re.compile(r'data-testid="case" data-intervention-id="([^"]+)"')
_COUNT = re.compile(r'data-testid="count-([a-z]+)" data-count="(\d+)"')


def ids(html: str) -> list[str]:
    return _CASE.findall(html)


def counts(html: str) -> dict[str, int]:
    return {name: int(n) for name, n in _COUNT.findall(html)}


async def seed(desk: Desk) -> None:
    # i-gold-new: unassigned, new gold customer, call centre, opened an hour ago
    await case(
        desk,
        "i-gold-new",
        "C-1",
        priority=90,
        segment="gold",
        customer_since=NOW - timedelta(days=10),
    )
    # i-overdue: unassigned, gold, billing, open for 10 days (past acknowledge_within_hours)
    await case(
        desk,
        "i-overdue",
        "C-2",
        priority=70,
        segment="gold",
        touchpoint="billing",
        opened_ago=timedelta(days=10),
    )
    # i-other: taken by someone else, survey
    await case(
        desk,
        "i-other",
        "C-3",
        state="acknowledged",
        priority=60,
        touchpoint="survey",
        assignee="someone@example.com",
    )
    # i-mine: taken by the agent, billing, old but acknowledged (so not overdue)
    await case(
        desk,
        "i-mine",
        "C-4",
        state="acknowledged",
        priority=50,
        touchpoint="billing",
        assignee="agent@example.com",
        opened_ago=timedelta(days=10),
    )
    # closed cases never show
    await case(desk, "i-resolved", "C-5", state="resolved", priority=99)


async def test_filters_order_and_counts(desk: Desk) -> None:
    await seed(desk)
    agent = await signed_in(desk, "agent@example.com", Role.AGENT)

    page = (await agent.get("/desk")).text
    assert ids(page) == ["i-gold-new", "i-overdue", "i-other", "i-mine"]  # priority first
    assert counts(page) == {"all": 4, "mine": 1, "unassigned": 2, "new": 1, "overdue": 1}

    assert ids((await agent.get("/desk?scope=mine")).text) == ["i-mine"]
    assert ids((await agent.get("/desk?scope=unassigned")).text) == ["i-gold-new", "i-overdue"]
    assert ids((await agent.get("/desk?new=true")).text) == ["i-gold-new"]
    assert ids((await agent.get("/desk?overdue=true")).text) == ["i-overdue"]
    billing = (await agent.get("/desk?touchpoint=billing")).text
    assert ids(billing) == ["i-overdue", "i-mine"]
    # Counts are within the chosen segment and touchpoint.
    assert counts(billing) == {"all": 2, "mine": 1, "unassigned": 1, "new": 0, "overdue": 1}
    gold = (await agent.get("/desk?segment=gold&scope=unassigned")).text
    assert ids(gold) == ["i-gold-new", "i-overdue"]
    assert counts(gold)["all"] == 2


async def test_paging(desk: Desk) -> None:
    for n in range(55):
        await case(desk, f"i-{n:03d}", f"C-{n:03d}", priority=float(n))
    agent = await signed_in(desk, "agent@example.com", Role.AGENT)
    first = (await agent.get("/desk")).text
    second = (await agent.get("/desk?page=2")).text
    assert len(ids(first)) == 50
    assert ids(first)[0] == "i-054"
    assert ids(second) == [f"i-{n:03d}" for n in range(4, -1, -1)]
    assert 'id="page-next"' in first
    assert 'id="page-next"' not in second


async def test_a_taken_case_leaves_unassigned(desk: Desk) -> None:
    await seed(desk)
    agent = await signed_in(desk, "agent@example.com", Role.AGENT)
    other = await signed_in(desk, "other@example.com", Role.AGENT)
    customer = (await other.get("/desk/customers/C-1")).text
    taken = await other.post(
        "/desk/interventions/i-gold-new/take",
        data={"csrf_token": csrf_of(customer), "expected_version": "0"},
    )
    assert taken.status_code == 303
    fragment = (await agent.get("/desk/queue/fragment?scope=unassigned")).text
    assert ids(fragment) == ["i-overdue"]
    assert counts(fragment)["unassigned"] == 1


async def test_events_announce_a_new_case(desk: Desk) -> None:
    await seed(desk)
    agent = await signed_in(desk, "agent@example.com", Role.AGENT)
    async with served(desk.app) as base, httpx.AsyncClient(base_url=base) as browser:
        browser.cookies.set(SESSION_COOKIE, agent.cookies[SESSION_COOKIE])
        async with browser.stream("GET", "/desk/events", timeout=30) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.aiter_lines()

            async def next_cursor() -> str:
                event = None
                async for line in lines:
                    if line.startswith("event: "):
                        event = line.removeprefix("event: ")
                    elif line.startswith("data: ") and event == "queue":
                        return line.removeprefix("data: ")
                raise AssertionError("the stream ended")

            async with asyncio.timeout(20):
                first = await next_cursor()  # the state when the stream opened
                await case(desk, "i-new", "C-9", priority=95)
                second = await next_cursor()
            assert second != first
            assert second.endswith("/5")  # five active cases now
    fragment = (await agent.get("/desk/queue/fragment")).text
    assert ids(fragment)[0] == "i-new"


async def test_a_snoozed_case_is_set_aside_until_its_time(desk: Desk) -> None:
    await seed(desk)
    agent = await signed_in(desk, "agent@example.com", Role.AGENT)
    customer = (await agent.get("/desk/customers/C-4")).text  # i-mine, acknowledged
    version = re.search(r'name="expected_version" value="(\d+)"', customer)
    assert version is not None
    snoozed = await agent.post(
        "/desk/interventions/i-mine/snooze",
        data={
            "csrf_token": csrf_of(customer),
            "expected_version": version.group(1),
            "until": (NOW + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M"),
        },
    )
    assert snoozed.status_code == 303
    page = (await agent.get("/desk")).text
    assert "i-mine" not in ids(page)
    assert counts(page)["mine"] == 0
    desk.clock.advance(timedelta(hours=2, minutes=1))
    agent = desk.client()  # the old session idled out meanwhile
    assert (await sign_in(agent, "agent@example.com")).status_code == 303
    assert ids((await agent.get("/desk?scope=mine")).text) == ["i-mine"]

"""The intervention workflow with actors: every move recorded with who made it — in the
history the API shows, in the webhooks and on the interventions topic — the new moves (note,
snooze, reassign, resolve with a category), their 409 and 422 answers, optimistic
concurrency, two people acting at once, and scoring never undoing a person's move."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest

from tests.api.endpoints.conftest import NOW, World, _key, event, scored
from tests.api.endpoints.test_workflow import _kinds, _latest
from tests.api.webhooks.conftest import Receiver
from tests.ingest.conftest import running
from tests.scoring.pipeline.conftest import Pipeline, running_scoring
from touchpulse_api import workflow
from touchpulse_api.app import build_app
from touchpulse_api.context import ApiContext
from touchpulse_scoring.domain import Actor, ActorKind, InterventionState
from touchpulse_scoring.intervention_table import intervention_from_row, write_interventions
from touchpulse_shared.auth import Scope, parse_key
from touchpulse_shared.settings import Settings

ALL_KINDS = [
    "intervention.opened",
    "intervention.attached",
    "intervention.acknowledged",
    "intervention.noted",
    "intervention.snoozed",
    "intervention.reassigned",
    "intervention.resolved",
    "intervention.expired",
]


@pytest.fixture
async def world(pipeline_settings: Settings) -> AsyncIterator[World]:
    """The endpoints' world, with webhooks allowed to the loopback receiver."""
    settings = pipeline_settings.model_copy(
        update={
            "auth_cache_s": 0,
            "rate_limit_events_per_s": 10_000.0,
            "api_max_page_size": 50,
            "webhook_allow_private_targets": True,
        }
    )
    url = settings.database_url or ""
    async with AsyncExitStack() as stack:
        ingest = await stack.enter_async_context(running(settings))
        await stack.enter_async_context(running_scoring(settings))
        app = build_app(settings)
        await stack.enter_async_context(app.router.lifespan_context(app))
        api = await stack.enter_async_context(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                base_url="http://api",
            )
        )
        keys = {
            "reader": await _key(url, "reader", [Scope.HEALTH_READ]),
            "agent": await _key(url, "agent", [Scope.INTERVENTIONS_WRITE]),
            "crm": await _key(url, "crm", [Scope.HEALTH_READ, Scope.INTERVENTIONS_WRITE]),
            "admin": await _key(url, "admin", [Scope.ADMIN]),
        }
        yield World(ingest, api, app, Pipeline(settings, url), keys)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    await server.stop()


def _key_id(world: World, who: str) -> str:
    parsed = parse_key(world.keys[who])
    assert parsed is not None
    return parsed[0]


def _api_key_actor(world: World, who: str) -> dict[str, str]:
    return {"kind": "api_key", "id": _key_id(world, who), "name": who}


async def _open_case(world: World, customer: str = "C-angry") -> dict[str, Any]:
    await world.post([event(1, customer, "survey", 30, csat=1, nps=0)])
    await scored(world, 1)
    queue = (await world.api.get("/v1/interventions", headers=world.as_("reader"))).json()
    (case,) = queue["items"]
    return dict(case)


async def _post(world: World, path: str, who: str, body: dict[str, Any]) -> httpx.Response:
    return await world.api.post(path, json=body, headers=world.as_(who))


async def test_every_move_is_recorded_with_its_actor(world: World, receiver: Receiver) -> None:
    created = await _post(world, "/v1/webhooks", "admin", {"url": receiver.url, "kinds": ALL_KINDS})
    assert created.status_code == 201, created.text
    case = await _open_case(world)
    path = f"/v1/interventions/{case['intervention_id']}"
    assert case["version"] == 0

    taken = await _post(world, f"{path}/acknowledge", "agent", {"assignee": "agent-17"})
    assert taken.status_code == 200, taken.text
    assert (taken.json()["version"], taken.json()["assignee"]) == (1, "agent-17")
    noted = await _post(world, f"{path}/notes", "agent", {"text": "Voicemail, <b>retry</b> at 3"})
    assert noted.status_code == 200, noted.text
    until = (NOW + timedelta(days=30)).isoformat()
    snoozed = await _post(world, f"{path}/snooze", "agent", {"until": until})
    assert snoozed.status_code == 200, snoozed.text
    assert snoozed.json()["snoozed_until"] is not None
    # Snoozed: away from the queue until then, unless asked for.
    queue = await world.api.get("/v1/interventions", headers=world.as_("reader"))
    assert queue.json()["items"] == []
    everything = await world.api.get(
        "/v1/interventions", params={"include_snoozed": "true"}, headers=world.as_("reader")
    )
    assert [c["intervention_id"] for c in everything.json()["items"]] == [case["intervention_id"]]
    woken = await _post(world, f"{path}/snooze", "agent", {"until": None})
    assert woken.status_code == 200, woken.text
    queue = await world.api.get("/v1/interventions", headers=world.as_("reader"))
    assert [c["intervention_id"] for c in queue.json()["items"]] == [case["intervention_id"]]
    moved = await _post(world, f"{path}/reassign", "crm", {"assignee": "agent-4"})
    assert moved.status_code == 200, moved.text
    done = await _post(
        world,
        f"{path}/resolve",
        "agent",
        {"outcome_note": "Refunded the fee", "outcome_category": "compensated"},
    )
    assert done.status_code == 200, done.text
    resolved = done.json()
    assert (resolved["state"], resolved["outcome_category"], resolved["version"]) == (
        "resolved",
        "compensated",
        6,
    )

    # The history, as the API shows it: every move, its actor and its facts, in order.
    shown = (await world.api.get(path, headers=world.as_("reader"))).json()
    history = shown["history"]
    agent, crm = _api_key_actor(world, "agent"), _api_key_actor(world, "crm")
    assert [(h["kind"], h["actor"], h["version"]) for h in history] == [
        ("intervention.opened", {"kind": "system", "id": "scoring", "name": "Touchpulse"}, 0),
        ("intervention.acknowledged", agent, 1),
        ("intervention.noted", agent, 2),
        ("intervention.snoozed", agent, 3),
        ("intervention.snoozed", agent, 4),
        ("intervention.reassigned", crm, 5),
        ("intervention.resolved", agent, 6),
    ]
    assert history[1]["detail"] == {"assignee": "agent-17"}
    assert history[2]["detail"] == {"text": "Voicemail, <b>retry</b> at 3"}
    assert history[3]["detail"]["until"] is not None
    assert history[4]["detail"] == {"until": None}
    assert history[5]["detail"] == {"from": "agent-17", "to": "agent-4"}
    assert history[6]["detail"] == {
        "category": "compensated",
        "note": "Refunded the fee",
        "health": resolved["health_at_resolve"],
    }

    # The webhooks carry the same actor and facts (the subscription came before the case).
    await receiver.wait_for(7)
    bodies = [r.json() for r in receiver.requests]
    assert [(b["type"], b["data"]["actor"]) for b in bodies] == [
        (h["kind"], h["actor"]) for h in history
    ]
    assert [b["data"]["detail"] for b in bodies] == [h["detail"] for h in history]
    assert bodies[-1]["data"]["version"] == 6

    # So does every interventions.v1 record, the latest of which is the resolution.
    await world.pipeline.wait_for("SELECT count(*) FROM kafka_outbox", 0)
    assert await _kinds(world, case["intervention_id"]) == [h["kind"] for h in history]
    latest = await _latest(
        world, world.pipeline.settings.interventions_topic, case["intervention_id"].encode()
    )
    assert latest is not None
    record = orjson.loads(latest)
    assert (record["kind"], record["actor"], record["outcome_category"]) == (
        "intervention.resolved",
        agent,
        "compensated",
    )


async def test_illegal_moves_are_409_naming_who_moved_the_case(world: World) -> None:
    case = await _open_case(world)
    path = f"/v1/interventions/{case['intervention_id']}"
    # Reassigning is for a case someone owns; an open case is taken.
    early = await _post(world, f"{path}/reassign", "agent", {"assignee": "agent-4"})
    assert early.status_code == 409
    assert early.json()["state"] == "open"
    assert (await _post(world, f"{path}/acknowledge", "crm", {"assignee": "kari"})).is_success
    again = await _post(world, f"{path}/acknowledge", "agent", {"assignee": "ola"})
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    problem = again.json()
    assert problem["type"].endswith("illegal-transition")
    assert problem["changed_by"] == _api_key_actor(world, "crm")
    assert problem["change"] == "intervention.acknowledged"
    closed = await _post(world, f"{path}/resolve", "crm", {"outcome_note": "fixed"})
    assert closed.status_code == 200, closed.text
    assert closed.json()["outcome_category"] is None  # optional for v1 clients
    for move, body in [
        ("notes", {"text": "too late"}),
        ("snooze", {"until": (NOW + timedelta(days=1)).isoformat()}),
        ("reassign", {"assignee": "ola"}),
        ("resolve", {"outcome_note": "twice"}),
    ]:
        refused = await _post(world, f"{path}/{move}", "agent", body)
        assert refused.status_code == 409, (move, refused.text)
        assert refused.json()["state"] == "resolved"
    history = (await world.api.get(path, headers=world.as_("reader"))).json()["history"]
    assert [h["kind"] for h in history] == [
        "intervention.opened",
        "intervention.acknowledged",
        "intervention.resolved",
    ]
    missing = await _post(world, "/v1/interventions/nope/notes", "agent", {"text": "x"})
    assert missing.status_code == 404


async def test_a_stale_version_is_409_naming_who_changed_it(world: World) -> None:
    case = await _open_case(world)
    path = f"/v1/interventions/{case['intervention_id']}"
    taken = await _post(
        world, f"{path}/acknowledge", "crm", {"assignee": "kari", "expected_version": 0}
    )
    assert taken.status_code == 200, taken.text
    # The agent acts on the version 0 they saw: refused, and told who moved it and how.
    stale = await _post(world, f"{path}/notes", "agent", {"text": "hi", "expected_version": 0})
    assert stale.status_code == 409
    problem = stale.json()
    assert problem["type"].endswith("changed-by-someone-else")
    assert (problem["expected_version"], problem["current_version"]) == (0, 1)
    assert problem["changed_by"] == _api_key_actor(world, "crm")
    assert problem["change"] == "intervention.acknowledged"
    assert "crm" in problem["detail"]
    # Nothing was written for the refused move; at the current version it goes through.
    current = await _post(world, f"{path}/notes", "agent", {"text": "hi", "expected_version": 1})
    assert current.status_code == 200, current.text
    assert [h["kind"] for h in current.json()["history"]][-1] == "intervention.noted"
    assert len(current.json()["history"]) == 3
    not_a_version = await _post(
        world, f"{path}/notes", "agent", {"text": "x", "expected_version": "2"}
    )
    assert not_a_version.status_code == 422


async def test_two_people_taking_at_once_one_wins(world: World) -> None:
    case = await _open_case(world)
    path = f"/v1/interventions/{case['intervention_id']}"
    first, second = await asyncio.gather(
        _post(world, f"{path}/acknowledge", "agent", {"assignee": "ola"}),
        _post(world, f"{path}/acknowledge", "crm", {"assignee": "kari"}),
    )
    assert sorted([first.status_code, second.status_code]) == [200, 409]
    winner, loser = (first, second) if first.status_code == 200 else (second, first)
    assert loser.json()["changed_by"]["name"] == ("agent" if winner is first else "crm")
    shown = (await world.api.get(path, headers=world.as_("reader"))).json()
    assert shown["assignee"] == winner.json()["assignee"]
    assert [h["kind"] for h in shown["history"]].count("intervention.acknowledged") == 1

    # The desk's path (the workflow module with people as actors) holds the same rule.
    await world.post([event(2, "C-other", "survey", 20, csat=1, nps=0)])
    await scored(world, 2)
    other = (
        await world.api.get(
            "/v1/interventions", params={"customer_id": "C-other"}, headers=world.as_("reader")
        )
    ).json()["items"][0]["intervention_id"]
    context: ApiContext = world.app.state.api
    kari, ola = Actor.person("u-kari", "Kari Nordmann"), Actor.person("u-ola", "Ola")
    results = await asyncio.gather(
        workflow.take(context, other, kari),
        workflow.take(context, other, ola),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, workflow.Moved)]
    lost = [r for r in results if isinstance(r, workflow.Conflict)]
    assert (len(won), len(lost)) == (1, 1), results
    assert lost[0].by is not None
    assert lost[0].by.actor == won[0].action.actor
    assert won[0].intervention.assignee == won[0].action.actor.id
    case_now = await workflow.read(context, other)
    assert case_now.history[-1].actor.kind is ActorKind.PERSON


async def test_bad_input_is_422_with_the_field_pointer(world: World) -> None:
    case = await _open_case(world)
    path = f"/v1/interventions/{case['intervention_id']}"
    assert (await _post(world, f"{path}/acknowledge", "agent", {"assignee": "a"})).is_success

    async def pointer(move: str, body: dict[str, Any]) -> str:
        answer = await _post(world, f"{path}/{move}", "agent", body)
        assert answer.status_code == 422, (move, body, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        return str(answer.json()["errors"][0]["pointer"])

    # Refused by the body's shape and by the domain alike, pointed at the same way.
    assert await pointer("resolve", {"outcome_category": "compensated"}) == "/body/outcome_note"
    blank = {"outcome_note": "  ", "outcome_category": "compensated"}
    assert await pointer("resolve", blank) == "/body/outcome_note"
    unknown = {"outcome_note": "ok", "outcome_category": "bribed"}
    assert await pointer("resolve", unknown) == "/body/outcome_category"
    assert await pointer("notes", {"text": " \n "}) == "/body/text"
    past = {"until": (NOW - timedelta(hours=1)).isoformat()}
    assert await pointer("snooze", past) == "/body/until"
    assert await pointer("reassign", {"assignee": "a"}) == "/body/assignee"
    # None of them moved the case.
    shown = (await world.api.get(path, headers=world.as_("reader"))).json()
    assert (shown["state"], shown["version"], len(shown["history"])) == ("acknowledged", 1, 2)


async def test_scoring_never_undoes_a_persons_move(world: World) -> None:
    case = await _open_case(world)
    path = f"/v1/interventions/{case['intervention_id']}"
    taken = await _post(world, f"{path}/acknowledge", "agent", {"assignee": "kari"})
    assert taken.status_code == 200, taken.text
    snoozed = await _post(
        world, f"{path}/snooze", "agent", {"until": (NOW + timedelta(days=2)).isoformat()}
    )
    assert snoozed.status_code == 200, snoozed.text
    # A later breach grows the case through scoring: the person's fields stay.
    await world.post([event(3, "C-angry", "call", 5, wait_seconds=900)])
    await scored(world, 2)
    await world.pipeline.wait_for(
        "SELECT count(*) FROM intervention_action WHERE kind = 'intervention.attached'", 1
    )
    shown = (await world.api.get(path, headers=world.as_("reader"))).json()
    assert (shown["state"], shown["assignee"], shown["version"]) == ("acknowledged", "kari", 2)
    assert shown["snoozed_until"] is not None
    assert shown["history"][-1]["actor"]["kind"] == "system"

    # A copy scoring read before the person's move (version 0, open) cannot undo it, while
    # its own fields (the priority) still go through.
    row = await world.pipeline.fetch(
        "SELECT * FROM intervention WHERE intervention_id = $1", case["intervention_id"]
    )
    current = intervention_from_row(row[0])
    stale = replace(
        current,
        state=InterventionState.OPEN,
        assignee=None,
        acknowledged_at=None,
        snoozed_until=None,
        version=0,
        priority=current.priority + 7.0,
    )
    pool = world.app.state.api.pool
    async with pool.acquire() as conn:
        await write_interventions(conn, [stale])
    after = (await world.api.get(path, headers=world.as_("reader"))).json()
    assert (after["state"], after["assignee"], after["version"]) == ("acknowledged", "kari", 2)
    assert after["snoozed_until"] == shown["snoozed_until"]
    assert after["priority"] == pytest.approx(current.priority + 7.0)


async def test_a_snoozed_case_comes_back_when_its_time_comes(world: World) -> None:
    case = await _open_case(world)
    path = f"/v1/interventions/{case['intervention_id']}"
    until = NOW + timedelta(days=2)
    snoozed = await _post(world, f"{path}/snooze", "agent", {"until": until.isoformat()})
    assert snoozed.status_code == 200, snoozed.text
    context: ApiContext = world.app.state.api

    async def queue() -> list[str]:
        items = (await world.api.get("/v1/interventions", headers=world.as_("reader"))).json()
        return [c["intervention_id"] for c in items["items"]]

    context.clock = lambda: until - timedelta(seconds=1)
    assert await queue() == []
    # Back by the clock alone: no write wakes it.
    context.clock = lambda: until
    assert await queue() == [case["intervention_id"]]

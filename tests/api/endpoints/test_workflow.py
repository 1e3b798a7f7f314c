"""Profiles, the intervention workflow, erasure, and who may do what."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from tests.api.endpoints.conftest import World, event, scored
from touchpulse_shared.auth import parse_key
from touchpulse_shared.stack.services import settings_env


async def test_intervention_workflow(world: World) -> None:
    await world.post([event(1, "C-angry", "survey", 30, csat=1, nps=0)])
    await scored(world, 1)
    queue = (await world.api.get("/v1/interventions", headers=world.as_("reader"))).json()
    (case,) = queue["items"]
    assert case["customer_id"] == "C-angry"
    assert case["state"] == "open"
    assert case["gaps"][0]["promise_id"] in {"survey-csat", "survey-nps"}
    assert case["actions"], "recommended actions of the broken promises"
    assert case["triggers"][0]["kind"] in {"critical_breach", "low_health"}
    path = f"/v1/interventions/{case['intervention_id']}"
    assert (await world.api.get(path, headers=world.as_("reader"))).json()["gaps"] == case["gaps"]

    # Resolving before anyone acknowledged it is not a legal move.
    early = await world.api.post(
        f"{path}/resolve", json={"outcome_note": "x"}, headers=world.as_("agent")
    )
    assert early.status_code == 409
    ack = await world.api.post(
        f"{path}/acknowledge", json={"assignee": "agent-17"}, headers=world.as_("agent")
    )
    assert ack.status_code == 200, ack.text
    assert (ack.json()["state"], ack.json()["assignee"]) == ("acknowledged", "agent-17")
    again = await world.api.post(
        f"{path}/acknowledge", json={"assignee": "x"}, headers=world.as_("agent")
    )
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    no_note = await world.api.post(f"{path}/resolve", json={}, headers=world.as_("agent"))
    assert no_note.status_code == 422
    assert no_note.json()["errors"][0]["pointer"].endswith("outcome_note")
    blank = await world.api.post(
        f"{path}/resolve", json={"outcome_note": ""}, headers=world.as_("agent")
    )
    assert blank.status_code == 422
    done = await world.api.post(
        f"{path}/resolve",
        json={"outcome_note": "CEO called, refund issued"},
        headers=world.as_("agent"),
    )
    assert done.status_code == 200, done.text
    resolved = done.json()
    assert resolved["state"] == "resolved"
    assert resolved["health_at_resolve"] == resolved["health_now"]
    # Each move went out on the interventions topic (from the outbox, in order).
    await world.pipeline.wait_for("SELECT count(*) FROM kafka_outbox", 0)
    kinds = await _kinds(world, case["intervention_id"])
    assert kinds == ["intervention.opened", "intervention.acknowledged", "intervention.resolved"]
    closed = (
        await world.api.get(
            "/v1/interventions", params={"state": "resolved"}, headers=world.as_("reader")
        )
    ).json()["items"]
    assert [c["intervention_id"] for c in closed] == [case["intervention_id"]]
    unknown = await world.api.post(
        "/v1/interventions/nope/acknowledge", json={"assignee": "a"}, headers=world.as_("agent")
    )
    assert unknown.status_code == 404


async def test_profiles_and_no_mass_assignment(world: World) -> None:
    await world.post([event(1, "C-1", "call", 10, wait_seconds=300)])
    await scored(world, 1)
    before = (await world.api.get("/v1/customers/C-1/health", headers=world.as_("reader"))).json()
    body = {"segment": "premium", "customer_since": "2026-10-01", "value": 3.0, "reach": 1500}
    created = await world.api.put(
        "/v1/customers/C-1/profile", json=body, headers=world.as_("admin")
    )
    assert created.status_code == 201, created.text
    updated = await world.api.put(
        "/v1/customers/C-1/profile", json={**body, "value": 4.0}, headers=world.as_("admin")
    )
    assert updated.status_code == 200
    assert updated.json()["value"] == 4.0
    for computed in ({"score": 99}, {"band": "green"}, {"created_at": "2020-01-01T00:00:00Z"}):
        refused = await world.api.put(
            "/v1/customers/C-1/profile", json={**body, **computed}, headers=world.as_("admin")
        )
        assert refused.status_code == 422, computed
        assert refused.json()["errors"][0]["pointer"] == f"/body/{next(iter(computed))}"
    for bad in ({"value": -1}, {"segment": "Not A Slug"}, {"reach": "far"}):
        assert (
            await world.api.put(
                "/v1/customers/C-1/profile", json={**body, **bad}, headers=world.as_("admin")
            )
        ).status_code == 422
    after = (await world.api.get("/v1/customers/C-1/health", headers=world.as_("reader"))).json()
    assert after["score"] == before["score"], "computed fields unchanged by profile writes"
    profile = (await world.api.get("/v1/customers/C-1/profile", headers=world.as_("reader"))).json()
    assert (profile["segment"], profile["value"]) == ("premium", 4.0)


ROUTES = [
    ("GET", "/v1/customers/C-1/health", "reader", None),
    ("GET", "/v1/customers/C-1/gaps", "reader", None),
    ("GET", "/v1/customers/at-risk", "reader", None),
    ("GET", "/v1/customers/C-1/profile", "reader", None),
    ("GET", "/v1/gaps", "reader", None),
    ("GET", "/v1/promises", "reader", None),
    ("GET", "/v1/interventions", "reader", None),
    ("GET", "/v1/interventions/x", "reader", None),
    ("POST", "/v1/interventions/x/acknowledge", "agent", {"assignee": "a"}),
    ("POST", "/v1/interventions/x/resolve", "agent", {"outcome_note": "n"}),
    ("PUT", "/v1/customers/C-1/profile", "admin", {"segment": "standard"}),
    ("DELETE", "/v1/customers/C-1", "admin", None),
    ("GET", "/v1/keys", "admin", None),
    ("POST", "/v1/keys", "admin", {"name": "k", "scopes": ["health:read"]}),
    ("DELETE", "/v1/keys/aaaaaaaaaaaa", "admin", None),
]


async def test_authorization_matrix(world: World) -> None:
    kinds = {"none": {}, "garbage": {"Authorization": "Bearer tpk_garbage"}}
    for method, path, needed, body in ROUTES:
        for caller, headers in kinds.items():
            response = await world.api.request(method, path, json=body, headers=headers)
            assert response.status_code == 401, (method, path, caller)
        for who in ("reader", "agent", "admin", "writer"):
            response = await world.api.request(method, path, json=body, headers=world.as_(who))
            if who == needed:
                assert response.status_code != 403, (method, path, who)
            else:
                assert response.status_code == 403, (method, path, who, response.text)
            assert response.status_code < 500, (method, path, who, response.text)


async def test_key_management_shows_a_key_once(world: World) -> None:
    made = await world.api.post(
        "/v1/keys", json={"name": "crm", "scopes": ["health:read"]}, headers=world.as_("admin")
    )
    assert made.status_code == 201, made.text
    key = made.json()["key"]
    assert (
        await world.api.get("/v1/promises", headers={"Authorization": f"Bearer {key}"})
    ).status_code == 200
    listed = (await world.api.get("/v1/keys", headers=world.as_("admin"))).text
    assert key not in listed
    # The secret is everything after tpk_<id>_ and may itself hold '_': the tail after the
    # last '_' can be a letter or two that the listing holds by chance.
    parsed = parse_key(key)
    assert parsed is not None
    assert parsed[1] not in listed
    key_id = made.json()["key_id"]
    assert (
        await world.api.delete(f"/v1/keys/{key_id}", headers=world.as_("admin"))
    ).status_code == 204
    assert (
        await world.api.get("/v1/promises", headers={"Authorization": f"Bearer {key}"})
    ).status_code == 401
    bad = await world.api.post(
        "/v1/keys", json={"name": "w", "scopes": ["events:write"]}, headers=world.as_("admin")
    )
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["pointer"] == "/source"


@pytest.mark.timeout(300)
async def test_erasure_stays_erased_after_a_replay(world: World) -> None:
    await world.post(
        [
            event(1, "C-gone", "survey", 30, csat=1, nps=0),
            event(2, "C-gone", "call", 20, wait_seconds=200),
            event(3, "C-stays", "call", 20, wait_seconds=200),
        ]
    )
    await scored(world, 3)
    await world.api.put(
        "/v1/customers/C-gone/profile", json={"segment": "premium"}, headers=world.as_("admin")
    )
    erased = await world.api.delete("/v1/customers/C-gone", headers=world.as_("admin"))
    assert erased.status_code == 200, erased.text
    removed = erased.json()["removed"]
    assert removed["profile"] == 1
    assert removed["outcomes"] > 0
    assert removed["interventions"] == 1
    for table in (
        "outcome",
        "journey_health",
        "touchpoint_health",
        "intervention",
        "processed_event",
        "customer_profile",
    ):
        count = await world.pipeline.fetchval(
            f"SELECT count(*) FROM {table} WHERE customer_id = 'C-gone'"  # noqa: S608 - fixed names
        )
        assert count == 0, table
    assert (
        await world.api.get("/v1/customers/C-gone/health", headers=world.as_("reader"))
    ).status_code == 404
    # The health topic's last word on the customer is a tombstone (compaction drops it all).
    await world.pipeline.wait_for("SELECT count(*) FROM kafka_outbox", 0)
    assert await _latest(world, world.pipeline.settings.health_topic, b"C-gone") is None

    # The events are still on the topic: a replay must not bring the customer back.
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "touchpulse_scoring.main", "replay"],
        env={
            **os.environ,
            **settings_env(world.pipeline.settings),
            "TOUCHPULSE_LOG_LEVEL": "WARNING",
        },
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "only in replay:            0" in result.stdout
    # And a redelivery to the live pipeline (a new consumer group from the start) neither.
    assert (
        await world.pipeline.fetchval("SELECT count(*) FROM outcome WHERE customer_id = 'C-gone'")
        == 0
    )


async def _latest(world: World, topic: str, key: bytes) -> bytes | None:
    """The newest value of ``key`` on ``topic``, reading every partition to its current end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=world.pipeline.settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        latest: bytes | None = b"never seen"
        async with asyncio.timeout(60):
            for tp in partitions:
                while await consumer.position(tp) < ends[tp]:
                    for record in (await consumer.getmany(tp, timeout_ms=300)).get(tp, []):
                        if record.key == key:
                            latest = record.value
        return latest
    finally:
        await consumer.stop()


async def _kinds(world: World, intervention_id: str) -> list[str]:
    """The event kinds published for one intervention, in order."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=world.pipeline.settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        topic = world.pipeline.settings.interventions_topic
        await consumer._client.force_metadata_update()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        kinds: list[str] = []
        async with asyncio.timeout(60):
            for tp in partitions:
                while await consumer.position(tp) < ends[tp]:
                    for record in (await consumer.getmany(tp, timeout_ms=300)).get(tp, []):
                        if record.key == intervention_id.encode() and record.value is not None:
                            kinds.append(orjson.loads(record.value)["kind"])
        return kinds
    finally:
        await consumer.stop()

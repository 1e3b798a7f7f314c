"""Profiles are replayable: the api puts each one on the compacted profiles topic through the
outbox (erasure a tombstone), and ``touchpulse-scoring replay`` rebuilds with them, so the
rebuilt health of new and premium customers equals the live health."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tests.api.endpoints.conftest import (  # the fixture is re-used here by name
    World,
    event,
    world,  # noqa: F401
)
from tests.conftest import unique
from tests.scoring.pipeline.conftest import Pipeline
from touchpulse_scoring.domain import load_catalogue_file
from touchpulse_scoring.replay import replay
from touchpulse_shared.auth import Scope, create_key
from touchpulse_shared.contract import profiles
from touchpulse_shared.simulator import Incident, Simulator, SimulatorConfig, post_paced
from touchpulse_shared.simulator import post_profiles as put_profiles
from touchpulse_shared.stack.services import settings_env

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.timeout(300)]

TODAY = datetime.now(UTC).date()


def _replay_cli(pipeline: Pipeline, scratch_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - the test's own fixed command line
        [
            sys.executable,
            "-m",
            "touchpulse_scoring.main",
            "replay",
            "--scratch-url",
            scratch_url,
        ],
        env={**os.environ, **settings_env(pipeline.settings), "TOUCHPULSE_LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


@pytest.fixture
async def scratch(world: World) -> AsyncIterator[Pipeline]:  # noqa: F811
    """A database for the replay to rebuild into, kept until the test has looked at it."""
    name = unique("replay").replace("-", "_")
    await world.pipeline.fetchval(f'CREATE DATABASE "{name}"')
    yield Pipeline(
        world.pipeline.settings, world.pipeline.database_url.rsplit("/", 1)[0] + "/" + name
    )
    await world.pipeline.fetchval(f'DROP DATABASE "{name}" WITH (FORCE)')


async def _replay(w: World, scratch: Pipeline) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(_replay_cli, w.pipeline, scratch.database_url)


async def _settled(pipeline: Pipeline) -> None:
    """Everything posted is applied, past deadlines are swept and the outbox is published."""
    await pipeline.wait_for(
        "SELECT count(*) FROM deadline WHERE state = 'open' AND due_at < now()", 0
    )
    await pipeline.wait_for("SELECT count(*) FROM kafka_outbox", 0)


async def _records(pipeline: Pipeline, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    """Every record on ``topic`` up to its end offsets now, as (key, value), in offset order
    per partition."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=pipeline.settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        assert partitions, f"topic {topic} exists"
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found: list[tuple[bytes | None, bytes | None]] = []
        async with asyncio.timeout(60):
            for tp in partitions:
                while await consumer.position(tp) < ends[tp]:
                    for record in (await consumer.getmany(tp, timeout_ms=300)).get(tp, []):
                        found.append((record.key, record.value))
        return found
    finally:
        await consumer.stop()


def _of(records: list[tuple[bytes | None, bytes | None]], customer: str) -> list[Any]:
    """The values on the topic for one customer, in order (None: a tombstone)."""
    return [
        None if value is None else orjson.loads(value)
        for key, value in records
        if key == customer.encode()
    ]


def _line(stdout: str, label: str) -> str:
    (line,) = [x for x in stdout.splitlines() if x.startswith(label)]
    return line[len(label) :].strip()


async def test_new_and_premium_customers_replay_equal_to_live(
    world: World,  # noqa: F811
    scratch: Pipeline,
) -> None:
    """Regression (issue 12, defect 3): without profiles the rebuild judged these two as
    standard, long-standing customers and replay reported DIFFERS."""
    admin = world.as_("admin")
    for customer, profile in {
        "C-new": {"segment": "standard", "customer_since": str(TODAY - timedelta(days=10))},
        "C-premium": {"segment": "premium", "customer_since": "2015-03-01", "value": 3.0},
    }.items():
        put = await world.api.put(f"/v1/customers/{customer}/profile", json=profile, headers=admin)
        assert put.status_code == 201, put.text
    # Waits that break only premium's terms (30 s; standard 60 s), and breaches that weigh
    # 1.5 times for a customer of ten days.
    await world.post(
        [
            event(1, "C-new", "call", 50, wait_seconds=400),
            event(2, "C-new", "call", 40, wait_seconds=20),
            event(3, "C-new", "survey", 30, csat=5, nps=9),
            event(4, "C-premium", "call", 50, wait_seconds=45),
            event(5, "C-premium", "call", 40, wait_seconds=20),
            event(6, "C-plain", "call", 50, wait_seconds=400),
            event(7, "C-plain", "call", 40, wait_seconds=20),
        ]
    )
    await world.pipeline.wait_for("SELECT count(*) FROM journey_health", 3)
    await world.pipeline.wait_for("SELECT count(*) FROM processed_event", 7)
    await _settled(world.pipeline)
    live = {
        r["customer_id"]: r["score"]
        for r in await world.pipeline.fetch("SELECT customer_id, score FROM journey_health")
    }
    # The profiles matter here: the same calls give a standard long-standing customer
    # another health than the new one, and premium's 45 s wait is a breach.
    assert live["C-new"] != live["C-plain"]
    premium_breaches = await world.pipeline.fetchval(
        "SELECT count(*) FROM outcome WHERE customer_id = 'C-premium' AND NOT met"
    )
    assert premium_breaches == 1

    result = await _replay(world, scratch)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "replay equals live state" in result.stdout
    assert _line(result.stdout, "profiles loaded:") == "2"
    assert _line(result.stdout, "customers compared:") == "3"
    assert _line(result.stdout, "equal:") == "3"
    rebuilt = {
        r["customer_id"]: r["score"]
        for r in await scratch.fetch("SELECT customer_id, score FROM journey_health")
    }
    assert rebuilt == pytest.approx(live, rel=1e-9)
    profile = await scratch.fetch(
        "SELECT segment, customer_since, value FROM customer_profile WHERE customer_id = $1",
        "C-premium",
    )
    assert [tuple(r) for r in profile] == [("premium", date(2015, 3, 1), 3.0)]


async def test_profile_writes_reach_the_topic_and_erasure_tombstones_them(world: World) -> None:  # noqa: F811
    admin = world.as_("admin")
    topic = world.pipeline.settings.profiles_topic
    first = await world.api.put(
        "/v1/customers/C-1/profile",
        json={"segment": "business", "customer_since": "2026-01-31", "value": 5.0, "reach": 40},
        headers=admin,
    )
    assert first.status_code == 201, first.text
    second = await world.api.put(
        "/v1/customers/C-1/profile",
        json={"segment": "premium", "customer_since": "2026-01-31", "value": 5.0, "reach": 40},
        headers=admin,
    )
    assert second.status_code == 200, second.text
    await world.pipeline.wait_for("SELECT count(*) FROM kafka_outbox", 0)
    values = _of(await _records(world.pipeline, topic), "C-1")
    assert [v["segment"] for v in values] == ["business", "premium"]
    latest = values[-1]
    assert latest == {
        "v": 1,
        "customer_id": "C-1",
        "segment": "premium",
        "customer_since": "2026-01-31",
        "value": 5.0,
        "reach": 40.0,
        "updated_at": latest["updated_at"],
    }
    stored = datetime.fromisoformat(second.json()["updated_at"])
    assert datetime.fromisoformat(latest["updated_at"]) == stored

    erased = await world.api.delete("/v1/customers/C-1", headers=admin)
    assert erased.status_code == 200, erased.text
    await world.pipeline.wait_for("SELECT count(*) FROM kafka_outbox", 0)
    values = _of(await _records(world.pipeline, topic), "C-1")
    assert len(values) == 3
    assert values[-1] is None, "the erasure's tombstone is the last word"


async def test_a_profile_write_that_rolls_back_puts_nothing_on_the_topic(world: World) -> None:  # noqa: F811
    admin = world.as_("admin")
    # The transaction fails at commit, after the profile and its outbox row were written.
    conn = await asyncpg.connect(world.pipeline.database_url)
    try:
        await conn.execute(
            """
            CREATE FUNCTION refuse_doomed() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'refused at commit'; END $$;
            CREATE CONSTRAINT TRIGGER doomed AFTER INSERT OR UPDATE ON customer_profile
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
            WHEN (NEW.customer_id = 'C-doomed') EXECUTE FUNCTION refuse_doomed();
            """
        )
    finally:
        await conn.close()
    failed = await world.api.put(
        "/v1/customers/C-doomed/profile", json={"segment": "premium"}, headers=admin
    )
    assert failed.status_code == 500
    assert await world.pipeline.fetchval("SELECT count(*) FROM customer_profile") == 0
    # A later write goes out; the doomed one never does.
    ok = await world.api.put(
        "/v1/customers/C-after/profile", json={"segment": "premium"}, headers=admin
    )
    assert ok.status_code == 201, ok.text
    await world.pipeline.wait_for("SELECT count(*) FROM kafka_outbox", 0)
    records = await _records(world.pipeline, world.pipeline.settings.profiles_topic)
    assert _of(records, "C-after") != []
    assert _of(records, "C-doomed") == []


async def test_replay_equals_live_after_a_simulator_run_with_profiles_and_an_erasure(
    world: World,  # noqa: F811
    scratch: Pipeline,
) -> None:
    """A short simulator run through the real ingest, scoring and api: profiles first, then
    journeys with duplicates, out-of-order sends and a delivery incident; one customer
    erased; the replay rebuilds the same health for every other customer."""
    config = SimulatorConfig(
        seed=41,
        customers=30,
        duplicate_rate=0.05,
        out_of_order_rate=0.1,
        incidents=(Incident("delivery", 0.0, 30.0, 0.9),),
        rate=20.0,
    )
    # The simulated hour lies in the past: every deadline of the run is due before the
    # replay, in the live state and in the rebuild alike.
    simulator = Simulator(config, start=datetime.now(UTC) - timedelta(hours=1))
    world.api.headers.update(world.as_("admin"))
    assert await put_profiles(world.api, simulator) == config.customers
    conn = await asyncpg.connect(world.pipeline.database_url)
    try:
        key, _ = await create_key(
            conn,
            name="simulator",
            scopes=[Scope.EVENTS_WRITE],
            source=config.source,
            now=datetime.now(UTC),
        )
    finally:
        await conn.close()
    world.ingest.http.headers["Authorization"] = f"Bearer {key}"
    sent = await post_paced(world.ingest.http, simulator, rate=400.0, total=400, batch=25)
    assert sent.unavailable == 0, sent.summary()
    assert sent.good_rejected == 0, sent.summary()
    assert sent.duplicates > 0, sent.summary()
    assert sent.out_of_order > 0, sent.summary()
    assert sent.accepted > 300, sent.summary()
    await world.pipeline.wait_for(
        "SELECT coalesce(sum(next_offset), 0) FROM consumer_offset", sent.accepted
    )
    await _settled(world.pipeline)
    # Profiles that change how events are judged were in play.
    profiled = await world.pipeline.fetchval(
        """
        SELECT count(*) FROM journey_health j JOIN customer_profile p USING (customer_id)
        WHERE j.score IS NOT NULL
          AND (p.segment = 'premium' OR p.customer_since > current_date - 90)
        """
    )
    assert isinstance(profiled, int)
    assert profiled > 0

    gone = await world.pipeline.fetchval(
        "SELECT customer_id FROM journey_health WHERE score IS NOT NULL ORDER BY customer_id"
    )
    assert isinstance(gone, str)
    erased = await world.api.delete(f"/v1/customers/{gone}", headers=world.as_("admin"))
    assert erased.status_code == 200, erased.text
    await _settled(world.pipeline)
    scored = await world.pipeline.fetchval("SELECT count(*) FROM journey_health")
    assert isinstance(scored, int)
    assert scored > 10

    result = await _replay(world, scratch)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "replay equals live state" in result.stdout
    assert _line(result.stdout, "customers compared:") == str(scored)
    assert _line(result.stdout, "equal:") == str(scored)
    assert _line(result.stdout, "profiles loaded:") == str(config.customers - 1)
    assert _line(result.stdout, "profile changed meanwhile:").startswith("0 ")
    assert _line(result.stdout, "profile missing on topic:").startswith("0 ")
    assert _line(result.stdout, "differ, profile changed:").startswith("0 ")
    # The tombstone and the erasure both kept the customer out of the rebuild.
    for table in ("customer_profile", "journey_health", "outcome"):
        count = await scratch.fetchval(
            f"SELECT count(*) FROM {table} WHERE customer_id = $1",  # noqa: S608 - fixed names
            gone,
        )
        assert count == 0, table
    live_profiles = [
        tuple(r)
        for r in await world.pipeline.fetch(
            "SELECT customer_id, segment, customer_since, value, reach, updated_at "
            "FROM customer_profile ORDER BY customer_id"
        )
    ]
    rebuilt_profiles = [
        tuple(r)
        for r in await scratch.fetch(
            "SELECT customer_id, segment, customer_since, value, reach, updated_at "
            "FROM customer_profile ORDER BY customer_id"
        )
    ]
    assert rebuilt_profiles == live_profiles


async def test_a_profile_changed_after_scoring_is_reported_apart_and_one_the_topic_lacks_fails(
    world: World,  # noqa: F811
    scratch: Pipeline,
) -> None:
    """The documented limit: the topic keeps the latest profile, so a customer whose profile
    changed after their events were scored is rebuilt with the latest one; the replay names
    them apart from unexplained differences. A profile that never reached the topic is a
    failure."""
    admin = world.as_("admin")
    put = await world.api.put(
        "/v1/customers/C-grew/profile", json={"segment": "standard"}, headers=admin
    )
    assert put.status_code == 201, put.text
    await world.post(
        [
            event(1, "C-grew", "call", 50, wait_seconds=45),
            event(2, "C-grew", "call", 40, wait_seconds=20),
        ]
    )
    await world.pipeline.wait_for("SELECT count(*) FROM processed_event", 2)
    # Scored as standard (45 s kept the 60 s promise); now the CRM says premium.
    put = await world.api.put(
        "/v1/customers/C-grew/profile", json={"segment": "premium"}, headers=admin
    )
    assert put.status_code == 200, put.text
    await _settled(world.pipeline)
    result = await _replay(world, scratch)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _line(result.stdout, "differ, profile changed:").startswith("1 ['C-grew']")
    assert _line(result.stdout, "different:").startswith("0 ")

    # A profile written behind the api's back (or before the topic existed) is not on it.
    await world.pipeline.fetchval(
        "INSERT INTO customer_profile (customer_id, segment) VALUES ('C-bypass', 'premium')"
    )
    await world.pipeline.fetchval(f'DROP DATABASE "{scratch.database_url.rsplit("/", 1)[1]}"')
    await world.pipeline.fetchval(f'CREATE DATABASE "{scratch.database_url.rsplit("/", 1)[1]}"')
    result = await _replay(world, scratch)
    assert result.returncode == 1, result.stdout + result.stderr
    assert _line(result.stdout, "profile missing on topic:").startswith("1 ['C-bypass']")
    assert "replay DIFFERS from live state" in result.stdout


async def test_a_profile_older_than_its_erasure_is_not_rebuilt_before_the_tombstone_lands(
    pipeline: Pipeline,
) -> None:
    """Erasure committed, its tombstone not on the topic yet: the replay still leaves the
    erased profile out, and keeps a profile written after the erasure (a new relationship)."""
    written = datetime.now(UTC) - timedelta(minutes=5)
    producer = AIOKafkaProducer(
        bootstrap_servers=pipeline.settings.kafka_bootstrap_servers, acks="all"
    )
    await producer.start()
    try:
        for customer, at in (("C-erased", written), ("C-back", written + timedelta(minutes=2))):
            record = profiles.ProfileRecord(customer, "premium", None, 2.0, 0.0, at)
            await producer.send_and_wait(
                pipeline.settings.profiles_topic, profiles.encode(record), key=customer.encode()
            )
    finally:
        await producer.stop()
    await pipeline.fetchval(
        "INSERT INTO erased_customer VALUES ('C-erased', $1), ('C-back', $1)",
        written + timedelta(minutes=1),
    )
    name = unique("replay").replace("-", "_")
    await pipeline.fetchval(f'CREATE DATABASE "{name}"')
    scratch = Pipeline(pipeline.settings, pipeline.database_url.rsplit("/", 1)[0] + "/" + name)
    try:
        report = await replay(
            live_url=pipeline.database_url,
            scratch_url=scratch.database_url,
            bootstrap_servers=pipeline.settings.kafka_bootstrap_servers or "",
            topic=pipeline.settings.events_topic,
            profiles_topic=pipeline.settings.profiles_topic,
            catalogue=load_catalogue_file(pipeline.settings.promise_catalogue),
        )
        assert report.profiles == 1
        rebuilt = await scratch.fetch("SELECT customer_id FROM customer_profile")
        assert [r["customer_id"] for r in rebuilt] == ["C-back"]
    finally:
        await pipeline.fetchval(f'DROP DATABASE "{name}" WITH (FORCE)')

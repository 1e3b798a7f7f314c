"""The dashboards and alerts against the real thing.

A real Prometheus (Debian's build) scrapes the three services, running as separate
processes on the real Kafka and PostgreSQL, while the simulator posts good and bad events
through ingest, a foreign producer writes a poison record onto the topic, and a CRM
acknowledges and resolves interventions through the api. Then every panel query of every
provisioned dashboard must return data, every alert and recording rule must evaluate
without error, every PostgreSQL panel query must run on the real database, and no metric
may carry a customer id.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml
from aiokafka import AIOKafkaProducer

from tests.conftest import writer_and_crm_keys
from tests.deploy.grafana import PanelQuery, panel_queries, variable_queries
from touchpulse_shared.db.migrate import migrate_url
from touchpulse_shared.kafka.topics import ensure_topics_at, topic_specs
from touchpulse_shared.settings import Settings
from touchpulse_shared.simulator import Simulator, SimulatorConfig, post_paced
from touchpulse_shared.stack.local import LocalStack, new_run_dir
from touchpulse_shared.stack.procs import free_port
from touchpulse_shared.stack.prometheus import LocalPrometheus, prometheus_tools
from touchpulse_shared.stack.services import SERVICES, RunningService

RULES = sorted(Path("deploy/prometheus/rules").glob("*.yml"))
# Bounds for a loaded 2-core machine; every wait ends as soon as its condition holds.
SETTLE_S = 90.0
LOAD_S = 15.0
LOAD_RATE = 120.0
PREMIUM_CUSTOMERS = 10
SIM = SimulatorConfig(seed=11, customers=80, breach_rate=0.3, bad_rate=0.05)


@dataclass(frozen=True)
class Observed:
    prometheus: str
    database_url: str
    services: dict[str, str]
    started: datetime
    customers: frozenset[str]


def _wait(condition: Callable[[], bool], what: str, within_s: float = SETTLE_S) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def _query(prometheus: str, promql: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=10)
    body = response.json()
    assert body["status"] == "success", (promql, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def _value(prometheus: str, promql: str) -> float:
    result = _query(prometheus, promql)
    return float(result[0]["value"][1]) if result else 0.0


async def _prepare(database_url: str) -> tuple[str, str]:
    await migrate_url(database_url)
    return await writer_and_crm_keys(database_url, source=SIM.source, name="observability")


async def _create_database(server_url: str) -> str:
    base, _, _ = server_url.rpartition("/")
    name = f"observability_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(f"{base}/postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return f"{base}/{name}"


async def _poison(bootstrap: str, topic: str) -> None:
    """Bytes no Touchpulse producer would write: scoring must dead-letter them and go on."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"\xff\xfe not an event", key=b"poison")
    finally:
        await producer.stop()


async def _load(ingest: str, key: str, simulator: Simulator) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=ingest, headers=headers, timeout=10) as client:
        sent = await post_paced(client, simulator, rate=LOAD_RATE, duration_s=LOAD_S)
    assert sent.accepted > 0.8 * sent.posted, sent
    assert sent.rejected > 0, "the simulator's malformed events should have been refused"
    assert sent.unavailable == 0, sent


def _workflow(api: str, key: str) -> None:
    """A CRM works the queue: acknowledge two interventions, resolve one."""
    client = httpx.Client(base_url=api, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    with client:
        items: list[dict[str, Any]] = []

        def enough_open() -> bool:
            nonlocal items
            items = client.get("/v1/interventions", params={"state": "open"}).json()["items"]
            return len(items) >= 2

        _wait(enough_open, "two open interventions")
        for item in items[:2]:
            answer = client.post(
                f"/v1/interventions/{item['intervention_id']}/acknowledge",
                json={"assignee": "ops@example.com"},
            )
            assert answer.status_code == 200, answer.text
        answer = client.post(
            f"/v1/interventions/{items[0]['intervention_id']}/resolve",
            json={"outcome_note": "Called the customer and refunded the delivery"},
        )
        assert answer.status_code == 200, answer.text
        # Reads the dashboards chart too: health and the at-risk list.
        assert client.get(f"/v1/customers/{items[1]['customer_id']}/health").status_code == 200
        assert client.get("/v1/customers/at-risk").status_code == 200


@pytest.fixture(scope="module")
def observed(local_stack: LocalStack, base_settings: Settings) -> Iterator[Observed]:
    bootstrap = local_stack.kafka().address
    database_url = asyncio.run(_create_database(local_stack.postgres().address))
    events_key, crm_key = asyncio.run(_prepare(database_url))
    suffix = uuid.uuid4().hex[:8]
    settings = base_settings.model_copy(
        update={
            "kafka_bootstrap_servers": bootstrap,
            "database_url": database_url,
            "events_topic": f"obs-events-{suffix}",
            "dead_letter_topic": f"obs-dlq-{suffix}",
            "health_topic": f"obs-health-{suffix}",
            "interventions_topic": f"obs-interventions-{suffix}",
            "profiles_topic": f"obs-profiles-{suffix}",
            "events_partitions": 3,
            "scoring_group_id": f"obs-scoring-{suffix}",
            "scoring_state_metrics_interval_s": 1.0,
            "ingest_port": free_port(),
            "api_port": free_port(),
            "scoring_metrics_port": free_port(),
            "log_level": "WARNING",
        }
    )
    asyncio.run(ensure_topics_at(bootstrap, topic_specs(settings)))
    run_dir = new_run_dir(settings.state_dir)
    services = [RunningService(spec, settings, run_dir) for spec in SERVICES]
    tools = prometheus_tools(settings.cache_dir)
    prometheus = LocalPrometheus(
        tools=tools,
        workdir=run_dir / "prometheus",
        targets={s.spec.name: [s.url.removeprefix("http://")] for s in services},
        rule_files=RULES,
    )
    try:
        for service in services:
            service.start()
        prometheus.start()
        urls = {s.spec.name: s.url for s in services}
        simulator = Simulator(SIM, start=datetime.now(UTC))
        with httpx.Client(
            base_url=urls["api"], headers={"Authorization": f"Bearer {crm_key}"}, timeout=10
        ) as crm:
            for index in range(PREMIUM_CUSTOMERS):
                answer = crm.put(
                    f"/v1/customers/{simulator.customer(index)}/profile",
                    json={"segment": "premium", "value": 3.0, "reach": 500},
                )
                assert answer.status_code == 201, answer.text  # created
        started = datetime.now(UTC)
        asyncio.run(_poison(bootstrap, settings.events_topic))
        asyncio.run(_load(urls["ingest"], events_key, simulator))
        _workflow(urls["api"], crm_key)
        url = prometheus.url

        # Everything the dashboards show must have reached Prometheus before judging them.
        _wait(
            lambda: (
                _value(url, 'max(touchpulse_interventions_current{state="acknowledged"})') >= 1
                and _value(url, "sum(touchpulse_api_interventions_resolved_total)") >= 1
                and _value(url, "sum(touchpulse_scoring_dead_letters_total)") >= 1
                and _value(url, "sum(touchpulse_scoring_consumer_lag_records)") == 0
                and _value(url, 'sum(touchpulse_journey_health_customers{segment="premium"})') >= 1
            ),
            "the scraped figures to show the whole run",
        )
        customers = frozenset(simulator.customer(i) for i in range(SIM.customers))
        yield Observed(url, database_url, urls, started, customers)
    finally:
        prometheus.stop()
        for service in reversed(services):
            service.stop()


def _prometheus_queries(observed: Observed) -> list[PanelQuery]:
    end = datetime.now(UTC)
    return [
        q
        for q in panel_queries(rate_interval="1m", range_="5m", start=observed.started, end=end)
        if q.datasource == "prometheus"
    ]


@pytest.mark.kafka
@pytest.mark.postgres
def test_every_prometheus_panel_query_returns_data(observed: Observed) -> None:
    queries = _prometheus_queries(observed)
    assert len(queries) >= 30, "the dashboards should chart the whole pipeline"
    end = time.time()
    empty = []
    for query in queries:
        # What Grafana asks for a time-series panel: a range query over the dashboard's span.
        response = httpx.get(
            f"{observed.prometheus}/api/v1/query_range",
            params={"query": query.query, "start": end - 300, "end": end, "step": 5},
            timeout=10,
        )
        body = response.json()
        assert body["status"] == "success", (query, body)
        if not body["data"]["result"]:
            empty.append(f"{query.dashboard} / {query.panel} [{query.ref_id}]: {query.query}")
    assert not empty, "panels without data:\n" + "\n".join(empty)


@pytest.mark.kafka
@pytest.mark.postgres
def test_every_template_variable_finds_values(observed: Observed) -> None:
    end = datetime.now(UTC)
    found: dict[str, int] = {}
    for variable in variable_queries(start=observed.started, end=end):
        if variable.datasource == "prometheus":
            response = httpx.get(
                f"{observed.prometheus}/api/v1/series",
                params={"match[]": variable.query},
                timeout=10,
            )
            body = response.json()
            assert body["status"] == "success", (variable, body)
            found[variable.panel] = len(body["data"])
        else:
            found[variable.panel] = len(asyncio.run(_fetch(observed.database_url, variable.query)))
    assert found, "the dashboards should have template variables"
    assert all(count > 0 for count in found.values()), found


async def _fetch(database_url: str, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetch(query)
    finally:
        await conn.close()


@pytest.mark.kafka
@pytest.mark.postgres
def test_every_postgres_panel_query_runs_on_the_real_database(observed: Observed) -> None:
    end = datetime.now(UTC) + timedelta(minutes=1)
    queries = [
        q
        for q in panel_queries(rate_interval="1m", range_="5m", start=observed.started, end=end)
        if q.datasource == "postgres"
    ]
    assert queries, "the dashboards should read PostgreSQL for what only it knows"
    rows = {}
    for query in queries:
        try:
            rows[f"{query.dashboard} / {query.panel}"] = asyncio.run(
                _fetch(observed.database_url, query.query)
            )
        except asyncpg.PostgresError as exc:
            pytest.fail(f"{query.dashboard} / {query.panel}: {exc}\n{query.query}")
    needing_action = [name for name in rows if re.search(r"need|action", name, re.IGNORECASE)]
    assert needing_action, sorted(rows)
    for name in needing_action:
        assert rows[name], f"{name} is empty although interventions are open"


def _rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for path in RULES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend(group["rules"])
    return rules


@pytest.mark.kafka
@pytest.mark.postgres
def test_every_alert_and_recording_rule_evaluates(observed: Observed) -> None:
    rules = _rules()
    alerts = [r for r in rules if "alert" in r]
    assert len(alerts) >= 6
    for rule in rules:
        _query(observed.prometheus, rule["expr"])  # asserts the query parses and evaluates

    def evaluated_after_load() -> bool:
        groups = httpx.get(f"{observed.prometheus}/api/v1/rules", timeout=10).json()
        loaded = [r for g in groups["data"]["groups"] for r in g["rules"]]
        return len(loaded) == len(rules) and all(
            datetime.fromisoformat(r["lastEvaluation"]) > observed.started for r in loaded
        )

    _wait(evaluated_after_load, "every rule to be evaluated on the run's data")
    groups = httpx.get(f"{observed.prometheus}/api/v1/rules", timeout=10).json()
    for group in groups["data"]["groups"]:
        for rule in group["rules"]:
            assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
    # The run had no outage: the pages that mean one must stay quiet.
    firing = {
        a["labels"]["alertname"]
        for a in httpx.get(f"{observed.prometheus}/api/v1/alerts", timeout=10).json()["data"][
            "alerts"
        ]
        if a["state"] == "firing"
    }
    assert not firing & {"TouchpulseIngestUnavailable", "TouchpulseTargetDown"}, firing


@pytest.mark.kafka
@pytest.mark.postgres
def test_no_metric_is_labelled_by_customer(observed: Observed) -> None:
    for name, url in observed.services.items():
        text = httpx.get(f"{url}/metrics", timeout=10).text
        assert "touchpulse_" in text, name
        leaked = [line for line in text.splitlines() if any(c in line for c in observed.customers)]
        assert not leaked, (name, leaked[:3])

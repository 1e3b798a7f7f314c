"""The real ingest as a process of its own, for the client to talk to over HTTP.

Each test gets its own database (with its key), its own topic and its own ingest on a
free port; a test that kills the broker starts a broker of its own (:func:`own_broker`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.conftest import unique
from touchpulse_client import Outcome, Status
from touchpulse_shared.auth import Scope, create_key
from touchpulse_shared.db.migrate import migrate_url
from touchpulse_shared.settings import Settings
from touchpulse_shared.stack.kafka import LocalKafka, kafka_libs
from touchpulse_shared.stack.local import new_run_dir
from touchpulse_shared.stack.procs import free_port, spawn, stop, wait_until
from touchpulse_shared.stack.services import settings_env

T = TypeVar("T")

SOURCE = "client-tests"
READY_S = 60.0
READ_S = 30.0


class ServiceProcess:
    """A Touchpulse service as a child process on a fixed port, restartable there."""

    def __init__(self, module: str, settings: Settings, port_setting: str, workdir: Path) -> None:
        self.module = module
        self.settings = settings.model_copy(update={port_setting: free_port()})
        self.url = f"http://127.0.0.1:{getattr(self.settings, port_setting)}"
        self.log_path = workdir / f"{module}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            k: v
            for k, v in os.environ.items()
            # Only this process's own settings: never a broker named for the whole suite.
            if not k.startswith("TOUCHPULSE_") and k != "KAFKA_BOOTSTRAP_SERVERS"
        }
        env.update(settings_env(self.settings))
        self.proc = spawn([sys.executable, "-m", self.module], log_path=self.log_path, env=env)
        wait_until(
            self._ready,
            timeout=READY_S,
            what=self.module,
            proc=self.proc,
            log_path=self.log_path,
            interval=0.1,
        )

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        if self.proc is not None:
            stop(self.proc, sig=signal.SIGKILL, timeout=10)
            self.proc = None


class IngestProcess(ServiceProcess):
    """``touchpulse-ingest``."""

    def __init__(self, settings: Settings, workdir: Path) -> None:
        super().__init__("touchpulse_ingest.main", settings, "ingest_port", workdir)


class ScoringProcess(ServiceProcess):
    """``touchpulse-scoring`` (ready once its consumer runs)."""

    def __init__(self, settings: Settings, workdir: Path) -> None:
        super().__init__("touchpulse_scoring.main", settings, "scoring_metrics_port", workdir)


@dataclass
class Ingest:
    process: IngestProcess
    key: str
    topic: str
    bootstrap: str
    #: The source the key may write: a test's own, so its reads of a shared topic see only
    #: its own events.
    source: str = SOURCE

    @property
    def url(self) -> str:
        return self.process.url


async def new_key(database_url: str, source: str = SOURCE) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        key, _ = await create_key(
            conn,
            name="client tests",
            scopes=[Scope.EVENTS_WRITE],
            source=source,
            now=datetime.now(UTC),
        )
        return key
    finally:
        await conn.close()


def ingest_settings(bootstrap: str, database_url: str, topic: str, **extra: object) -> Settings:
    return Settings(
        kafka_bootstrap_servers=bootstrap,
        database_url=database_url,
        events_topic=topic,
        # Fast faults: Kafka's silence becomes a 503 within a second, and the client is told
        # to come back a second later.
        ingest_produce_timeout_ms=1000,
        ingest_retry_after_s=1,
        log_format="json",
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture
async def client_db(fresh_database: str) -> str:
    await migrate_url(fresh_database)
    return fresh_database


def _in_thread(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on a loop of its own thread: a module-scoped fixture must not touch the
    event loops pytest-asyncio gives each test."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _database(base_url: str, name: str, *, drop: bool = False) -> None:
    admin = await asyncpg.connect(f"{base_url}/postgres")
    try:
        if drop:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        else:
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


async def _delete_topic(bootstrap: str, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([name])
    finally:
        await admin.close()


@dataclass(frozen=True)
class SharedIngest:
    process: IngestProcess
    database_url: str
    topic: str
    bootstrap: str


@pytest.fixture(scope="module")
def shared_ingest(
    kafka_bootstrap: str, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SharedIngest]:
    """One ingest (database, topic, process) for a module's tests that do not kill it:
    starting one costs seconds. Each test still gets its own key and source (:func:`ingest`)."""
    base, _, _ = database_url.rpartition("/")
    name = unique("client").replace("-", "_")
    topic = unique("client")
    _in_thread(_database(base, name))
    url = f"{base}/{name}"
    try:
        _in_thread(migrate_url(url))
        _in_thread(create_topic(kafka_bootstrap, topic))
        # A small body limit, so a client's too-large batch meets a 413 without megabytes.
        settings = ingest_settings(kafka_bootstrap, url, topic, ingest_max_body_bytes=64 * 1024)
        process = IngestProcess(settings, tmp_path_factory.mktemp("ingest"))
        process.start()
        try:
            yield SharedIngest(process, url, topic, kafka_bootstrap)
        finally:
            process.kill()
            _in_thread(_delete_topic(kafka_bootstrap, topic))
    finally:
        _in_thread(_database(base, name, drop=True))


@pytest.fixture
async def ingest(shared_ingest: SharedIngest) -> Ingest:
    """The module's ingest with a key for a source of this test's own."""
    source = unique("client")
    key = await new_key(shared_ingest.database_url, source)
    return Ingest(shared_ingest.process, key, shared_ingest.topic, shared_ingest.bootstrap, source)


@pytest.fixture
async def own_ingest(
    kafka_bootstrap: str, client_db: str, topic: str, tmp_path: Path
) -> AsyncIterator[Ingest]:
    """Ingest for this test alone, which may kill it."""
    process = IngestProcess(ingest_settings(kafka_bootstrap, client_db, topic), tmp_path)
    process.start()
    try:
        yield Ingest(process, await new_key(client_db), topic, kafka_bootstrap)
    finally:
        process.kill()


@pytest.fixture
def own_broker(base_settings: Settings) -> Iterator[LocalKafka]:
    """A broker only this test uses, so it may be killed."""
    broker = LocalKafka(
        libs=kafka_libs(base_settings.cache_dir, base_settings.kafka_version),
        workdir=new_run_dir(base_settings.state_dir) / "kafka",
    )
    broker.start()
    yield broker
    broker.stop()


async def create_topic(bootstrap: str, name: str, partitions: int = 3) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


@dataclass
class OnTopic:
    """A topic's records of one source: how many copies of each event id, and the distinct
    values each id was written with."""

    counts: Counter[str]
    values: dict[str, set[bytes]]

    @property
    def ids(self) -> set[str]:
        return set(self.counts)


async def read_topic(bootstrap: str, topic: str, source: str) -> OnTopic:
    """Everything on ``topic`` up to its end now, of ``source`` (the ``ce_source`` header).
    A 202 means every record of it was acknowledged by Kafka, so the end offsets read after
    the client's flush cover all of them."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        for partition in partitions:
            await consumer.seek_to_beginning(partition)
        found = OnTopic(Counter(), defaultdict(set))
        async with asyncio.timeout(READ_S):
            while [p for p in partitions if await consumer.position(p) < ends[p]]:
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    for record in batch:
                        headers = dict(record.headers)
                        if headers["ce_source"].decode() != source:
                            continue
                        event_id = headers["ce_id"].decode()
                        found.counts[event_id] += 1
                        found.values[event_id].add(record.value)
        return found
    finally:
        await consumer.stop()


@dataclass
class Results:
    """Every outcome the client reported, by event id (``on_result`` fills it)."""

    by_id: dict[str, Outcome] = field(default_factory=dict)
    reported_twice: list[str] = field(default_factory=list)

    def __call__(self, outcome: Outcome) -> None:
        if outcome.event_id in self.by_id:
            self.reported_twice.append(outcome.event_id)
        self.by_id[outcome.event_id] = outcome

    def ids(self, status: Status) -> set[str]:
        return {i for i, o in self.by_id.items() if o.status is status}

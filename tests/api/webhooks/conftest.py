"""A real local receiver (uvicorn on 127.0.0.1) whose answers each test scripts, a migrated
database, a controllable clock, and helpers to subscribe and to write outbox rows."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
import uvicorn
from prometheus_client import CollectorRegistry

from touchpulse_api.metrics import ApiMetrics
from touchpulse_api.webhooks import store
from touchpulse_api.webhooks.dispatcher import WebhookDispatcher
from touchpulse_api.webhooks.signing import derive_secret, master_key, new_nonce
from touchpulse_shared.db.migrate import migrate_url
from touchpulse_shared.settings import Settings
from touchpulse_shared.stack.procs import free_port

SIGNING_KEY = "test-master-key-" + "0123456789abcdef" * 2
# Wall-clock bounds on a loaded 2-core machine, not expectations.
WAIT_S = 30.0


class Clock:
    """Starts at the real time (signatures then verify with standardwebhooks' 5-minute
    tolerance); tests move it forward to reach retries without sleeping."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def timestamp(self) -> int:
        return int(self.headers["webhook-timestamp"])

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    hold: bool = False  # keep the request open until ``Receiver.release`` is set


class Receiver:
    """An HTTP server on 127.0.0.1 that records every request and answers from a script
    (then 200 once the script is used up)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[Received] = []
        self.script: deque[Answer] = deque()
        self.default = Answer()
        self.release = asyncio.Event()
        self._arrived = asyncio.Condition()
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/touchpulse"

    def answer(self, *answers: Answer) -> None:
        self.script.extend(answers)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        async with self._arrived:
            self.requests.append(Received(headers, body))
            self._arrived.notify_all()
        answer = self.script.popleft() if self.script else self.default
        if answer.hold:
            await self.release.wait()
        await send(
            {
                "type": "http.response.start",
                "status": answer.status,
                "headers": [(k.encode(), v.encode()) for k, v in answer.headers.items()],
            }
        )
        await send({"type": "http.response.body", "body": answer.body})

    async def start(self) -> None:
        config = uvicorn.Config(
            self,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            ws="none",
            http="h11",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        async with asyncio.timeout(WAIT_S):
            # uvicorn only offers a flag to look at.
            while not self._server.started:  # noqa: ASYNC110
                await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self.release.set()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task

    async def wait_for(self, count: int, within_s: float = WAIT_S) -> None:
        async with asyncio.timeout(within_s), self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= count)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def db(fresh_database: str) -> str:
    await migrate_url(fresh_database)
    return fresh_database


@pytest.fixture
async def pool(db: str) -> AsyncIterator[asyncpg.Pool]:
    created = await asyncpg.create_pool(db, min_size=1, max_size=6)
    yield created
    await created.close()


@pytest.fixture
def settings(db: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=db,
        webhook_signing_key=SIGNING_KEY,
        webhook_allow_private_targets=True,  # the receiver is on loopback
        state_dir=tmp_path / "state",
        auth_cache_s=0,
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def metrics() -> ApiMetrics:
    return ApiMetrics(CollectorRegistry())


def delivered_count(metrics: ApiMetrics, result: str) -> float:
    value = metrics.registry.get_sample_value(
        "touchpulse_api_webhook_deliveries_total", {"result": result}
    )
    return value or 0.0


@pytest.fixture
async def make_dispatcher(
    pool: asyncpg.Pool, settings: Settings, metrics: ApiMetrics, clock: Clock
) -> AsyncIterator[Callable[..., WebhookDispatcher]]:
    made: list[WebhookDispatcher] = []

    def make(**options: Any) -> WebhookDispatcher:
        options.setdefault("rng", lambda: 1.0)  # the top of the jitter range: exact delays
        options.setdefault("timeout_s", 5.0)
        options.setdefault("lease_s", 30.0)
        dispatcher = WebhookDispatcher(
            pool, options.pop("settings", settings), metrics, clock, **options
        )
        made.append(dispatcher)
        return dispatcher

    yield make
    for dispatcher in made:
        await dispatcher.aclose()


async def subscribe(
    pool: asyncpg.Pool,
    settings: Settings,
    url: str,
    kinds: tuple[str, ...] = ("intervention.opened",),
    *,
    now: datetime | None = None,
) -> tuple[str, str]:
    """A subscription written straight to the store (no URL check); (id, secret)."""
    nonce = new_nonce()
    subscription = await store.create_subscription(
        pool,
        url=url,
        kinds=kinds,
        description=None,
        nonce=nonce,
        now=now or datetime.now(UTC),
    )
    return subscription.id, derive_secret(master_key(settings), subscription.id, nonce)


async def outbox(
    db: asyncpg.Pool | asyncpg.Connection,
    kind: str = "intervention.opened",
    intervention_id: str = "iv-1",
    customer_id: str = "c-1",
) -> int:
    """One row as scoring writes it; its id."""
    payload = {
        "intervention_id": intervention_id,
        "customer_id": customer_id,
        "state": "open",
        "priority": 12.5,
    }
    row_id = await db.fetchval(
        """
        INSERT INTO webhook_outbox (kind, intervention_id, customer_id, payload)
        VALUES ($1, $2, $3, $4::jsonb) RETURNING id
        """,
        kind,
        intervention_id,
        customer_id,
        orjson.dumps(payload).decode(),
    )
    return int(row_id)


def signature_matches(secret: str, received: Received) -> bool:
    """The Standard Webhooks check without its 5-minute window (for attempts made at a
    clock moved hours ahead)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{received.webhook_id}.{received.timestamp}.".encode() + received.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = [s.partition(",")[2] for s in received.headers["webhook-signature"].split()]
    return expected in offered


async def deliveries(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT * FROM webhook_delivery ORDER BY seq")


async def attempts(pool: asyncpg.Pool, delivery_id: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT * FROM webhook_attempt WHERE delivery_id = $1 ORDER BY attempt", delivery_id
    )

"""The desk against the real api app and a fresh PostgreSQL database per test.

``desk`` is the app built by the api's own ``build_app`` (migrations, pool, catalogue) on a
clock the test moves, reached through httpx; people are created with the same function the
CLI uses. No Kafka: the desk reads what scoring committed, so tests write those rows.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import uvicorn
from fastapi import FastAPI

from touchpulse_api.app import build_app
from touchpulse_shared.people import Role, create_person
from touchpulse_shared.settings import Settings

NOW = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
PASSWORD = "correct horse battery"  # noqa: S105 - the test people's password
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Clock:
    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@dataclass
class Desk:
    app: FastAPI
    url: str
    settings: Settings
    clock: Clock
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    def client(self) -> httpx.AsyncClient:
        """A browser of its own (its own cookie jar)."""
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app, raise_app_exceptions=False),
            base_url="http://desk.test",
        )
        self.clients.append(client)
        return client

    async def person(self, login: str, role: Role, password: str = PASSWORD) -> None:
        conn = await asyncpg.connect(self.url)
        try:
            await create_person(
                conn,
                login=login,
                display_name=login.title(),
                role=role,
                password=password,
                now=self.clock(),
            )
        finally:
            await conn.close()

    async def execute(self, sql: str, *args: Any) -> None:
        conn = await asyncpg.connect(self.url)
        try:
            await conn.execute(sql, *args)
        finally:
            await conn.close()

    async def fetchval(self, sql: str, *args: Any) -> Any:
        conn = await asyncpg.connect(self.url)
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found is not None, html
    return found.group(1)


async def sign_in(
    client: httpx.AsyncClient, login: str, password: str = PASSWORD
) -> httpx.Response:
    """What a browser does: load the sign-in form (its token cookie and field), post it."""
    form = await client.get("/desk/sign-in")
    assert form.status_code == 200
    return await client.post(
        "/desk/sign-in",
        data={"login": login, "password": password, "csrf_token": csrf_of(form.text)},
    )


async def signed_in(desk: Desk, login: str, role: Role) -> httpx.AsyncClient:
    await desk.person(login, role)
    client = desk.client()
    response = await sign_in(client, login)
    assert response.status_code == 303, response.text
    return client


@pytest.fixture
async def desk(base_settings: Settings, fresh_database: str) -> AsyncIterator[Desk]:
    settings = base_settings.model_copy(
        update={
            "database_url": fresh_database,
            "desk_signin_max_failures": 3,
            "desk_session_idle_minutes": 30,
            "desk_session_absolute_hours": 1,
        }
    )
    clock = Clock()
    app = build_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        desk = Desk(app, fresh_database, settings, clock)
        try:
            yield desk
        finally:
            for client in desk.clients:
                await client.aclose()


@asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[str]:
    """The app behind a real HTTP server on a free loopback port (a stream such as the
    live feed needs one: the ASGI transport hands back a body only once it ended)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_config=None))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            # uvicorn sets a flag, no event, once it listens: a short poll on it.
            while not server.started:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


def gap(touchpoint: str, *, promise: str = "p", severity: str = "normal") -> dict[str, Any]:
    return {
        "outcome_key": f"k-{touchpoint}",
        "promise_id": promise,
        "touchpoint": touchpoint,
        "expected": {"op": "<=", "target": 60, "unit": "s"},
        "actual": 420,
        "gap": 360,
        "score": 0.2,
        "severity": severity,
        "occurred_at": NOW.isoformat(),
        "event_ids": ["e-1"],
        "action": "call back",
    }


async def case(
    desk: Desk,
    intervention_id: str,
    customer_id: str,
    *,
    state: str = "open",
    priority: float = 10.0,
    touchpoint: str = "call_centre",
    assignee: str | None = None,
    opened_ago: timedelta = timedelta(hours=1),
    segment: str = "standard",
    customer_since: datetime | None = None,
    note: str | None = None,
    actions: tuple[str, ...] = ("call the customer",),
    severity: str = "normal",
) -> None:
    """A case as scoring commits it (and the customer's profile as the CRM wrote it)."""
    await desk.execute(
        """
        INSERT INTO customer_profile (customer_id, segment, customer_since, value, reach)
        VALUES ($1, $2, $3, 2.0, 10) ON CONFLICT (customer_id) DO NOTHING
        """,
        customer_id,
        segment,
        None if customer_since is None else customer_since.date(),
    )
    opened = desk.clock() - opened_ago
    await desk.execute(
        """
        INSERT INTO intervention (intervention_id, customer_id, state, triggers, gaps, actions,
            priority, threshold, health_at_open, opened_at, acknowledged_at, assignee,
            resolved_at, outcome_note, updated_at)
        VALUES ($1, $2, $3::text, '[]', $4::jsonb, $5, $6, 50, 40, $7::timestamptz,
                CASE WHEN $3::text <> 'open' THEN $7::timestamptz END, $8,
                CASE WHEN $3::text = 'resolved' THEN $7::timestamptz END, $9, $7::timestamptz)
        """,
        intervention_id,
        customer_id,
        state,
        orjson.dumps([gap(touchpoint, severity=severity)]).decode(),
        list(actions),
        priority,
        opened,
        assignee,
        note,
    )

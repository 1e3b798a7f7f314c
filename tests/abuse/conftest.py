"""The real ingest and api processes (as `make run` starts them) on the session's Kafka and
PostgreSQL, for abuse from the outside: over real sockets, so what the HTTP server itself
does with a hostile request (header limits, broken framing) is part of what is proven."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest

from touchpulse_shared.auth import Scope, create_key, parse_key, revoke_key
from touchpulse_shared.db.migrate import migrate_url
from touchpulse_shared.settings import Settings
from touchpulse_shared.stack.local import new_run_dir
from touchpulse_shared.stack.procs import free_port
from touchpulse_shared.stack.services import SERVICES, RunningService

SOURCE = "billing-prod"
# Per request, on a shared 2-core machine: a bound, not an expectation.
REQUEST_TIMEOUT_S = 30.0
# Examples per operation for Schemathesis: bounded for `make test`; `make fuzz` sets
# FUZZ_EXAMPLES=1000. Not TOUCHPULSE_-prefixed: the settings refuse unknown TOUCHPULSE_ names.
DEFAULT_FUZZ_EXAMPLES = 30


def fuzz_examples() -> int:
    return int(os.environ.get("FUZZ_EXAMPLES", DEFAULT_FUZZ_EXAMPLES))


@dataclass
class Keys:
    """Plaintext keys of every kind, made straight in the database as the CLI would."""

    database_url: str
    made: dict[str, str] = field(default_factory=dict)

    async def make(self, name: str, scopes: list[Scope], **spec: Any) -> str:
        conn = await asyncpg.connect(self.database_url)
        try:
            plaintext, _ = await create_key(
                conn, name=name, scopes=scopes, now=datetime.now(UTC), **spec
            )
        finally:
            await conn.close()
        self.made[name] = plaintext
        return plaintext

    async def revoke(self, plaintext: str) -> None:
        parsed = parse_key(plaintext)
        assert parsed is not None
        conn = await asyncpg.connect(self.database_url)
        try:
            assert await revoke_key(conn, parsed[0], now=datetime.now(UTC))
        finally:
            await conn.close()


@dataclass
class Service:
    url: str
    settings: Settings
    keys: Keys
    process: RunningService
    http: httpx.AsyncClient

    @staticmethod
    def bearer(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    async def ready(self) -> bool:
        """Still serving: the process lives and /readyz answers 200."""
        if not self.process.alive:
            return False
        return (await self.http.get("/readyz")).status_code == 200


@asynccontextmanager
async def started(name: str, settings: Settings) -> AsyncIterator[Service]:
    assert settings.database_url is not None
    spec = next(s for s in SERVICES if s.name == name)
    process = RunningService(spec, settings, new_run_dir(settings.state_dir))
    # Blocks the loop until /readyz answers; servers must be spawned from the main thread
    # (PR_SET_PDEATHSIG), and nothing else runs on this loop yet.
    process.start()
    try:
        async with httpx.AsyncClient(base_url=process.url, timeout=REQUEST_TIMEOUT_S) as http:
            yield Service(process.url, settings, Keys(settings.database_url), process, http)
        assert process.alive, f"the {name} process died; see {process.log_path}"
    finally:
        process.stop()


ServiceFactory = Callable[..., Any]


@pytest.fixture
async def abuse_db(fresh_database: str) -> str:
    await migrate_url(fresh_database)
    return fresh_database


@pytest.fixture
def ingest_settings(
    base_settings: Settings, kafka_bootstrap: str, abuse_db: str, topic: str
) -> Settings:
    return base_settings.model_copy(
        update={
            "kafka_bootstrap_servers": kafka_bootstrap,
            "database_url": abuse_db,
            "events_topic": topic,
            "ingest_port": free_port(),
            "auth_cache_s": 0.0,  # a revoked key is refused at once
            "rate_limit_events_per_s": 1_000_000.0,
            "rate_limit_burst": 1_000_000.0,
            "log_level": "WARNING",
        }
    )


@pytest.fixture
def api_settings(base_settings: Settings, abuse_db: str) -> Settings:
    return base_settings.model_copy(
        update={
            "database_url": abuse_db,
            "api_port": free_port(),
            "auth_cache_s": 0.0,
            "api_rate_limit_per_s": 1_000_000.0,
            "api_rate_limit_burst": 1_000_000.0,
            "webhook_signing_key": "abuse-tests-" + "k" * 40,
            "log_level": "WARNING",
        }
    )


@pytest.fixture
async def ingest(ingest_settings: Settings) -> AsyncIterator[Service]:
    async with started("ingest", ingest_settings) as service:
        yield service


@pytest.fixture
async def api(api_settings: Settings) -> AsyncIterator[Service]:
    async with started("api", api_settings) as service:
        yield service


def event(n: int, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": f"abuse-{n}",
        "source": SOURCE,
        "customer_id": f"cust-{n % 17}",
        "touchpoint": "billing",
        "type": "invoice.issued",
        "occurred_at": datetime.now(UTC).isoformat(),
        "measures": {"invoice_correct": True, "days_late": 0},
        "attributes": {"invoice": f"INV-{n}"},
    }
    body.update(overrides)
    return body

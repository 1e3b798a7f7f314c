"""Schemathesis against the api's OpenAPI document, served by the real process: no server
error and no response outside the documented schema, on a bounded number of examples."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from tests.abuse.conftest import fuzz_examples
from touchpulse_shared.auth import Scope, create_key
from touchpulse_shared.db.migrate import migrate_url
from touchpulse_shared.settings import Settings
from touchpulse_shared.stack.local import new_run_dir
from touchpulse_shared.stack.procs import free_port
from touchpulse_shared.stack.services import SERVICES, RunningService

# Examples per operation: enough to hit every parameter's edges, bounded for `make test`;
# `make fuzz` raises it (FUZZ_EXAMPLES=1000).
EXAMPLES = fuzz_examples()


async def _prepare(url: str) -> str:
    await migrate_url(url)
    conn = await asyncpg.connect(url)
    try:
        key, _ = await create_key(
            conn,
            name="fuzz",
            scopes=[Scope.HEALTH_READ, Scope.INTERVENTIONS_WRITE, Scope.ADMIN],
            now=datetime.now(UTC),
        )
        return key
    finally:
        await conn.close()


@pytest.fixture
def api(base_settings: Settings, fresh_database: str) -> Iterator[tuple[str, str]]:
    key = asyncio.run(_prepare(fresh_database))
    settings = base_settings.model_copy(
        update={
            "database_url": fresh_database,
            "api_port": free_port(),
            "api_rate_limit_per_s": 100_000.0,
            "api_rate_limit_burst": 100_000.0,
            "log_level": "WARNING",
        }
    )
    spec = next(s for s in SERVICES if s.name == "api")
    service = RunningService(spec, settings, new_run_dir(settings.state_dir))
    service.start()
    try:
        yield service.url, key
    finally:
        service.stop()


# The suite-wide 300 s bound fits make test's examples; make fuzz's thousands need the
# same bound the Schemathesis subprocess itself gets.
@pytest.mark.timeout(max(300, EXAMPLES * 10 + 60))
def test_the_openapi_document_holds_under_fuzzing(api: tuple[str, str]) -> None:
    url, key = api
    result = subprocess.run(  # noqa: S603 - the project's own tool, fixed arguments
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{url}/openapi.json",
            "--checks",
            "not_a_server_error,response_schema_conformance,status_code_conformance,"
            "content_type_conformance",
            "--header",
            f"Authorization: Bearer {key}",
            "--max-examples",
            str(EXAMPLES),
            "--seed",
            "20261122",
            "--request-timeout",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=max(600, EXAMPLES * 10),
        check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]

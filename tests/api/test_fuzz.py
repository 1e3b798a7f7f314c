"""Schemathesis against the api's OpenAPI document, served by the real process, with every
check and every phase (the stateful one included, links inferred from the document): no
server error, no response outside the documented schema, every schema-valid request
accepted and every schema-violating one refused, on a bounded number of examples."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.abuse.conftest import fuzz_examples
from tests.abuse.test_fuzz import fuzz_timeout_s, schemathesis
from tests.abuse.test_nasty_payloads import _open_intervention
from touchpulse_shared.auth import Scope, create_key
from touchpulse_shared.db.migrate import migrate_url
from touchpulse_shared.settings import Settings
from touchpulse_shared.stack.local import new_run_dir
from touchpulse_shared.stack.procs import free_port
from touchpulse_shared.stack.services import SERVICES, RunningService

# Examples per operation: enough to hit every parameter's edges, bounded for `make test`;
# `make fuzz` raises it.
EXAMPLES = fuzz_examples()
# 400 is the documented answer to a cursor this api did not sign: a schema can say what a
# cursor looks like, not which ones the server issued, so a well-formed forged one is
# refused (tests/api/endpoints pin that it names `cursor`). Every other refusal of a
# schema-valid request (422 above all) is a disagreement between document and behaviour.
# A webhook target is checked by resolving its host (public addresses only): no schema can
# say which hosts resolve, so a well-formed URL that does not is a 422 naming /body/url.
# The workflow's moves are judged against what no schema holds either: a resolution's
# category against the catalogue in effect (reloadable), a snooze's end against the clock,
# a reassignment against the current assignee, a note's text after trimming whitespace
# (Python's idea of whitespace, not the document regex's): a 422 naming the body field.
# An event previewed by /v1/promises/evaluate is judged against the catalogue in effect
# (its touchpoints, event types and measure kinds) and a stored version it names must have
# been in effect: a 422 naming the field, as ingest answers.
# A source's quality window must not end before it starts, and its end defaults to the
# clock: no schema relates two parameters, nor one to now, so a since after until (or in
# the future) is a 422 naming /query/since.
API_CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2XX", "400", "401", "403", "404", "409", "429"]

[[operations]]
include-path-regex = "^/v1/webhooks(/[^/]+)?$"
include-method-regex = "^(POST|PATCH)$"
checks.positive_data_acceptance.expected-statuses = [
    "2XX", "400", "401", "403", "404", "409", "422", "429"
]

[[operations]]
include-path-regex = "^/v1/promises/evaluate$"
include-method-regex = "^POST$"
checks.positive_data_acceptance.expected-statuses = [
    "2XX", "400", "401", "403", "404", "409", "422", "429"
]

[[operations]]
include-path-regex = "^/v1/sources/.+/quality$"
include-method-regex = "^GET$"
checks.positive_data_acceptance.expected-statuses = [
    "2XX", "400", "401", "403", "404", "409", "422", "429"
]

[[operations]]
include-path-regex = "^/v1/interventions/[^/]+/(notes|snooze|reassign|resolve|acknowledge)$"
include-method-regex = "^POST$"
checks.positive_data_acceptance.expected-statuses = [
    "2XX", "400", "401", "403", "404", "409", "422", "429"
]
"""


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


async def _seed(url: str, database_url: str, key: str) -> None:
    """Something for every read to find and every workflow move to act on, so the phases
    test more than 404s: interventions in each state, profiles, a webhook subscription."""
    for n, state in enumerate(("open", "open", "acknowledged", "open")):
        await _open_intervention(database_url, f"iv-fuzz-{n}", state)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
        for n in range(3):
            profile = {"segment": "premium", "customer_since": "2026-01-01", "value": n + 1}
            made = await http.put(f"/v1/customers/C-iv-fuzz-{n}/profile", json=profile)
            assert made.status_code == 201, made.text
        hook = {"url": "https://93.184.216.34/hooks", "kinds": ["intervention.opened"]}
        made = await http.post("/v1/webhooks", json=hook)
        assert made.status_code == 201, made.text


@pytest.fixture
def api(base_settings: Settings, fresh_database: str) -> Iterator[tuple[str, str]]:
    key = asyncio.run(_prepare(fresh_database))
    settings = base_settings.model_copy(
        update={
            "database_url": fresh_database,
            "api_port": free_port(),
            "api_rate_limit_per_s": 100_000.0,
            "api_rate_limit_burst": 100_000.0,
            "webhook_signing_key": "fuzz-tests-" + "k" * 40,
            "log_level": "WARNING",
        }
    )
    spec = next(s for s in SERVICES if s.name == "api")
    service = RunningService(spec, settings, new_run_dir(settings.state_dir))
    service.start()
    try:
        asyncio.run(_seed(service.url, fresh_database, key))
        yield service.url, key
    finally:
        service.stop()


@pytest.mark.timeout(fuzz_timeout_s(EXAMPLES) + 60)
def test_the_openapi_document_holds_under_fuzzing(api: tuple[str, str], tmp_path: Path) -> None:
    url, key = api
    code, output, _ = schemathesis(url, key, EXAMPLES, tmp_path, API_CONFIG)
    assert code == 0, output

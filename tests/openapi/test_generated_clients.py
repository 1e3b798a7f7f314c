"""A client generated from each served OpenAPI document by openapi-python-client (offline:
the document is its only input) imports and calls the real running service.

The generator cannot yet write ingest's two event operations: each takes three content
types, one of them a JSON array (CloudEvents batch mode), and the code it writes for such a
body neither imports (``Unset`` undefined) nor could dispatch (``isinstance`` against
``list[CloudEventV1]``). The test pins that, so a generator that fixes it is noticed; the
event is then built with the generated model and sent by the generated client's session.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.abuse.conftest import SOURCE, Service, event
from touchpulse_shared.auth import Scope

GENERATOR = Path(sys.executable).with_name("openapi-python-client")


@pytest.fixture
def generated_path(tmp_path: Path) -> Iterator[Path]:
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m.startswith("generated_")]:
            del sys.modules[name]


def _generate(document: dict[str, Any], package: str, into: Path) -> ModuleType:
    spec = into / f"{package}.json"
    spec.write_text(json.dumps(document), encoding="utf-8")
    config = into / f"{package}.yaml"
    # No post hooks: the generator would run ruff over the output, which proves nothing.
    config.write_text(
        f"post_hooks: []\nproject_name_override: {package}\npackage_name_override: {package}\n",
        encoding="utf-8",
    )
    done = subprocess.run(  # noqa: S603
        [
            str(GENERATOR),
            "generate",
            "--path",
            str(spec),
            "--meta",
            "none",
            "--output-path",
            str(into / package),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    # The generator warns (and leaves out) what it cannot model: nothing may be left out.
    assert "Warning" not in output, output
    assert "Unable" not in output, output
    return importlib.import_module(package)


async def test_a_generated_api_client_calls_the_api(api: Service, generated_path: Path) -> None:
    key = await api.keys.make("generated", [Scope.HEALTH_READ, Scope.ADMIN])
    document = (await api.http.get("/openapi.json")).json()
    package = _generate(document, "generated_api", generated_path)
    client_module = importlib.import_module("generated_api.client")
    get_promises = importlib.import_module("generated_api.api.organisation.get_promises")
    get_intervention = importlib.import_module("generated_api.api.interventions.get_intervention")
    create_key = importlib.import_module("generated_api.api.keys.create_key")
    models = importlib.import_module("generated_api.models")
    assert package.__name__ == "generated_api"

    async with client_module.AuthenticatedClient(base_url=api.url, token=key) as client:
        promises = await get_promises.asyncio_detailed(client=client)
        assert promises.status_code == 200, promises.content
        assert isinstance(promises.parsed, models.PromisesOut)
        assert promises.parsed.version
        assert promises.parsed.promises
        # A problem comes back as the generated Problem model, not an exception.
        missing = await get_intervention.asyncio_detailed("iv-none", client=client)
        assert missing.status_code == 404
        assert isinstance(missing.parsed, models.Problem)
        assert missing.parsed.status == 404
        # A body the generated model serialises is one the api accepts.
        body = models.ServiceKeyIn.from_dict(
            {"name": "from-a-generated-client", "scopes": ["health:read"]}
        )
        made = await create_key.asyncio_detailed(client=client, body=body)
        assert made.status_code == 201, made.content
        assert made.parsed.key.startswith("tpk_")
    async with client_module.AuthenticatedClient(base_url=api.url, token="tpk_nope") as bad:  # noqa: S106
        refused = await get_promises.asyncio_detailed(client=bad)
        assert refused.status_code == 401
        assert isinstance(refused.parsed, models.Problem)


async def test_a_generated_ingest_client_calls_ingest(
    ingest: Service, generated_path: Path
) -> None:
    key = await ingest.keys.make("generated", [Scope.EVENTS_WRITE], source=SOURCE)
    document = (await ingest.http.get("/openapi.json")).json()
    _generate(document, "generated_ingest", generated_path)
    client_module = importlib.import_module("generated_ingest.client")
    readyz = importlib.import_module("generated_ingest.api.operations.readyz")
    models = importlib.import_module("generated_ingest.models")
    # The generator's limit, pinned (see the module's docstring).
    with pytest.raises(NameError, match="Unset"):
        importlib.import_module("generated_ingest.api.events.post_event")

    sample = models.ExperienceEventV1.from_dict({**event(1), "event_id": "generated-1"})
    async with client_module.AuthenticatedClient(base_url=ingest.url, token=key) as client:
        ready = await readyz.asyncio_detailed(client=client)
        assert ready.status_code == 200, ready.content
        sent = await client.get_async_httpx_client().post("/v1/events", json=sample.to_dict())
        assert sent.status_code == 202, sent.text
        assert sent.json()["event_id"] == "generated-1"

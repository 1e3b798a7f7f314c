"""Two touchpoint systems feeding the whole pipeline (ingest, Kafka, scoring, PostgreSQL)
and the api in one process, with a catalogue declaring a type no promise judges."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from tests.ingest.conftest import IngestClient, new_key, running
from tests.scoring.pipeline.conftest import (  # the fixture is re-used here by name
    Pipeline,
    pipeline_settings,  # noqa: F401
    running_scoring,
)
from touchpulse_api.app import build_app
from touchpulse_shared.auth import Scope
from touchpulse_shared.settings import Settings

BILLING = "billing-prod"
WEB = "web-prod"
#: Declared for web in the test's catalogue, judged by no promise.
UNMATCHED = "page.scrolled"


def catalogue_with_unmatched_type(shipped: Path, into: Path) -> Path:
    text = shipped.read_text()
    anchor = "\n  web:\n"
    assert anchor in text
    text = text.replace(anchor, anchor + f"    {UNMATCHED}:\n      description: Scrolled\n", 1)
    into.write_text(text)
    return into


@dataclass
class Feeds:
    ingest: IngestClient
    api: httpx.AsyncClient
    app: FastAPI
    pipeline: Pipeline
    settings: Settings
    keys: dict[str, str]

    def as_(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}


@pytest.fixture
async def feeds(pipeline_settings: Settings, tmp_path: Path) -> AsyncIterator[Feeds]:  # noqa: F811
    settings = pipeline_settings.model_copy(
        update={
            "auth_cache_s": 0,
            "rate_limit_events_per_s": 10_000.0,
            # Edge rejections reach PostgreSQL within a fifth of a second, not five.
            "ingest_quality_flush_s": 0.2,
            "promise_catalogue": catalogue_with_unmatched_type(
                pipeline_settings.promise_catalogue, tmp_path / "promises.yaml"
            ),
        }
    )
    url = settings.database_url or ""
    async with AsyncExitStack() as stack:
        ingest = await stack.enter_async_context(running(settings))
        await stack.enter_async_context(running_scoring(settings))
        app = build_app(settings)
        await stack.enter_async_context(app.router.lifespan_context(app))
        api = await stack.enter_async_context(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                base_url="http://api",
            )
        )
        keys = {
            BILLING: ingest.key,  # what ingest's fixture made: events:write for billing-prod
            WEB: await new_key(url, name="web", source=WEB),
            "admin": await new_key(url, name="admin", scopes=[Scope.ADMIN], source=None),
            "reader": await new_key(url, name="crm", scopes=[Scope.HEALTH_READ], source=None),
        }
        yield Feeds(ingest, api, app, Pipeline(settings, url), settings, keys)

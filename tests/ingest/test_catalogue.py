"""Ingest knows the promise catalogue: the file scoring judges by, read at start, re-read
when it changes (a bad edit keeps the last good one), and its version in the metrics; events
that no promise judges are accepted and counted."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.ingest.conftest import EventFactory, IngestClient, running
from touchpulse_ingest.app import build_app
from touchpulse_scoring.domain.errors import CatalogueError
from touchpulse_shared.settings import Settings

SHIPPED = Path("deploy/promises.yaml")


@pytest.fixture
def catalogue_file(tmp_path: Path) -> Path:
    path = tmp_path / "promises.yaml"
    shutil.copy(SHIPPED, path)
    return path


@pytest.fixture
async def edited(
    ingest_settings: Settings, catalogue_file: Path
) -> AsyncIterator[tuple[IngestClient, Path]]:
    settings = ingest_settings.model_copy(update={"promise_catalogue": catalogue_file})
    async with running(settings) as client:
        yield client, catalogue_file


def _rewrite(path: Path, text: str, *, tick: int) -> None:
    """Write and give the file an mtime of its own: two writes within one kernel tick can
    share an mtime, and the reload looks at the mtime."""
    path.write_text(text)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + tick * 1_000_000_000))


def _with_page_scrolled(text: str, version: str) -> str:
    """The catalogue with web also declaring page.scrolled, a type no promise judges."""
    anchor = "\n  web:\n"
    assert anchor in text
    text = text.replace(anchor, anchor + "    page.scrolled:\n      description: Scrolled\n", 1)
    return text.replace('version: "', f'version: "{version}-', 1)


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_an_edit_is_applied_without_a_restart_and_a_bad_one_keeps_the_last_good(
    edited: tuple[IngestClient, Path], make_event: EventFactory
) -> None:
    client, path = edited
    original = path.read_text()
    scrolled = make_event(touchpoint="web", type="page.scrolled", measures={})
    refused = await client.http.post("/v1/events", json=scrolled, headers=client.auth())
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["pointer"] == "/type"

    good = _with_page_scrolled(original, "edit")
    _rewrite(path, good, tick=1)
    accepted = await client.http.post(
        "/v1/events",
        json=make_event(touchpoint="web", type="page.scrolled", measures={}),
        headers=client.auth(),
    )
    assert accepted.status_code == 202, accepted.text
    ready = (await client.http.get("/readyz")).json()
    assert ready["catalogue_version"].startswith("edit-")
    # The hash is the edited file's, recomputed here rather than taken from the code.
    assert ready["catalogue_hash"] == hashlib.sha256(good.encode()).hexdigest()

    # A typo in the next edit: refused by the reload, the last good catalogue stays.
    _rewrite(path, original.replace("touchpoints:", "touchpoints: [", 1), tick=2)
    still = await client.http.post(
        "/v1/events",
        json=make_event(touchpoint="web", type="page.scrolled", measures={}),
        headers=client.auth(),
    )
    assert still.status_code == 202, still.text
    assert (await client.http.get("/readyz")).json()["catalogue_version"] == ready[
        "catalogue_version"
    ]
    samples = _samples((await client.http.get("/metrics")).text)
    shown = frozenset({("version", ready["catalogue_version"]), ("hash", ready["catalogue_hash"])})
    assert samples[("touchpulse_ingest_catalogue_info", shown)] == 1
    assert not [k for k in samples if k[0] == "touchpulse_ingest_catalogue_info" and k[1] != shown]


async def test_events_no_promise_judges_are_accepted_and_counted_by_source_and_type(
    edited: tuple[IngestClient, Path], make_event: EventFactory
) -> None:
    client, path = edited
    _rewrite(path, _with_page_scrolled(path.read_text(), "unmatched"), tick=1)
    events = [
        make_event(touchpoint="web", type="page.scrolled", measures={}),
        make_event(touchpoint="web", type="page.scrolled", measures={"depth": 0.5}),
        make_event(),  # invoice.issued: judged by promises, not counted
        make_event(touchpoint="sales", type="order.placed", measures={}),  # opens a deadline
    ]
    response = await client.http.post(
        "/v1/events/batch", json={"events": events}, headers=client.auth()
    )
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 4
    samples = _samples((await client.http.get("/metrics")).text)
    unmatched = {
        labels: value
        for (name, labels), value in samples.items()
        if name == "touchpulse_ingest_events_unmatched_total"
    }
    assert unmatched == {frozenset({("source", "billing-prod"), ("type", "page.scrolled")}): 2}


def test_ingest_does_not_start_without_a_usable_catalogue(
    ingest_settings: Settings, tmp_path: Path
) -> None:
    missing = ingest_settings.model_copy(update={"promise_catalogue": tmp_path / "none.yaml"})
    with pytest.raises(CatalogueError) as caught:
        build_app(missing)
    assert caught.value.problems[0].startswith(f"the promise catalogue {tmp_path / 'none.yaml'}")
    assert "cannot be read" in caught.value.problems[1]

    invalid = tmp_path / "invalid.yaml"
    invalid.write_text(SHIPPED.read_text().replace("  web:\n", "  teleporter:\n", 1))
    with pytest.raises(CatalogueError) as caught:
        build_app(ingest_settings.model_copy(update={"promise_catalogue": invalid}))
    assert caught.value.problems[0].startswith(f"the promise catalogue {invalid}")
    assert any(
        p.startswith("events.teleporter: 'teleporter' is not one of the catalogue's touchpoints")
        for p in caught.value.problems
    ), caught.value.problems


def test_the_process_exits_2_naming_the_catalogue(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TOUCHPULSE_")},
        "TOUCHPULSE_DATABASE_URL": "postgresql://127.0.0.1:1/none",
        "TOUCHPULSE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "TOUCHPULSE_PROMISE_CATALOGUE": str(tmp_path / "none.yaml"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "touchpulse_ingest.main"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "touchpulse-ingest: the promise catalogue" in done.stderr
    assert "TOUCHPULSE_PROMISE_CATALOGUE" in done.stderr


def test_ingest_loads_the_pure_domain_and_not_scorings_storage() -> None:
    code = (
        "import sys, touchpulse_ingest.app, touchpulse_ingest.main;"
        "print(sorted(m for m in sys.modules if m.startswith('touchpulse_scoring')))"
    )
    loaded = subprocess.run(  # noqa: S603 - this interpreter, fixed arguments
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert "touchpulse_scoring.domain.catalogue" in loaded
    for storage in ("store", "engine", "service", "replay", "outbox"):
        assert f"'touchpulse_scoring.{storage}'" not in loaded, loaded

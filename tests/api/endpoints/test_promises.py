"""The promise catalogue's versions and the one-event preview, on the whole pipeline.

``POST /v1/promises/evaluate`` judges a matrix of events (kept, broken, critical, a
deadline opener and its fulfilment, one no promise judges) writing nothing; the numbers
asserted are worked out here from deploy/promises.yaml's targets and tolerances, not taken
from the code. Posted for real through ingest afterwards, the same events give the very
outcomes scoring records. Stored versions: listed, read back by ``?version=``, and
judged under on request; bad input is a 4xx naming its field.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.api.endpoints.conftest import NOW, World, _key, scored
from tests.ingest.conftest import running
from tests.scoring.pipeline.conftest import Pipeline, running_scoring
from touchpulse_api.app import build_app
from touchpulse_shared.auth import Scope
from touchpulse_shared.settings import Settings

SHIPPED = Path("deploy/promises.yaml")
TEXT = SHIPPED.read_text()
DOC = yaml.safe_load(TEXT)
PROMISES = {p["id"]: p for p in DOC["promises"]}
SOURCE = "billing-prod"
# Tables the preview must not write to.
TABLES = (
    "outcome",
    "processed_event",
    "deadline",
    "early_fulfilment",
    "journey_health",
    "touchpoint_health",
    "intervention",
    "kafka_outbox",
    "customer_profile",
    "catalogue_version",
)


def _event(
    name: str, touchpoint: str, event_type: str, *, journey: str | None = None, **measures: Any
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "event_id": f"pv-{name}",
        "source": SOURCE,
        "customer_id": f"PV-{name}",
        "touchpoint": touchpoint,
        "type": event_type,
        "occurred_at": (NOW - timedelta(minutes=30)).isoformat(),
        "measures": measures,
    }
    if journey is not None:
        item["journey_id"] = journey
        item["customer_id"] = "PV-journey"
    return item


def _numeric(promise_id: str, actual: float, segment: str | None = None) -> tuple[float, float]:
    """(gap, score) of ``actual`` under the shipped promise, by its definition: the gap is
    how far past the target, the score falls linearly to 0 at target ± tolerance."""
    promise = PROMISES[promise_id]
    terms = {"target": promise["expect"]["target"], "tolerance": promise["tolerance"]}
    terms |= promise.get("segments", {}).get(segment, {})
    op, target, tolerance = promise["expect"]["op"], terms["target"], terms["tolerance"]
    gap = max(actual - target if op == "<=" else target - actual, 0.0)
    return gap, max(0.0, 1.0 - gap / tolerance) if gap else 1.0


async def _counts(world: World) -> dict[str, object]:
    return {t: await world.pipeline.fetchval(f"SELECT count(*) FROM {t}") for t in TABLES}  # noqa: S608 - fixed names


async def _evaluate(world: World, body: dict[str, Any], who: str = "reader") -> dict[str, Any]:
    response = await world.api.post("/v1/promises/evaluate", json=body, headers=world.as_(who))
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _by_promise(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {o["promise_id"]: o for o in answer["outcomes"]}


async def test_the_preview_judges_as_scoring_does_and_writes_nothing(world: World) -> None:
    before = await _counts(world)
    live_hash = hashlib.sha256(TEXT.encode()).hexdigest()

    broken = _event("broken", "call_centre", "call.answered", wait_seconds=420.0)
    answer = await _evaluate(world, {"event": broken})
    assert (answer["catalogue_version"], answer["catalogue_hash"], answer["live"]) == (
        DOC["version"],
        live_hash,
        True,
    )
    assert answer["profile"] == {"segment": "standard", "customer_since": None, "source": "default"}
    call = _by_promise(answer)["call-answer-time"]
    gap, score = _numeric("call-answer-time", 420.0)
    assert (call["met"], call["gap"], call["score"], call["critical"]) == (False, gap, score, False)
    assert call["expected"]["target"] == PROMISES["call-answer-time"]["expect"]["target"]
    assert call["tolerance"] == PROMISES["call-answer-time"]["tolerance"]

    kept = _event("kept", "call_centre", "call.answered", wait_seconds=30.0)
    call = _by_promise(await _evaluate(world, {"event": kept}))["call-answer-time"]
    assert (call["met"], call["gap"], call["score"]) == (True, 0.0, 1.0)

    # A premium profile given in the request: the segment's own target and tolerance.
    premium = await _evaluate(
        world,
        {
            "event": _event("prem", "call_centre", "call.answered", wait_seconds=60.0),
            "profile": {"segment": "premium"},
        },
    )
    assert premium["profile"]["source"] == "given"
    call = _by_promise(premium)["call-answer-time"]
    gap, score = _numeric("call-answer-time", 60.0, "premium")
    assert (call["met"], call["gap"], call["score"]) == (False, gap, score)

    # Critical only at or beyond critical_at.
    critical = _event("crit", "survey", "survey.answered", csat=1.0)
    csat = _by_promise(await _evaluate(world, {"event": critical}))["survey-csat"]
    assert PROMISES["survey-csat"]["critical_at"] >= 1.0  # so a 1 is a critical breach
    assert csat["critical"] is True
    assert (csat["gap"], csat["score"]) == _numeric("survey-csat", 1.0)
    normal = _event("csat3", "survey", "survey.answered", csat=3.0)
    csat = _by_promise(await _evaluate(world, {"event": normal}))["survey-csat"]
    assert (csat["met"], csat["critical"], csat["severity"]) == (False, False, "normal")

    # A deadline opener starts its clocks; the fulfilling event names what it stops, but no
    # clock stands yet to judge it by.
    placed = _event("placed", "sales", "order.placed", journey="order-1") | {
        "occurred_at": (NOW - timedelta(days=4)).isoformat()
    }
    opens = (await _evaluate(world, {"event": placed}))["opens"]
    openers = {
        p["id"] for p in DOC["promises"] if p.get("deadline", {}).get("opened_by") == "order.placed"
    }
    assert {o["promise_id"] for o in opens} == openers
    delivery = next(o for o in opens if o["promise_id"] == "delivery-within-48h")
    hours = PROMISES["delivery-within-48h"]["deadline"]["within_hours"]
    assert datetime.fromisoformat(delivery["due_at"]) == (
        datetime.fromisoformat(placed["occurred_at"]) + timedelta(hours=hours)
    )
    completed = _event("done", "delivery", "delivery.completed", journey="order-1")
    early = await _evaluate(world, {"event": completed})
    assert {f["promise_id"]: f["judged"] for f in early["fulfils"]}["delivery-within-48h"] is False
    assert early["outcomes"] == []

    # An event no promise judges: accepted by the catalogue, judged by nothing, said so.
    unjudged = _event("none", "billing", "invoice.issued")
    nothing = await _evaluate(world, {"event": unjudged})
    assert (nothing["outcomes"], nothing["opens"], nothing["fulfils"]) == ([], [], [])
    assert "No promise" in nothing["note"]

    # A CloudEvent is judged the same.
    cloud = {
        "specversion": "1.0",
        "id": broken["event_id"],
        "source": SOURCE,
        "type": "call.answered",
        "time": broken["occurred_at"],
        "customerid": broken["customer_id"],
        "touchpoint": "call_centre",
        "data": {"measures": {"wait_seconds": 420.0}},
    }
    assert _by_promise(await _evaluate(world, {"event": cloud})) == _by_promise(answer)

    assert await _counts(world) == before, "the preview wrote something"

    # Now for real: scoring records what the preview said.
    matrix = [broken, kept, critical, normal, placed, unjudged]
    await world.post(matrix)
    await scored(world, len(matrix))
    # The clock now stands (opened four days ago): the delivery is judged against it, late
    # by the hours past within_hours, the score falling over the tolerance.
    late = await _evaluate(world, {"event": completed})
    assert {f["promise_id"]: f["judged"] for f in late["fulfils"]}["delivery-within-48h"] is True
    judged_late = _by_promise(late)["delivery-within-48h"]
    elapsed = (
        datetime.fromisoformat(completed["occurred_at"])
        - datetime.fromisoformat(placed["occurred_at"])
    ) / timedelta(hours=1)
    tolerance = PROMISES["delivery-within-48h"]["tolerance"]
    assert (judged_late["met"], judged_late["gap"], judged_late["tolerance"]) == (
        False,
        elapsed - hours,
        tolerance,
    )
    assert judged_late["score"] == max(0.0, 1 - (elapsed - hours) / tolerance)
    await world.post([completed])
    await scored(world, len(matrix) + 1)
    [recorded_delivery] = await world.pipeline.fetch(
        "SELECT met, gap, score, severity FROM outcome"
        " WHERE promise_id = 'delivery-within-48h' AND customer_id = $1",
        completed["customer_id"],
    )
    assert tuple(recorded_delivery) == (
        judged_late["met"],
        judged_late["gap"],
        judged_late["score"],
        judged_late["severity"],
    )
    for event in (broken, kept, critical, normal):
        preview = await _evaluate(world, {"event": event})
        rows = await world.pipeline.fetch(
            "SELECT promise_id, met, gap, score, severity, catalogue_version FROM outcome"
            " WHERE customer_id = $1",
            event["customer_id"],
        )
        recorded = {
            r["promise_id"]: (r["met"], r["gap"], r["score"], r["severity"], r["catalogue_version"])
            for r in rows
        }
        assert recorded == {
            o["promise_id"]: (o["met"], o["gap"], o["score"], o["severity"], DOC["version"])
            for o in preview["outcomes"]
        }
    due = await world.pipeline.fetchval(
        "SELECT due_at FROM deadline WHERE promise_id = 'delivery-within-48h'"
        " AND journey_key = 'order-1'"
    )
    assert due == datetime.fromisoformat(delivery["due_at"])


async def test_a_stored_version_is_listed_read_back_and_judged_under(world: World) -> None:
    reader = world.as_("reader")
    listed = await world.api.get("/v1/promises/versions", headers=reader)
    assert listed.status_code == 200, listed.text
    # Scoring recorded the catalogue it started on.
    [current] = listed.json()["items"]
    assert (current["version"], current["hash"], current["went_out_of_effect"]) == (
        DOC["version"],
        hashlib.sha256(TEXT.encode()).hexdigest(),
        None,
    )

    # An older catalogue, in effect the day before (as scoring would have kept it), whose
    # call-answer-time target was 120 s.
    old = TEXT.replace(f'version: "{DOC["version"]}"', 'version: "2026.01.1"', 1).replace(
        'expect: {op: "<=", target: 60}', 'expect: {op: "<=", target: 120}', 1
    )
    came = datetime.fromisoformat(current["came_into_effect"])
    await world.pipeline.fetchval(
        "INSERT INTO catalogue_version (version, content_hash, content, came_into_effect,"
        " went_out_of_effect) VALUES ('2026.01.1', $1, $2, $3, $4) RETURNING id",
        hashlib.sha256(old.encode()).hexdigest(),
        old,
        came - timedelta(days=1),
        came,
    )
    first = await world.api.get("/v1/promises/versions?limit=1", headers=reader)
    assert [i["version"] for i in first.json()["items"]] == [DOC["version"]]
    second = await world.api.get(
        "/v1/promises/versions", params={"cursor": first.json()["next_cursor"]}, headers=reader
    )
    assert [i["version"] for i in second.json()["items"]] == ["2026.01.1"]
    assert second.json()["next_cursor"] is None

    then = await world.api.get("/v1/promises", params={"version": "2026.01.1"}, headers=reader)
    assert then.status_code == 200, then.text
    promise = next(p for p in then.json()["promises"] if p["id"] == "call-answer-time")
    assert (then.json()["version"], promise["expect"]["target"]) == ("2026.01.1", 120)
    now = await world.api.get("/v1/promises", headers=reader)
    live = await world.api.get("/v1/promises", params={"version": DOC["version"]}, headers=reader)
    assert live.json() == now.json()

    event = _event("old", "call_centre", "call.answered", wait_seconds=100.0)
    judged = await _evaluate(world, {"event": event, "version": "2026.01.1"})
    assert (judged["catalogue_version"], judged["live"]) == ("2026.01.1", False)
    assert _by_promise(judged)["call-answer-time"]["met"] is True  # 100 s <= 120 s
    assert _by_promise(await _evaluate(world, {"event": event}))["call-answer-time"]["met"] is False

    unknown = await world.api.get("/v1/promises", params={"version": "1999.1"}, headers=reader)
    assert unknown.status_code == 404
    assert unknown.json()["errors"][0]["pointer"] == "/query/version"


async def test_scopes_and_hostile_input(world: World) -> None:
    before = await _counts(world)
    event = _event("h", "call_centre", "call.answered", wait_seconds=10.0)
    for method, path, body in (
        ("GET", "/v1/promises/versions", None),
        ("GET", "/v1/promises?version=x", None),
        ("POST", "/v1/promises/evaluate", {"event": event}),
    ):
        refused = await world.api.request(method, path, json=body, headers=world.as_("agent"))
        assert refused.status_code == 403, (path, refused.text)
        anonymous = await world.api.request(method, path, json=body)
        assert anonymous.status_code == 401, (path, anonymous.text)

    def raw(text: str) -> bytes:
        return text.encode("utf-8", "surrogatepass")

    base = (
        '{"event_id":"e1","source":"s","customer_id":"c","touchpoint":"call_centre",'
        '"type":"call.answered","occurred_at":"2026-01-01T00:00:00Z",'
        '"measures":{"wait_seconds":%s}%s}'
    )
    cases = [
        (
            raw('{"event":' + base % ("1", ',"journey_id":"\\ud800"') + "}"),
            "/body/event/journey_id",
        ),
        (raw('{"event":' + base % ("1e999", "") + "}"), "/body/event/measures/wait_seconds"),
        (
            raw('{"event":' + base % ("1" + "0" * 400, "") + "}"),
            "/body/event/measures/wait_seconds",
        ),
        (raw('{"event":' + base % ("1", "") + ',"version":"no-such"}'), "/body/version"),
        (raw('{"event":' + base % ("1", "") + ',"version":"\\udc00"}'), "/body/version"),
        (raw('{"event":' + base % ("true", "") + "}"), "/body/event/measures/wait_seconds"),
        (
            raw('{"event":' + base.replace("call_centre", "moon") % ("1", "") + "}"),
            "/body/event/touchpoint",
        ),
        (
            raw('{"event":' + base % ("1", "") + ',"profile":{"segment":"<script>"}}'),
            "/body/profile/segment",
        ),
        (raw('{"event":[1]}'), "/body/event"),
        # Deadlines scoring could not keep: past the calendar, or a due_at that is no time.
        (
            orjson.dumps(
                {
                    "event": _event("late", "sales", "order.placed", journey="j-9999")
                    | {"occurred_at": "9999-12-31T23:00:00Z"}
                }
            ),
            "/body/event",
        ),
        (
            orjson.dumps(
                {
                    "event": _event("slot", "delivery", "delivery.promised", journey="j-slot")
                    | {"attributes": {"due_at": "tomorrow"}}
                }
            ),
            "/body/event",
        ),
    ]
    for payload, pointer in cases:
        response = await world.api.post(
            "/v1/promises/evaluate",
            content=payload,
            headers={**world.as_("reader"), "Content-Type": "application/json"},
        )
        assert response.status_code == 422, (payload, response.text)
        pointers = [e["pointer"] for e in response.json()["errors"]]
        assert pointer in pointers, (payload, pointers)
    assert await _counts(world) == before


async def test_the_api_reports_the_catalogue_it_runs(world: World) -> None:
    ready = (await world.api.get("/readyz")).json()
    digest = hashlib.sha256(TEXT.encode()).hexdigest()
    assert (ready["catalogue_version"], ready["catalogue_hash"]) == (DOC["version"], digest)
    metrics = (await world.api.get("/metrics")).text
    shown = [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "touchpulse_api_catalogue_info"
    ]
    assert shown == [({"version": DOC["version"], "hash": digest}, 1.0)]


@pytest.fixture
async def edited_world(
    pipeline_settings: Settings, tmp_path: Path
) -> AsyncIterator[tuple[World, Path]]:
    """The whole pipeline on a catalogue file of the test's own, to edit."""
    path = tmp_path / "promises.yaml"
    path.write_text(TEXT)
    settings = pipeline_settings.model_copy(
        update={"auth_cache_s": 0, "promise_catalogue": path, "rate_limit_events_per_s": 10_000.0}
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
        keys = {"reader": await _key(url, "reader", [Scope.HEALTH_READ])}
        yield World(ingest, api, app, Pipeline(settings, url), keys), path


async def test_the_explanation_shows_the_terms_of_an_older_version(
    edited_world: tuple[World, Path],
) -> None:
    world, path = edited_world
    broken = _event("older", "call_centre", "call.answered", wait_seconds=420.0)
    await world.post([broken])
    await scored(world, 1)
    # The catalogue edited: a new version with another target for the same promise.
    edited = TEXT.replace(f'version: "{DOC["version"]}"', 'version: "2027.01.1"', 1).replace(
        'expect: {op: "<=", target: 60}', 'expect: {op: "<=", target: 45}', 1
    )
    path.write_text(edited)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    await world.pipeline.wait_for("SELECT count(*) FROM catalogue_version", 2)

    health = await world.api.get(
        f"/v1/customers/{broken['customer_id']}/health", headers=world.as_("reader")
    )
    assert health.status_code == 200, health.text
    call = next(e for e in health.json()["explanation"] if e["promise_id"] == "call-answer-time")
    # Judged under the shipped version: its terms, not the live 45 s.
    assert call["catalogue_version"] == DOC["version"]
    assert call["expected"]["target"] == PROMISES["call-answer-time"]["expect"]["target"]
    terms = call["judged_by"]
    assert terms["catalogue_version"] == DOC["version"]
    assert terms["promise"]["expect"] == PROMISES["call-answer-time"]["expect"]
    assert terms["promise"]["tolerance"] == PROMISES["call-answer-time"]["tolerance"]
    assert terms["promise"]["segments"] == PROMISES["call-answer-time"]["segments"]

    # An outcome of the version in effect carries no judged_by.
    fresh = _event("newer", "call_centre", "call.answered", wait_seconds=420.0)
    await world.post([fresh])
    await scored(world, 2)
    health = await world.api.get(
        f"/v1/customers/{fresh['customer_id']}/health", headers=world.as_("reader")
    )
    [call] = [e for e in health.json()["explanation"] if e["promise_id"] == "call-answer-time"]
    assert call["catalogue_version"] == "2027.01.1"
    assert call["expected"]["target"] == 45
    assert "judged_by" not in call

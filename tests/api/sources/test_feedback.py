"""A touchpoint team's feedback, end to end: two sources post good events, events refused at
the edge, a retry and an event no promise judges; records scoring cannot use are written
straight to the events topic. The quality read and the dead-letter list say exactly that,
each key sees only its own source, an admin every one, and the CLI shows the same over HTTP.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import uvicorn

from tests.api.sources.conftest import BILLING, UNMATCHED, WEB, Feeds
from tests.scoring.pipeline.conftest import SETTLE_S
from touchpulse_shared.contract import EVENT_ADAPTER, encode_record
from touchpulse_shared.stack.procs import free_port

NOW = datetime.now(UTC).replace(microsecond=0)


def event(n: int, source: str, **changes: Any) -> dict[str, Any]:
    return {
        "event_id": f"{source}-{n}",
        "source": source,
        "customer_id": f"C-{n % 4}",
        "touchpoint": "call_centre",
        "type": "call.answered",
        "occurred_at": (NOW - timedelta(minutes=30 - n)).isoformat(),
        "measures": {"wait_seconds": 20 + n},
        **changes,
    }


async def post(feeds: Feeds, who: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    response = await feeds.ingest.http.post(
        "/v1/events/batch", json={"events": events}, headers=feeds.as_(who)
    )
    assert response.status_code == 202, response.text
    answer: dict[str, Any] = response.json()
    return answer


def raw_records() -> list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]:
    """Three records scoring must dead-letter: billing's not JSON (its ce_ headers name it),
    web's an invalid event, and one that names no source at all (admin keys only)."""
    billing = encode_record(
        EVENT_ADAPTER.validate_python(event(90, BILLING)), producer="ingest", received_at=NOW
    )
    web = encode_record(
        EVENT_ADAPTER.validate_python(event(91, WEB)), producer="ingest", received_at=NOW
    )
    broken = orjson.loads(web.value)
    broken["measures"] = {"wait_seconds": "fast"}
    return [
        (billing.key, b"{not json", billing.headers),
        (web.key, orjson.dumps(broken), web.headers),
        (b"C-1", b"\x00\xff<script>alert(1)</script>", []),
    ]


async def quality(feeds: Feeds, who: str, source: str, **params: str) -> Any:
    return await feeds.api.get(
        f"/v1/sources/{source}/quality", params=params, headers=feeds.as_(who)
    )


async def settled(feeds: Feeds, who: str, source: str, rejected: int) -> dict[str, Any]:
    """The quality read once ingest's counts are flushed (every 0.2 s here)."""
    answer: dict[str, Any] = {}
    async with asyncio.timeout(SETTLE_S):
        while answer.get("rejected", {}).get("total") != rejected:
            response = await quality(feeds, who, source)
            assert response.status_code == 200, response.text
            answer = response.json()
            await asyncio.sleep(0.1)
    return answer


async def test_quality_and_dead_letters_say_what_happened_to_each_source(feeds: Feeds) -> None:
    started = datetime.now(UTC)
    billing = [event(n, BILLING) for n in range(5)]
    billing.append(event(5, BILLING, touchpoint="web", type=UNMATCHED, measures={}))
    refused = [
        event(6, BILLING, customer_id=None),  # invalid: the contract refuses it
        event(7, BILLING, touchpoint="hologram"),  # unknown_touchpoint: the catalogue does
    ]
    answer = await post(feeds, BILLING, billing + refused)
    assert (answer["accepted"], answer["rejected"]) == (6, 2)
    await post(feeds, BILLING, [billing[0]])  # a retry: the same event id
    not_json = await feeds.ingest.http.post(
        "/v1/events",
        content=b'{"event_id": ',
        headers={**feeds.as_(BILLING), "Content-Type": "application/json"},
    )
    assert not_json.status_code == 400, not_json.text  # counted as invalid too
    web = [event(n, WEB) for n in range(3)]
    old = event(3, WEB, occurred_at=(NOW - timedelta(days=100)).isoformat())
    assert (await post(feeds, WEB, [*web, old]))["rejected"] == 1
    await feeds.pipeline.produce([], raw=raw_records())

    await feeds.pipeline.wait_for("SELECT count(*) FROM processed_event", 6 + 3)
    await feeds.pipeline.wait_for("SELECT count(*) FROM dead_letter", 3)
    await feeds.pipeline.wait_for(
        "SELECT coalesce(sum(next_offset), 0) FROM consumer_offset", 6 + 1 + 3 + 3
    )

    ours = await settled(feeds, BILLING, BILLING, rejected=3)
    assert ours["accepted"] == 6
    assert ours["duplicates"] == 1
    assert ours["rejected"] == {"total": 3, "by_reason": {"invalid": 2, "unknown_touchpoint": 1}}
    assert ours["dead_lettered"] == {"total": 1, "by_reason": {"not_json": 1}}
    assert ours["unmatched"] == {"total": 1, "by_type": {UNMATCHED: 1}}
    last = datetime.fromisoformat(ours["last_event_at"])
    assert started - timedelta(seconds=1) <= last <= datetime.now(UTC)
    since, until = datetime.fromisoformat(ours["since"]), datetime.fromisoformat(ours["until"])
    assert (since.minute, since.second, until.minute, until.second) == (0, 0, 0, 0)
    assert timedelta(hours=24) <= until - since <= timedelta(hours=25)

    theirs = await settled(feeds, "admin", WEB, rejected=1)
    assert (theirs["accepted"], theirs["duplicates"]) == (3, 0)
    assert theirs["rejected"]["by_reason"] == {"too_old": 1}
    assert theirs["dead_lettered"]["by_reason"] == {"invalid_event": 1}
    assert theirs["unmatched"] == {"total": 0, "by_type": {}}
    assert (await quality(feeds, WEB, WEB)).json() == theirs

    # A window before anything happened holds nothing; the last event stays unknown there.
    before = await quality(
        feeds, BILLING, BILLING, until=(started - timedelta(hours=2)).isoformat()
    )
    assert before.status_code == 200, before.text
    assert (before.json()["accepted"], before.json()["last_event_at"]) == (0, None)

    # Dead letters: a source's key lists its own, with the reason, detail and event id.
    listed = await feeds.api.get("/v1/dead-letters", headers=feeds.as_(BILLING))
    assert listed.status_code == 200, listed.text
    [letter] = listed.json()["items"]
    assert (letter["source"], letter["reason"], letter["event_id"]) == (
        BILLING,
        "not_json",
        f"{BILLING}-90",
    )
    assert letter["event_type"] == "call.answered"
    assert letter["topic"] == feeds.settings.events_topic
    assert letter["detail"].startswith("the value is not JSON")
    web_letters = (await feeds.api.get("/v1/dead-letters", headers=feeds.as_(WEB))).json()
    assert [i["reason"] for i in web_letters["items"]] == ["invalid_event"]
    assert "wait_seconds" in web_letters["items"][0]["detail"]

    everything = await pages(feeds, "admin", {"limit": "1"})
    assert sorted(i["reason"] for i in everything) == [
        "foreign_producer",
        "invalid_event",
        "not_json",
    ]
    nameless = next(i for i in everything if i["reason"] == "foreign_producer")
    assert (nameless["source"], nameless["event_id"]) == (None, None)
    order = [(i["dead_lettered_at"], i["topic"], i["partition"], i["offset"]) for i in everything]
    assert order == sorted(order, reverse=True)
    by_reason = await feeds.api.get(
        "/v1/dead-letters", params={"reason": "invalid_event"}, headers=feeds.as_("admin")
    )
    assert [i["source"] for i in by_reason.json()["items"]] == [WEB]
    by_source = await feeds.api.get(
        "/v1/dead-letters", params={"source": BILLING}, headers=feeds.as_("admin")
    )
    assert [i["reason"] for i in by_source.json()["items"]] == ["not_json"]
    later = await feeds.api.get(
        "/v1/dead-letters",
        params={"since": (datetime.now(UTC) + timedelta(minutes=1)).isoformat()},
        headers=feeds.as_("admin"),
    )
    assert later.json()["items"] == []

    await _refusals(feeds)
    await _cli(feeds)


async def pages(feeds: Feeds, who: str, params: dict[str, str]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(20):
        query = params if cursor is None else {**params, "cursor": cursor}
        page = await feeds.api.get("/v1/dead-letters", params=query, headers=feeds.as_(who))
        assert page.status_code == 200, page.text
        items.extend(page.json()["items"])
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("the pages never ended")


async def _refusals(feeds: Feeds) -> None:
    """Another source's feedback is refused to a bound key (403, said to be the key's
    limit); a CRM key has no business here; bad windows and cursors name their field."""
    for path, params in (
        (f"/v1/sources/{WEB}/quality", {}),
        ("/v1/dead-letters", {"source": WEB}),
        (f"/v1/sources/{'nobody-' * 3}/quality", {}),  # existing or not: the same answer
    ):
        denied = await feeds.api.get(path, params=params, headers=feeds.as_(BILLING))
        assert denied.status_code == 403, denied.text
        assert f"its own source '{BILLING}'" in denied.json()["detail"]
    for path in (f"/v1/sources/{BILLING}/quality", "/v1/dead-letters"):
        crm = await feeds.api.get(path, headers=feeds.as_("reader"))
        assert crm.status_code == 403, crm.text
        assert "admin or events:write" in crm.json()["detail"]
        nobody = await feeds.api.get(path)
        assert nobody.status_code == 401, nobody.text

    inverted = await quality(
        feeds, BILLING, BILLING, since=NOW.isoformat(), until=(NOW - timedelta(hours=1)).isoformat()
    )
    assert inverted.status_code == 422, inverted.text
    assert [e["pointer"] for e in inverted.json()["errors"]] == ["/query/since"]
    for field, value in (
        ("since", "yesterday"),
        ("until", "2026-02-30T00:00:00Z"),
        ("since", "2026-01-01T00:00:00"),  # no offset
        ("until", "9999-99-99T00:00:00Z"),
    ):
        odd = await quality(feeds, BILLING, BILLING, **{field: value})
        assert odd.status_code == 422, (field, value, odd.text)
        assert [e["pointer"] for e in odd.json()["errors"]] == [f"/query/{field}"]
    # The calendar's ends are windows too, not server errors.
    edges = await quality(
        feeds, "admin", BILLING, since="0001-01-01T00:00:00+01:00", until="9999-12-31T23:59:59Z"
    )
    assert edges.status_code == 200, edges.text
    assert edges.json()["accepted"] == 6
    # Hostile source names: refused by field, or read as the text they are.
    long = await quality(feeds, "admin", "s" * 257)
    assert long.status_code == 422, long.text
    assert [e["pointer"] for e in long.json()["errors"]] == ["/path/source"]
    tabbed = await quality(feeds, "admin", "a%09b")
    assert tabbed.status_code == 422, tabbed.text
    assert (await quality(feeds, "admin", "a%00b")).status_code == 400
    slashed = await quality(feeds, "admin", "%2Fbilling%2Fprod")  # a URI-reference source
    assert slashed.status_code == 200, slashed.text
    assert (slashed.json()["source"], slashed.json()["accepted"]) == ("/billing/prod", 0)
    scripted = await quality(feeds, "admin", "<script>alert(1)</script>")
    assert scripted.status_code == 200, scripted.text
    assert scripted.headers["content-type"] == "application/json"
    for cursor in ("forged", "eyJ4Ijox.AAAAAAAAAAAAAAAAAAAAAA", "x" * 2049):
        bad = await feeds.api.get(
            "/v1/dead-letters", params={"cursor": cursor}, headers=feeds.as_("admin")
        )
        assert bad.status_code in (400, 422), bad.text
        assert [e["pointer"] for e in bad.json()["errors"]] == ["/query/cursor"]
    for params in ({"reason": "<script>"}, {"source": "two words"}, {"limit": "0"}):
        bad = await feeds.api.get("/v1/dead-letters", params=params, headers=feeds.as_("admin"))
        assert bad.status_code == 422, bad.text
        assert [e["pointer"] for e in bad.json()["errors"]] == [f"/query/{next(iter(params))}"]


async def _cli(feeds: Feeds) -> None:
    """`touchpulse sources …` as a team runs it: a real process, the api over real HTTP."""
    server = uvicorn.Server(
        uvicorn.Config(
            feeds.app, host="127.0.0.1", port=free_port(), lifespan="off", log_level="warning"
        )
    )
    serving = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(SETTLE_S):
            while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, no event
                await asyncio.sleep(0.05)
        url = f"http://127.0.0.1:{server.config.port}"
        code, out, err = await touchpulse(url, feeds.keys[BILLING], "quality", BILLING, "--json")
        assert code == 0, err
        shown = orjson.loads(out)
        assert (shown["accepted"], shown["rejected"]["total"]) == (6, 3)
        code, out, err = await touchpulse(url, feeds.keys[BILLING], "quality", BILLING)
        assert code == 0, err
        assert "dead-lettered         1   not_json 1" in out
        assert f"unmatched             1   {UNMATCHED} 1" in out
        code, out, err = await touchpulse(url, feeds.keys["admin"], "dead-letters")
        assert code == 0, err
        assert out.count("\n    ") == 3  # three dead letters, each with its detail
        assert "foreign_producer  (no source) (no event id)" in out
        code, out, err = await touchpulse(url, feeds.keys[BILLING], "quality", WEB)
        assert code == 1
        assert out == ""
        assert (
            err.strip() == f"touchpulse: 403 This API key may only read its own source '{BILLING}'"
        )
    finally:
        server.should_exit = True
        await serving


async def touchpulse(url: str, key: str, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHPULSE_")}
    env |= {"TOUCHPULSE_API_URL": url, "TOUCHPULSE_API_KEY": key, "COLUMNS": "200"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "touchpulse_shared.cli",
        "sources",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    async with asyncio.timeout(SETTLE_S):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()

"""``touchpulse catalogue backtest`` on a real stack, after a simulator run scored live.

The simulator's journeys (profiles in PostgreSQL, events on the topic) are scored by the
real scoring service; then the command re-judges the topic. What it says is checked
against what live scoring stored, recomputed here from the outcome rows with the brief's
formulas (``tests/scoring/pipeline/ledger.recompute``), not with the back-test's code:

- a candidate identical to live: an empty report (exit 0), every rate the same on both
  sides, and the live side's counts equal to the stored outcomes, promise by promise;
- a candidate tightening the call-answer promise: its breaches are the stored answers
  slower than the new targets, the customers' bands are those of the stored outcomes
  re-scored under the new terms, and cases open for customers the tightening breaks;
- live state unchanged: every scoring table and the broker's consumer groups the same
  before and after.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from tests.scoring.pipeline.conftest import Pipeline, running_scoring
from tests.scoring.pipeline.ledger import CATALOGUE, recompute
from touchpulse_shared.contract import EVENT_ADAPTER, ExperienceEventV1
from touchpulse_shared.simulator import Simulator, SimulatorConfig
from touchpulse_shared.stack.services import settings_env

REPO = Path(__file__).resolve().parents[3]
PROMISE = "call-answer-time"
#: The tightened terms: answered within 5 s (premium: 3 s), nothing left of the score
#: 10 s later (not 9 minutes), and the promise weighs 10 instead of 1.
TARGETS = {"standard": 5.0, "business": 5.0, "premium": 3.0}
TOLERANCES = {"standard": 10.0, "business": 10.0, "premium": 10.0}
WEIGHT = 10.0
#: Every table scoring writes, and the order that makes a dump comparable.
TABLES = (
    "outcome",
    "touchpoint_health",
    "journey_health",
    "journey_health_history",
    "deadline",
    "early_fulfilment",
    "intervention",
    "processed_event",
    "consumer_offset",
    "customer_profile",
    "kafka_outbox",
    "webhook_outbox",
)


def _tightened(text: str) -> str:
    before = (
        '    expect: {op: "<=", target: 60}\n'
        "    tolerance: 540            # 10 minutes on hold counts as a total failure\n"
        "    weight: 1.0\n"
    )
    assert before in text
    text = text.replace(
        before, '    expect: {op: "<=", target: 5}\n    tolerance: 10\n    weight: 10.0\n', 1
    )
    premium = "      premium: {target: 30, tolerance: 270}"
    assert premium in text
    text = text.replace(premium, "      premium: {target: 3, tolerance: 10}", 1)
    return text.replace('version: "', 'version: "tight-', 1)


def _backtest(pipeline: Pipeline, candidate: Path) -> tuple[int, dict[str, Any], str]:
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [
            sys.executable,
            "-m",
            "touchpulse_shared.cli",
            "catalogue",
            "backtest",
            "--json",
            str(candidate),
        ],
        env={**os.environ, **settings_env(pipeline.settings), "TOUCHPULSE_LOG_LEVEL": "WARNING"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode in (0, 1), done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stdout.startswith("{"), done.stdout[-2000:] + done.stderr[-2000:]
    return done.returncode, json.loads(done.stdout), done.stderr


async def _dump(pipeline: Pipeline) -> dict[str, str]:
    found = {}
    for table in TABLES:
        found[table] = str(
            await pipeline.fetchval(
                "SELECT count(*) || ':' ||"  # noqa: S608 - our own table names
                f" coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {table} t"
            )
        )
    return found


async def _groups(pipeline: Pipeline) -> dict[str, dict[Any, int]]:
    """Every consumer group's committed offsets on this test's events topic (the broker is
    shared with other tests, whose groups come and go)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=pipeline.settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        names = {g[0] for g in await admin.list_consumer_groups()}
        found = {}
        for name in sorted(names):
            offsets = await admin.list_consumer_group_offsets(name)
            mine = {
                tp: meta.offset
                for tp, meta in offsets.items()
                if tp.topic == pipeline.settings.events_topic
            }
            if mine:
                found[name] = mine
        return found
    finally:
        await admin.close()


async def _simulated_run(pipeline: Pipeline) -> list[ExperienceEventV1]:
    # A day ago: every delivery clock of the run has run out by now, so the live sweep and
    # the back-test expire the same deadlines.
    sim = Simulator(
        SimulatorConfig(seed=16, customers=50, bad_rate=0.0), datetime.now(UTC) - timedelta(days=1)
    )
    events = [EVENT_ADAPTER.validate_python(e) for e in sim.events(1200)]
    conn_rows = [
        (c, p["segment"], date.fromisoformat(p["customer_since"]), p["value"], p["reach"])
        for c, p in sim.profiles()
    ]
    for row in conn_rows:
        await pipeline.fetchval(
            """
            INSERT INTO customer_profile
                (customer_id, segment, customer_since, value, reach, created_at, updated_at)
            VALUES ($1, $2, $3, $4, $5, now(), now())
            """,
            *row,
        )
    async with running_scoring(pipeline.settings):
        await pipeline.produce(events)
        await pipeline.wait_for(
            "SELECT coalesce(sum(next_offset), 0) FROM consumer_offset", len(events)
        )
        await pipeline.wait_for(
            "SELECT count(*) FROM deadline WHERE state = 'open' AND due_at < now()", 0
        )
        await pipeline.wait_for("SELECT count(*) FROM kafka_outbox", 0)
    return events


def _is_new(since: date | None, at: datetime) -> bool:
    return since is not None and (at.date() - since).days < CATALOGUE.policy.new_customer_days


async def test_backtest_agrees_with_the_stored_outcomes_and_changes_nothing(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    await _simulated_run(pipeline)
    before = await _dump(pipeline)
    groups_before = await _groups(pipeline)
    outcomes = await pipeline.fetch(
        "SELECT *, CASE WHEN jsonb_typeof(actual) = 'number' THEN (actual #>> '{}')::float8"
        " END AS actual_number FROM outcome"
    )
    profiles = {r["customer_id"]: r for r in await pipeline.fetch("SELECT * FROM customer_profile")}
    journeys = {r["customer_id"]: r for r in await pipeline.fetch("SELECT * FROM journey_health")}

    # --- identical: nothing differs, and the live side is what live scoring stored --------
    same = tmp_path / "same.yaml"
    same.write_text((REPO / "deploy/promises.yaml").read_text())
    code, report, progress = _backtest(pipeline, same)
    assert code == 0
    assert "re-judging" in progress
    assert report["empty"] is True
    assert report["most_affected"] == []
    assert report["customers_changed"] == 0
    assert report["interventions"]["would_open"] == []
    for row in report["promises"]:
        assert json.dumps(row["live"], sort_keys=True) == json.dumps(
            row["candidate"], sort_keys=True
        )
    stored = Counter(o["promise_id"] for o in outcomes)
    broken = Counter(o["promise_id"] for o in outcomes if not o["met"])
    totals = {r["promise_id"]: r["live"] for r in report["promises"] if r["segment"] == "*"}
    assert {p: t["outcomes"] for p, t in totals.items()} == dict(stored)
    assert {p: t["breaches"] for p, t in totals.items() if t["breaches"]} == dict(broken)
    live_bands = Counter(j["band"] or "none" for j in journeys.values())
    assert {b: sum(row.values()) for b, row in report["bands"].items() if sum(row.values())} == (
        dict(live_bands)
    )
    # Cases are re-decided event by event in time order; live decided batch by batch in
    # arrival order, with the sweep expiring clocks by the wall clock: the same outcomes,
    # not always the same moments of decision, so the counts are close, not equal.
    cases = await pipeline.fetchval("SELECT count(*) FROM intervention")
    assert isinstance(cases, int)
    assert cases > 0
    assert report["interventions"]["opened_live"] > 0

    # --- tightened: recomputed from the stored answers under the new terms ---------------
    tight = tmp_path / "tight.yaml"
    tight.write_text(_tightened((REPO / "deploy/promises.yaml").read_text()))
    code, report, _ = _backtest(pipeline, tight)
    assert code == 1
    assert report["empty"] is False
    answers = [o for o in outcomes if o["promise_id"] == PROMISE]
    assert answers, "the simulator answered calls"
    rescored = []
    newly_broken: set[str] = set()
    for o in outcomes:
        row = dict(o)
        if o["promise_id"] == PROMISE:
            segment = profiles[o["customer_id"]]["segment"]
            gap = max(0.0, o["actual_number"] - TARGETS[segment])
            new = _is_new(profiles[o["customer_id"]]["customer_since"], o["occurred_at"])
            row["met"] = gap == 0
            row["score"] = max(0.0, 1.0 - gap / TOLERANCES[segment]) if gap else 1.0
            row["weight"] = WEIGHT * (
                CATALOGUE.policy.new_customer_breach_weight if new and gap else 1.0
            )
            if gap and o["met"]:
                newly_broken.add(o["customer_id"])
        rescored.append(row)
    by_segment: dict[str, Counter[str]] = {}
    for row, o in zip(rescored, outcomes, strict=True):
        if o["promise_id"] == PROMISE:
            seg = by_segment.setdefault(profiles[o["customer_id"]]["segment"], Counter())
            seg["outcomes"] += 1
            seg["live"] += not o["met"]
            seg["candidate"] += not row["met"]
    rows = {(r["promise_id"], r["segment"]): r for r in report["promises"]}
    total = rows[(PROMISE, "*")]
    assert total["live"]["breaches"] == sum(1 for o in answers if not o["met"])
    assert total["candidate"]["breaches"] == sum(s["candidate"] for s in by_segment.values())
    assert total["candidate"]["breaches"] > total["live"]["breaches"]
    for segment, counted in by_segment.items():
        assert rows[(PROMISE, segment)]["live"]["outcomes"] == counted["outcomes"]
        assert rows[(PROMISE, segment)]["live"]["breaches"] == counted["live"]
        assert rows[(PROMISE, segment)]["candidate"]["breaches"] == counted["candidate"]
    for (promise, _), row in rows.items():
        if promise != PROMISE:
            assert row["live"] == row["candidate"], promise

    scores = recompute(rescored, {c: j["as_of"] for c, j in journeys.items()})
    bands = CATALOGUE.policy.bands
    expected: dict[str, Counter[str]] = {}
    for customer, journey in journeys.items():
        after = scores.get(customer)
        expected.setdefault(journey["band"] or "none", Counter())[
            "none" if after is None else bands.of(after)
        ] += 1
    for live_band, row in report["bands"].items():
        assert {b: n for b, n in row.items() if n} == dict(expected.get(live_band, {})), live_band
    to_red = sum(n for b, n in report["bands"]["amber"].items() if b == "red") + sum(
        n for b, n in report["bands"]["green"].items() if b == "red"
    )
    assert to_red > 0, report["bands"]

    would_open = report["interventions"]["would_open"]
    assert would_open, "a tightened promise opens cases"
    assert set(would_open) <= newly_broken
    assert report["interventions"]["would_not_open"] == []
    assert report["interventions"]["opened_candidate"] > report["interventions"]["opened_live"]
    affected = report["most_affected"]
    assert affected
    # The most affected are those the tightening breaks (a kept answer weighing 10 moves
    # others a little too).
    assert affected[0]["customer_id"] in newly_broken
    assert all(c["candidate"]["breaches"] >= c["live"]["breaches"] for c in affected)

    # --- nothing live moved ------------------------------------------------------------
    assert await _dump(pipeline) == before
    committed = await _groups(pipeline)
    assert committed == groups_before
    assert list(committed) == [pipeline.settings.scoring_group_id]

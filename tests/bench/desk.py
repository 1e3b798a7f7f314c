"""``make bench-desk``: the action desk's queue and customer pages, measured beside a bare
route in one run, on a database holding 10,000 open interventions and 100,000 customers.

The database is seeded through production code, not hand-written SQL: each customer's
events are judged by scoring's pure ``evaluate`` against the real catalogue, and the
outcomes, touchpoint health, journey rows (with a history point) and interventions are
written by scoring's own store functions and the intervention table's writes; profiles
by the api's ``write_profile``. Touchpoint health is the outcomes' weighted mean and the journey
score its weakest touchpoint (the shape of scoring's rows; the exact arithmetic does not
change what the pages read). Customers ``D-000000``.. the first ``open_interventions``
of them have an open intervention (a critical survey and a slow call), the rest only
kept promises. A desk session is opened for a lead with the desk's own ``open_session``.

Then ``touchpulse-api`` runs as its own process and, in pairs, alternating, one
connection each back to back (closed loop, so a request's latency is the server's time
plus loopback): ``GET /desk?scope=all`` (all open cases, highest priority first),
``GET /desk/customers/{id}`` for random customers with an open case, and the bare
Starlette route (``tests/bench/bare_app.py``) on the same uvicorn set-up, the ceiling.

Run ``python -m tests.bench.desk [--quick]``; the result is printed and written to
``.touchpulse/bench/desk-<UTC time>.json``. Speed is reported, never asserted.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from random import Random
from typing import Any

import asyncpg

from tests.bench.common import (
    KERNEL_IRQ,
    LOOPBACK,
    CpuMeter,
    Figure,
    HttpConnection,
    LoadResult,
    Server,
    Site,
    Spread,
    close_report,
    closed_loop,
    cpu_cells,
    figure_table,
    latency_summary,
    machine,
    ok_requests,
    open_site,
    peak_rss_bytes,
    ratio,
    raw_calls,
    raw_request,
    sayer,
    stage_main,
    table,
    uvicorn_argv,
    versions,
)
from touchpulse_api.desk.sessions import open_session
from touchpulse_api.queries import write_profile
from touchpulse_scoring.catalogue_source import CatalogueSource
from touchpulse_scoring.domain.health import TouchpointHealth
from touchpulse_scoring.domain.interventions import (
    Gap,
    Intervention,
    InterventionState,
    Trigger,
    TriggerKind,
)
from touchpulse_scoring.domain.outcomes import Outcome, evaluate
from touchpulse_scoring.domain.profile import CustomerProfile
from touchpulse_scoring.intervention_table import write_interventions
from touchpulse_scoring.store import JourneyRow, write_health, write_journeys, write_outcomes
from touchpulse_shared.contract import ExperienceEventV1
from touchpulse_shared.db.migrate import migrate_url
from touchpulse_shared.people import Role, create_person
from touchpulse_shared.settings import Settings
from touchpulse_shared.stack.procs import free_port
from touchpulse_shared.stack.services import settings_env

say = sayer("bench desk")

REPO = Path(__file__).resolve().parents[2]
SEED = 20_261_205
SOURCE = "bench-desk"
#: The desk's session cookie (services/api/touchpulse_api/desk).
SESSION_COOKIE = "touchpulse_desk"
#: Customers written per transaction while seeding (one JSON array per store call).
SEED_BATCH = 2_000
#: Distinct customer-page requests, sent in turn.
CUSTOMER_REQUESTS = 2_000

FIGURE_KEYS = (
    "queue_p50_vs_bare",
    "queue_p99_vs_bare",
    "customer_p50_vs_bare",
    "customer_p99_vs_bare",
)
QUEUE, CUSTOMER, BARE = "queue", "customer", "bare"
SHARED_CORES_NOTE = (
    "This process (the seeding and the load generator) shares the machine's {nproc} cores "
    "with the api and PostgreSQL; one connection per phase, so the generator waits on the "
    "server rather than competing with it."
)


@dataclass(frozen=True)
class Plan:
    name: str
    customers: int
    open_interventions: int
    pairs: int
    warmup_s: float
    duration_s: float


FULL = Plan(
    name="full", customers=100_000, open_interventions=10_000, pairs=2, warmup_s=1.0, duration_s=8.0
)
QUICK = Plan(
    name="quick", customers=5_000, open_interventions=500, pairs=1, warmup_s=0.5, duration_s=1.5
)


def customer_id(n: int) -> str:
    return f"D-{n:06d}"


# --- seeding through production code ----------------------------------------------------------


async def seed(url: str, plan: Plan, catalogue: CatalogueSource, topic: str) -> dict[str, int]:
    """The customers, their state and the open cases; the counts written."""
    rng = Random(SEED)
    now = datetime.now(UTC)
    cat = catalogue()
    conn = await asyncpg.connect(url)
    counts = {"customers": 0, "outcomes": 0, "open_interventions": 0, "profiles": 0}
    try:
        for start in range(0, plan.customers, SEED_BATCH):
            outcomes: list[Outcome] = []
            health: list[tuple[str, str, TouchpointHealth]] = []
            journeys: list[JourneyRow] = []
            cases: list[Intervention] = []
            profiles: list[tuple[str, CustomerProfile]] = []
            for n in range(start, min(start + SEED_BATCH, plan.customers)):
                cid = customer_id(n)
                with_case = n < plan.open_interventions
                at = now - timedelta(days=rng.uniform(1, 30))
                events = [_event(cid, 1, "call_centre", "call.answered", at, wait_seconds=30)]
                if with_case:
                    profiles.append(
                        (
                            cid,
                            CustomerProfile(
                                segment=rng.choice(("standard", "premium")),
                                customer_since=date(2025, 1, 1) + timedelta(days=n % 600),
                                value=round(rng.uniform(0.5, 3.0), 2),
                                reach=round(rng.uniform(0, 50), 1),
                            ),
                        )
                    )
                    events += [
                        _event(cid, 2, "call_centre", "call.answered", at, wait_seconds=700),
                        _event(cid, 3, "survey", "survey.answered", at, csat=1, nps=0),
                    ]
                judged = [o for e in events for o in evaluate(e, cat, CustomerProfile())]
                outcomes += judged
                by_touchpoint: dict[str, list[Outcome]] = {}
                for o in judged:
                    by_touchpoint.setdefault(o.touchpoint, []).append(o)
                for touchpoint, each in by_touchpoint.items():
                    weight = sum(o.weight for o in each)
                    health.append(
                        (
                            cid,
                            touchpoint,
                            TouchpointHealth(
                                s=sum(o.score * o.weight for o in each),
                                w=weight,
                                t_ref=at,
                                outcomes=len(each),
                            ),
                        )
                    )
                score = 100.0 * min(
                    sum(o.score * o.weight for o in each) / sum(o.weight for o in each)
                    for each in by_touchpoint.values()
                )
                band = "red" if score < 50 else "amber" if score < 75 else "green"
                weakest = min(by_touchpoint, key=lambda t: min(o.score for o in by_touchpoint[t]))
                journeys.append(JourneyRow(cid, score, band, weakest, at, changed=True))
                if with_case:
                    broken = [o for o in judged if not o.met]
                    actions = tuple(
                        dict.fromkeys(
                            a
                            for a in (
                                getattr(cat.promise(o.promise_id), "action", None) for o in broken
                            )
                            if a
                        )
                    )
                    cases.append(
                        Intervention(
                            intervention_id=str(uuid.UUID(int=rng.getrandbits(128))),
                            customer_id=cid,
                            state=InterventionState.OPEN,
                            triggers=(Trigger(TriggerKind.CRITICAL_BREACH, "survey score 1 <= 2"),),
                            gaps=tuple(
                                Gap.of(o, getattr(cat.promise(o.promise_id), "action", None))
                                for o in broken
                            ),
                            actions=actions,
                            priority=round(rng.uniform(1, 200), 3),
                            threshold=50.0,
                            health_at_open=score,
                            opened_at=at,
                            updated_at=at,
                        )
                    )
            async with conn.transaction():
                await write_outcomes(conn, outcomes)
                await write_health(conn, health, now)
                await write_journeys(conn, journeys, now)
                await write_interventions(conn, cases)
                for cid, profile in profiles:
                    await write_profile(
                        conn,
                        cid,
                        segment=profile.segment,
                        customer_since=profile.customer_since,
                        value=profile.value,
                        reach=profile.reach,
                        topic=topic,
                    )
        # What the pages will read, counted in the database rather than in what was sent.
        for name, query in (
            ("customers", "SELECT count(*) FROM journey_health"),
            ("outcomes", "SELECT count(*) FROM outcome"),
            ("open_interventions", "SELECT count(*) FROM intervention WHERE state = 'open'"),
            ("profiles", "SELECT count(*) FROM customer_profile"),
        ):
            counts[name] = await conn.fetchval(query)
    finally:
        await conn.close()
    return counts


def _event(
    cid: str, i: int, touchpoint: str, kind: str, at: datetime, **measures: Any
) -> ExperienceEventV1:
    return ExperienceEventV1.model_validate(
        {
            "event_id": f"{cid}-{i}",
            "source": SOURCE,
            "customer_id": cid,
            "touchpoint": touchpoint,
            "type": kind,
            "occurred_at": at.isoformat(),
            "measures": measures,
        }
    )


async def lead_session(url: str) -> str:
    """A signed-in lead's session token, opened by the desk's own session code."""
    conn = await asyncpg.connect(url)
    try:
        now = datetime.now(UTC)
        person = await create_person(
            conn,
            login="bench-lead",
            display_name="Bench Lead",
            role=Role.LEAD,
            password="bench-desk-password-" + uuid.uuid4().hex,
            now=now,
        )
        token, _ = await open_session(
            conn, person, now=now, absolute=timedelta(hours=12), replaces=None
        )
        return token
    finally:
        await conn.close()


# --- measuring ----------------------------------------------------------------------------------


@dataclass
class Pair:
    queue: LoadResult
    customer: LoadResult
    bare: LoadResult


def measure(
    site: Site, plan: Plan, api: Server, bare: Server, *, token: str, postgres_pid: int | None
) -> list[Pair]:
    rng = Random(SEED + 1)
    host = f"{LOOPBACK}:{api.port}"
    cookie = {"Cookie": f"{SESSION_COOKIE}={token}"}
    queue_request = [raw_request("GET", "/desk?scope=all", host=host, headers=cookie)]
    customers = [
        raw_request(
            "GET",
            f"/desk/customers/{customer_id(rng.randrange(plan.open_interventions))}",
            host=host,
            headers=cookie,
        )
        for _ in range(CUSTOMER_REQUESTS)
    ]
    bare_request = [raw_request("GET", "/", host=f"{LOOPBACK}:{bare.port}", headers={})]
    pids = {"api": api.pid, "bare": bare.pid, "loadgen": os.getpid()}
    if site.kafka.pid is not None:
        # Idle here, but measured like every stage's broker.
        pids["kafka"] = site.kafka.pid
    trees = {"postgres": postgres_pid} if postgres_pid is not None else {}
    meter = CpuMeter(pids, trees, kernel=True)

    async def phase(port: int, requests: Sequence[bytes]) -> LoadResult:
        connection = HttpConnection(LOOPBACK, port)
        try:
            return await closed_loop(
                raw_calls([connection], requests, ok_requests),
                warmup_s=plan.warmup_s,
                duration_s=plan.duration_s,
                meter=meter,
            )
        finally:
            await connection.close()

    pairs = []
    for index in range(plan.pairs):
        say(f"pair {index + 1}/{plan.pairs}: queue, customer page, bare route")
        pairs.append(
            Pair(
                queue=site.runner.run(phase(api.port, queue_request)),
                customer=site.runner.run(phase(api.port, customers)),
                bare=site.runner.run(phase(bare.port, bare_request)),
            )
        )
    return pairs


def figures(pairs: Sequence[Pair]) -> dict[str, Figure]:
    def latency(page: str, label: str, q: str) -> Figure:
        values = [latency_summary(getattr(p, page).latencies_s)[f"{q}_ms"] for p in pairs]
        ceilings = [latency_summary(p.bare.latencies_s)[f"{q}_ms"] for p in pairs]
        return Figure(
            f"{label} {q} server time (closed loop)",
            "ms",
            statistics.median(values),
            f"bare GET {q} (same uvicorn set-up)",
            statistics.median(ceilings),
            Spread.of(ratio(v, c) for v, c in zip(values, ceilings, strict=True)),
        )

    return {
        "queue_p50_vs_bare": latency(QUEUE, "desk queue", "p50"),
        "queue_p99_vs_bare": latency(QUEUE, "desk queue", "p99"),
        "customer_p50_vs_bare": latency(CUSTOMER, "desk customer page", "p50"),
        "customer_p99_vs_bare": latency(CUSTOMER, "desk customer page", "p99"),
    }


CPU_COLUMNS = ("api", "bare", "postgres", "loadgen", "kafka", KERNEL_IRQ)


def cpu_profile(pairs: Sequence[Pair]) -> dict[str, Any]:
    """Median CPU microseconds per page served and cores busy, per phase and process."""

    def summarise(results: Sequence[LoadResult]) -> dict[str, Any]:
        names = results[0].cpu_s.keys()
        return {
            "unit": "request",
            "us_per_unit": {
                n: statistics.median(r.cpu_per_unit()[n] for r in results) * 1e6 for n in names
            },
            "cores": {n: statistics.median(r.cores()[n] for r in results) for n in names},
        }

    return {
        "queue (closed)": summarise([p.queue for p in pairs]),
        "customer (closed)": summarise([p.customer for p in pairs]),
        "bare (closed)": summarise([p.bare for p in pairs]),
    }


def cpu_table(profile: dict[str, Any]) -> str:
    rows = [[phase, *cpu_cells(data, CPU_COLUMNS)] for phase, data in profile.items()]
    return table(["phase", "unit", *CPU_COLUMNS, "other"], rows)


def run(plan: Plan, settings: Settings, site: Site | None = None) -> dict[str, Any]:
    """The desk stage on ``site``'s database server (a server of its own, started and
    stopped here, without one)."""
    started = datetime.now(UTC)
    with contextlib.ExitStack() as exit_stack:
        if site is None:
            site = exit_stack.enter_context(open_site(settings, say))
        logs = site.logs("desk")
        suffix = uuid.uuid4().hex[:10]
        url = site.new_database(exit_stack, f"bench_desk_{suffix}", say)
        site.runner.run(migrate_url(url))
        services = settings.model_copy(
            update={
                "kafka_bootstrap_servers": site.kafka.address,
                "database_url": url,
                "profiles_topic": f"bench-desk-{suffix}.profiles",
                "api_port": free_port(),
                "api_rate_limit_per_s": 1e9,
                "api_rate_limit_burst": 1e9,
                "log_level": "WARNING",
            }
        )
        catalogue = CatalogueSource(services.promise_catalogue)
        say(f"seeding {plan.customers:,} customers, {plan.open_interventions:,} open cases")
        at = datetime.now(UTC)
        counts = site.runner.run(seed(url, plan, catalogue, services.profiles_topic))
        seed_s = (datetime.now(UTC) - at).total_seconds()
        token = site.runner.run(lead_session(url))
        api = Server(
            "api",
            [str(Path(sys.executable).with_name("touchpulse-api"))],
            port=services.api_port,
            log_path=logs / "api.log",
            env={**os.environ, **settings_env(services)},
            cwd=REPO,
            ready_path="/readyz",
        )
        bare_port = free_port()
        bare = Server(
            "bare",
            uvicorn_argv("tests.bench.bare_app:app", bare_port),
            port=bare_port,
            log_path=logs / "bare.log",
            cwd=REPO,
        )
        for each in (api, bare):
            exit_stack.enter_context(each)
        pairs = measure(site, plan, api, bare, token=token, postgres_pid=site.postgres.pid)
        for pair in pairs:
            for name in (QUEUE, CUSTOMER, BARE):
                statuses = getattr(pair, name).statuses
                if set(statuses) != {200}:
                    raise RuntimeError(f"desk bench: {name} answered {dict(statuses)}")
        found = figures(pairs)
        rss: dict[str, int | None] = {"api": peak_rss_bytes(api.pid)}
        return {
            "benchmark": "desk",
            "mode": plan.name,
            "started_at": started.isoformat(),
            "finished_at": datetime.now(UTC).isoformat(),
            "machine": machine(),
            "versions": versions(("fastapi", "starlette", "uvicorn", "jinja2", "asyncpg")),
            "settings": {
                "kafka": "local" if site.kafka.local else "external",
                "postgresql": "local" if site.postgres.local else "external",
                "plan": asdict(plan),
                "queue_route": "GET /desk?scope=all",
                "customer_route": "GET /desk/customers/{id} (customers with an open case)",
            },
            "figures": {key: found[key].as_dict() for key in FIGURE_KEYS},
            "targets": {},
            "cpu": cpu_profile(pairs),
            "peak_rss_bytes": rss,
            "state": {**counts, "seed_s": seed_s},
            "pairs": [
                {name: getattr(p, name).as_dict() for name in (QUEUE, CUSTOMER, BARE)}
                for p in pairs
            ],
            "notes": [
                SHARED_CORES_NOTE.format(nproc=os.cpu_count()),
                f"Seeded {counts['customers']:,} customers ({counts['outcomes']:,} outcomes, "
                f"{counts['open_interventions']:,} open cases, {counts['profiles']:,} profiles) "
                f"through scoring's evaluate and store writes in {seed_s:.1f} s.",
            ],
            "warnings": [],
        }


def report(result: dict[str, Any]) -> str:
    lines = [
        f"Touchpulse desk benchmark ({result['mode']}), {result['started_at']}",
        *result["notes"],
        "",
        figure_table(result["figures"], FIGURE_KEYS),
        "",
        "CPU microseconds per page (cores busy); postgres = the postmaster and all its "
        "children; other = the rest of the machine:",
    ]
    return close_report(lines, cpu_table(result["cpu"]), result)


def main(argv: Sequence[str] | None = None) -> int:
    return stage_main(
        "desk",
        __doc__,
        argv,
        quick="5,000 customers, 500 open cases, short phases",
        plans=(FULL, QUICK),
        run=run,
        report=report,
        say=say,
    )


if __name__ == "__main__":
    sys.exit(main())

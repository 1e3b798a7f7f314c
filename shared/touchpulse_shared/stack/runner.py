"""``touchpulse run``: the whole system on this machine, until Ctrl-C or SIGTERM.

Start order: Kafka and PostgreSQL (unless configured) → migrations and topics → each
service, waiting for its readiness → demo API keys → the simulator posting demo traffic
through ingest. Stop order is the reverse, so no service ever runs without its
dependencies. A service that exits on its own is restarted with backoff, and the restart
is shown; one that keeps crashing stops everything with a message and exit status 1
(:class:`~touchpulse_shared.stack.services.RestartPolicy`). Kafka or PostgreSQL exiting
stops everything at once. While it runs, a live view (events per second, the health
distribution, the weakest touchpoints, the newest interventions with their gaps, the
restarts) is printed every ``TOUCHPULSE_RUN_LIVE_INTERVAL_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import asyncpg
import httpx

from touchpulse_shared.auth import Scope, create_key
from touchpulse_shared.kafka.topics import topic_specs
from touchpulse_shared.people import Role, create_person, find_person, reset_password
from touchpulse_shared.provision import provision
from touchpulse_shared.settings import Settings, env_name
from touchpulse_shared.stack.live import (
    LiveDisplay,
    ServiceState,
    Snapshot,
    read_snapshot,
    render,
)
from touchpulse_shared.stack.local import Endpoint, LocalStack
from touchpulse_shared.stack.procs import StackError, spawn, stop
from touchpulse_shared.stack.services import SERVICES, RunningService, settings_env

READY_LINE = "Ctrl-C stops everything."
DEMO_SOURCE = "demo"
SIMULATOR_SOURCE = "simulator"


class UnexpectedExit(StackError):
    """A server or service the runner started has died on its own."""


def run(settings: Settings, echo: Callable[[str], None]) -> None:
    stopping = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    # Installed before anything starts, so a SIGTERM during start-up still stops in order.
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    services: list[RunningService] = []
    simulator: subprocess.Popen[bytes] | None = None
    with LocalStack(settings) as stack:
        try:
            kafka, postgres = stack.kafka(), stack.postgres()
            resolved = stack.resolved()
            done = asyncio.run(provision(resolved))
            for spec in SERVICES:
                if stopping.is_set():
                    break
                service = RunningService(spec, resolved, stack.workdir)
                services.append(service)
                service.start()
            demo_key, crm_key, simulator_key = asyncio.run(_demo_keys(postgres.address))
            people = asyncio.run(_demo_people(postgres.address))
            env_file = stack.workdir.parent.parent / "current.env"
            env_file.write_text(
                f"{env_name('kafka_bootstrap_servers')}={kafka.address}\n"
                f"{env_name('database_url')}={postgres.address}\n"
            )
            echo(
                _banner(
                    settings=resolved,
                    kafka=kafka,
                    postgres=postgres,
                    services=services,
                    migrations=done.migrations_applied,
                    demo_key=demo_key,
                    crm_key=crm_key,
                    people=people,
                )
            )
            echo(f"  logs       {stack.workdir}")
            echo(f"  env        {env_file} (source it to reach this stack from another shell)")
            urls = {s.spec.name: s.url for s in services}
            if resolved.run_demo_rate > 0 and not stopping.is_set():
                simulator = _start_simulator(
                    resolved, stack.workdir, urls, key=simulator_key, admin_key=crm_key
                )
                echo(
                    f"  simulator  {resolved.run_demo_rate:g} events/s of demo journeys "
                    f"(pid {simulator.pid}, log {stack.workdir / 'simulator.log'})"
                )
            echo(READY_LINE)
            _watch(
                resolved,
                stopping,
                echo,
                urls=urls,
                crm_key=crm_key,
                check_alive=lambda: _check_alive(kafka, postgres, services, echo),
                states=lambda: [
                    ServiceState(s.spec.name, s.restarts, s.last_exit, s.up) for s in services
                ],
            )
            echo("Stopping…")
        finally:
            if simulator is not None:
                stop(simulator, sig=signal.SIGTERM, timeout=10)
            for service in reversed(services):
                service.stop()
    echo("Stopped.")


def _check_alive(
    kafka: Endpoint,
    postgres: Endpoint,
    services: list[RunningService],
    echo: Callable[[str], None],
) -> None:
    """The servers must live (raises otherwise); the services are supervised: restarted
    after a crash, the stack stopped only by a crash loop."""
    import psutil  # noqa: PLC0415

    for name, pid in (("kafka", kafka.pid), ("postgres", postgres.pid)):
        if pid is None:
            continue
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                continue
        except psutil.NoSuchProcess:
            pass
        raise UnexpectedExit(f"{name} exited unexpectedly")
    for service in services:
        news = service.supervise()
        if news is not None:
            echo(f"  ↻ {news}")


def _start_simulator(
    settings: Settings, workdir: Path, urls: dict[str, str], *, key: str, admin_key: str
) -> subprocess.Popen[bytes]:
    """The simulator as its own process, posting through ingest as any touchpoint would,
    after putting its customers' profiles (segments, value, reach) through the api."""
    argv = [
        sys.executable,
        "-m",
        "touchpulse_shared.cli",
        "simulate",
        "--ingest-url",
        urls["ingest"],
        "--rate",
        str(settings.run_demo_rate),
        "--api-url",
        urls["api"],
        "--admin-key",
        admin_key,
    ]
    env = {**os.environ, **settings_env(settings), env_name("simulator_api_key"): key}
    return spawn(argv, log_path=workdir / "simulator.log", env=env)


def _watch(
    settings: Settings,
    stopping: threading.Event,
    echo: Callable[[str], None],
    *,
    urls: dict[str, str],
    crm_key: str,
    check_alive: Callable[[], None],
    states: Callable[[], list[ServiceState]] = list,
) -> None:
    """Until told to stop: check every process, and print the live view now and then."""
    previous: Snapshot | None = None
    next_view = time.monotonic() + settings.run_live_interval_s
    display = LiveDisplay(echo)
    with httpx.Client(timeout=2.0) as client, contextlib.closing(display):
        while not stopping.wait(0.5):
            check_alive()
            if settings.run_live_interval_s <= 0 or time.monotonic() < next_view:
                continue
            next_view = time.monotonic() + settings.run_live_interval_s
            try:
                current = read_snapshot(
                    client,
                    ingest=urls["ingest"],
                    scoring=urls["scoring"],
                    api=urls["api"],
                    crm_key=crm_key,
                    at=time.monotonic(),
                )
            except (httpx.HTTPError, KeyError, ValueError):
                # A busy or restarting service skips one view; the liveness check decides.
                continue
            display.show(render(previous, current, states()))
            previous = current


async def _demo_keys(database_url: str) -> tuple[str, str, str]:
    """Keys to post demo events with (by hand and from the simulator), and one to read and
    act with in the api."""
    wanted: list[tuple[str, list[Scope], str | None]] = [
        ("make run demo events", [Scope.EVENTS_WRITE], DEMO_SOURCE),
        ("make run demo crm", [Scope.HEALTH_READ, Scope.INTERVENTIONS_WRITE, Scope.ADMIN], None),
        ("make run simulator", [Scope.EVENTS_WRITE], SIMULATOR_SOURCE),
    ]
    conn = await asyncpg.connect(database_url)
    try:
        keys = [
            (await create_key(conn, name=n, scopes=s, source=src, now=datetime.now(UTC)))[0]
            for n, s, src in wanted
        ]
    finally:
        await conn.close()
    events, crm, simulator = keys
    return events, crm, simulator


#: The demo people make run signs in with at the desk: (login, role).
DEMO_PEOPLE = (("agent@demo.touchpulse", Role.AGENT), ("lead@demo.touchpulse", Role.LEAD))


async def _demo_people(database_url: str) -> list[tuple[str, Role, str]]:
    """A demo agent and lead for the desk, each with a new random password (shown once in
    the banner; a state dir kept from an earlier run gets its people's passwords reset)."""
    conn = await asyncpg.connect(database_url)
    made: list[tuple[str, Role, str]] = []
    try:
        for login, role in DEMO_PEOPLE:
            password = secrets.token_urlsafe(12)
            now = datetime.now(UTC)
            if await find_person(conn, login) is None:
                await create_person(
                    conn,
                    login=login,
                    display_name=f"Demo {role.value}",
                    role=role,
                    password=password,
                    now=now,
                )
            else:
                await reset_password(conn, login, password, now=now)
            made.append((login, role, password))
    finally:
        await conn.close()
    return made


def _kafka_kind(settings: Settings) -> str:
    if settings.local_kafka_brokers == 1:
        return "broker"
    return (
        f"{settings.local_kafka_brokers}-broker cluster, topics at replication factor "
        f"{settings.topic_replication_factor}; first node's"
    )


def _banner(
    *,
    settings: Settings,
    kafka: Endpoint,
    postgres: Endpoint,
    services: list[RunningService],
    migrations: list[int],
    demo_key: str,
    crm_key: str,
    people: list[tuple[str, Role, str]],
) -> str:
    def origin(endpoint: Endpoint, what: str) -> str:
        return f"   (local {what}, pid {endpoint.pid})" if endpoint.local else "   (configured)"

    lines = [
        "Touchpulse is up.",
        f"  kafka      {kafka.address}{origin(kafka, _kafka_kind(settings))}",
        f"  postgres   {postgres.address}{origin(postgres, 'server')}",
        "  topics     " + ", ".join(f"{s.name} ({s.partitions})" for s in topic_specs(settings)),
        f"  schema     migrations applied now: {migrations or 'none needed'}",
    ]
    for service in services:
        docs = f"docs {service.url}/docs, " if service.spec.api_docs else ""
        lines.append(
            f"  {service.spec.name:<10} {service.url}   ({docs}"
            f"metrics {service.url}/metrics, pid {service.pid})"
        )
    api = next((s for s in services if s.spec.name == "api"), None)
    if api is not None:
        lines += [
            f"  crm key    {crm_key}   (health:read, interventions:write, admin)",
            f"  try        curl -s {api.url}/v1/customers/C-1/health "
            f"-H 'Authorization: Bearer {crm_key}'",
            f"  desk       {api.url}/desk   (sign in as one of these; docs/desk.md)",
        ]
        lines += [
            f"  {role.value:<10} login {login}   password {password}"
            for login, role, password in people
        ]
    ingest = next((s for s in services if s.spec.name == "ingest"), None)
    if ingest is not None:
        lines += [
            f"  demo key   {demo_key}   (events:write for source '{DEMO_SOURCE}')",
            "  try        curl -si -X POST "
            f"{ingest.url}/v1/events -H 'Authorization: Bearer {demo_key}' "
            '-H \'Content-Type: application/json\' -d \'{"event_id":"e-1",'
            f'"source":"{DEMO_SOURCE}","customer_id":"C-1","touchpoint":"call_centre",'
            '"type":"call.answered","occurred_at":"'
            + datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            + '","measures":{"wait_seconds":420}}\'',
        ]
    return "\n".join(lines)

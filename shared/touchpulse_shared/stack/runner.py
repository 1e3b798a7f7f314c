"""``touchpulse run``: the whole system on this machine, until Ctrl-C or SIGTERM.

Start order: Kafka and PostgreSQL (unless configured) → migrations and topics → each
service, waiting for its readiness → a demo API key. Stop order is the reverse, so no
service ever runs without its dependencies.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType

import asyncpg

from touchpulse_shared.auth import Scope, create_key
from touchpulse_shared.kafka.topics import topic_specs
from touchpulse_shared.provision import provision
from touchpulse_shared.settings import Settings, env_name
from touchpulse_shared.stack.local import Endpoint, LocalStack
from touchpulse_shared.stack.procs import StackError
from touchpulse_shared.stack.services import SERVICES, RunningService

READY_LINE = "Ctrl-C stops everything."
DEMO_SOURCE = "demo"


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
            demo_key, crm_key = asyncio.run(_demo_keys(postgres.address))
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
                )
            )
            echo(f"  logs       {stack.workdir}")
            echo(f"  env        {env_file} (source it to reach this stack from another shell)")
            echo(READY_LINE)
            while not stopping.wait(0.5):
                _check_alive(kafka, postgres, services)
            echo("Stopping…")
        finally:
            for service in reversed(services):
                service.stop()
    echo("Stopped.")


def _check_alive(kafka: Endpoint, postgres: Endpoint, services: list[RunningService]) -> None:
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
        if not service.alive:
            raise UnexpectedExit(f"the {service.spec.name} service exited; see {service.log_path}")


async def _demo_keys(database_url: str) -> tuple[str, str]:
    """A key to post demo events with, and one to read and act with in the api."""
    conn = await asyncpg.connect(database_url)
    try:
        events, _ = await create_key(
            conn,
            name="make run demo events",
            scopes=[Scope.EVENTS_WRITE],
            source=DEMO_SOURCE,
            now=datetime.now(UTC),
        )
        crm, _ = await create_key(
            conn,
            name="make run demo crm",
            scopes=[Scope.HEALTH_READ, Scope.INTERVENTIONS_WRITE, Scope.ADMIN],
            now=datetime.now(UTC),
        )
        return events, crm
    finally:
        await conn.close()


def _banner(
    *,
    settings: Settings,
    kafka: Endpoint,
    postgres: Endpoint,
    services: list[RunningService],
    migrations: list[int],
    demo_key: str,
    crm_key: str,
) -> str:
    def origin(endpoint: Endpoint, what: str) -> str:
        return f"   (local {what}, pid {endpoint.pid})" if endpoint.local else "   (configured)"

    lines = [
        "Touchpulse is up.",
        f"  kafka      {kafka.address}{origin(kafka, 'broker')}",
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

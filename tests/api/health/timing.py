"""How long the health read takes in-process: ``python -m tests.api.health.timing``.

The rich customer of the golden test, a throw-away PostgreSQL (the test suite's local
stack), the api app over httpx's ASGI transport (no sockets, no server), one request at a
time: warm-up, then ``--requests`` reads. Prints wall and CPU microseconds per request for
the health read and for a bare FastAPI route through the same client, so the client's own
cost can be told apart. Keys are checked with the production cache (5 s) and the rate limit
is taken on every request (set high, so that nothing is refused). Not a benchmark of the
system (tests/bench is): a before/after yardstick for the route's own work.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
import uuid

import asyncpg
import httpx
from fastapi import FastAPI

from tests.api.health.rich import READ_AT, RICH, build
from touchpulse_api.app import build_app
from touchpulse_shared.auth import Scope, create_key
from touchpulse_shared.db.migrate import migrate_url
from touchpulse_shared.settings import load_settings
from touchpulse_shared.stack.local import LocalStack


async def _timed(client: httpx.AsyncClient, path: str, count: int) -> tuple[float, float]:
    for _ in range(min(200, count)):
        assert (await client.get(path)).status_code == 200
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(count):
        await client.get(path)
    return (
        (time.perf_counter() - wall) / count * 1e6,
        (time.process_time() - cpu) / count * 1e6,
    )


async def main(requests: int, profile: bool) -> None:
    settings = load_settings()
    with LocalStack(settings) as stack:
        base, _, _ = stack.postgres().address.rpartition("/")
        name = f"timing_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(f"{base}/postgres")
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = f"{base}/{name}"
        try:
            await migrate_url(url)
            await build(url)
            app = build_app(
                settings.model_copy(
                    update={
                        "database_url": url,
                        "api_rate_limit_per_s": 1e9,
                        "api_rate_limit_burst": 1e9,
                        "log_level": "WARNING",
                    }
                ),
                clock=lambda: READ_AT,
            )
            bare = FastAPI()

            @bare.get("/bare")
            async def bare_route() -> dict[str, str]:
                return {"status": "ok"}

            async with app.router.lifespan_context(app):
                key, _ = await create_key(
                    app.state.api.pool, name="timing", scopes=[Scope.HEALTH_READ], now=READ_AT
                )
                headers = {"Authorization": f"Bearer {key}"}
                async with (
                    httpx.AsyncClient(
                        transport=httpx.ASGITransport(app=app), base_url="http://a", headers=headers
                    ) as client,
                    httpx.AsyncClient(
                        transport=httpx.ASGITransport(app=bare), base_url="http://b"
                    ) as bare_client,
                ):
                    path = f"/v1/customers/{RICH}/health"
                    profiler = cProfile.Profile() if profile else None
                    if profiler is not None:
                        profiler.enable()
                    wall, cpu = await _timed(client, path, requests)
                    if profiler is not None:
                        profiler.disable()
                    bare_wall, bare_cpu = await _timed(bare_client, "/bare", requests)
            print(f"health read: {wall:8.0f} µs wall {cpu:8.0f} µs CPU per request ({requests})")
            print(f"bare route:  {bare_wall:8.0f} µs wall {bare_cpu:8.0f} µs CPU per request")
            if profiler is not None:
                pstats.Stats(profiler).sort_stats("cumulative").print_stats(120)
        finally:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.profile))

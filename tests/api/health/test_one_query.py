"""The health read is one statement on one connection, and nothing else is sent for it:
no per-piece queries, no reset query when the connection goes back to the pool."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from tests.api.health.rich import PROFILE_ONLY, RICH

pytestmark = pytest.mark.postgres


async def _log_every_query(pool: asyncpg.Pool, sent: list[str]) -> None:
    """Log what every connection of ``pool`` sends (all of them: each is acquired once)."""
    size = pool.get_max_size()
    connections = await asyncio.gather(*(pool.acquire() for _ in range(size)))
    try:
        for conn in connections:
            conn.add_query_logger(lambda logged: sent.append(logged.query))
    finally:
        for conn in connections:
            await pool.release(conn)


async def test_a_health_read_is_one_statement(health_app: FastAPI, api: httpx.AsyncClient) -> None:
    context = health_app.state.api
    # The key is checked against the database on each request here (no key cache, so a
    # revocation is immediate): that is the verifier's statement, not the health read's.
    assert context.settings.auth_cache_s == 0
    sent: list[str] = []
    await _log_every_query(context.pool, sent)
    await _log_every_query(context.read_pool, sent)
    for path, status in (
        (f"/v1/customers/{RICH}/health", 200),
        (f"/v1/customers/{RICH}/health?trend_days=365", 200),
        (f"/v1/customers/{PROFILE_ONLY}/health", 200),
        ("/v1/customers/G-nobody/health", 404),
    ):
        sent.clear()
        response = await api.get(path)
        assert response.status_code == status, response.text
        key_checks = [q for q in sent if "FROM api_key" in q]
        reads = [q for q in sent if q not in key_checks]
        assert len(key_checks) == 1, sent
        assert len(reads) == 1, reads
        assert "FROM journey_health" in reads[0]

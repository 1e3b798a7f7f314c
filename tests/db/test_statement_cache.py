"""After a migration changes a table, statements prepared against its old shape are refused
by PostgreSQL ("cached plan must not change result type"). Outside a transaction asyncpg
re-prepares and retries by itself; inside one the transaction is lost. The api's requests
that write in a transaction must not answer 500 for that, nor its health read, which runs
from a pool that keeps prepared statements."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import httpx

from touchpulse_api.app import build_app
from touchpulse_shared.auth import Scope, create_key
from touchpulse_shared.settings import Settings


async def test_api_transactions_survive_a_table_altered_under_them(
    kafka_bootstrap: str, fresh_database: str
) -> None:
    settings = Settings(kafka_bootstrap_servers=kafka_bootstrap, database_url=fresh_database)
    app = build_app(settings)
    async with app.router.lifespan_context(app):
        conn = await asyncpg.connect(fresh_database)
        try:
            key, _ = await create_key(
                conn,
                name="crm",
                scopes=[Scope.ADMIN, Scope.HEALTH_READ],
                source=None,
                now=datetime.now(UTC),
            )
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                base_url="http://api",
                headers={"Authorization": f"Bearer {key}"},
            ) as api:

                async def put_profiles(value: float) -> list[int]:
                    return [
                        (
                            await api.put(
                                f"/v1/customers/C-{i}/profile",
                                json={"segment": "premium", "value": value},
                            )
                        ).status_code
                        for i in range(12)
                    ]

                # Every pooled connection has run the profile upsert (RETURNING *) once ...
                assert set(await put_profiles(2.0)) == {201}
                # ... when a migration adds a column to the table.
                await conn.execute("ALTER TABLE customer_profile ADD COLUMN region text")
                assert set(await put_profiles(3.0)) == {200}

                # The health read runs from a pool with a statement cache: every pooled
                # connection prepares it, a migration changes the tables it reads, and the
                # next reads re-prepare it instead of failing.
                async def read_health() -> list[int]:
                    return [
                        (await api.get(f"/v1/customers/C-{i}/health")).status_code
                        for i in range(12)
                    ]

                assert set(await read_health()) == {200}
                await conn.execute("ALTER TABLE journey_health ADD COLUMN note text")
                await conn.execute("ALTER TABLE outcome ADD COLUMN note text")
                assert set(await read_health()) == {200}
        finally:
            await conn.close()

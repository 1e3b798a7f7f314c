"""API keys in the real PostgreSQL: create, verify, revoke, list, and the verifier's cache."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from touchpulse_shared.auth import (
    InvalidKeySpec,
    KeyRecord,
    KeyVerifier,
    Scope,
    create_key,
    generate_key,
    hash_secret,
    list_keys,
    lookup,
    parse_key,
    revoke_key,
)
from touchpulse_shared.db.migrate import migrate_url

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
async def pool(fresh_database: str) -> AsyncIterator[asyncpg.Pool]:
    await migrate_url(fresh_database)
    pool = await asyncpg.create_pool(fresh_database, min_size=1, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()


async def writer(pool: asyncpg.Pool, **overrides: object) -> tuple[str, KeyRecord]:
    args: dict[str, object] = {
        "name": "billing system",
        "scopes": [Scope.EVENTS_WRITE],
        "source": "billing",
        "touchpoints": ["billing", "delivery"],
        "now": NOW,
    }
    args.update(overrides)
    return await create_key(pool, **args)  # type: ignore[arg-type]


def secret_of(plaintext: str) -> str:
    parsed = parse_key(plaintext)
    assert parsed is not None
    return parsed[1]


async def test_a_created_key_verifies_as_its_principal(pool: asyncpg.Pool) -> None:
    plaintext, record = await writer(pool)
    assert plaintext.startswith(f"tpk_{record.key_id}_")
    assert record.scopes == {Scope.EVENTS_WRITE}
    assert record.source == "billing"
    assert record.touchpoints == frozenset({"billing", "delivery"})
    assert record.created_at == NOW
    assert not record.revoked

    principal = await KeyVerifier(pool, cache_ttl_s=0).verify(plaintext)
    assert principal == record.principal()
    assert principal.write_refusal("billing", "delivery") is None
    assert principal.write_refusal("billing", "web") is not None
    assert await lookup(pool, record.key_id) == record


async def test_missing_malformed_unknown_and_wrong_keys_verify_as_none(
    pool: asyncpg.Pool,
) -> None:
    plaintext, record = await writer(pool)
    verifier = KeyVerifier(pool, cache_ttl_s=60)
    other_secret = secret_of(generate_key()[0])
    for presented in [
        None,
        "",
        "not a key",
        plaintext + "x",
        plaintext.upper(),
        generate_key()[0],  # well-formed, unknown id
        f"tpk_{record.key_id}_{other_secret}",  # right id, wrong secret
    ]:
        assert await verifier.verify(presented) is None, presented
    assert await verifier.verify(plaintext) is not None


async def test_a_revoked_key_fails_at_once_without_a_cache(pool: asyncpg.Pool) -> None:
    plaintext, record = await writer(pool)
    verifier = KeyVerifier(pool, cache_ttl_s=0)
    assert await verifier.verify(plaintext) is not None
    assert await revoke_key(pool, record.key_id, now=NOW)
    assert await verifier.verify(plaintext) is None
    assert verifier.cached_count() == 0

    revoked = await lookup(pool, record.key_id)
    assert revoked is not None
    assert revoked.revoked_at == NOW
    assert not await revoke_key(pool, record.key_id, now=NOW), "already revoked"
    assert not await revoke_key(pool, "aaaaaaaaaaaa", now=NOW), "no such key"


async def test_a_revoked_key_stays_valid_until_the_cache_ttl_passes(pool: asyncpg.Pool) -> None:
    plaintext, record = await writer(pool)
    clock = Clock()
    verifier = KeyVerifier(pool, cache_ttl_s=30, now=clock)
    assert await verifier.verify(plaintext) is not None
    await revoke_key(pool, record.key_id, now=NOW)

    clock.t += 29.9
    assert await verifier.verify(plaintext) is not None, "cached: the revocation is not seen yet"
    clock.t += 0.1
    assert await verifier.verify(plaintext) is None, "the TTL passed: PostgreSQL asked again"
    clock.t += 1000
    assert await verifier.verify(plaintext) is None


async def test_cached_keys_do_not_touch_the_database_but_secrets_are_still_compared(
    pool: asyncpg.Pool,
) -> None:
    plaintext, record = await writer(pool)
    unknown = generate_key()[0]
    clock = Clock()
    verifier = KeyVerifier(pool, cache_ttl_s=10, now=clock)
    assert await verifier.verify(plaintext) is not None
    assert await verifier.verify(unknown) is None

    await pool.close()  # from here on, any query would raise
    assert await verifier.verify(plaintext) == record.principal()
    assert await verifier.verify(unknown) is None
    wrong = f"tpk_{record.key_id}_{secret_of(generate_key()[0])}"
    assert await verifier.verify(wrong) is None

    clock.t += 10
    with pytest.raises(asyncpg.InterfaceError):
        # A database failure is not "bad key": it propagates, for the caller's 503.
        await verifier.verify(plaintext)


async def test_a_key_created_after_its_id_was_cached_as_unknown_waits_for_the_ttl(
    pool: asyncpg.Pool,
) -> None:
    plaintext, key_id, secret_hash = generate_key()
    clock = Clock()
    verifier = KeyVerifier(pool, cache_ttl_s=5, now=clock)
    assert await verifier.verify(plaintext) is None
    await pool.execute(
        "INSERT INTO api_key (key_id, name, secret_hash, scopes, created_at)"
        " VALUES ($1, 'crm', $2, ARRAY['health:read'], now())",
        key_id,
        secret_hash,
    )
    assert await verifier.verify(plaintext) is None, "negative answers are cached too"
    clock.t += 5
    principal = await verifier.verify(plaintext)
    assert principal is not None
    assert principal.has(Scope.HEALTH_READ)


async def test_garbage_keys_cannot_grow_the_cache_or_evict_real_keys(pool: asyncpg.Pool) -> None:
    plaintext, _ = await writer(pool)
    verifier = KeyVerifier(pool, cache_ttl_s=60, now=Clock(), max_cached=5)
    assert await verifier.verify(plaintext) is not None
    for _ in range(50):
        assert await verifier.verify(generate_key()[0]) is None
        assert verifier.cached_count() <= 6
    await pool.close()
    assert await verifier.verify(plaintext) is not None, "the real key is still cached"


async def test_the_database_holds_no_plaintext_key(pool: asyncpg.Pool) -> None:
    created = [
        await writer(pool),
        await writer(
            pool, name="crm", scopes=["health:read", "admin"], source=None, touchpoints=None
        ),
    ]
    columns = await pool.fetch(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = 'public' AND table_name = 'api_key'"
        " AND data_type IN ('text', 'bytea', 'ARRAY')"
    )
    scanned = {c["column_name"] for c in columns}
    assert {"key_id", "name", "secret_hash", "scopes", "source", "touchpoints"} <= scanned

    for plaintext, _ in created:
        secret = secret_of(plaintext)
        for column in scanned:
            for row in await pool.fetch(f'SELECT "{column}" AS v FROM api_key'):  # noqa: S608
                value = row["v"]
                values = value if isinstance(value, list) else [value]
                for v in values:
                    if isinstance(v, bytes):
                        assert secret.encode() not in v, column
                        assert plaintext.encode() not in v, column
                    elif v is not None:
                        assert secret not in v, column
                        assert plaintext not in v, column
        # Every row of every table as PostgreSQL renders it, bytea as hex too.
        tables = await pool.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        for table in tables:
            dump = await pool.fetch(f'SELECT row_to_json(t)::text AS j FROM "{table[0]}" t')  # noqa: S608
            text = "\n".join(r["j"] for r in dump)
            assert secret not in text
            assert secret.encode().hex() not in text
    stored = await pool.fetchval(
        "SELECT secret_hash FROM api_key WHERE key_id = $1", created[0][1].key_id
    )
    assert stored == hash_secret(secret_of(created[0][0]))


async def test_listing_shows_every_key_and_no_secret(pool: asyncpg.Pool) -> None:
    first, first_record = await writer(pool)
    second, second_record = await writer(
        pool, name="crm", scopes=["health:read"], source=None, touchpoints=None
    )
    await revoke_key(pool, first_record.key_id, now=NOW)

    listed = await list_keys(pool)
    assert {r.key_id for r in listed} == {first_record.key_id, second_record.key_id}
    assert {r.key_id: r.revoked for r in listed} == {
        first_record.key_id: True,
        second_record.key_id: False,
    }
    assert not any("secret" in f.name or "hash" in f.name for f in dataclasses.fields(KeyRecord))
    shown = repr(listed)
    for plaintext in (first, second):
        secret = secret_of(plaintext)
        assert secret not in shown
        assert hash_secret(secret).hex() not in shown


async def test_invalid_creation_parameters_store_nothing(pool: asyncpg.Pool) -> None:
    with pytest.raises(InvalidKeySpec, match="source"):
        await create_key(pool, name="x", scopes=["events:write"], now=NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        await create_key(pool, name="x", scopes=["admin"], now=datetime(2025, 1, 1))  # noqa: DTZ001
    assert await list_keys(pool) == []


async def test_the_table_itself_refuses_what_validation_refuses(pool: asyncpg.Pool) -> None:
    _, key_id, secret_hash = generate_key()
    insert = (
        "INSERT INTO api_key (key_id, name, secret_hash, scopes, source, created_at)"
        " VALUES ($1, 'x', $2, $3, $4, now())"
    )
    with pytest.raises(asyncpg.CheckViolationError, match="api_key_events_write_has_source"):
        await pool.execute(insert, key_id, secret_hash, ["events:write"], None)
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(insert, key_id, secret_hash, ["events:read"], None)
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(insert, key_id, secret_hash, [None], None)
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(insert, key_id, secret_hash, [], None)
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(insert, key_id, b"plaintext?", ["admin"], None)
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(insert, "Not-An-Id", secret_hash, ["admin"], None)


async def test_a_scope_this_release_does_not_know_grants_nothing(pool: asyncpg.Pool) -> None:
    plaintext, record = await writer(pool, scopes=["health:read"], source=None, touchpoints=None)
    # As if a newer release had added a scope (and widened the CHECK) mid rolling deploy.
    await pool.execute("ALTER TABLE api_key DROP CONSTRAINT api_key_scopes_check")
    await pool.execute(
        "UPDATE api_key SET scopes = ARRAY['health:read', 'reports:read'] WHERE key_id = $1",
        record.key_id,
    )
    principal = await KeyVerifier(pool, cache_ttl_s=0).verify(plaintext)
    assert principal is not None
    assert principal.scopes == {Scope.HEALTH_READ}

"""`touchpulse keys …` as an operator runs it: a real process against a fresh database."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from dataclasses import dataclass

import asyncpg

from touchpulse_shared.auth import KeyVerifier, Scope

KEY_LINE = re.compile(r"^key: (tpk_([a-z2-7]{12})_\S+)$", re.MULTILINE)


@dataclass
class Result:
    code: int
    out: str
    err: str


async def touchpulse(*args: str, database_url: str | None) -> Result:
    env = {k: v for k, v in os.environ.items() if k != "TOUCHPULSE_CONFIG_FILE"}
    env.pop("TOUCHPULSE_DATABASE_URL", None)
    if database_url is not None:
        env["TOUCHPULSE_DATABASE_URL"] = database_url
    # Wide, so that the usage error box does not wrap the option names it quotes.
    env["COLUMNS"] = "200"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "touchpulse_shared.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


async def test_a_created_key_is_shown_once_verifies_and_stops_when_revoked(
    fresh_database: str,
) -> None:
    created = await touchpulse(
        "keys",
        "create",
        "--name",
        "billing system",
        "--scope",
        "events:write",
        "--scope",
        "health:read",
        "--source",
        "billing",
        "--touchpoint",
        "billing",
        "--touchpoint",
        "delivery",
        database_url=fresh_database,  # never migrated: the command does it
    )
    assert created.code == 0, created
    match = KEY_LINE.search(created.out)
    assert match is not None, created.out
    plaintext, key_id = match[1], match[2]
    assert "not be shown again" in created.err
    assert key_id in created.out.replace(plaintext, "")

    pool = await asyncpg.create_pool(fresh_database, min_size=1, max_size=1)
    try:
        verifier = KeyVerifier(pool, cache_ttl_s=0)
        principal = await verifier.verify(plaintext)
        assert principal is not None
        assert principal.name == "billing system"
        assert principal.scopes == {Scope.EVENTS_WRITE, Scope.HEALTH_READ}
        assert principal.source == "billing"
        assert principal.touchpoints == frozenset({"billing", "delivery"})

        listed = await touchpulse("keys", "list", database_url=fresh_database)
        assert listed.code == 0, listed
        assert key_id in listed.out
        assert "active" in listed.out
        # The secret is everything after "tpk_<id>_"; it may itself contain "_" (URL-safe
        # base64), so the last "_" does not delimit it (a one-letter tail matched "scopes").
        secret = plaintext.split("_", 2)[2]
        assert secret not in listed.out + listed.err

        revoked = await touchpulse("keys", "revoke", key_id, database_url=fresh_database)
        assert revoked.code == 0, revoked
        assert revoked.out.startswith("revoked: ")
        assert await verifier.verify(plaintext) is None

        again = await touchpulse("keys", "revoke", key_id, database_url=fresh_database)
        assert again.code == 0, again
        assert again.out.startswith("already revoked: ")
        listed = await touchpulse("keys", "list", database_url=fresh_database)
        assert "revoked 20" in listed.out
    finally:
        await pool.close()


async def test_revoking_an_unknown_key_fails(fresh_database: str) -> None:
    result = await touchpulse("keys", "revoke", "aaaaaaaaaaaa", database_url=fresh_database)
    assert result.code == 1
    assert "no key with id 'aaaaaaaaaaaa'" in result.err


async def test_an_unknown_scope_is_a_usage_error_naming_the_option(fresh_database: str) -> None:
    result = await touchpulse(
        "keys", "create", "--name", "x", "--scope", "events:read", database_url=fresh_database
    )
    assert result.code == 2, result
    assert "--scope" in result.err
    assert "events:read" in result.err
    assert "tpk_" not in result.out


async def test_bad_parameters_are_usage_errors_naming_the_option(fresh_database: str) -> None:
    no_source = await touchpulse(
        "keys", "create", "--name", "x", "--scope", "events:write", database_url=fresh_database
    )
    assert no_source.code == 2, no_source
    assert "--source" in no_source.err

    bad_touchpoint = await touchpulse(
        "keys",
        "create",
        "--name",
        "x",
        "--scope",
        "events:write",
        "--source",
        "billing",
        "--touchpoint",
        "Call Centre",
        database_url=fresh_database,
    )
    assert bad_touchpoint.code == 2, bad_touchpoint
    assert "--touchpoint" in bad_touchpoint.err

    listed = await touchpulse("keys", "list", database_url=fresh_database)
    assert "no keys yet" in listed.out


async def test_keys_need_a_database_url() -> None:
    result = await touchpulse("keys", "list", database_url=None)
    assert result.code == 2
    assert "TOUCHPULSE_DATABASE_URL must be set" in result.err

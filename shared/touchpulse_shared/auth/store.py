"""API keys in PostgreSQL (table ``api_key``), and the cached verifier the services use.

Database failures propagate from every function here, :meth:`KeyVerifier.verify` included:
a caller answers them with 503, never 401, because a key is not bad when the database is
merely unreachable.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from touchpulse_shared.auth.keys import (
    Principal,
    Scope,
    generate_key,
    parse_key,
    secret_matches,
    validate_spec,
)

Executor: TypeAlias = asyncpg.Connection | asyncpg.Pool | PoolConnectionProxy
DEFAULT_MAX_CACHED = 10_000
# 60 random bits per id make a collision a once-in-a-billion-keys event; a few retries turn
# "unlikely" into "never" without a loop that could spin on some other unique violation.
_CREATE_ATTEMPTS = 3
_COLUMNS = "key_id, name, scopes, source, touchpoints, created_at, revoked_at"


@dataclass(frozen=True)
class KeyRecord:
    """A stored key as anyone may see it: everything but its secret (or the secret's hash)."""

    key_id: str
    name: str
    scopes: frozenset[Scope]
    source: str | None
    touchpoints: frozenset[str] | None
    created_at: datetime
    revoked_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def principal(self) -> Principal:
        return Principal(
            key_id=self.key_id,
            name=self.name,
            scopes=self.scopes,
            source=self.source,
            touchpoints=self.touchpoints,
        )


def _scopes(values: Iterable[str]) -> frozenset[Scope]:
    # A newer release may have added a scope (the database is ahead mid rolling deploy):
    # this one grants only the scopes it knows instead of failing every request of the key.
    known = {s.value for s in Scope}
    return frozenset(Scope(v) for v in values if v in known)


def _record(row: asyncpg.Record) -> KeyRecord:
    touchpoints: list[str] | None = row["touchpoints"]
    return KeyRecord(
        key_id=row["key_id"],
        name=row["name"],
        scopes=_scopes(row["scopes"]),
        source=row["source"],
        touchpoints=None if touchpoints is None else frozenset(touchpoints),
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


def _require_aware(now: datetime) -> None:
    if now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")


async def create_key(
    conn_or_pool: Executor,
    *,
    name: str,
    scopes: Iterable[str],
    source: str | None = None,
    touchpoints: Iterable[str] | None = None,
    now: datetime,
) -> tuple[str, KeyRecord]:
    """Create a key; return its plaintext (the only time it exists) and its stored record.

    Raises :class:`~touchpulse_shared.auth.keys.InvalidKeySpec` for unusable parameters.
    """
    _require_aware(now)
    spec = validate_spec(name=name, scopes=scopes, source=source, touchpoints=touchpoints)
    for attempt in range(_CREATE_ATTEMPTS):
        plaintext, key_id, secret_hash = generate_key()
        try:
            row = await conn_or_pool.fetchrow(
                f"""
                INSERT INTO api_key
                    (key_id, name, secret_hash, scopes, source, touchpoints, created_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7)
                RETURNING {_COLUMNS}
                """,  # noqa: S608 - the interpolation is a constant column list
                key_id,
                spec.name,
                secret_hash,
                sorted(spec.scopes),
                spec.source,
                None if spec.touchpoints is None else sorted(spec.touchpoints),
                now,
            )
        except asyncpg.UniqueViolationError:
            if attempt == _CREATE_ATTEMPTS - 1:
                raise
            continue
        assert row is not None  # noqa: S101 - INSERT … RETURNING always returns the row
        return plaintext, _record(row)
    raise AssertionError("unreachable: the last attempt returns or raises")


async def revoke_key(conn: Executor, key_id: str, *, now: datetime) -> bool:
    """Revoke a key; ``False`` if there is no such key or it was already revoked."""
    _require_aware(now)
    revoked = await conn.fetchval(
        "UPDATE api_key SET revoked_at = $2 WHERE key_id = $1 AND revoked_at IS NULL"
        " RETURNING key_id",
        key_id,
        now,
    )
    return revoked is not None


async def list_keys(conn: Executor) -> list[KeyRecord]:
    """Every key, revoked ones included, oldest first."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM api_key ORDER BY created_at, key_id"  # noqa: S608 - constant
    )
    return [_record(row) for row in rows]


async def lookup(conn: Executor, key_id: str) -> KeyRecord | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM api_key WHERE key_id = $1",  # noqa: S608 - constant
        key_id,
    )
    return None if row is None else _record(row)


@dataclass(frozen=True)
class _Entry:
    expires_at: float
    #: ``(secret_hash, principal)`` of a usable key; ``None`` for an unknown or revoked id.
    usable: tuple[bytes, Principal] | None


class KeyVerifier:
    """Turns a presented key into a :class:`Principal`, keeping PostgreSQL off the hot path.

    Lookups are cached by key id for ``cache_ttl_s`` seconds of ``now`` (a monotonic
    clock), found or not, so a revocation takes effect within that time; with a TTL of 0
    nothing is cached and a revocation is immediate. The secret is compared on every call;
    neither the plaintext nor the secret is ever a cache key or kept.

    Ids that exist and ids that do not are cached apart, each bounded by ``max_cached``
    (least recently used out first): a flood of made-up keys then only evicts other
    made-up keys and never pushes real ones out, which would put the database back on the
    hot path.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        cache_ttl_s: float,
        now: Callable[[], float] = time.monotonic,
        max_cached: int = DEFAULT_MAX_CACHED,
    ) -> None:
        if not cache_ttl_s >= 0:  # also refuses NaN
            raise ValueError(f"cache_ttl_s must be >= 0, got {cache_ttl_s}")
        if max_cached < 1:
            raise ValueError(f"max_cached must be >= 1, got {max_cached}")
        self._pool = pool
        self._ttl = cache_ttl_s
        self._now = now
        self._max = max_cached
        self._known: OrderedDict[str, _Entry] = OrderedDict()
        self._unknown: OrderedDict[str, _Entry] = OrderedDict()

    async def verify(self, presented: str | None) -> Principal | None:
        """The key's principal; ``None`` for a missing, malformed, unknown, wrong or revoked key."""
        if presented is None:
            return None
        parsed = parse_key(presented)
        if parsed is None:
            return None
        key_id, secret = parsed
        entry = self._cached(key_id)
        if entry is None:
            entry = await self._load(key_id)
        if entry.usable is None:
            # Returning sooner for an unknown id than for a wrong secret leaks only whether
            # an id exists, and ids are not secret.
            return None
        secret_hash, principal = entry.usable
        return principal if secret_matches(secret, secret_hash) else None

    def cached_count(self) -> int:
        return len(self._known) + len(self._unknown)

    def _cached(self, key_id: str) -> _Entry | None:
        if self._ttl == 0:
            return None
        now = self._now()
        for cache in (self._known, self._unknown):
            entry = cache.get(key_id)
            if entry is None:
                continue
            if now < entry.expires_at:
                cache.move_to_end(key_id)
                return entry
            del cache[key_id]
        return None

    async def _load(self, key_id: str) -> _Entry:
        # The clock is read before the query: the entry then expires no later than TTL after
        # the database was asked, however slow the answer.
        expires_at = self._now() + self._ttl
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS}, secret_hash FROM api_key WHERE key_id = $1",  # noqa: S608
            key_id,
        )
        if row is None:
            entry, cache = _Entry(expires_at, None), self._unknown
        else:
            record = _record(row)
            usable = None if record.revoked else (bytes(row["secret_hash"]), record.principal())
            entry, cache = _Entry(expires_at, usable), self._known
        if self._ttl > 0:
            cache[key_id] = entry
            cache.move_to_end(key_id)
            while len(cache) > self._max:
                cache.popitem(last=False)
        return entry

"""Desk sessions and sign-in throttling: the storage and the rules, no HTTP.

A session is 32 random bytes the browser holds in a cookie; the table keeps only their
SHA-256 (a leaked table signs nobody in), and a CSRF token tied to the session
(synchronizer token: a form must carry the token of the session that submits it). A
session is refused once revoked (sign-out, disable, password reset), after
``desk_session_idle_minutes`` without a request or ``desk_session_absolute_hours`` after
sign-in, whichever comes first. Sign-in always makes a new session (rotation: a token
planted before sign-in is never promoted) and revokes the one the browser came with.

Throttling counts failed sign-ins in ``desk_signin_failure`` per account and per address
over ``desk_signin_window_minutes``; past the limit a sign-in is refused without checking
the password (so a refused attempt costs no Argon2 time either).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from touchpulse_shared.db import Conn
from touchpulse_shared.people import Person, Role

# A request refreshes last_seen_at at most this often: the idle limit is in minutes, and a
# write per page view (the live queue polls) would be a write per request for nothing.
TOUCH_EVERY = timedelta(seconds=60)
#: An address may fail this many times the account limit (a shared office NAT holds many
#: people, each with a typo now and then).
ADDRESS_FACTOR = 4


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True)
class Session:
    token_hash: bytes
    csrf_token: str
    person: Person

    def csrf_ok(self, submitted: str | None) -> bool:
        return submitted is not None and hmac.compare_digest(
            submitted.encode(), self.csrf_token.encode()
        )


async def open_session(
    conn: Conn, person: Person, *, now: datetime, absolute: timedelta, replaces: str | None
) -> tuple[str, Session]:
    """A new session for ``person``: its token (for the cookie, never stored) and the
    session. ``replaces``: the token the browser came with, revoked in the same
    transaction."""
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    hashed = token_hash(token)
    async with conn.transaction():
        # The person's dead sessions go as a new one comes: the table holds about one live
        # row per person and device, never a row per sign-in ever made.
        await conn.execute(
            "DELETE FROM desk_session WHERE person_id = $1"
            " AND (expires_at <= $2 OR revoked_at IS NOT NULL)",
            person.person_id,
            now,
        )
        if replaces is not None:
            await conn.execute(
                "UPDATE desk_session SET revoked_at = $2 WHERE token_hash = $1"
                " AND revoked_at IS NULL",
                token_hash(replaces),
                now,
            )
        await conn.execute(
            """
            INSERT INTO desk_session (token_hash, person_id, csrf_token, created_at,
                                      last_seen_at, expires_at)
            VALUES ($1, $2, $3, $4, $4, $5)
            """,
            hashed,
            person.person_id,
            csrf,
            now,
            now + absolute,
        )
    return token, Session(hashed, csrf, person)


async def find_session(conn: Conn, token: str, *, now: datetime, idle: timedelta) -> Session | None:
    """The live session of ``token``, its person enabled; None otherwise."""
    hashed = token_hash(token)
    row = await conn.fetchrow(
        """
        SELECT s.csrf_token, s.last_seen_at, p.person_id, p.login, p.display_name, p.role,
               p.disabled_at, p.created_at
        FROM desk_session s JOIN desk_person p USING (person_id)
        WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > $2
          AND s.last_seen_at > $2 - $3::interval AND p.disabled_at IS NULL
        """,
        hashed,
        now,
        idle,
    )
    if row is None:
        return None
    if now - row["last_seen_at"] >= TOUCH_EVERY:
        await conn.execute(
            "UPDATE desk_session SET last_seen_at = $2 WHERE token_hash = $1", hashed, now
        )
    person = Person(
        person_id=row["person_id"],
        login=row["login"],
        display_name=row["display_name"],
        role=Role(row["role"]),
        disabled_at=row["disabled_at"],
        created_at=row["created_at"],
    )
    return Session(hashed, row["csrf_token"], person)


async def revoke_session(conn: Conn, hashed: bytes, *, now: datetime) -> None:
    await conn.execute(
        "UPDATE desk_session SET revoked_at = $2 WHERE token_hash = $1 AND revoked_at IS NULL",
        hashed,
        now,
    )


def _keys(login: str, address: str) -> tuple[str, str]:
    return f"login:{login}", f"address:{address}"


async def throttled(
    conn: Conn, *, login: str, address: str, now: datetime, window: timedelta, limit: int
) -> bool:
    """True when the account or the address failed too often within ``window``."""
    account, place = _keys(login, address)
    row = await conn.fetchrow(
        """
        SELECT count(*) FILTER (WHERE throttle_key = $1) AS account,
               count(*) FILTER (WHERE throttle_key = $2) AS address
        FROM desk_signin_failure
        WHERE throttle_key IN ($1, $2) AND failed_at > $3
        """,
        account,
        place,
        now - window,
    )
    assert row is not None  # noqa: S101 - an aggregate always answers one row
    return bool(row["account"] >= limit or row["address"] >= limit * ADDRESS_FACTOR)


async def record_failure(conn: Conn, *, login: str, address: str, now: datetime) -> None:
    account, place = _keys(login, address)
    await conn.execute(
        "INSERT INTO desk_signin_failure (throttle_key, failed_at) VALUES ($1, $3), ($2, $3)",
        account,
        place,
        now,
    )


async def clear_failures(conn: Conn, *, login: str, now: datetime, window: timedelta) -> None:
    """A success forgets the account's failures (not the address's: one right password
    must not reset a guesser's count on the others), and rows older than the window."""
    account, _ = _keys(login, "")
    await conn.execute(
        "DELETE FROM desk_signin_failure WHERE throttle_key = $1 OR failed_at <= $2",
        account,
        now - window,
    )


# Rows one cleanup statement deletes at most: each delete is a short transaction, so a
# backlog (a guessing run filled desk_signin_failure) never holds locks for long.
PRUNE_BATCH_ROWS = 5000


async def prune(
    conn: Conn, *, now: datetime, idle: timedelta, window: timedelta, batch: int = PRUNE_BATCH_ROWS
) -> int:
    """Delete dead sessions (expired, idled out or revoked) and failed sign-ins older than
    the throttling window, at most ``batch`` rows of each; the number deleted.

    Sign-in already clears a person's own dead rows, but someone who never signs in again
    (left the company, an attacker's made-up logins and addresses) would keep theirs for
    ever: the api's ``desk_cleanup`` loop calls this until it returns 0.
    """
    # By ctid with a LIMIT: PostgreSQL's DELETE has no LIMIT of its own. Neither table has
    # an index on these columns; desk_session is about one row per person and device, and
    # desk_signin_failure is kept to one window's failures by this very loop.
    sessions = await conn.execute(
        """
        DELETE FROM desk_session WHERE ctid = ANY (ARRAY(
            SELECT ctid FROM desk_session
            WHERE expires_at <= $1 OR revoked_at IS NOT NULL OR last_seen_at <= $1 - $2::interval
            LIMIT $3))
        """,
        now,
        idle,
        batch,
    )
    failures = await conn.execute(
        """
        DELETE FROM desk_signin_failure WHERE ctid = ANY (ARRAY(
            SELECT ctid FROM desk_signin_failure WHERE failed_at <= $1 LIMIT $2))
        """,
        now - window,
        batch,
    )
    return int(sessions.split()[-1]) + int(failures.split()[-1])

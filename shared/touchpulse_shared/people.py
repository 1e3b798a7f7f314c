"""People who sign in to the desk: accounts, roles and Argon2id password hashes.

Apart from API keys (``touchpulse_shared.auth``): a key is a system's credential, a person
signs in with a password and gets a session (``touchpulse_api.desk.sessions``). Here so
that the CLI (``touchpulse users ...``) and the api share one definition of the table.

Passwords are hashed with Argon2id through argon2-cffi at its RFC 9106 "low memory"
profile (3 passes, 64 MiB, 4 lanes; docs/desk.md says why): a stored hash carries its
parameters, so raising them later re-hashes each password at its next sign-in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from touchpulse_shared.db import Conn

_HASHER = PasswordHasher()  # Argon2id, RFC 9106 low-memory profile (argon2-cffi's default)
#: Shorter passwords are refused: a guess at a time is throttled, but not an offline guess
#: at a stolen hash.
MIN_PASSWORD_LENGTH = 12
# Longer than any passphrase: a megabyte "password" would only cost hashing time.
MAX_PASSWORD_LENGTH = 1024
_LOGIN = re.compile(r"^[a-z0-9._%+@-]{1,254}$")
# Verified against when the login is unknown, so an unknown login costs the same time as a
# wrong password (no timing oracle for which accounts exist).
_DUMMY_HASH = _HASHER.hash("touchpulse-no-such-person")


class Role(StrEnum):
    AGENT = "agent"  # works the queue
    LEAD = "lead"  # + reassign, call list, organisation view
    ADMIN = "admin"  # + people

    def at_least(self, other: Role) -> bool:
        order = (Role.AGENT, Role.LEAD, Role.ADMIN)
        return order.index(self) >= order.index(other)


class InvalidPerson(ValueError):
    """A login, name or password the desk does not take; ``field`` names which."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Person:
    person_id: int
    login: str
    display_name: str
    role: Role
    disabled_at: datetime | None
    created_at: datetime


def normalise_login(login: str) -> str:
    return login.strip().lower()


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidPerson("password", f"a password needs {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidPerson("password", f"a password has at most {MAX_PASSWORD_LENGTH} characters")


def hash_password(password: str) -> str:
    check_password(password)
    return _HASHER.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True when ``password`` matches; takes the same time when there is no stored hash."""
    if len(password) > MAX_PASSWORD_LENGTH:
        return False
    try:
        return _HASHER.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return _HASHER.check_needs_rehash(stored_hash)


def _person(r: asyncpg.Record) -> Person:
    return Person(
        person_id=r["person_id"],
        login=r["login"],
        display_name=r["display_name"],
        role=Role(r["role"]),
        disabled_at=r["disabled_at"],
        created_at=r["created_at"],
    )


async def create_person(
    conn: Conn, *, login: str, display_name: str, role: Role, password: str, now: datetime
) -> Person:
    """A new account; :class:`InvalidPerson` for a bad login, name or password, or a login
    already taken."""
    login = normalise_login(login)
    if not _LOGIN.match(login):
        raise InvalidPerson("login", "a login is an e-mail address or a name of a-z 0-9 . _ - @")
    display_name = display_name.strip()
    if not 1 <= len(display_name) <= 200:
        raise InvalidPerson("display_name", "a display name has 1 to 200 characters")
    password_hash = hash_password(password)
    row = await conn.fetchrow(
        """
        INSERT INTO desk_person (login, display_name, role, password_hash, created_at,
                                 updated_at)
        VALUES ($1, $2, $3, $4, $5, $5)
        ON CONFLICT (login) DO NOTHING
        RETURNING person_id, login, display_name, role, disabled_at, created_at
        """,
        login,
        display_name,
        role.value,
        password_hash,
        now,
    )
    if row is None:
        raise InvalidPerson("login", f"the login {login!r} is taken")
    return _person(row)


async def list_people(conn: Conn) -> list[Person]:
    rows = await conn.fetch(
        "SELECT person_id, login, display_name, role, disabled_at, created_at"
        " FROM desk_person ORDER BY login"
    )
    return [_person(r) for r in rows]


async def find_person(conn: Conn, login: str) -> Person | None:
    row = await conn.fetchrow(
        "SELECT person_id, login, display_name, role, disabled_at, created_at"
        " FROM desk_person WHERE login = $1",
        normalise_login(login),
    )
    return None if row is None else _person(row)


async def disable_person(conn: Conn, login: str, *, now: datetime) -> Person | None:
    """Disable the account and revoke its sessions (one transaction); None if unknown."""
    async with conn.transaction():
        row = await conn.fetchrow(
            """
            UPDATE desk_person SET disabled_at = coalesce(disabled_at, $2), updated_at = $2
            WHERE login = $1 RETURNING person_id, login, display_name, role, disabled_at, created_at
            """,
            normalise_login(login),
            now,
        )
        if row is None:
            return None
        await conn.execute(
            "UPDATE desk_session SET revoked_at = $2 WHERE person_id = $1 AND revoked_at IS NULL",
            row["person_id"],
            now,
        )
    return _person(row)


async def reset_password(conn: Conn, login: str, password: str, *, now: datetime) -> bool:
    """Set a new password and revoke every session of the account; False if unknown."""
    password_hash = hash_password(password)
    async with conn.transaction():
        person_id = await conn.fetchval(
            """
            UPDATE desk_person SET password_hash = $2, updated_at = $3
            WHERE login = $1 RETURNING person_id
            """,
            normalise_login(login),
            password_hash,
            now,
        )
        if person_id is None:
            return False
        await conn.execute(
            "UPDATE desk_session SET revoked_at = $2 WHERE person_id = $1 AND revoked_at IS NULL",
            person_id,
            now,
        )
    return True


async def credentials(conn: Conn, login: str) -> tuple[Person, str] | None:
    """The account and its stored hash, for sign-in only; None if the login is unknown."""
    row = await conn.fetchrow(
        "SELECT person_id, login, display_name, role, disabled_at, created_at, password_hash"
        " FROM desk_person WHERE login = $1",
        normalise_login(login),
    )
    return None if row is None else (_person(row), row["password_hash"])


async def store_rehash(conn: Conn, person_id: int, password: str) -> None:
    """Re-hash at current parameters (after a sign-in proved the password)."""
    await conn.execute(
        "UPDATE desk_person SET password_hash = $2 WHERE person_id = $1",
        person_id,
        _HASHER.hash(password),
    )


async def disable_by_id(conn: Conn, person_id: int, *, now: datetime) -> Person | None:
    """:func:`disable_person` by id (the admin page's buttons carry ids, not logins)."""
    login = await conn.fetchval("SELECT login FROM desk_person WHERE person_id = $1", person_id)
    return None if login is None else await disable_person(conn, login, now=now)

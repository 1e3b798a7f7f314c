"""API keys: their format, hashing, scopes, and what a key may do. Pure: no I/O, no clock.

A key reads ``tpk_<key_id>_<secret>``. The ``key_id`` is not secret: it names the key in
lists, logs and the CLI, and finds its row in one index lookup. Only the ``secret`` proves
possession, and only its SHA-256 is ever stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from touchpulse_shared.contract.events import (
    IDENTIFIER_PATTERN,
    MAX_SLUG_LENGTH,
    MAX_SOURCE_LENGTH,
    SLUG_PATTERN,
)

KEY_PREFIX: Final = "tpk_"
KEY_ID_LENGTH: Final = 12
# 32 random bytes in unpadded base64url.
SECRET_LENGTH: Final = 43
KEY_LENGTH: Final = len(KEY_PREFIX) + KEY_ID_LENGTH + 1 + SECRET_LENGTH
MAX_NAME_LENGTH: Final = 128

_KEY_ID_ALPHABET: Final = "abcdefghijklmnopqrstuvwxyz234567"
# Explicit ASCII classes (never \w or \d, which match other scripts' letters and digits), so
# a key that passes is plain ASCII and safe to encode, hash and log the id of.
_KEY = re.compile(
    rf"tpk_(?P<key_id>[a-z2-7]{{{KEY_ID_LENGTH}}})_(?P<secret>[A-Za-z0-9_-]{{{SECRET_LENGTH}}})",
    re.ASCII,
)
_KEY_ID = re.compile(rf"[a-z2-7]{{{KEY_ID_LENGTH}}}", re.ASCII)
_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)
_SLUG = re.compile(SLUG_PATTERN)
_CONTROL = re.compile(r"[\x00-\x1F\x7F-\x9F]")


class Scope(StrEnum):
    EVENTS_WRITE = "events:write"
    HEALTH_READ = "health:read"
    INTERVENTIONS_WRITE = "interventions:write"
    ADMIN = "admin"


class AuthError(Exception):
    """Root of every error the auth package raises itself."""


class InvalidKeySpec(AuthError, ValueError):
    """The parameters for a new key are unusable; ``field`` names the one at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def generate_key() -> tuple[str, str, bytes]:
    """A new key: ``(plaintext, key_id, secret_hash)``. Show the plaintext once, store the rest."""
    key_id = "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(KEY_ID_LENGTH))
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")
    return f"{KEY_PREFIX}{key_id}_{secret}", key_id, hash_secret(secret)


def parse_key(presented: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed key, else ``None``; never raises."""
    # The length test first, so an oversized header costs nothing beyond len().
    if len(presented) != KEY_LENGTH:
        return None
    match = _KEY.fullmatch(presented)
    if match is None:
        return None
    return match["key_id"], match["secret"]


def is_key_id(value: str) -> bool:
    return len(value) == KEY_ID_LENGTH and _KEY_ID.fullmatch(value) is not None


def hash_secret(secret: str) -> bytes:
    """SHA-256 of the secret.

    Slow password hashes (bcrypt, scrypt, argon2) exist to make guessing low-entropy
    passwords expensive. A key's secret is 256 uniformly random bits: no dictionary, and
    guessing is hopeless at any hash speed. A slow hash would only add tens of milliseconds
    of CPU to every authenticated request and hand out a cheap denial of service.
    """
    # surrogatepass: a str that is not valid Unicode still hashes instead of raising.
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def secret_matches(secret: str, stored_hash: bytes) -> bool:
    # Constant time, so the response time does not reveal how many leading bytes matched.
    return hmac.compare_digest(hash_secret(secret), stored_hash)


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: one API key and what it may do."""

    key_id: str
    name: str
    scopes: frozenset[Scope]
    #: The emitting system an ``events:write`` key writes for; ``None`` for other keys.
    source: str | None
    #: The touchpoints an ``events:write`` key may write; ``None`` means all of them.
    touchpoints: frozenset[str] | None

    def has(self, scope: Scope) -> bool:
        """Whether the key holds ``scope`` itself. No scope implies another.

        In particular ``admin`` (managing keys and configuration) does not imply
        ``events:write``, ``health:read`` or ``interventions:write``: an operator's key
        should not be able to forge events or read customer health, and a key that needs
        several powers is created with several scopes, so every grant is visible in the
        key list rather than hidden in a hierarchy.
        """
        return scope in self.scopes

    def write_refusal(self, source: str, touchpoint: str) -> str | None:
        """Why this key may not write an event for ``source`` at ``touchpoint``; ``None`` if it may.

        The reason is meant for the caller (a 403 detail): it states the key's own limits,
        which its holder may know.
        """
        if not self.has(Scope.EVENTS_WRITE):
            return f"this key may not write events (it lacks the {Scope.EVENTS_WRITE} scope)"
        if self.source is None:
            # validate_spec and the table's CHECK prevent this; refuse rather than allow all.
            return "this key is not bound to a source, so it may not write events"
        if source != self.source:
            return f"this key may only write events for source '{self.source}'"
        if self.touchpoints is not None and touchpoint not in self.touchpoints:
            return f"this key may not write events for touchpoint '{touchpoint}'"
        return None


@dataclass(frozen=True)
class KeySpec:
    """Validated parameters of a key to create."""

    name: str
    scopes: frozenset[Scope]
    source: str | None
    touchpoints: frozenset[str] | None


def validate_spec(
    *,
    name: str,
    scopes: Iterable[str],
    source: str | None = None,
    touchpoints: Iterable[str] | None = None,
) -> KeySpec:
    """Check a new key's parameters; raise :class:`InvalidKeySpec` naming the field at fault.

    ``source`` and ``touchpoints`` only mean something for ``events:write``; given for any
    other key they are refused rather than silently ignored, since whoever passed them
    believed they restricted the key.
    """
    if not name.strip() or len(name) > MAX_NAME_LENGTH or _CONTROL.search(name):
        raise InvalidKeySpec(
            "name",
            f"the name should be 1 to {MAX_NAME_LENGTH} characters, not blank and"
            " without control characters",
        )
    parsed = _check_scopes(scopes)
    writes = Scope.EVENTS_WRITE in parsed
    _check_source(source, writes=writes)
    allowed = None if touchpoints is None else _check_touchpoints(touchpoints, writes=writes)
    return KeySpec(name=name, scopes=parsed, source=source, touchpoints=allowed)


def _check_scopes(scopes: Iterable[str]) -> frozenset[Scope]:
    parsed: set[Scope] = set()
    for scope in scopes:
        try:
            parsed.add(Scope(scope))
        except ValueError:
            raise InvalidKeySpec(
                "scopes",
                f"unknown scope {scope!r}; the scopes are {', '.join(s.value for s in Scope)}",
            ) from None
    if not parsed:
        raise InvalidKeySpec("scopes", "a key needs at least one scope")
    return frozenset(parsed)


def _check_source(source: str | None, *, writes: bool) -> None:
    if source is None:
        if writes:
            raise InvalidKeySpec(
                "source", f"a key with {Scope.EVENTS_WRITE} must be bound to a source"
            )
    elif not writes:
        raise InvalidKeySpec("source", f"a source only applies to {Scope.EVENTS_WRITE} keys")
    elif len(source) > MAX_SOURCE_LENGTH or _IDENTIFIER.fullmatch(source) is None:
        raise InvalidKeySpec(
            "source",
            f"the source should be 1 to {MAX_SOURCE_LENGTH} characters without whitespace or"
            " control characters, as in events",
        )


def _check_touchpoints(touchpoints: Iterable[str], *, writes: bool) -> frozenset[str]:
    allowed = frozenset(touchpoints)
    if not writes:
        raise InvalidKeySpec("touchpoints", f"touchpoints only apply to {Scope.EVENTS_WRITE} keys")
    if not allowed:
        # An empty list would make a key that can write nothing: surely a mistake.
        raise InvalidKeySpec(
            "touchpoints", "give at least one touchpoint, or none at all for every one"
        )
    for touchpoint in sorted(allowed):
        if _SLUG.fullmatch(touchpoint) is None:
            raise InvalidKeySpec(
                "touchpoints",
                f"touchpoint {touchpoint!r} should start with a lowercase letter, then"
                " lowercase letters, digits or underscores, at most"
                f" {MAX_SLUG_LENGTH} characters",
            )
    return allowed

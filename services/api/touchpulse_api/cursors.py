"""Pagination cursors a client cannot forge.

A cursor is ``<payload>.<tag>``: the payload is base64url (unpadded) of a JSON array with
the list it belongs to and the position in it; the tag is the first 16 bytes of
HMAC-SHA256 over the payload, keyed by a cursor key derived from the webhook signing master
key (``TOUCHPULSE_WEBHOOK_SIGNING_KEY``, or the per-deployment random key file; see
:mod:`touchpulse_api.webhooks.signing`). A cursor from another list, a tampered one and a
made-up one are all refused alike: ``400`` naming ``cursor``. The values of a signed cursor
are still checked for their types before they reach a query.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import Query

from touchpulse_shared.http.problems import Problem
from touchpulse_shared.settings import Settings

_TAG_BYTES = 16
_TAG_CHARS = 22  # base64url of 16 bytes, unpadded
MAX_CURSOR_LENGTH = 2048
_DOMAIN = b"touchpulse pagination cursor v1"

Cursor = Annotated[
    str | None,
    # Any other string is well formed, and refused with 400 unless the server signed it.
    Query(
        min_length=1,
        max_length=MAX_CURSOR_LENGTH,
        description="next_cursor from the previous page, as issued (signed by the server;"
        " any other cursor is refused with 400)",
    ),
]


def _key(settings: Settings) -> bytes:
    # Imported here: the webhooks package imports this module for its own lists.
    from touchpulse_api.webhooks.signing import master_key  # noqa: PLC0415

    return hmac.new(master_key(settings), _DOMAIN, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _tag(settings: Settings, payload: str) -> str:
    return _b64(hmac.new(_key(settings), payload.encode(), hashlib.sha256).digest()[:_TAG_BYTES])


def invalid_cursor() -> Problem:
    return Problem(
        400,
        "invalid-cursor",
        "Invalid Cursor",
        "The cursor is not one this API issued for this list",
        errors=[{"pointer": "/query/cursor", "detail": "unknown cursor", "code": "cursor"}],
    )


def encode_cursor(settings: Settings, kind: str, values: Sequence[Any]) -> str:
    payload = _b64(orjson.dumps([kind, *values], option=orjson.OPT_UTC_Z))
    return f"{payload}.{_tag(settings, payload)}"


def decode_cursor(
    settings: Settings, kind: str, cursor: str | None, parsers: Sequence[Callable[[Any], Any]]
) -> list[Any] | None:
    """The values of a cursor this api issued for ``kind``, each through its parser (which
    raises ``ValueError`` or ``TypeError`` for a value of the wrong shape); ``None`` for no
    cursor; ``400`` for anything else."""
    if cursor is None:
        return None
    payload, _, tag = cursor.partition(".")
    if not hmac.compare_digest(tag.encode(), _tag(settings, payload).encode()):
        raise invalid_cursor()
    try:
        values = orjson.loads(_unb64(payload))
    except (ValueError, binascii.Error):
        raise invalid_cursor() from None
    if not isinstance(values, list) or len(values) != len(parsers) + 1 or values[0] != kind:
        raise invalid_cursor()
    try:
        return [parse(value) for parse, value in zip(parsers, values[1:], strict=True)]
    except (ValueError, TypeError, OverflowError):
        raise invalid_cursor() from None


# Parsers of cursor values: exact JSON types, nothing coerced.


def text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


def number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("not a number")
    return float(value)


def bigint(value: Any) -> int:
    # bool is an int to Python, and the columns are 63-bit bigints.
    if type(value) is not int or not 0 <= value < 2**63:
        raise TypeError("not a bigint")
    return value


def instant(value: Any) -> datetime:
    parsed = datetime.fromisoformat(text(value))
    if parsed.tzinfo is None:
        raise ValueError("no offset")
    return parsed.astimezone(UTC)

"""Webhook secrets and Standard Webhooks signatures.

A subscription's secret is never stored anywhere: it is ``whsec_`` + base64 of
HMAC-SHA256(master key, ``<subscription id>:<nonce>``), with a random nonce per subscription
(stored) and a master key outside the database — ``TOUCHPULSE_WEBHOOK_SIGNING_KEY``. Without
that setting a random key is kept in ``<state dir>/webhook-signing.key``, which suits local
runs only: production must set the key (the same on every api replica), or the secrets
change when the file is lost and no receiver can verify a webhook any more.

Rotating a secret is a new nonce. Changing the master key rotates every secret at once.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
import threading
from collections.abc import Iterable
from pathlib import Path

import structlog

from touchpulse_shared.settings import Settings, reveal

log = structlog.get_logger(__name__)

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format marker, not a secret
NONCE_BYTES = 16
KEY_FILE_NAME = "webhook-signing.key"
_KEY_FILE_BYTES = 32

_keys: dict[tuple[str | None, Path], bytes] = {}
_keys_lock = threading.Lock()


def master_key(settings: Settings) -> bytes:
    """The key every subscription's secret is derived from (read once per process)."""
    configured = reveal(settings.webhook_signing_key)
    cache_key = (configured, settings.state_dir.resolve())
    with _keys_lock:
        key = _keys.get(cache_key)
        if key is None:
            if configured is not None:
                key = configured.encode()
            else:
                path = settings.state_dir / KEY_FILE_NAME
                key = _local_key(path)
                # Each replica would sign with its own file: fine for one local process only.
                log.warning(
                    "webhooks.signing_key.local_file",
                    path=str(path),
                    hint="set TOUCHPULSE_WEBHOOK_SIGNING_KEY in production",
                )
            _keys[cache_key] = key
        return key


def _local_key(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = secrets.token_bytes(_KEY_FILE_BYTES).hex().encode()
    # O_EXCL: when two processes start at once, one writes and both read what it wrote.
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, fresh)
            os.fsync(fd)
        finally:
            os.close(fd)
    text = path.read_bytes().strip()
    if len(text) < _KEY_FILE_BYTES:
        raise ValueError(f"{path}: a webhook signing key needs at least 32 bytes")
    return text


def new_nonce() -> bytes:
    return secrets.token_bytes(NONCE_BYTES)


def derive_secret(master: bytes, subscription_id: str, nonce: bytes) -> str:
    """The subscription's secret in the Standard Webhooks form ``whsec_<base64>``."""
    digest = hmac.new(master, subscription_id.encode() + b":" + nonce, hashlib.sha256).digest()
    return SECRET_PREFIX + base64.b64encode(digest).decode()


def _secret_bytes(secret: str) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    return base64.b64decode(secret[len(SECRET_PREFIX) :])


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` signature."""
    signed = msg_id.encode() + b"." + str(timestamp).encode() + b"." + body
    digest = hmac.new(_secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_headers(
    secrets_in_force: Iterable[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers; one signature per secret in force."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(s, msg_id, timestamp, body) for s in secrets_in_force),
    }

"""API keys and what they allow: shared by the ingest and api services and the CLI."""

from touchpulse_shared.auth.keys import (
    KEY_PREFIX,
    AuthError,
    InvalidKeySpec,
    KeySpec,
    Principal,
    Scope,
    generate_key,
    hash_secret,
    is_key_id,
    parse_key,
    secret_matches,
    validate_spec,
)
from touchpulse_shared.auth.store import (
    KeyRecord,
    KeyVerifier,
    create_key,
    list_keys,
    lookup,
    revoke_key,
)

__all__ = [
    "KEY_PREFIX",
    "AuthError",
    "InvalidKeySpec",
    "KeyRecord",
    "KeySpec",
    "KeyVerifier",
    "Principal",
    "Scope",
    "create_key",
    "generate_key",
    "hash_secret",
    "is_key_id",
    "list_keys",
    "lookup",
    "parse_key",
    "revoke_key",
    "secret_matches",
    "validate_spec",
]

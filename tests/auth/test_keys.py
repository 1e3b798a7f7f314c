"""API keys without a database: their format, parsing of anything, scope rules, write limits."""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from touchpulse_shared.auth import (
    InvalidKeySpec,
    Principal,
    Scope,
    generate_key,
    hash_secret,
    is_key_id,
    parse_key,
    secret_matches,
    validate_spec,
)

KEY = re.compile(r"tpk_[a-z2-7]{12}_[A-Za-z0-9_-]{43}")


def test_a_generated_key_has_the_documented_format_and_parses_back() -> None:
    plaintext, key_id, secret_hash = generate_key()
    assert KEY.fullmatch(plaintext)
    assert is_key_id(key_id)
    parsed = parse_key(plaintext)
    assert parsed is not None
    assert parsed[0] == key_id
    secret = parsed[1]
    assert len(base64.urlsafe_b64decode(secret + "=")) == 32
    assert secret_hash == hash_secret(secret)
    assert len(secret_hash) == 32
    assert secret not in secret_hash.hex()


def test_generated_keys_differ() -> None:
    keys = [generate_key() for _ in range(200)]
    assert len({k[0] for k in keys}) == len({k[1] for k in keys}) == 200


def test_the_secret_matches_only_its_own_hash() -> None:
    plaintext, _, secret_hash = generate_key()
    parsed = parse_key(plaintext)
    assert parsed is not None
    assert secret_matches(parsed[1], secret_hash)
    other = parse_key(generate_key()[0])
    assert other is not None
    assert not secret_matches(other[1], secret_hash)
    assert not secret_matches(parsed[1], b"")


@pytest.mark.parametrize(
    "presented",
    [
        "",
        "tpk_",
        "Bearer tpk_abcdefghijkl_" + "A" * 43,
        "tpk_abcdefghijkl_" + "A" * 43 + "\n",
        "tpk_abcdefghijkl_" + "A" * 42,
        "tpk_abcdefghijkl_" + "A" * 44,
        "tpk_ABCDEFGHIJKL_" + "A" * 43,  # ids are lowercase
        "tpk_abcdefghijk1_" + "A" * 43,  # 1 is not base32
        "tpk_abcdefghijkl-" + "A" * 43,
        "tpx_abcdefghijkl_" + "A" * 43,
        "tpk_abcdefghijkl_" + "A" * 42 + "=",
        "tpk_abcdefghijkl_" + "A" * 42 + "\u0661",  # an Arabic-Indic digit
        "tpk_abcdefghijkl_" + "é" * 43,
        "tpk_abcdefghijkl_" + "A" * 42 + "\x00",
        "tpk_abcdefghijkl_" + "A" * 42 + "\ud800",  # a lone surrogate
    ],
)
def test_malformed_keys_parse_to_none(presented: str) -> None:
    assert parse_key(presented) is None


def test_a_huge_header_is_refused_without_work() -> None:
    assert parse_key("tpk_abcdefghijkl_" + "A" * 10_000_000) is None


@given(st.text())
def test_parse_key_never_raises_on_any_text(presented: str) -> None:
    parsed = parse_key(presented)
    if parsed is not None:
        assert presented == f"tpk_{parsed[0]}_{parsed[1]}"


@given(st.text(min_size=60, max_size=60))
def test_parse_key_never_raises_on_text_of_the_key_length(presented: str) -> None:
    parse_key(presented)


@given(st.from_regex(KEY, fullmatch=True))
def test_every_string_of_the_format_parses(presented: str) -> None:
    assert parse_key(presented) is not None


@given(st.text())
def test_hashing_and_comparing_never_raise(secret: str) -> None:
    assert not secret_matches(secret, b"\x00" * 32) or hash_secret(secret) == b"\x00" * 32


def writer(source: str = "billing", touchpoints: frozenset[str] | None = None) -> Principal:
    return Principal(
        key_id="abcdefghijkl",
        name="billing system",
        scopes=frozenset({Scope.EVENTS_WRITE}),
        source=source,
        touchpoints=touchpoints,
    )


def test_a_writer_may_write_its_own_source_at_any_touchpoint() -> None:
    assert writer().write_refusal("billing", "billing") is None
    assert writer().write_refusal("billing", "call_centre") is None


def test_a_writer_may_not_write_another_source() -> None:
    assert writer().write_refusal("crm", "billing") == (
        "this key may only write events for source 'billing'"
    )


def test_a_writer_limited_to_touchpoints_may_not_write_others() -> None:
    limited = writer(touchpoints=frozenset({"billing", "delivery"}))
    assert limited.write_refusal("billing", "delivery") is None
    assert limited.write_refusal("billing", "web") == (
        "this key may not write events for touchpoint 'web'"
    )
    # The source is judged first: both wrong names the source.
    assert limited.write_refusal("crm", "web") == (
        "this key may only write events for source 'billing'"
    )


def test_a_key_without_events_write_may_not_write_even_as_admin() -> None:
    admin = Principal("abcdefghijkl", "ops", frozenset(Scope), None, None)
    assert admin.write_refusal("billing", "billing") is not None
    reader = Principal("abcdefghijkl", "crm", frozenset({Scope.ADMIN}), None, None)
    refusal = reader.write_refusal("billing", "billing")
    assert refusal is not None
    assert "events:write" in refusal


def test_a_writer_without_a_source_is_refused_rather_than_unlimited() -> None:
    unbound = Principal("abcdefghijkl", "x", frozenset({Scope.EVENTS_WRITE}), None, None)
    assert unbound.write_refusal("billing", "billing") is not None


def test_no_scope_implies_another() -> None:
    admin = Principal("abcdefghijkl", "ops", frozenset({Scope.ADMIN}), None, None)
    assert admin.has(Scope.ADMIN)
    for scope in set(Scope) - {Scope.ADMIN}:
        assert not admin.has(scope)
    assert not writer().has(Scope.HEALTH_READ)
    assert writer().has(Scope.EVENTS_WRITE)


def test_a_valid_spec_is_normalised() -> None:
    spec = validate_spec(
        name="billing system",
        scopes=["events:write", "health:read", "events:write"],
        source="urn:acme:billing",
        touchpoints=["billing", "delivery", "billing"],
    )
    assert spec.scopes == {Scope.EVENTS_WRITE, Scope.HEALTH_READ}
    assert spec.touchpoints == frozenset({"billing", "delivery"})
    assert spec.source == "urn:acme:billing"
    reader = validate_spec(name="crm", scopes=[Scope.HEALTH_READ])
    assert reader.source is None
    assert reader.touchpoints is None


@pytest.mark.parametrize(
    ("kwargs", "field", "fragment"),
    [
        ({"name": "", "scopes": ["admin"]}, "name", "1 to 128"),
        ({"name": "   ", "scopes": ["admin"]}, "name", "not blank"),
        ({"name": "a\nb", "scopes": ["admin"]}, "name", "control"),
        ({"name": "x" * 129, "scopes": ["admin"]}, "name", "1 to 128"),
        ({"name": "x", "scopes": []}, "scopes", "at least one"),
        ({"name": "x", "scopes": ["events:read"]}, "scopes", "'events:read'"),
        ({"name": "x", "scopes": ["events:write"]}, "source", "bound to a source"),
        ({"name": "x", "scopes": ["health:read"], "source": "s"}, "source", "only applies"),
        (
            {"name": "x", "scopes": ["events:write"], "source": "has space"},
            "source",
            "whitespace",
        ),
        ({"name": "x", "scopes": ["events:write"], "source": ""}, "source", "1 to 256"),
        ({"name": "x", "scopes": ["events:write"], "source": "s" * 257}, "source", "1 to 256"),
        (
            {"name": "x", "scopes": ["admin"], "touchpoints": ["web"]},
            "touchpoints",
            "only apply",
        ),
        (
            {"name": "x", "scopes": ["events:write"], "source": "s", "touchpoints": []},
            "touchpoints",
            "at least one",
        ),
        (
            {"name": "x", "scopes": ["events:write"], "source": "s", "touchpoints": ["Web"]},
            "touchpoints",
            "'Web'",
        ),
        (
            {"name": "x", "scopes": ["events:write"], "source": "s", "touchpoints": ["web\n"]},
            "touchpoints",
            "lowercase",
        ),
    ],
)
def test_invalid_specs_name_the_field(kwargs: dict[str, object], field: str, fragment: str) -> None:
    with pytest.raises(InvalidKeySpec) as caught:
        validate_spec(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert fragment in str(caught.value)
    assert isinstance(caught.value, ValueError)

"""Secrets derived, never stored; signatures that standardwebhooks verifies; the SSRF guard."""

from __future__ import annotations

import ipaddress
import stat
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from touchpulse_api.webhooks.signing import (
    KEY_FILE_NAME,
    derive_secret,
    master_key,
    new_nonce,
    signature_headers,
)
from touchpulse_api.webhooks.targets import (
    ForbiddenTarget,
    TargetError,
    forbidden_reason,
    parse_url,
    resolve_target,
)
from touchpulse_shared.settings import Settings

MASTER = b"m" * 32


def test_a_derived_secret_verifies_with_standardwebhooks() -> None:
    secret = derive_secret(MASTER, "wh_x", new_nonce())
    assert secret.startswith("whsec_")
    body = b'{"type":"intervention.opened","data":{}}'
    timestamp = int(datetime.now(UTC).timestamp())
    headers = signature_headers([secret], "msg_1", timestamp, body)
    assert Webhook(secret).verify(body, headers) == {"type": "intervention.opened", "data": {}}

    other = derive_secret(MASTER, "wh_x", new_nonce())
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", headers)


def test_secrets_depend_on_the_master_key_the_id_and_the_nonce() -> None:
    nonce = new_nonce()
    base = derive_secret(MASTER, "wh_a", nonce)
    assert derive_secret(MASTER, "wh_a", nonce) == base
    assert derive_secret(b"n" * 32, "wh_a", nonce) != base
    assert derive_secret(MASTER, "wh_b", nonce) != base
    assert derive_secret(MASTER, "wh_a", new_nonce()) != base


def test_without_a_configured_key_a_private_key_file_is_made_once(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "a", webhook_signing_key=None)
    key = master_key(settings)
    path = tmp_path / "a" / KEY_FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(key) >= 32
    assert master_key(Settings(state_dir=tmp_path / "a", webhook_signing_key=None)) == key
    assert master_key(Settings(state_dir=tmp_path / "b", webhook_signing_key=None)) != key


def test_a_configured_key_is_used_and_no_file_is_made(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, webhook_signing_key="k" * 40)
    assert master_key(settings) == b"k" * 40
    assert not (tmp_path / KEY_FILE_NAME).exists()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://127.8.9.10/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/hook",
        "http://192.168.1.1/hook",
        "http://172.16.0.1/hook",
        "http://[fd00::1]/hook",
        "http://0.0.0.0/hook",
        "http://[::]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[::ffff:169.254.169.254]/hook",
        "http://[fe80::1]/hook",
        "http://100.64.0.1/hook",
        "http://224.0.0.1/hook",
        "http://[2002:a00:1::]/hook",  # 6to4 around 10.0.0.1
        "http://localhost/hook",
        "http://localhost./hook",
        "http://2130706433/hook",  # 127.0.0.1 as one number: what getaddrinfo makes of it
        "http://0x7f.1/hook",
    ],
)
async def test_loopback_link_local_and_private_targets_are_refused(url: str) -> None:
    with pytest.raises(ForbiddenTarget, match="may not be sent"):
        await resolve_target(url, allow_private=False)


async def test_a_host_with_any_private_address_is_refused() -> None:
    async def rebinding(host: str, port: int) -> Sequence[str]:
        assert (host, port) == ("crm.example.com", 443)
        return ["93.184.216.34", "10.1.2.3"]

    with pytest.raises(ForbiddenTarget, match=r"10\.1\.2\.3, a private address"):
        await resolve_target("https://crm.example.com/h", allow_private=False, resolver=rebinding)


async def test_a_public_host_is_pinned_to_the_checked_addresses() -> None:
    async def public(host: str, port: int) -> Sequence[str]:
        return ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "93.184.216.34"]

    target = await resolve_target(
        "https://CRM.Example.com:8443/hooks/tp?x=1", allow_private=False, resolver=public
    )
    assert target.host == "crm.example.com"
    assert target.host_header == "crm.example.com:8443"
    assert [str(a) for a in target.addresses] == [
        "93.184.216.34",
        "2606:2800:220:1:248:1893:25c8:1946",
    ]
    assert target.url_for(target.addresses[1]) == (
        "https://[2606:2800:220:1:248:1893:25c8:1946]:8443/hooks/tp?x=1"
    )


async def test_private_targets_pass_when_configuration_allows_them() -> None:
    target = await resolve_target("http://127.0.0.1:8099/x", allow_private=True)
    assert target.url_for(target.addresses[0]) == "http://127.0.0.1:8099/x"
    assert target.host_header == "127.0.0.1:8099"


async def test_a_host_that_does_not_resolve_is_an_error_not_a_refusal() -> None:
    async def nowhere(host: str, port: int) -> Sequence[str]:
        raise OSError("Name or service not known")

    with pytest.raises(TargetError, match="does not resolve") as caught:
        await resolve_target("https://nowhere.invalid/", allow_private=False, resolver=nowhere)
    assert not isinstance(caught.value, ForbiddenTarget)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/x", "https:// or http://"),
        ("file:///etc/passwd", "https:// or http://"),
        ("https:///x", "needs a host"),
        ("https://user:pw@example.com/x", "credentials"),
        ("https://example.com:99999/x", "not a valid URL"),
        ("https://exa mple.com/x", "whitespace"),
        ("https://example.com/" + "a" * 2100, "at most 2048"),
    ],
)
def test_malformed_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(TargetError, match=message):
        parse_url(url)


@given(st.ip_addresses())
def test_every_non_global_address_is_refused(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    if not address.is_global or address.is_multicast or address.is_private:
        assert forbidden_reason(address) is not None


@given(st.ip_addresses(v=4))
def test_an_ipv4_address_is_judged_the_same_when_mapped_into_ipv6(
    address: ipaddress.IPv4Address,
) -> None:
    mapped = ipaddress.IPv6Address(f"::ffff:{address}")
    assert (forbidden_reason(mapped) is None) == (forbidden_reason(address) is None)

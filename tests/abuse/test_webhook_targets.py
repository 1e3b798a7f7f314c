"""The SSRF guard against the spellings of internal addresses that
tests/api/webhooks/test_signing_and_targets.py does not try (it covers loopback, link-local,
private, IPv6, 6to4, mapped IPv4, one-number and hex forms, DNS rebinding and credentials)."""

from __future__ import annotations

import asyncpg
import pytest

from tests.api.webhooks.conftest import (  # fixtures re-used here by name
    Answer,
    Receiver,
    clock,  # noqa: F401
    db,  # noqa: F401
    deliveries,
    make_dispatcher,  # noqa: F401
    metrics,  # noqa: F401
    outbox,
    pool,  # noqa: F401
    receiver,  # noqa: F401
    settings,  # noqa: F401
    subscribe,
)
from tests.api.webhooks.test_routes import Make
from touchpulse_api.webhooks.targets import ForbiddenTarget, TargetError, resolve_target
from touchpulse_shared.settings import Settings


@pytest.mark.parametrize(
    "url",
    [
        "http://0177.0.0.1/hook",  # octal dotted
        "http://017700000001/hook",  # octal, one number
        "http://127.1/hook",  # short form
        "http://0/hook",  # 0.0.0.0
        "http://0x7f000001/hook",  # hex, one number
        "http://0x7f.0.0.1/hook",
        "http://[0:0:0:0:0:ffff:7f00:1]/hook",  # mapped, spelled out in hex
        "http://[::ffff:7f00:1]/hook",
        "http://[::127.0.0.1]/hook",  # IPv4-compatible (deprecated) form
        "http://[64:ff9b::a9fe:a9fe]/hook",  # NAT64 around 169.254.169.254
        "http://[::ffff:a9fe:a9fe]/latest/meta-data/",
        "http://169.254.169.254.nip.io.localhost/hook",
        "http://LOCALHOST/hook",
        "http://127.0.0.1:443/hook",
        "https://[::1]:8443/hook",
    ],
)
async def test_other_spellings_of_internal_addresses_are_refused(url: str) -> None:
    with pytest.raises(TargetError):
        await resolve_target(url, allow_private=False)


@pytest.mark.parametrize(
    "url",
    [
        "http://evil@127.0.0.1/hook",  # userinfo without a password
        "http://crm.example.com@127.0.0.1/hook",  # looks like a public host, is not
        "http://127.0.0.1#@crm.example.com/hook",
        "http://127.0.0.1\\@crm.example.com/hook",
    ],
)
async def test_userinfo_tricks_never_reach_an_internal_address(url: str) -> None:
    # Refused for the credentials, or for where it really points: either way, never sent.
    with pytest.raises(TargetError):
        await resolve_target(url, allow_private=False)


async def test_the_address_forms_are_refused_as_forbidden_not_just_odd() -> None:
    # The refusal is the SSRF guard's, not a parse accident that a later change could lift.
    for url in ("http://0177.0.0.1/", "http://127.1/", "http://[::ffff:7f00:1]/"):
        with pytest.raises(ForbiddenTarget):
            await resolve_target(url, allow_private=False)


@pytest.mark.postgres
async def test_a_redirect_to_an_internal_address_at_delivery_time_is_not_followed(
    pool: asyncpg.Pool,  # noqa: F811
    settings: Settings,  # noqa: F811
    receiver: Receiver,  # noqa: F811
    make_dispatcher: Make,  # noqa: F811
) -> None:
    # The receiver passed the guard (private targets allowed here: it listens on 127.0.0.1),
    # then answers with a redirect to the cloud metadata address.
    await subscribe(pool, settings, receiver.url)
    await outbox(pool)
    metadata = "http://169.254.169.254/latest/meta-data/"
    receiver.answer(Answer(302, headers={"Location": metadata}, body=b""))
    await make_dispatcher().run_once()

    assert len(receiver.requests) == 1  # nothing sent on to the Location
    [row] = await deliveries(pool)
    assert row["state"] != "delivered"
    assert "redirects are not followed" in row["last_error"]

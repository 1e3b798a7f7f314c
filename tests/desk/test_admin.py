"""The admin's keys and webhooks pages: the same key and subscription functions as the
API, admins only, CSRF on every form, hostile names as text, a key's secret shown once."""

from __future__ import annotations

import httpx

from tests.desk.conftest import NOW, Desk, csrf_of, signed_in
from touchpulse_api.webhooks import store as webhook_store
from touchpulse_shared.people import Role

HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;&#34;&gt;&lt;img src=x onerror=alert(2)&gt;"


async def test_only_admins_reach_keys_and_webhooks(desk: Desk) -> None:
    agent = await signed_in(desk, "agent@example.com", Role.AGENT)
    lead = await signed_in(desk, "lead@example.com", Role.LEAD)
    admin = await signed_in(desk, "admin@example.com", Role.ADMIN)
    for client in (agent, lead):
        token = csrf_of((await client.get("/desk")).text)
        for path in ("/desk/keys", "/desk/webhooks"):
            refused = await client.get(path)
            assert refused.status_code == 403, path
            assert "This page is for admins." in refused.text
        posted = await client.post(
            "/desk/keys", data={"csrf_token": token, "name": "x", "scopes": "health:read"}
        )
        assert posted.status_code == 403
        assert "nav-keys" not in (await client.get("/desk")).text
    assert await desk.fetchval("SELECT count(*) FROM api_key") == 0
    home = (await admin.get("/desk")).text
    assert 'data-testid="nav-keys"' in home
    assert 'data-testid="nav-webhooks"' in home
    keys = (await admin.get("/desk/keys")).text
    assert 'data-testid="nav-keys" aria-current="page"' in keys


async def test_admin_creates_a_key_sees_it_once_and_revokes_it(desk: Desk) -> None:
    admin = await signed_in(desk, "admin@example.com", Role.ADMIN)
    token = csrf_of((await admin.get("/desk/keys")).text)
    missing = await admin.post("/desk/keys", data={"name": "crm", "scopes": "health:read"})
    assert missing.status_code == 403  # no CSRF token
    refused = await admin.post(
        "/desk/keys", data={"csrf_token": token, "name": "writer", "scopes": "events:write"}
    )
    assert refused.status_code == 422  # create_key's own rule: an events key needs a source
    assert 'id="keys-error"' in refused.text
    created = await admin.post(
        "/desk/keys",
        data={"csrf_token": token, "name": HOSTILE, "scopes": ["health:read", "admin"]},
    )
    assert created.status_code == 201
    key_id = await desk.fetchval("SELECT key_id FROM api_key")
    secret = created.text.split('data-testid="new-key">', 1)[1].split("<", 1)[0]
    assert key_id in secret
    assert ESCAPED in created.text
    assert HOSTILE not in created.text
    # The key works against the API, and the list never shows the secret again.
    api = httpx.AsyncClient(transport=httpx.ASGITransport(app=desk.app), base_url="http://api.test")
    async with api:
        listed = await api.get("/v1/keys", headers={"Authorization": f"Bearer {secret}"})
        assert listed.status_code == 200
        assert [k["name"] for k in listed.json()] == [HOSTILE]
    page = (await admin.get("/desk/keys")).text
    assert secret not in page
    assert f'data-key-id="{key_id}"' in page
    revoked = await admin.post(f"/desk/keys/{key_id}/revoke", data={"csrf_token": token})
    assert revoked.status_code == 303
    assert await desk.fetchval("SELECT revoked_at IS NOT NULL FROM api_key") is True
    again = await admin.post(f"/desk/keys/{key_id}/revoke", data={"csrf_token": token})
    assert again.status_code == 404


async def test_admin_lists_and_disables_webhooks(desk: Desk) -> None:
    pool = desk.app.state.api.pool
    subscription = await webhook_store.create_subscription(
        pool,
        url="https://crm.example.com/hook?x=<b>",
        kinds=["intervention.opened"],
        description=HOSTILE,
        nonce=b"n" * 16,
        now=NOW,
    )
    admin = await signed_in(desk, "admin@example.com", Role.ADMIN)
    html = (await admin.get("/desk/webhooks")).text
    assert f'data-subscription-id="{subscription.id}"' in html
    assert ESCAPED in html
    assert HOSTILE not in html
    assert "hook?x=&lt;b&gt;" in html
    token = csrf_of(html)
    forged = await admin.post(
        f"/desk/webhooks/{subscription.id}/disable", data={"csrf_token": "forged"}
    )
    assert forged.status_code == 403
    disabled = await admin.post(
        f"/desk/webhooks/{subscription.id}/disable", data={"csrf_token": token}
    )
    assert disabled.status_code == 303
    stored = await webhook_store.get_subscription(pool, subscription.id)
    assert stored is not None
    assert (stored.enabled, stored.disabled_reason) == (False, "disabled by an admin")
    assert "disabled: disabled by an admin" in (await admin.get("/desk/webhooks")).text
    enabled = await admin.post(
        f"/desk/webhooks/{subscription.id}/enable", data={"csrf_token": token}
    )
    assert enabled.status_code == 303
    stored = await webhook_store.get_subscription(pool, subscription.id)
    assert stored is not None
    assert stored.enabled
    lead = await signed_in(desk, "lead@example.com", Role.LEAD)
    lead_token = csrf_of((await lead.get("/desk")).text)
    refused = await lead.post(
        f"/desk/webhooks/{subscription.id}/disable", data={"csrf_token": lead_token}
    )
    assert refused.status_code == 403
    missing = await admin.post("/desk/webhooks/wh_nobody/disable", data={"csrf_token": token})
    assert missing.status_code == 404

"""Sign-in, sign-out, sessions (expiry, revocation, rotation), throttling and roles."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import httpx

from tests.desk.conftest import PASSWORD, Desk, csrf_of, sign_in, signed_in
from touchpulse_api.desk import sessions as desk_sessions
from touchpulse_api.desk.routes import SESSION_COOKIE
from touchpulse_shared.people import Role, disable_person


async def test_no_session_is_sent_to_sign_in(desk: Desk) -> None:
    client = desk.client()
    for path in ("/desk", "/desk/customers/C-1", "/desk/people", "/desk/events"):
        response = await client.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/desk/sign-in?next="), path


async def test_sign_in_then_out(desk: Desk) -> None:
    await desk.person("kari@example.com", Role.AGENT)
    client = desk.client()
    response = await sign_in(client, "Kari@Example.com")  # logins are case-blind
    assert response.status_code == 303
    assert response.headers["location"] == "/desk"
    cookie = response.headers["set-cookie"]
    assert f"{SESSION_COOKIE}=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie.replace("Lax", "lax")
    assert "Path=/desk" in cookie
    assert "Secure" not in cookie  # plain HTTP here, and no proxy is trusted

    queue = await client.get("/desk")
    assert queue.status_code == 200
    assert "Kari@Example.Com" in queue.text or "kari@example.com".title() in queue.text

    out = await client.post("/desk/sign-out", data={"csrf_token": csrf_of(queue.text)})
    assert out.status_code == 303
    assert out.headers["location"] == "/desk/sign-in"
    assert (await client.get("/desk")).status_code == 303


async def test_wrong_password_and_unknown_login_are_refused_alike(desk: Desk) -> None:
    await desk.person("kari@example.com", Role.AGENT)
    client = desk.client()
    wrong = await sign_in(client, "kari@example.com", "not the password")
    unknown = await sign_in(client, "nobody@example.com", PASSWORD)
    for response in (wrong, unknown):
        assert response.status_code == 401
        assert "Wrong login or password." in response.text
        assert SESSION_COOKIE not in response.headers.get("set-cookie", "")
    assert (await client.get("/desk")).status_code == 303


async def test_a_disabled_person_cannot_sign_in_and_their_sessions_end(desk: Desk) -> None:
    client = await signed_in(desk, "kari@example.com", Role.AGENT)
    assert (await client.get("/desk")).status_code == 200
    conn = await asyncpg.connect(desk.url)
    try:
        await disable_person(conn, "kari@example.com", now=desk.clock())
    finally:
        await conn.close()
    assert (await client.get("/desk")).status_code == 303
    assert (await sign_in(desk.client(), "kari@example.com")).status_code == 401


async def test_idle_and_absolute_expiry(desk: Desk) -> None:
    idle = await signed_in(desk, "idle@example.com", Role.AGENT)
    busy = await signed_in(desk, "busy@example.com", Role.AGENT)
    # 20 minutes apart: under the idle limit (30), so `busy` stays in until the absolute
    # limit (1 hour after sign-in); `idle` is out at its first request after 30 minutes.
    desk.clock.advance(timedelta(minutes=20))
    assert (await busy.get("/desk")).status_code == 200
    desk.clock.advance(timedelta(minutes=20))
    assert (await busy.get("/desk")).status_code == 200
    assert (await idle.get("/desk")).status_code == 303  # 40 minutes idle
    desk.clock.advance(timedelta(minutes=21))  # 61 minutes after sign-in
    assert (await busy.get("/desk")).status_code == 303


async def test_revoked_session_token_is_refused(desk: Desk) -> None:
    client = await signed_in(desk, "kari@example.com", Role.AGENT)
    token = client.cookies[SESSION_COOKIE]
    page = await client.get("/desk")
    await client.post("/desk/sign-out", data={"csrf_token": csrf_of(page.text)})
    # The token kept from before sign-out (a copied cookie) opens nothing.
    thief = desk.client()
    thief.cookies.set(SESSION_COOKIE, token, domain="desk.test", path="/desk")
    assert (await thief.get("/desk")).status_code == 303


async def test_sign_in_rotates_the_session(desk: Desk) -> None:
    await desk.person("kari@example.com", Role.AGENT)
    client = desk.client()
    await sign_in(client, "kari@example.com")
    first = client.cookies[SESSION_COOKIE]
    await sign_in(client, "kari@example.com")
    second = client.cookies[SESSION_COOKIE]
    assert first != second
    # The session the browser came with is revoked by the new sign-in.
    old = desk.client()
    old.cookies.set(SESSION_COOKIE, first, domain="desk.test", path="/desk")
    assert (await old.get("/desk")).status_code == 303
    assert (await client.get("/desk")).status_code == 200
    # Dead sessions leave as new ones come: the live one and the one it just replaced.
    for _ in range(3):
        await sign_in(client, "kari@example.com")
    assert await desk.fetchval("SELECT count(*) FROM desk_session") == 2


async def test_throttled_per_account(desk: Desk) -> None:
    await desk.person("kari@example.com", Role.AGENT)
    client = desk.client()
    for _ in range(desk.settings.desk_signin_max_failures):
        assert (await sign_in(client, "kari@example.com", "guess guess guess")).status_code == 401
    # Now even the right password is refused until the window passes.
    refused = await sign_in(client, "kari@example.com")
    assert refused.status_code == 429
    assert "Too many failed sign-ins" in refused.text
    assert int(refused.headers["retry-after"]) > 0
    desk.clock.advance(timedelta(minutes=desk.settings.desk_signin_window_minutes, seconds=1))
    assert (await sign_in(client, "kari@example.com")).status_code == 303


async def test_throttled_per_address(desk: Desk) -> None:
    await desk.person("kari@example.com", Role.AGENT)
    client = desk.client()
    limit = desk.settings.desk_signin_max_failures
    # One address guessing across many accounts, each below its own limit.
    for n in range(limit * 4):
        response = await sign_in(client, f"victim{n}@example.com", "guess guess guess")
        assert response.status_code == 401
    assert (await sign_in(client, "kari@example.com")).status_code == 429


async def test_roles_guard_pages(desk: Desk) -> None:
    agent = await signed_in(desk, "agent@example.com", Role.AGENT)
    lead = await signed_in(desk, "lead@example.com", Role.LEAD)
    admin = await signed_in(desk, "admin@example.com", Role.ADMIN)
    for path in ("/desk/call-list", "/desk/organisation", "/desk/people"):
        response = await agent.get(path)
        assert response.status_code == 403, path
        assert "Not allowed" in response.text
    assert (await lead.get("/desk/call-list")).status_code == 200
    assert (await lead.get("/desk/organisation")).status_code == 200
    assert (await lead.get("/desk/people")).status_code == 403
    for path in ("/desk", "/desk/call-list", "/desk/organisation", "/desk/people"):
        assert (await admin.get(path)).status_code == 200, path


async def test_admin_creates_and_disables_people(desk: Desk) -> None:
    admin = await signed_in(desk, "admin@example.com", Role.ADMIN)
    page = await admin.get("/desk/people")
    created = await admin.post(
        "/desk/people",
        data={
            "csrf_token": csrf_of(page.text),
            "login": "new@example.com",
            "display_name": "New Person",
            "role": "lead",
            "password": "a long enough password",
        },
    )
    assert created.status_code == 303
    newcomer = desk.client()
    assert (await sign_in(newcomer, "new@example.com", "a long enough password")).status_code == 303
    assert (await newcomer.get("/desk/call-list")).status_code == 200  # a lead

    short = await admin.post(
        "/desk/people",
        data={
            "csrf_token": csrf_of(page.text),
            "login": "x@example.com",
            "display_name": "X",
            "role": "agent",
            "password": "short",
        },
    )
    assert short.status_code == 422
    assert "12 characters" in short.text

    person_id = await desk.fetchval(
        "SELECT person_id FROM desk_person WHERE login = 'new@example.com'"
    )
    disabled = await admin.post(
        f"/desk/people/{person_id}/disable", data={"csrf_token": csrf_of(page.text)}
    )
    assert disabled.status_code == 303
    assert (await newcomer.get("/desk")).status_code == 303


async def test_the_cookie_is_secure_over_tls_and_behind_a_trusted_proxy_only(
    desk: Desk,
) -> None:
    await desk.person("kari@example.com", Role.AGENT)

    async def cookie_over(base_url: str, headers: dict[str, str]) -> str:
        # The sign-in form's cookie is set by the same code as the session's.
        client = desk.client()
        client.base_url = httpx.URL(base_url)
        response = await client.get("/desk/sign-in", headers=headers)
        assert response.status_code == 200
        return response.headers["set-cookie"]

    assert "Secure" in await cookie_over("https://desk.test", {})
    # A client claiming TLS through the header is not believed unless a proxy is trusted.
    assert "Secure" not in await cookie_over("http://desk.test", {"X-Forwarded-Proto": "https"})
    desk.app.state.api.settings = desk.settings.model_copy(
        update={"desk_trust_forwarded_proto": True}
    )
    assert "Secure" in await cookie_over("http://desk.test", {"X-Forwarded-Proto": "https"})
    # And the session cookie over TLS.
    client = desk.client()
    client.base_url = httpx.URL("https://desk.test")
    response = await sign_in(client, "kari@example.com")
    assert response.status_code == 303
    assert "Secure" in response.headers["set-cookie"]


async def test_cleanup_removes_dead_sessions_and_old_failures_of_people_who_never_return(
    desk: Desk,
) -> None:
    """Sign-in clears only the signing-in person's rows; the api's loop clears the rest."""
    # The loop runs in the app: its first round is done at start (a readiness poll on the
    # heartbeat, bounded).
    state = desk.app.state.loops.states["desk_cleanup"]
    async with asyncio.timeout(10):
        while state.rounds == 0:  # noqa: ASYNC110 - the loop's state has no event to await
            await asyncio.sleep(0.01)
    live = await signed_in(desk, "stays@example.com", Role.AGENT)
    gone = await signed_in(desk, "left@example.com", Role.AGENT)
    out = await signed_in(desk, "out@example.com", Role.AGENT)
    page = await out.get("/desk")
    await out.post("/desk/sign-out", data={"csrf_token": csrf_of(page.text)})  # revoked
    guesser = desk.client()
    for n in range(2):
        await sign_in(guesser, f"made-up{n}@example.com", "guess guess guess")
    window = timedelta(minutes=desk.settings.desk_signin_window_minutes)
    desk.clock.advance(window + timedelta(seconds=1))
    assert (await live.get("/desk")).status_code == 200  # busy: under the idle limit
    desk.clock.advance(timedelta(minutes=20))
    assert (await live.get("/desk")).status_code == 200
    await sign_in(guesser, "made-up9@example.com", "guess guess guess")  # inside the window
    # `left` idled out (35 minutes), `out` signed out; neither signs in again.
    assert gone.cookies.get(SESSION_COOKIE)
    conn = await asyncpg.connect(desk.url)
    try:
        deleted = await desk_sessions.prune(
            conn,
            now=desk.clock(),
            idle=timedelta(minutes=desk.settings.desk_session_idle_minutes),
            window=window,
            batch=1,
        )
        assert deleted == 2  # one of each table per statement: the batch bounds each
        while await desk_sessions.prune(
            conn,
            now=desk.clock(),
            idle=timedelta(minutes=desk.settings.desk_session_idle_minutes),
            window=window,
            batch=1,
        ):
            pass
        logins = await conn.fetchval(
            "SELECT array_agg(p.login ORDER BY p.login)::text FROM desk_session s"
            " JOIN desk_person p USING (person_id)"
        )
        failures = await conn.fetchval(
            "SELECT array_agg(throttle_key ORDER BY throttle_key)::text FROM desk_signin_failure"
        )
    finally:
        await conn.close()
    assert logins == "{stays@example.com}"
    # The failure inside the window still counts (account and address); older ones are gone.
    assert failures == "{address:127.0.0.1,login:made-up9@example.com}"
    assert (await live.get("/desk")).status_code == 200

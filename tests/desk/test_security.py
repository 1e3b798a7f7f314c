"""Hostile input rendered as text, CSRF on every POST, the CSP, and no secret in any log
or response."""

from __future__ import annotations

import re

from structlog.testing import capture_logs

from tests.desk.conftest import PASSWORD, Desk, case, csrf_of, sign_in, signed_in
from touchpulse_api.desk.routes import SESSION_COOKIE
from touchpulse_shared.people import Role

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(2)>'
# A <script> element without a src: what the CSP would refuse, and the desk never sends.
_INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)


async def test_hostile_id_note_and_attributes_render_as_text(desk: Desk) -> None:
    customer = f"C{SCRIPT}{IMG}"
    await case(
        desk,
        f"i{IMG}",
        customer,
        state="resolved",
        segment=f"seg{IMG}",
        touchpoint="survey",
        note=f"note {SCRIPT}",
        actions=(f"act {IMG}",),
    )
    await case(desk, f"open{SCRIPT}", customer, segment=f"seg{IMG}", actions=(f"do {SCRIPT}",))
    agent = await signed_in(desk, "agent@example.com", Role.AGENT)
    pages = [
        await agent.get("/desk"),
        await agent.get("/desk/customers/" + customer.replace("/", "%2F")),
        await agent.get("/desk/customers/nobody" + SCRIPT),  # the 404 names the id too
    ]
    assert [p.status_code for p in pages] == [200, 200, 404]
    for response in pages:
        html = response.text
        assert "<script>alert" not in html
        assert "<img src=x" not in html
        assert not _INLINE_SCRIPT.search(html)
    customer_page = pages[1].text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in customer_page  # shown, as text
    assert "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in customer_page
    assert "note &lt;script&gt;" in customer_page


async def test_every_page_sends_the_csp(desk: Desk) -> None:
    admin = await signed_in(desk, "admin@example.com", Role.ADMIN)
    anonymous = desk.client()
    responses = [
        await anonymous.get("/desk/sign-in"),
        await anonymous.get("/desk"),
        await admin.get("/desk"),
        await admin.get("/desk/people"),
        await admin.get("/desk/call-list"),
        await admin.get("/desk/organisation"),
        await admin.get("/desk/keys"),
        await admin.get("/desk/webhooks"),
        await admin.get("/desk/customers/nobody"),
    ]
    for response in responses:
        csp = response.headers["content-security-policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["script-src"] == "'self'"
        assert "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert response.headers["x-content-type-options"] == "nosniff"


async def test_csrf_is_checked_on_every_post(desk: Desk) -> None:
    await case(desk, "i-1", "C-1")
    admin = await signed_in(desk, "admin@example.com", Role.ADMIN)
    html = (await admin.get("/desk/people")).text
    good = csrf_of(html)
    # Another person's valid token is a forgery here: the token is tied to the session.
    other = await signed_in(desk, "other@example.com", Role.ADMIN)
    theirs = csrf_of((await other.get("/desk/people")).text)
    assert theirs != good
    person = {
        "login": "x@example.com",
        "display_name": "X",
        "role": "agent",
        "password": "a long enough password",
    }
    posts = [
        ("/desk/people", person),
        ("/desk/people/1/disable", {}),
        ("/desk/interventions/i-1/take", {"expected_version": "0"}),
        ("/desk/interventions/i-1/note", {"note": "n"}),
        ("/desk/interventions/i-1/resolve", {"outcome": "compensated", "note": "n"}),
        ("/desk/sign-out", {}),
    ]
    for path, data in posts:
        for token in (None, "forged", theirs):
            form = dict(data) if token is None else {**data, "csrf_token": token}
            response = await admin.post(path, data=form)
            assert response.status_code == 403, (path, token)
    # Nothing happened: no one created, the case untouched, still signed in.
    assert (
        await desk.fetchval("SELECT count(*) FROM desk_person WHERE login = 'x@example.com'") == 0
    )
    assert (
        await desk.fetchval("SELECT state FROM intervention WHERE intervention_id = 'i-1'")
        == "open"
    )
    assert (await admin.get("/desk")).status_code == 200
    # The sign-in form's own token: refused without the cookie that goes with it.
    await desk.person("kari@example.com", Role.AGENT)
    bare = desk.client()
    forged = await bare.post(
        "/desk/sign-in",
        data={"login": "kari@example.com", "password": PASSWORD, "csrf_token": "forged"},
    )
    assert forged.status_code == 403
    assert SESSION_COOKIE not in forged.headers.get("set-cookie", "")


async def test_no_password_or_token_in_logs_or_responses(desk: Desk) -> None:
    await desk.person("kari@example.com", Role.AGENT)
    client = desk.client()
    with capture_logs() as logs:
        wrong = await sign_in(client, "kari@example.com", "wrong password here")
        right = await sign_in(client, "kari@example.com")
        token = client.cookies[SESSION_COOKIE]
        pages = [await client.get(p) for p in ("/desk", "/desk/customers/nobody")]
        metrics = await client.get("/metrics")
    assert any(entry["event"] == "desk.signin" for entry in logs)  # it did log, without...
    logged = repr(logs)
    for secret in (PASSWORD, "wrong password here", token):
        assert secret not in logged
        assert secret not in metrics.text
        for response in (wrong, right, *pages):
            assert secret not in response.text
            # The token travels only in the cookie set at sign-in, nowhere else.
            headers = [v for k, v in response.headers.items() if k != "set-cookie"]
            assert all(secret not in v for v in headers)
    # And only its hash is stored.
    assert (
        await desk.fetchval(
            "SELECT count(*) FROM desk_session WHERE position($1::bytea in token_hash) > 0",
            token.encode(),
        )
        == 0
    )
    assert await desk.fetchval(
        "SELECT password_hash LIKE '$argon2id$%' FROM desk_person WHERE login = 'kari@example.com'"
    )

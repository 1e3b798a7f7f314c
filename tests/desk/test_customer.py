"""The customer page and acting on its case: take, note, resolve, a concurrent take, a
lead's reassign; and the API seeing the same with the person as actor."""

from __future__ import annotations

import re
from datetime import timedelta

from tests.desk.conftest import NOW, Desk, case, csrf_of, signed_in
from touchpulse_shared.auth import Scope, create_key
from touchpulse_shared.people import Role


def version_of(html: str) -> str:
    found = re.search(r'name="expected_version" value="(\d+)"', html)
    assert found is not None, html
    return found.group(1)


async def test_the_page_shows_health_case_and_profile(desk: Desk) -> None:
    await case(
        desk,
        "i-1",
        "C-1",
        priority=42,
        segment="gold",
        touchpoint="call_centre",
        actions=("call back within a day", "offer a credit"),
    )
    agent = await signed_in(desk, "agent@example.com", Role.AGENT)
    page = await agent.get("/desk/customers/C-1")
    assert page.status_code == 200
    html = page.text
    assert 'data-testid="customer-id">C-1<' in html
    assert 'data-testid="profile-segment">gold<' in html
    assert "call back within a day" in html
    assert "offer a credit" in html
    assert 'id="take-form"' in html
    assert 'id="resolve-form"' in html
    assert 'id="reassign-form"' not in html  # leads only
    assert 'data-intervention-id="i-1"' in html
    missing = await agent.get("/desk/customers/C-nobody")
    assert missing.status_code == 404


async def test_take_note_resolve_and_the_api_agrees(desk: Desk) -> None:
    await case(desk, "i-1", "C-1")
    agent = await signed_in(desk, "agent@example.com", Role.AGENT)
    html = (await agent.get("/desk/customers/C-1")).text
    token = csrf_of(html)
    took = await agent.post(
        "/desk/interventions/i-1/take",
        data={"csrf_token": token, "expected_version": version_of(html)},
    )
    assert took.status_code == 303
    assert took.headers["location"] == "/desk/customers/C-1"
    html = (await agent.get("/desk/customers/C-1")).text
    assert 'data-testid="case-assignee">agent@example.com<' in html
    noted = await agent.post(
        "/desk/interventions/i-1/note",
        data={
            "csrf_token": token,
            "expected_version": version_of(html),
            "note": "left a voicemail",
        },
    )
    assert noted.status_code == 303
    html = (await agent.get("/desk/customers/C-1")).text
    assert "left a voicemail" in html
    no_note = await agent.post(
        "/desk/interventions/i-1/resolve",
        data={
            "csrf_token": token,
            "expected_version": version_of(html),
            "outcome": "reached_and_fixed",
            "note": "",
        },
    )
    assert no_note.status_code == 422  # a resolve needs its note
    resolved = await agent.post(
        "/desk/interventions/i-1/resolve",
        data={
            "csrf_token": token,
            "expected_version": version_of(html),
            "outcome": "reached_and_fixed",
            "note": "called, refunded the fee",
        },
    )
    assert resolved.status_code == 303
    row = await desk.fetchval(
        "SELECT row(state, assignee, outcome_category, outcome_note)::text"
        " FROM intervention WHERE intervention_id = 'i-1'"
    )
    assert row == '(resolved,agent@example.com,reached_and_fixed,"called, refunded the fee")'
    actors = await desk.fetchval(
        "SELECT array_agg(DISTINCT actor_kind || ':' || actor_id)::text"
        " FROM intervention_action WHERE intervention_id = 'i-1'"
    )
    assert actors == "{person:agent@example.com}"


async def test_a_concurrent_take_names_who_won(desk: Desk) -> None:
    await case(desk, "i-1", "C-1")
    await desk.person("kari@example.com", Role.AGENT)
    kari = await signed_in(desk, "kari2@example.com", Role.AGENT)
    ola = await signed_in(desk, "ola@example.com", Role.AGENT)
    # Both have the page open at the same version.
    kari_page = (await kari.get("/desk/customers/C-1")).text
    ola_page = (await ola.get("/desk/customers/C-1")).text
    first = await kari.post(
        "/desk/interventions/i-1/take",
        data={"csrf_token": csrf_of(kari_page), "expected_version": version_of(kari_page)},
    )
    assert first.status_code == 303
    second = await ola.post(
        "/desk/interventions/i-1/take",
        data={"csrf_token": csrf_of(ola_page), "expected_version": version_of(ola_page)},
    )
    assert second.status_code == 409
    assert "Kari2@Example.Com took this case a moment ago" in second.text
    assignee = await desk.fetchval(
        "SELECT assignee FROM intervention WHERE intervention_id = 'i-1'"
    )
    assert assignee == "kari2@example.com"  # never overwritten by the later take


async def test_only_leads_reassign(desk: Desk) -> None:
    await case(desk, "i-1", "C-1", state="acknowledged", assignee="agent@example.com")
    agent = await signed_in(desk, "agent@example.com", Role.AGENT)
    lead = await signed_in(desk, "lead@example.com", Role.LEAD)
    html = (await agent.get("/desk/customers/C-1")).text
    refused = await agent.post(
        "/desk/interventions/i-1/reassign",
        data={
            "csrf_token": csrf_of(html),
            "expected_version": version_of(html),
            "assignee": "agent@example.com",
        },
    )
    assert refused.status_code == 403
    await desk.person("other@example.com", Role.AGENT)
    await desk.person("gone@example.com", Role.AGENT)
    await desk.execute(
        "UPDATE desk_person SET disabled_at = now() WHERE login = 'gone@example.com'"
    )
    html = (await lead.get("/desk/customers/C-1")).text
    assert 'id="reassign-form"' in html
    # A pick-list of the people who can sign in: the disabled one is not offered.
    assert '<option value="other@example.com"' in html
    assert 'value="gone@example.com"' not in html
    for login in ("nobody@example.com", "gone@example.com"):
        refused = await lead.post(
            "/desk/interventions/i-1/reassign",
            data={
                "csrf_token": csrf_of(html),
                "expected_version": version_of(html),
                "assignee": login,
            },
        )
        assert refused.status_code == 422
        assert f"{login} is not an active person" in refused.text
    assert (
        await desk.fetchval("SELECT assignee FROM intervention WHERE intervention_id = 'i-1'")
        == "agent@example.com"
    )
    moved = await lead.post(
        "/desk/interventions/i-1/reassign",
        data={
            "csrf_token": csrf_of(html),
            "expected_version": version_of(html),
            "assignee": "other@example.com",
        },
    )
    assert moved.status_code == 303
    assert (
        await desk.fetchval("SELECT assignee FROM intervention WHERE intervention_id = 'i-1'")
        == "other@example.com"
    )


async def test_call_list_and_organisation(desk: Desk) -> None:
    await case(desk, "i-crit", "C-crit", priority=30, severity="critical", touchpoint="survey")
    await case(desk, "i-plain", "C-plain", priority=90)
    lead = await signed_in(desk, "lead@example.com", Role.LEAD)
    calls = (await lead.get("/desk/call-list")).text
    assert 'data-customer-id="C-crit"' in calls
    assert 'data-customer-id="C-plain"' not in calls  # no critical breach
    assert "p at survey: expected" in calls  # the one line that says why
    organisation = await lead.get("/desk/organisation?days=30")
    assert organisation.status_code == 200
    assert "Did our actions help?" in organisation.text


async def test_reassigning_an_open_case_says_take_it_first(desk: Desk) -> None:
    await case(desk, "i-1", "C-1")  # open: nobody has taken it
    await desk.person("other@example.com", Role.AGENT)
    lead = await signed_in(desk, "lead@example.com", Role.LEAD)
    html = (await lead.get("/desk/customers/C-1")).text
    refused = await lead.post(
        "/desk/interventions/i-1/reassign",
        data={
            "csrf_token": csrf_of(html),
            "expected_version": version_of(html),
            "assignee": "other@example.com",
        },
    )
    assert refused.status_code == 409
    # What is allowed, not "it changed a moment ago": nobody moved it in between.
    assert "Only a taken case can be reassigned; take it first" in refused.text
    assert "changed a moment ago" not in refused.text


_TOUCHPOINT_ROW = re.compile(
    r'<tr><th scope="row">([^<]+)</th><td data-label="Health">([^<]+)</td>'
    r'<td data-label="Outcomes">([^<]+)</td><td data-label="Evidence">([^<]+)</td></tr>'
)


async def test_per_touchpoint_health_is_the_apis(desk: Desk) -> None:
    """Two touchpoints with different inputs show different values, each the API's."""
    await case(desk, "i-1", "C-1")
    await desk.execute(
        "INSERT INTO journey_health (customer_id, score, band, weakest_touchpoint, as_of,"
        " updated_at) VALUES ('C-1', 40, 'red', 'call_centre', $1, $1)",
        NOW,
    )
    for touchpoint, s, w, outcomes in (("call_centre", 0.6, 3.0, 3), ("survey", 4.5, 5.0, 7)):
        await desk.execute(
            "INSERT INTO touchpoint_health (customer_id, touchpoint, s, w, t_ref, outcomes,"
            " updated_at) VALUES ('C-1', $1, $2, $3, $4, $5, $4)",
            touchpoint,
            s,
            w,
            NOW - timedelta(days=2),
            outcomes,
        )
    key, _ = await create_key(
        desk.app.state.api.pool, name="crm", scopes=[Scope.HEALTH_READ], now=NOW
    )
    api = desk.client()
    read = await api.get("/v1/customers/C-1/health", headers={"Authorization": f"Bearer {key}"})
    assert read.status_code == 200, read.text
    expected = {
        name: (
            "—" if t["health"] is None else f"{t['health'] * 100:.0f}",
            str(t["outcomes"]),
            f"{t['evidence_weight']:.2f}",
        )
        for name, t in read.json()["touchpoints"].items()
    }
    agent = await signed_in(desk, "agent@example.com", Role.AGENT)
    html = (await agent.get("/desk/customers/C-1")).text
    shown = {name: (h, n, e) for name, h, n, e in _TOUCHPOINT_ROW.findall(html)}
    assert shown == expected
    assert shown["call_centre"] != shown["survey"]


async def _outcome(desk: Desk, key: str, promise: str, *, days_ago: float, met: bool) -> None:
    await desk.execute(
        "INSERT INTO outcome (customer_id, outcome_key, promise_id, catalogue_version,"
        " touchpoint, occurred_at, expected, actual, gap, met, score, weight, severity,"
        " event_ids) VALUES ($1, $1, $2, 'v1', 'delivery', $3,"
        ' \'{"op": "<=", "target": 0, "unit": "h"}\', \'5\', $4, $5, $6, 1, \'normal\','
        " '{e}')",
        key,
        promise,
        NOW - timedelta(days=days_ago),
        0.0 if met else 5.0,
        met,
        1.0 if met else 0.2,
    )


async def test_organisation_shows_each_promises_trend(desk: Desk) -> None:
    """Breach rate this window beside the window before it, as long: worse, better, new."""
    # on_time: 1 of 4 broken the week before, 3 of 4 this week (worse).
    for i, broken in enumerate((True, False, False, False)):
        await _outcome(desk, f"a-old-{i}", "on_time", days_ago=10, met=not broken)
    for i, broken in enumerate((True, True, True, False)):
        await _outcome(desk, f"a-new-{i}", "on_time", days_ago=2, met=not broken)
    # complete: 2 of 2 broken before, 1 of 2 now (better); fresh: only this week (new).
    for i in range(2):
        await _outcome(desk, f"b-old-{i}", "complete", days_ago=9, met=False)
        await _outcome(desk, f"b-new-{i}", "complete", days_ago=1, met=i == 0)
    await _outcome(desk, "c-new", "fresh", days_ago=1, met=False)
    lead = await signed_in(desk, "lead@example.com", Role.LEAD)
    html = (await lead.get("/desk/organisation?days=7")).text
    trends = dict(
        re.findall(r'<td data-label="Promise">([^<]+)</td>.*?data-testid="trend">(.*?)</td>', html)
    )
    assert "▲ worse" in trends["on_time"]
    assert "25.0 % → 75.0 %" in trends["on_time"]
    assert "▼ better" in trends["complete"]
    assert "100.0 % → 50.0 %" in trends["complete"]
    assert trends["fresh"] == "new: no outcomes before"
    assert 'aria-current="page">Organisation<' in html


async def _counter(desk: Desk, name: str) -> float:
    """A counter as Prometheus scrapes it from the api's /metrics."""
    text = (await desk.client().get("/metrics")).text
    found = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    assert found is not None, name
    return float(found.group(1))


async def test_notes_snoozes_and_reassigns_are_counted(desk: Desk) -> None:
    await case(desk, "i-1", "C-1", state="acknowledged", assignee="lead@example.com")
    await desk.person("other@example.com", Role.AGENT)
    lead = await signed_in(desk, "lead@example.com", Role.LEAD)
    names = ("noted", "snoozed", "reassigned")
    for name in names:
        assert await _counter(desk, f"touchpulse_api_interventions_{name}_total") == 0
    moves = (
        ("note", {"note": "called, no answer"}),
        ("snooze", {"until": (NOW + timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M")}),
        ("reassign", {"assignee": "nobody@example.com"}),  # refused: not counted
        ("reassign", {"assignee": "other@example.com"}),
    )
    for action, fields in moves:
        html = (await lead.get("/desk/customers/C-1")).text
        await lead.post(
            f"/desk/interventions/i-1/{action}",
            data={"csrf_token": csrf_of(html), "expected_version": version_of(html), **fields},
        )
    for name in names:
        assert await _counter(desk, f"touchpulse_api_interventions_{name}_total") == 1, name


async def test_did_our_actions_help_by_promise_by_outcome_and_both(desk: Desk) -> None:
    followed = (
        ("i-a", "C-a", "on_time", "reached_and_fixed", 70.0),
        ("i-b", "C-b", "on_time", "could_not_reach", 30.0),
        ("i-c", "C-c", "wait", "reached_and_fixed", 60.0),
    )
    for intervention_id, customer_id, promise, outcome, health in followed:
        await case(
            desk, intervention_id, customer_id, state="resolved", opened_ago=timedelta(days=20)
        )  # opened at health 40, resolved at once
        await desk.execute(
            "UPDATE intervention SET outcome_category = $2, follow_up_health = $3,"
            " follow_up_at = resolved_at + interval '14 days',"
            " gaps = jsonb_set(gaps, '{0,promise_id}', to_jsonb($4::text))"
            " WHERE intervention_id = $1",
            intervention_id,
            outcome,
            health,
            promise,
        )
    lead = await signed_in(desk, "lead@example.com", Role.LEAD)
    html = (await lead.get("/desk/organisation?days=7")).text

    def rows(by: str) -> list[tuple[str, ...]]:
        found = re.findall(rf'<tr data-testid="helped-{by}">(.*?)</tr>', html)
        return [tuple(re.findall(r">([^<>]+)</", row)) for row in found]

    # Per promise and per outcome: averages over the cases, not over the pairs.
    assert rows("promise") == [
        ("on_time", "2", "40.0", "50.0", "+10.0"),
        ("wait", "1", "40.0", "60.0", "+20.0"),
    ]
    assert rows("outcome") == [
        ("reached and fixed", "2", "40.0", "65.0", "+25.0"),
        ("could not reach", "1", "40.0", "30.0", "-10.0"),
    ]
    assert len(rows("both")) == 3
    # The customer page says how long after the resolve the follow-up came.
    page = (await lead.get("/desk/customers/C-a")).text
    assert "(14 days after resolve)" in page
    assert 'data-testid="follow-up-health">70.0<' in page

"""deploy/promises.yaml: valid, and covering every touchpoint the brief names."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.scoring.domain.support import T0, event
from touchpulse_scoring.domain import (
    NO_PROFILE,
    Catalogue,
    DeadlinePromise,
    MeasurePromise,
    evaluate,
    load_catalogue_file,
)

SHIPPED = Path(__file__).parents[3] / "deploy" / "promises.yaml"
REQUIRED_TOUCHPOINTS = {
    "web",
    "app",
    "call_centre",
    "switchboard",
    "sales",
    "delivery",
    "billing",
    "customer_service",
    "communication",
    "survey",
}


@pytest.fixture(scope="module")
def shipped() -> Catalogue:
    return load_catalogue_file(SHIPPED)


def test_it_parses_with_a_version(shipped: Catalogue) -> None:
    assert shipped.version
    assert 15 <= len(shipped.promises) <= 30


def test_every_required_touchpoint_is_registered_and_promised(shipped: Catalogue) -> None:
    assert set(shipped.touchpoints) >= REQUIRED_TOUCHPOINTS
    promised = {p.touchpoint for p in shipped.promises}
    assert promised >= REQUIRED_TOUCHPOINTS


def test_it_has_both_kinds_of_deadline(shipped: Catalogue) -> None:
    deadlines = [p for p in shipped.promises if isinstance(p, DeadlinePromise)]
    within = shipped.promise("delivery-within-48h")
    promised = shipped.promise("delivery-as-promised")
    assert isinstance(within, DeadlinePromise)
    assert isinstance(promised, DeadlinePromise)
    assert within.deadline.within_hours == 48
    assert (within.deadline.opened_by, within.deadline.fulfilled_by) == (
        "order.placed",
        "delivery.completed",
    )
    assert promised.deadline.due_at_attribute == "due_at"
    assert promised.deadline.opened_by == "delivery.promised"
    assert len(deadlines) >= 2


def test_premium_customers_get_tighter_targets(shipped: Catalogue) -> None:
    call = shipped.promise("call-answer-time")
    assert isinstance(call, MeasurePromise)
    assert call.terms_for("premium").target < call.terms_for("standard").target


def test_a_survey_score_of_two_or_less_is_a_critical_breach(shipped: Catalogue) -> None:
    def severity(csat: float) -> str:
        survey = event("survey.answered", "survey", {"csat": csat}, at=T0)
        (outcome,) = evaluate(survey, shipped, NO_PROFILE)
        return outcome.severity

    assert [severity(c) for c in (1, 2, 3, 4, 5)] == [
        "critical",
        "critical",
        "normal",
        "normal",
        "normal",
    ]


def test_every_promise_says_what_to_do(shipped: Catalogue) -> None:
    assert all(p.action and p.description for p in shipped.promises)

"""Deadline promises: on time, late, breach by absence, and the late fulfilment superseding it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.scoring.domain.support import HALF_LIFE_DAYS, T0, catalogue, event
from touchpulse_scoring.domain import (
    EMPTY,
    NO_PROFILE,
    CustomerProfile,
    Deadline,
    DeadlineRef,
    UnscorableEvent,
    UnscorableReason,
    add_outcome,
    apply_outcomes,
    deadline_outcome_key,
    expire_deadline,
    fulfil_deadline,
    fulfilment_refs,
    keep_earliest,
    open_deadlines,
    open_with,
)

CAT = catalogue()
HOUR = timedelta(hours=1)


def _order(
    *, at: datetime = T0, journey: str | None = "order-7", profile: CustomerProfile = NO_PROFILE
) -> Deadline:
    placed = event("order.placed", "sales", at=at, event_id="o-1", journey_id=journey)
    (deadline,) = open_deadlines(placed, CAT, profile)
    return deadline


def test_an_opening_event_starts_a_clock() -> None:
    deadline = _order()
    assert deadline.due_at == T0 + 48 * HOUR
    assert deadline.state == "open"
    assert deadline.journey_key == "order-7"
    assert deadline.opening_event_ids == ("test-src/o-1",)
    assert deadline.catalogue_version == "test.1"
    assert deadline.touchpoint == "delivery"
    assert deadline.ref == DeadlineRef("C-1", "delivery-within-48h", "order-7")


def test_without_a_journey_the_opening_event_id_is_the_journey_key() -> None:
    assert _order(journey=None).journey_key == "o-1"


def test_a_segment_gets_its_own_deadline() -> None:
    assert _order(profile=CustomerProfile(segment="premium")).due_at == T0 + 24 * HOUR


def test_on_time() -> None:
    deadline = _order()
    done = event("delivery.completed", "delivery", at=T0 + 40 * HOUR, journey_id="order-7")
    closed, outcome = fulfil_deadline(deadline, done)
    assert (outcome.met, outcome.gap, outcome.score) == (True, 0.0, 1.0)
    assert outcome.actual == 40.0
    assert (outcome.expected.op, outcome.expected.target, outcome.expected.unit) == (
        "<=",
        48.0,
        "hours",
    )
    assert outcome.event_ids == ("test-src/o-1", "test-src/e-1")
    assert outcome.occurred_at == T0 + 40 * HOUR
    assert outcome.weight == 1.5
    assert (closed.state, closed.closed_at) == ("fulfilled", T0 + 40 * HOUR)


def test_exactly_at_the_due_time_is_on_time() -> None:
    done = event("delivery.completed", "delivery", at=T0 + 48 * HOUR, journey_id="order-7")
    assert fulfil_deadline(_order(), done)[1].met


def test_late_records_the_real_gap() -> None:
    done = event("delivery.completed", "delivery", at=T0 + 60 * HOUR, journey_id="order-7")
    _, outcome = fulfil_deadline(_order(), done)
    assert (outcome.met, outcome.gap, outcome.score) == (False, 12.0, 0.75)
    assert outcome.actual == 60.0


def test_expiry_is_a_breach_by_absence() -> None:
    deadline = _order()
    assert expire_deadline(deadline, T0 + 47 * HOUR) is None
    assert expire_deadline(deadline, T0 + 48 * HOUR) is None  # not past due yet
    result = expire_deadline(deadline, T0 + 50 * HOUR)
    assert result is not None
    expired, breach = result
    assert breach.actual is None
    assert (breach.met, breach.score, breach.gap) == (False, 0.0, 2.0)
    assert breach.occurred_at == deadline.due_at
    assert breach.event_ids == ("test-src/o-1",)
    assert breach.outcome_key == deadline_outcome_key("delivery-within-48h", "order-7")
    assert (expired.state, expired.closed_at) == ("expired", T0 + 50 * HOUR)


def test_no_double_expiry() -> None:
    result = expire_deadline(_order(), T0 + 50 * HOUR)
    assert result is not None
    expired, _ = result
    assert expire_deadline(expired, T0 + 90 * HOUR) is None


def test_a_late_fulfilment_after_expiry_supersedes_the_breach() -> None:
    result = expire_deadline(_order(), T0 + 50 * HOUR)
    assert result is not None
    expired, breach = result
    done = event("delivery.completed", "delivery", at=T0 + 66 * HOUR, journey_id="order-7")
    fulfilled, late = fulfil_deadline(expired, done)
    assert late.outcome_key == breach.outcome_key
    assert (late.gap, late.score, late.actual) == (18.0, 1 - 18 / 48, 66.0)
    assert fulfilled.state == "fulfilled"

    # Whichever order the ledger sees them in, only the late fulfilment stands.
    for order in ([breach, late], [late, breach]):
        applied = apply_outcomes({}, {}, order, half_life_days=HALF_LIFE_DAYS)
        assert applied.current[late.outcome_key] == late
        alone = add_outcome(EMPTY, late, half_life_days=HALF_LIFE_DAYS)
        assert applied.health["delivery"].value == pytest.approx(alone.value, rel=1e-12)
        assert applied.health["delivery"].outcomes == 1


def test_new_customers_breaches_weigh_more_on_expiry_and_late_arrival() -> None:
    new = CustomerProfile(customer_since=T0.date())
    deadline = _order(profile=new)
    on_time = event("delivery.completed", "delivery", at=T0 + HOUR, journey_id="order-7")
    late = event("delivery.completed", "delivery", at=T0 + 50 * HOUR, journey_id="order-7")
    assert fulfil_deadline(deadline, on_time)[1].weight == 1.5
    assert fulfil_deadline(deadline, late)[1].weight == 1.5 * 1.5
    result = expire_deadline(deadline, T0 + 49 * HOUR)
    assert result is not None
    assert result[1].weight == 1.5 * 1.5


def test_a_deadline_carried_in_the_event() -> None:
    promised = event(
        "delivery.promised",
        "delivery",
        at=T0,
        journey_id="order-7",
        attributes={"due_at": "2026-03-03T18:00:00+01:00"},
    )
    (deadline,) = open_deadlines(promised, CAT, NO_PROFILE)
    assert deadline.due_at == datetime(2026, 3, 3, 17, 0, tzinfo=UTC)
    assert deadline.promise_id == "delivery-as-promised"
    done = event(
        "delivery.completed", "delivery", at=deadline.due_at + 6 * HOUR, journey_id="order-7"
    )
    _, outcome = fulfil_deadline(deadline, done)
    assert (outcome.gap, outcome.score) == (6.0, 0.75)


@pytest.mark.parametrize(
    "attributes",
    [
        {},
        {"due_at": "tomorrow"},
        {"due_at": "2026-03-03"},
        {"due_at": "2026-03-03T18:00:00"},  # no offset
        {"due_at": "2026-02-30T18:00:00Z"},  # no such day
        {"due_at": 1772560800},
        {"due_at": "2026-03-01T00:00:00Z"},  # before the promise was made
    ],
)
def test_a_bad_due_at_is_unscorable(attributes: dict[str, str | int | float | bool | None]) -> None:
    promised = event("delivery.promised", "delivery", journey_id="j", attributes=attributes)
    with pytest.raises(UnscorableEvent) as caught:
        open_deadlines(promised, CAT, NO_PROFILE)
    assert caught.value.reason is UnscorableReason.BAD_DUE_AT
    assert "delivery-as-promised" in caught.value.detail


def test_a_deadline_past_the_year_9999_is_unscorable() -> None:
    placed = event("order.placed", "sales", at=datetime(9999, 12, 31, 12, tzinfo=UTC))
    with pytest.raises(UnscorableEvent, match="outside the years"):
        open_deadlines(placed, CAT, NO_PROFILE)


def test_which_deadlines_an_event_could_fulfil() -> None:
    done = event("delivery.completed", "delivery", journey_id="order-7")
    refs = fulfilment_refs(done, CAT)
    assert sorted(r.promise_id for r in refs) == ["delivery-as-promised", "delivery-within-48h"]
    assert {r.journey_key for r in refs} == {"order-7"}
    # Without a journey it cannot say which clock it stops, so it stops none.
    assert fulfilment_refs(event("delivery.completed", "delivery"), CAT) == []
    assert fulfilment_refs(event("invoice.issued", "billing", journey_id="order-7"), CAT) == []


def test_fulfilling_the_wrong_deadline_is_a_programming_error() -> None:
    deadline = _order()
    other_journey = event("delivery.completed", "delivery", journey_id="order-8")
    with pytest.raises(ValueError, match="not on deadline"):
        fulfil_deadline(deadline, other_journey)
    done = event("delivery.completed", "delivery", at=T0 + HOUR, journey_id="order-7")
    fulfilled, _ = fulfil_deadline(deadline, done)
    with pytest.raises(ValueError, match="already fulfilled"):
        fulfil_deadline(fulfilled, done)


def test_the_earliest_opening_stands_in_any_order() -> None:
    first = _order(at=T0)
    second = _order(at=T0 + 5 * HOUR)
    assert keep_earliest(first, second) == first
    assert keep_earliest(second, first) == first
    expired = expire_deadline(second, T0 + 100 * HOUR)
    assert expired is not None
    # An earlier opening arriving after the later one expired takes its place, and is
    # expired as of when the later one was noticed missing (it was due even sooner).
    reopened, outcome = open_with(expired[0], first)
    assert (reopened.opened_at, reopened.state, reopened.closed_at) == (
        T0,
        "expired",
        T0 + 100 * HOUR,
    )
    assert outcome is not None
    assert (outcome.occurred_at, outcome.opened_at, outcome.actual) == (T0 + 48 * HOUR, T0, None)


def test_opening_at_an_unknown_touchpoint_is_unscorable() -> None:
    with pytest.raises(UnscorableEvent):
        open_deadlines(event("order.placed", "web"), CAT, NO_PROFILE)

"""Builders shared by the domain tests: a small catalogue, events, outcomes, strategies."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from touchpulse_scoring.domain import (
    Catalogue,
    Expected,
    Outcome,
    catalogue_from_mapping,
    event_outcome_key,
)
from touchpulse_shared.contract import ExperienceEventV1

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HALF_LIFE_DAYS = 30.0

_DOCUMENT: dict[str, Any] = {
    "version": "test.1",
    "touchpoints": {"call_centre": 1.0, "billing": 1.0, "delivery": 2.0, "survey": 1.0, "sales": 1},
    "policy": {},
    "promises": [
        {
            "id": "call-answer-time",
            "touchpoint": "call_centre",
            "event_type": "call.answered",
            "measure": "wait_seconds",
            "expect": {"op": "<=", "target": 60},
            "tolerance": 540,
            "weight": 1.0,
            "segments": {"premium": {"target": 30, "tolerance": 270}},
            "action": "Call back within 24 hours",
            "description": "We answer within a minute",
        },
        {
            "id": "items-missing",
            "touchpoint": "delivery",
            "event_type": "delivery.completed",
            "measure": "items_missing",
            "expect": {"op": "==", "target": 0},
            "tolerance": 4,
            "action": "Ship the missing items",
            "description": "Everything arrives",
        },
        {
            "id": "invoice-correct",
            "touchpoint": "billing",
            "event_type": "invoice.issued",
            "measure": "invoice_correct",
            "expect": {"op": "==", "target": True},
            "weight": 2.0,
            "action": "Issue a corrected invoice",
            "description": "Invoices are right",
        },
        {
            "id": "survey-csat",
            "touchpoint": "survey",
            "event_type": "survey.answered",
            "measure": "csat",
            "expect": {"op": ">=", "target": 4},
            "tolerance": 3,
            "severity": "critical",
            "critical_at": 2,
            "action": "A manager calls the customer",
            "description": "You are satisfied",
        },
        {
            "id": "delivery-within-48h",
            "touchpoint": "delivery",
            "deadline": {
                "opened_by": "order.placed",
                "fulfilled_by": "delivery.completed",
                "within_hours": 48,
            },
            "tolerance": 48,
            "weight": 1.5,
            "segments": {"premium": {"within_hours": 24}},
            "action": "Tell the customer where the parcel is",
            "description": "Delivered within 48 hours",
        },
        {
            "id": "delivery-as-promised",
            "touchpoint": "delivery",
            "deadline": {
                "opened_by": "delivery.promised",
                "fulfilled_by": "delivery.completed",
                "due_at_attribute": "due_at",
            },
            "tolerance": 24,
            "action": "Rebook the delivery",
            "description": "Delivered in the promised slot",
        },
    ],
}


def document() -> dict[str, Any]:
    """A fresh, valid catalogue document to mutate."""
    return copy.deepcopy(_DOCUMENT)


def promise_doc(doc: dict[str, Any], promise_id: str) -> dict[str, Any]:
    promise: dict[str, Any] = next(p for p in doc["promises"] if p["id"] == promise_id)
    return promise


def catalogue(**policy: Any) -> Catalogue:
    doc = document()
    doc["policy"] = policy
    return catalogue_from_mapping(doc)


def event(
    event_type: str,
    touchpoint: str,
    measures: dict[str, float | bool] | None = None,
    *,
    at: datetime = T0,
    event_id: str = "e-1",
    source: str = "test-src",
    customer_id: str = "C-1",
    journey_id: str | None = None,
    attributes: dict[str, str | int | float | bool | None] | None = None,
) -> ExperienceEventV1:
    return ExperienceEventV1(
        event_id=event_id,
        source=source,
        customer_id=customer_id,
        touchpoint=touchpoint,
        type=event_type,
        occurred_at=at,
        journey_id=journey_id,
        measures=measures or {},
        attributes=attributes or {},
    )


def outcome(
    *,
    score: float,
    weight: float = 1.0,
    at: datetime = T0,
    key: str = "e-1",
    touchpoint: str = "web",
    actual: float | bool | None = 1.0,
    promise_id: str = "p",
) -> Outcome:
    """A bare outcome for health and ledger tests."""
    return Outcome(
        outcome_key=event_outcome_key(promise_id, "test-src", key),
        customer_id="C-1",
        promise_id=promise_id,
        catalogue_version="test.1",
        touchpoint=touchpoint,
        occurred_at=at,
        expected=Expected(op="<=", target=1.0, unit="units"),
        actual=actual,
        gap=0.0 if score == 1.0 else 1.0,
        met=score == 1.0,
        score=score,
        weight=weight,
        severity="normal",
        event_ids=(f"test-src/{key}",),
    )


# Two years either side of T0: about 24 half-lives, the spread a customer's history has.
seconds_offsets = st.integers(min_value=-2 * 365 * 86_400, max_value=2 * 365 * 86_400)
times = seconds_offsets.map(lambda s: T0 + timedelta(seconds=s))
scores = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
weights = st.floats(min_value=0.1, max_value=15.0, allow_nan=False)
touchpoint_names = st.sampled_from(["web", "app", "billing", "delivery"])


@st.composite
def outcome_lists(draw: st.DrawFn, *, min_size: int = 0, max_size: int = 30) -> list[Outcome]:
    """Outcomes with distinct keys."""
    count = draw(st.integers(min_value=min_size, max_value=max_size))
    return [
        outcome(
            score=draw(scores),
            weight=draw(weights),
            at=draw(times),
            key=f"e-{index}",
            touchpoint=draw(touchpoint_names),
        )
        for index in range(count)
    ]


def close(a: float | None, b: float | None, rel: float = 1e-9) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-300) or abs(a - b) <= 1e-12

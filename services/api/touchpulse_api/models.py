"""Wire shapes of the API, apart from storage rows and domain values.

Inputs forbid unknown fields, so computed fields (health, priority, timestamps) can never be
written through them (no mass assignment).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from touchpulse_shared.contract.events import SLUG_PATTERN

Band = Literal["red", "amber", "green"]


def _storable(text: str) -> str:
    # PostgreSQL text cannot hold NUL: let through, it fails the write as a server error.
    if "\x00" in text:
        raise ValueError("may not contain NUL characters")
    return text


StorableText = Annotated[str, AfterValidator(_storable)]


class Expected(BaseModel):
    op: str = Field(examples=["<="])
    target: float | bool = Field(examples=[60])
    unit: str = Field(examples=["wait_seconds"])


class OutcomeOut(BaseModel):
    promise_id: str = Field(examples=["call-answer-time"])
    touchpoint: str = Field(examples=["call_centre"])
    occurred_at: datetime
    expected: Expected
    actual: float | bool | None = Field(
        description="null: the awaited event never came", examples=[420]
    )
    gap: float = Field(description="how far past the target, in the promise's unit", examples=[360])
    met: bool
    score: float = Field(ge=0, le=1, examples=[0.33])
    severity: Literal["normal", "critical"]
    event_ids: list[str] = Field(examples=[["call-centre/call-991"]])
    catalogue_version: str


class Explanation(OutcomeOut):
    impact: float = Field(
        description="journey health points this outcome moves the score by (negative: down)",
        examples=[-12.5],
    )


class TouchpointHealthOut(BaseModel):
    health: float | None = Field(
        ge=0, le=1, description="with the neutral prior (docs/scoring.md)", examples=[0.42]
    )
    outcomes: int
    evidence_weight: float = Field(
        ge=0,
        description="the decayed outcome weight behind the health, as of the customer's as_of",
        examples=[3.5],
    )


class TrendPoint(BaseModel):
    at: datetime
    score: float | None


class CustomerHealth(BaseModel):
    customer_id: str = Field(examples=["C-104233"])
    score: float | None = Field(
        ge=0, le=100, description="0-100; null while the customer has no outcomes", examples=[47.2]
    )
    band: Band | None = Field(examples=["red"])
    weakest_touchpoint: str | None = Field(examples=["call_centre"])
    evidence_weight: float = Field(
        ge=0,
        description="the decayed outcome weight behind the score, summed over touchpoints;"
        " a low score on thin evidence opens no intervention (policy min_evidence)",
        examples=[6.5],
    )
    confidence: float = Field(
        ge=0,
        le=1,
        description="evidence_weight / (evidence_weight + the priors' weight): how far the"
        " score rests on outcomes rather than on the neutral prior",
        examples=[0.62],
    )
    touchpoints: dict[str, TouchpointHealthOut]
    as_of: datetime | None = Field(description="the newest event time applied: the freshness")
    updated_at: datetime | None
    trend: list[TrendPoint]
    explanation: list[Explanation] = Field(description="the outcomes that move the score most")
    open_intervention_id: str | None


class Page(BaseModel):
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null: the end")


class GapsPage(Page):
    customer_id: str
    items: list[OutcomeOut]


class OrgGap(BaseModel):
    touchpoint: str
    promise_id: str
    events: int
    breaches: int
    breach_rate: float = Field(ge=0, le=1)
    median_gap: float | None
    p90_gap: float | None
    customers_affected: int


class OrgGaps(BaseModel):
    since: datetime
    until: datetime
    items: list[OrgGap] = Field(description="weakest link first: highest breach rate")


class AtRiskCustomer(BaseModel):
    customer_id: str
    score: float | None
    band: Band | None
    weakest_touchpoint: str | None
    segment: str
    new_customer: bool
    as_of: datetime
    open_intervention_id: str | None
    priority: float | None


class AtRiskPage(Page):
    items: list[AtRiskCustomer]


class ProfileIn(BaseModel):
    """What a CRM may set. Health and everything computed is not writable here."""

    model_config = ConfigDict(extra="forbid")

    segment: str = Field("standard", pattern=SLUG_PATTERN, examples=["premium"])
    customer_since: date | None = Field(None, examples=["2026-09-01"])
    value: float = Field(1.0, ge=0, le=1_000_000, allow_inf_nan=False, examples=[3.0])
    reach: float = Field(0.0, ge=0, le=1_000_000_000, allow_inf_nan=False, examples=[1500])


class ProfileOut(ProfileIn):
    model_config = ConfigDict(extra="ignore")

    customer_id: str
    created_at: datetime
    updated_at: datetime


class Gap(BaseModel):
    promise_id: str
    touchpoint: str
    expected: Expected
    actual: float | bool | None
    gap: float
    score: float
    severity: str
    occurred_at: datetime
    event_ids: list[str]
    action: str | None


class Trigger(BaseModel):
    kind: str
    detail: str
    promise_id: str | None


class InterventionOut(BaseModel):
    intervention_id: str
    customer_id: str
    state: Literal["open", "acknowledged", "resolved", "expired"]
    priority: float
    threshold: float
    triggers: list[Trigger]
    gaps: list[Gap] = Field(description="what was promised versus what happened")
    actions: list[str] = Field(description="recommended actions, most urgent first")
    health_at_open: float | None
    opened_at: datetime
    acknowledged_at: datetime | None
    assignee: str | None
    resolved_at: datetime | None
    outcome_note: str | None
    health_at_resolve: float | None
    follow_up_at: datetime | None
    follow_up_health: float | None
    health_now: float | None = Field(description="the customer's journey health now")


class InterventionsPage(Page):
    items: list[InterventionOut]


class Acknowledge(BaseModel):
    model_config = ConfigDict(extra="forbid")

    assignee: StorableText = Field(min_length=1, max_length=200, examples=["agent-17"])


class Resolve(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome_note: StorableText = Field(
        min_length=1, max_length=5000, examples=["Called, refunded the delivery fee"]
    )


class Erased(BaseModel):
    customer_id: str
    erased_at: datetime
    removed: dict[str, int] = Field(description="rows removed per kind of data")


class PromisesOut(BaseModel):
    version: str
    touchpoints: dict[str, float]
    policy: dict[str, Any]
    promises: list[dict[str, Any]]

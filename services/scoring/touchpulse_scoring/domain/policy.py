"""The catalogue's policy: decay, weakest-link emphasis, bands, new customers, interventions.

Every field has the brief's default so a catalogue may state only what it changes.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_core import PydanticCustomError

from touchpulse_scoring.domain.health import Prior
from touchpulse_scoring.domain.promises import MODEL_CONFIG

Band = Literal["red", "amber", "green"]
Score100 = Annotated[float, Field(ge=0, le=100)]
Days = Annotated[float, Field(gt=0, le=3650)]


class Bands(BaseModel):
    """``red < amber_from <= amber < green_from <= green`` on the 0-100 journey scale."""

    model_config = MODEL_CONFIG

    amber_from: Score100 = 50.0
    green_from: Score100 = 75.0

    @model_validator(mode="after")
    def _ordered(self) -> Bands:
        if self.amber_from > self.green_from:
            raise PydanticCustomError("bands_order", "amber_from must not exceed green_from")
        return self

    def of(self, score: float) -> Band:
        if score < self.amber_from:
            return "red"
        if score < self.green_from:
            return "amber"
        return "green"


class PriorTerms(BaseModel):
    """A neutral pseudo-outcome: the score health starts from and how much evidence it is
    worth (in promise weights). Weight 0 turns the prior off for that touchpoint."""

    model_config = MODEL_CONFIG

    score: Annotated[float, Field(ge=0, le=1)] = 0.8
    weight: Annotated[float, Field(ge=0, le=1000)] = 2.0


class PriorOverride(BaseModel):
    """One touchpoint's own prior score and/or weight."""

    model_config = MODEL_CONFIG

    score: Annotated[float, Field(ge=0, le=1)] | None = None
    weight: Annotated[float, Field(ge=0, le=1000)] | None = None


class HealthPrior(PriorTerms):
    """The prior for every touchpoint, with per-touchpoint overrides."""

    touchpoints: dict[str, PriorOverride] = Field(default_factory=dict)

    def for_touchpoint(self, touchpoint: str) -> Prior:
        override = self.touchpoints.get(touchpoint)
        if override is None:
            return Prior(score=self.score, weight=self.weight)
        return Prior(
            score=self.score if override.score is None else override.score,
            weight=self.weight if override.weight is None else override.weight,
        )


class RepeatBreaches(BaseModel):
    """The same promise broken ``count`` times within ``within_days`` calls for action."""

    model_config = MODEL_CONFIG

    count: Annotated[int, Field(ge=2, le=100)] = 3
    within_days: Days = 7.0


class SpreadBreaches(BaseModel):
    """Promises broken at ``touchpoints`` different touchpoints within ``within_days`` of each
    other: the customer is being let down across the journey, not by one bad moment."""

    model_config = MODEL_CONFIG

    touchpoints: Annotated[int, Field(ge=2, le=100)] = 2
    within_days: Days = 14.0


#: A resolution category: a short lower-case name, as it appears in reports and URLs.
ResolutionCategory = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


class InterventionPolicy(BaseModel):
    """When interventions open, how long they wait, and when a new one may follow."""

    model_config = MODEL_CONFIG

    threshold: Score100 = 50.0
    new_customer_threshold: Score100 = 60.0
    recovery_margin: Annotated[float, Field(ge=0, le=100)] = 10.0
    cooldown_days: Annotated[float, Field(ge=0, le=3650)] = 7.0
    repeat_breaches: RepeatBreaches = Field(default_factory=RepeatBreaches)
    spread_breaches: SpreadBreaches = Field(default_factory=SpreadBreaches)
    # The service level for taking ownership: past it an open case is overdue (a metric and
    # an alert), long before it would expire unowned.
    acknowledge_within_hours: Annotated[float, Field(gt=0, le=24 * 3650)] = 24.0
    expire_unacknowledged_days: Days = 14.0
    follow_up_days: Days = 14.0
    critical_priority_floor: Annotated[float, Field(gt=0, le=1000)] = 10.0
    # A low health resting on less than this much evidence (decayed outcome weight, summed
    # over touchpoints) opens nothing: one slow page load is not worth a call. Critical and
    # repeated breaches do not wait for evidence.
    min_evidence: Annotated[float, Field(ge=0, le=100_000)] = 3.25
    # ...and on at least this many broken promises: one broken promise, however weighty,
    # calls for its own fix; a call is for a pattern (or a critical breach).
    min_breaches: Annotated[int, Field(ge=1, le=100)] = 2
    # What a person may say a resolved case came to; "did our actions help" is read per
    # category, so they are a short fixed list rather than free text.
    # A YAML list is not a tuple, so this field alone takes one leniently (its items are
    # still strictly strings matching the pattern); a tuple keeps the frozen policy hashable.
    resolution_categories: Annotated[
        tuple[ResolutionCategory, ...], Field(strict=False, min_length=1, max_length=32)
    ] = (
        "reached_and_fixed",
        "compensated",
        "could_not_reach",
        "no_action_needed",
    )

    @model_validator(mode="after")
    def _categories_distinct(self) -> InterventionPolicy:
        if len(set(self.resolution_categories)) != len(self.resolution_categories):
            raise PydanticCustomError(
                "duplicate_resolution_category", "resolution_categories lists a category twice"
            )
        return self

    @model_validator(mode="after")
    def _acknowledge_before_expiry(self) -> InterventionPolicy:
        if self.acknowledge_within_hours >= self.expire_unacknowledged_days * 24:
            raise PydanticCustomError(
                "acknowledge_after_expiry",
                "acknowledge_within_hours must be shorter than expire_unacknowledged_days",
            )
        return self

    @property
    def history_days(self) -> float:
        """How far back the breach history the triggers read must reach."""
        return max(self.repeat_breaches.within_days, self.spread_breaches.within_days)

    def threshold_for(self, *, is_new: bool) -> float:
        return self.new_customer_threshold if is_new else self.threshold


class Policy(BaseModel):
    """How outcomes become health and health becomes action."""

    model_config = MODEL_CONFIG

    half_life_days: Days = 30.0
    prior: HealthPrior = Field(default_factory=HealthPrior)
    weakest_link_lambda: Annotated[float, Field(ge=0, le=1)] = 0.5
    bands: Bands = Field(default_factory=Bands)
    new_customer_days: Annotated[int, Field(ge=0, le=3650)] = 90
    # Below 1 it would soften breaches for exactly the customers the brief says to protect.
    new_customer_breach_weight: Annotated[float, Field(ge=1, le=100)] = 1.5
    interventions: InterventionPolicy = Field(default_factory=InterventionPolicy)

"""Wire shapes of the promise catalogue's routes: its versions and the one-event preview."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, WithJsonSchema

from touchpulse_api.models import Expected, Page, ProfileIn, StorableText
from touchpulse_shared.contract.cloudevents import CloudEventV1
from touchpulse_shared.contract.events import ExperienceEventV1


class CatalogueVersionOut(BaseModel):
    version: str = Field(description="the catalogue's own version string", examples=["2026.12.2"])
    hash: str = Field(description="sha256 of the catalogue file's text (hex)")
    came_into_effect: datetime = Field(description="when scoring began judging by it")
    went_out_of_effect: datetime | None = Field(
        description="when another catalogue replaced it; null: in effect now"
    )


class CatalogueVersionsPage(Page):
    items: list[CatalogueVersionOut]


def _inline(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A model's JSON Schema with its ``$defs`` written in place: the event travels inside
    another body here, and its own ``#/$defs/…`` references would not resolve there."""
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    inlined: dict[str, Any] = walk(schema)
    return inlined


# Documented as what it is, validated in the route (touchpulse_api.promises.preview): there
# each error can name its field in the event, whichever of the two shapes it has.
EVENT_SCHEMA: dict[str, Any] = {
    "description": "One event as POST /v1/events takes it: a native event, or a structured"
    " CloudEvent (specversion 1.0)",
    "oneOf": [
        _inline(ExperienceEventV1.model_json_schema()),
        _inline(CloudEventV1.model_json_schema()),
    ],
}

CatalogueVersionText = Annotated[
    StorableText, Strict(), Field(min_length=1, max_length=64, examples=["2026.12.2"])
]


class EvaluateIn(BaseModel):
    """One event to judge, and under what."""

    model_config = ConfigDict(extra="forbid")

    event: Annotated[dict[str, Any], WithJsonSchema(EVENT_SCHEMA)]
    version: CatalogueVersionText | None = Field(
        None,
        description="a stored catalogue version (GET /v1/promises/versions); default: the"
        " catalogue in effect",
    )
    profile: ProfileIn | None = Field(
        None,
        description="the customer as judged (segment and tenure change terms and weights);"
        " default: the stored profile of the event's customer_id, else a standard one",
    )


class ProfileUsed(BaseModel):
    segment: str
    customer_since: date | None
    source: Literal["given", "stored", "default"] = Field(
        description="given in the request, the customer's stored profile, or the standard"
        " profile of a customer the CRM never sent"
    )


class PreviewOutcome(BaseModel):
    promise_id: str = Field(examples=["call-answer-time"])
    touchpoint: str = Field(examples=["call_centre"])
    description: str = Field(description="the promise as its catalogue words it")
    expected: Expected
    tolerance: float | None = Field(
        description="how far past the target the score reaches 0 (null: a boolean promise)",
        examples=[540],
    )
    actual: float | bool | None = Field(examples=[420])
    gap: float = Field(description="how far past the target, in the promise's unit", examples=[360])
    met: bool
    score: float = Field(ge=0, le=1, examples=[0.33])
    weight: float = Field(description="its weight in health (new customers' breaches weigh more)")
    severity: Literal["normal", "critical"]
    critical: bool = Field(description="a critical breach: it would open an intervention at once")


class PreviewDeadline(BaseModel):
    """A deadline promise's clock the event would start."""

    promise_id: str = Field(examples=["delivery-on-time"])
    touchpoint: str
    description: str
    journey_key: str = Field(description="the event's journey_id (else its event_id)")
    opened_at: datetime
    due_at: datetime
    tolerance_hours: float
    severity: Literal["normal", "critical"]
    state: Literal["open", "expired", "fulfilled"] = Field(
        description="open; or, when the journey's fulfilment came first, fulfilled (its"
        " outcome is in outcomes); a clock already standing for the journey is shown as it"
        " stands"
    )


class PreviewFulfilment(BaseModel):
    """A deadline promise the event would fulfil on its journey."""

    promise_id: str
    touchpoint: str
    journey_key: str
    judged: bool = Field(
        description="true: a clock stands for this journey and its outcome is in outcomes;"
        " false: no opening has come yet (scoring keeps the event and judges the deadline"
        " when it does), or an earlier fulfilment already stands"
    )


class PreviewOut(BaseModel):
    catalogue_version: str
    catalogue_hash: str
    live: bool = Field(description="judged under the catalogue in effect (false: a stored one)")
    profile: ProfileUsed
    outcomes: list[PreviewOutcome] = Field(description="the measure promises that judge it")
    opens: list[PreviewDeadline] = Field(description="deadline clocks it would start")
    fulfils: list[PreviewFulfilment] = Field(
        description="deadlines it would stop on its journey_id, judged against the clock"
        " scoring holds for that journey"
    )
    note: str | None = Field(description="why nothing judges it, when nothing does")

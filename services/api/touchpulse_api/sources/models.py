"""Wire shapes of the sources' feedback (v1)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from touchpulse_api.models import Page


class ByReason(BaseModel):
    total: int = Field(ge=0, examples=[3])
    by_reason: dict[str, int] = Field(examples=[{"invalid": 2, "unknown_event_type": 1}])


class ByType(BaseModel):
    total: int = Field(ge=0, examples=[4])
    by_type: dict[str, int] = Field(examples=[{"invoice.reminder_sent": 4}])


class SourceQuality(BaseModel):
    source: str = Field(examples=["billing-prod"])
    since: datetime = Field(description="the window's start, rounded down to the hour")
    until: datetime = Field(description="the window's end, rounded up to the hour")
    accepted: int = Field(
        ge=0, description="events scoring applied (each event once)", examples=[1200]
    )
    duplicates: int = Field(
        ge=0,
        description="copies of events already applied (retries with the same event_id)",
        examples=[5],
    )
    rejected: ByReason = Field(
        description="events ingest refused (4xx per item, 429, 503), by problem code"
    )
    dead_lettered: ByReason = Field(
        description="records scoring could not use, by dead-letter reason (listed by "
        "GET /v1/dead-letters)"
    )
    unmatched: ByType = Field(
        description="accepted events that no promise judges, opens or fulfils, by event type"
    )
    last_event_at: datetime | None = Field(
        description="when ingest received the newest event of the source scoring applied, "
        "up to the window's end (null: none within the counters' retention)"
    )


class DeadLetterOut(BaseModel):
    topic: str = Field(examples=["touchpoint.events.v1"])
    partition: int = Field(ge=0, examples=[3])
    offset: int = Field(ge=0, examples=[18211])
    source: str | None = Field(
        description="the source the record names (null: none usable; admin keys only)",
        examples=["billing-prod"],
    )
    reason: str = Field(examples=["invalid_event"])
    detail: str = Field(examples=["invalid event: measures.amount: Input should be a number"])
    event_id: str | None = Field(examples=["inv-1001"])
    event_type: str | None = Field(examples=["invoice.issued"])
    dead_lettered_at: datetime


class DeadLettersPage(Page):
    items: list[DeadLetterOut]

"""What became of each event, and of everything since the last report."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    #: Ingest answered 202 for it: Kafka acknowledged it (acks=all).
    ACCEPTED = "accepted"
    #: An event with the same (source, event_id) was already waiting in this client: it is
    #: sent once, and that copy's result is the one that counts.
    DUPLICATE = "duplicate"
    #: Ingest refused it (4xx): final, never retried; ``http_status`` and ``problem`` say why.
    REJECTED = "rejected"
    #: The queue was full and the policy is ``drop``: it was never queued.
    DROPPED = "dropped"
    #: Not delivered within ``give_up_after_s``: the client stopped trying.
    EXPIRED = "expired"
    #: The client was closed before delivering it and there is no spool: it is lost unless
    #: the caller sends it again (same event, same id).
    UNDELIVERED = "undelivered"
    #: The client was closed before delivering it; it stays in the spool and the next
    #: client opened on that spool sends it.
    SPOOLED = "spooled"


@dataclass(frozen=True)
class Outcome:
    """One event's result."""

    source: str
    event_id: str
    status: Status
    #: The HTTP status ingest gave this event (its own, inside a batch answer).
    http_status: int | None = None
    #: Why it was refused: the item's ``errors`` (JSON Pointers into the event) or
    #: ``detail``, or the whole answer's problem+json when the request was refused.
    problem: Mapping[str, Any] | None = None

    @property
    def delivered(self) -> bool:
        return self.status is Status.ACCEPTED


@dataclass(frozen=True)
class DeliveryReport:
    """Results since the previous report (``flush()`` and ``close()`` each return one)."""

    delivered: int = 0
    duplicates: int = 0
    #: Refused by ingest, with the reasons (the newest 1,000; ``rejected_count`` counts all).
    rejected: tuple[Outcome, ...] = ()
    rejected_count: int = 0
    #: Dropped when the queue was full, or expired: never delivered.
    dropped: tuple[Outcome, ...] = ()
    dropped_count: int = 0
    #: Events still waiting in memory (queued or being retried) when the report was made.
    pending: int = 0
    #: Events the spool holds that are not yet acknowledged (they survive a restart).
    spooled: int = 0
    #: After close() without a spool: the ids of events that were not delivered.
    undelivered: tuple[str, ...] = field(default=())

    @property
    def complete(self) -> bool:
        """Nothing is left to send."""
        return self.pending == 0 and self.spooled == 0 and not self.undelivered

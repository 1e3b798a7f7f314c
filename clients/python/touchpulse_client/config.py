"""The client's settings: one frozen value, checked when it is made."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class FullPolicy(StrEnum):
    """What ``send()`` does when the queue holds ``max_queue_events``."""

    #: Wait up to ``block_timeout_s`` for room, then raise :class:`QueueFull`.
    BLOCK = "block"
    #: Refuse the new event at once: its result is ``dropped`` (``on_result`` and
    #: ``metrics.on_drop`` hear of it); nothing is raised.
    DROP_NEWEST = "drop"
    #: Raise :class:`QueueFull` at once.
    RAISE = "raise"


@dataclass(frozen=True)
class ClientConfig:
    #: Events held in memory (queued, in flight or waiting to be retried) at most.
    max_queue_events: int = 10_000
    full_policy: FullPolicy = FullPolicy.BLOCK
    block_timeout_s: float = 5.0
    #: A batch holds at most this many events; ingest takes 1,000 by default
    #: (TOUCHPULSE_INGEST_MAX_BATCH_ITEMS).
    max_batch_events: int = 500
    #: ... and a body of at most this many bytes; ingest takes 5 MiB by default
    #: (TOUCHPULSE_INGEST_MAX_BODY_BYTES). An event larger than this goes alone.
    max_batch_bytes: int = 1_000_000
    #: How long the first event of a batch may wait for others to join it.
    linger_s: float = 0.05
    #: Requests outstanding at once.
    max_in_flight: int = 2
    #: One request's bound. Ingest answers within its produce bound (5 s by default) or 503.
    request_timeout_s: float = 30.0
    backoff_base_s: float = 0.2
    backoff_cap_s: float = 30.0
    #: A Retry-After above this is taken as this (a misconfigured proxy must not park the
    #: client for a day).
    max_retry_after_s: float = 300.0
    #: Stop retrying an event this long after it was sent (its result: ``expired``); None
    #: retries until close().
    give_up_after_s: float | None = None
    #: A directory for the on-disk spool; None keeps events in memory only.
    spool_dir: Path | None = None
    #: A spool segment file is closed and a new one started past this size.
    spool_segment_bytes: int = 8 * 1024 * 1024
    #: fsync every spool write (the durability the spool exists for); off only for tests
    #: of throughput.
    spool_fsync: bool = True
    #: Sent as the User-Agent.
    user_agent: str = "touchpulse-client-python/0.1"

    def __post_init__(self) -> None:
        positive = {
            "max_queue_events": self.max_queue_events,
            "max_batch_events": self.max_batch_events,
            "max_batch_bytes": self.max_batch_bytes,
            "max_in_flight": self.max_in_flight,
            "request_timeout_s": self.request_timeout_s,
            "spool_segment_bytes": self.spool_segment_bytes,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        for name, number in {
            "linger_s": self.linger_s,
            "block_timeout_s": self.block_timeout_s,
            "max_retry_after_s": self.max_retry_after_s,
        }.items():
            if number < 0:
                raise ValueError(f"{name} must not be negative, got {number}")
        if self.give_up_after_s is not None and self.give_up_after_s <= 0:
            raise ValueError("give_up_after_s must be positive or None")
        if not (0 < self.backoff_base_s <= self.backoff_cap_s):
            raise ValueError("backoff needs 0 < backoff_base_s <= backoff_cap_s")

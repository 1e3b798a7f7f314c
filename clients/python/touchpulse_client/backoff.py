"""How long to wait before a retry: exponential backoff with full jitter, and Retry-After.

Full jitter (a uniform draw between 0 and the exponential bound) spreads the retries of
many clients that failed together — a broker restart fails every client at once — instead
of bringing them back in step. A server's ``Retry-After`` is a floor on top of that: ingest
sends it with 429 (when the key's bucket has refilled) and 503 (when Kafka may be back).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


@dataclass(frozen=True)
class Backoff:
    #: The bound of the first retry; it doubles with each attempt.
    base_s: float = 0.2
    #: The largest bound: a client never waits longer than this between attempts unless
    #: the server asked for longer (Retry-After).
    cap_s: float = 30.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not (self.base_s > 0 and self.cap_s >= self.base_s):
            raise ValueError("backoff needs 0 < base_s <= cap_s")

    def bound(self, attempt: int) -> float:
        """The upper bound of the wait after ``attempt`` failures (1 for the first)."""
        # The exponent is clamped so a long outage never overflows a float.
        return min(self.cap_s, self.base_s * 2.0 ** min(max(attempt - 1, 0), 62))

    def delay(self, attempt: int, retry_after_s: float | None = None) -> float:
        """The wait before the next attempt: jittered, but never below ``retry_after_s``."""
        jittered: float = self.rng.uniform(0, self.bound(attempt))
        if retry_after_s is None:
            return jittered
        return max(retry_after_s, jittered)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds (``"5"``) or an HTTP
    date (``"Wed, 21 Oct 2026 07:28:00 GMT"``); ``None`` when absent or unreadable (then
    the backoff alone decides). A date in the past means no wait."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; an obsolete form may lack the zone
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())

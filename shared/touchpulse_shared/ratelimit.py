"""Per-key rate limits: a token bucket per API key. Pure: the caller passes the time.

Each key has its own bucket, so one tenant's traffic never spends another's allowance. A
bucket holds up to ``burst`` tokens and refills at ``rate_per_s``; a request costs one token
per unit it carries (ingest counts events, so a batch of 200 costs 200).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

# Full idle buckets dropped per call besides the hard bound: a constant amount of upkeep
# per call that, over time, clears out keys that have gone quiet.
_SWEEP_PER_CALL = 2
# Refill time forgiven to float rounding, so that a client that waits exactly the time it
# was told is not refused for a shortfall of a few ulps: at monotonic times of years the
# rounding is near 1e-8 s, and a microsecond's worth of tokens is not worth refusing.
_SLACK_S = 1e-6


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """Token buckets keyed by API key id.

    A cost above ``burst`` (a batch larger than the burst) passes only when the bucket is
    full, and then leaves the bucket in debt: the following requests wait until the debt is
    repaid, so the long-run rate still holds. The alternative, refusing it outright, would
    answer with a Retry-After after which the same request is refused again, forever.

    Memory stays bounded by ``max_keys``. A bucket that has refilled is the same as no
    bucket, so full idle buckets are dropped as calls go by. If more than ``max_keys`` keys
    are active at once, the least recently used bucket is dropped even if not full, which
    forgives that key its partial use: a lenient failure, chosen over unbounded memory.
    """

    def __init__(self, rate_per_s: float, burst: float, max_keys: int = 100_000) -> None:
        if not (math.isfinite(rate_per_s) and rate_per_s > 0):
            raise ValueError(f"rate_per_s must be a positive number, got {rate_per_s}")
        if not (math.isfinite(burst) and burst > 0):
            raise ValueError(f"burst must be a positive number, got {burst}")
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, got {max_keys}")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_keys = max_keys
        # Least recently used first.
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, cost: float, now: float) -> float:
        """Spend ``cost`` tokens of ``key``'s bucket at time ``now`` (monotonic seconds).

        Returns 0.0 when the request may go ahead (the tokens are spent), else the seconds
        until it would be allowed (> 0; nothing is spent). HTTP's Retry-After takes whole
        seconds: round up (``math.ceil``) so a client that obeys it is not refused again.
        """
        if not (math.isfinite(cost) and cost >= 0):
            raise ValueError(f"cost must be a finite number >= 0, got {cost}")
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(self.burst, now)
            self._buckets[key] = bucket
        else:
            self._refill(bucket, now)
            self._buckets.move_to_end(key)
        needed = min(cost, self.burst)
        if bucket.tokens + self.rate_per_s * _SLACK_S >= needed:
            bucket.tokens -= cost
            wait = 0.0
        else:
            wait = (needed - bucket.tokens) / self.rate_per_s
        self._evict(now)
        return wait

    def _refill(self, bucket: _Bucket, now: float) -> None:
        # A clock that steps back (it should not, being monotonic) refills nothing rather
        # than draining the bucket.
        if now > bucket.at:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate_per_s)
            bucket.at = now

    def _full_at(self, bucket: _Bucket, now: float) -> bool:
        elapsed = max(0.0, now - bucket.at)
        return bucket.tokens + elapsed * self.rate_per_s >= self.burst

    def _evict(self, now: float) -> None:
        for _ in range(_SWEEP_PER_CALL):
            if not self._buckets:
                break
            oldest = next(iter(self._buckets.values()))
            if not self._full_at(oldest, now):
                break
            self._buckets.popitem(last=False)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)

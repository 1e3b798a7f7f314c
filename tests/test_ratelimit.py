"""The per-key token bucket, on an injected clock."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from touchpulse_shared.ratelimit import RateLimiter


def test_a_burst_passes_then_the_next_request_waits_for_one_token() -> None:
    limiter = RateLimiter(rate_per_s=2.0, burst=5.0)
    assert [limiter.take("k", 1, now=100.0) for _ in range(5)] == [0.0] * 5
    assert limiter.take("k", 1, now=100.0) == pytest.approx(0.5)
    assert limiter.take("k", 3, now=100.0) == pytest.approx(1.5)


def test_a_refusal_spends_nothing() -> None:
    limiter = RateLimiter(rate_per_s=1.0, burst=2.0)
    assert limiter.take("k", 2, now=0.0) == 0.0
    for _ in range(10):
        assert limiter.take("k", 1, now=0.0) == pytest.approx(1.0)
    assert limiter.take("k", 1, now=1.0) == 0.0


def test_tokens_refill_with_time_up_to_the_burst() -> None:
    limiter = RateLimiter(rate_per_s=10.0, burst=20.0)
    assert limiter.take("k", 20, now=0.0) == 0.0
    assert limiter.take("k", 5, now=0.2) == pytest.approx(0.3)
    assert limiter.take("k", 5, now=0.5) == 0.0
    # A long pause refills to the burst, not beyond it.
    assert limiter.take("k", 20, now=1000.0) == 0.0
    assert limiter.take("k", 1, now=1000.0) == pytest.approx(0.1)


def test_waiting_the_returned_time_is_enough() -> None:
    limiter = RateLimiter(rate_per_s=3.0, burst=7.0)
    now = 0.0
    assert limiter.take("k", 7, now) == 0.0
    wait = limiter.take("k", 4, now)
    assert wait > 0
    assert limiter.take("k", 4, now + wait) == 0.0


def test_rounding_the_wait_up_to_whole_seconds_is_enough() -> None:
    limiter = RateLimiter(rate_per_s=0.7, burst=1.0)
    assert limiter.take("k", 1, 0.0) == 0.0
    retry_after = math.ceil(limiter.take("k", 1, 0.0))
    assert retry_after == 2
    assert limiter.take("k", 1, float(retry_after)) == 0.0


def test_a_cost_above_the_burst_passes_on_a_full_bucket_and_leaves_debt() -> None:
    limiter = RateLimiter(rate_per_s=100.0, burst=500.0)
    assert limiter.take("k", 1, now=0.0) == 0.0
    # Not full: it waits until the bucket is full, which is when it can pass.
    assert limiter.take("k", 1000, now=0.0) == pytest.approx(0.01)
    assert limiter.take("k", 1000, now=0.01) == 0.0
    # 500 tokens in debt: one more event waits for 501 tokens.
    assert limiter.take("k", 1, now=0.01) == pytest.approx(5.01)
    assert limiter.take("k", 1, now=5.02) == 0.0


def test_keys_have_independent_buckets() -> None:
    limiter = RateLimiter(rate_per_s=1.0, burst=3.0)
    assert limiter.take("tenant-a", 3, now=0.0) == 0.0
    assert limiter.take("tenant-a", 1, now=0.0) > 0
    assert [limiter.take("tenant-b", 1, now=0.0) for _ in range(3)] == [0.0] * 3
    assert limiter.take("tenant-b", 1, now=0.0) > 0


def test_idle_full_buckets_are_dropped() -> None:
    limiter = RateLimiter(rate_per_s=1.0, burst=10.0)
    for i in range(5):
        limiter.take(f"k{i}", 5, now=0.0)
    assert len(limiter) == 5
    # Long after, every old bucket is full again: each call drops some until none is left.
    for _ in range(5):
        limiter.take("fresh", 1, now=100.0)
    assert len(limiter) == 1


def test_dropping_a_full_bucket_changes_no_answer() -> None:
    limiter = RateLimiter(rate_per_s=1.0, burst=2.0)
    limiter.take("a", 2, now=0.0)
    limiter.take("b", 1, now=10.0)  # "a" is full again, and dropped
    assert len(limiter) == 1
    assert limiter.take("a", 2, now=10.0) == 0.0
    assert limiter.take("a", 1, now=10.0) == pytest.approx(1.0)


def test_the_number_of_buckets_is_bounded() -> None:
    limiter = RateLimiter(rate_per_s=0.001, burst=1.0, max_keys=100)
    for i in range(10_000):
        limiter.take(f"k{i}", 1, now=0.0)
        assert len(limiter) <= 100
    # The most recent keys are still limited.
    assert limiter.take("k9999", 1, now=0.0) > 0


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),
            st.floats(min_value=0, max_value=50),
            st.floats(min_value=0, max_value=5),
        ),
        max_size=60,
    )
)
def test_no_key_ever_gets_more_than_burst_plus_rate_times_time(
    calls: list[tuple[str, float, float]],
) -> None:
    rate, burst = 4.0, 20.0
    limiter = RateLimiter(rate_per_s=rate, burst=burst)
    now = 0.0
    granted = dict.fromkeys("abc", 0.0)
    largest = dict.fromkeys("abc", 0.0)
    for key, cost, step in calls:
        now += step
        wait = limiter.take(key, cost, now)
        assert wait >= 0
        if wait == 0:
            granted[key] += cost
            largest[key] = max(largest[key], cost)
    for key, total in granted.items():
        # The one overdraft a cost above the burst may leave is the only excess.
        bound = burst + rate * now + max(0.0, largest[key] - burst)
        assert total <= bound * (1 + 1e-9)


@given(
    rate=st.floats(min_value=0.01, max_value=1e4),
    burst=st.floats(min_value=1, max_value=1e4),
    first=st.floats(min_value=0, max_value=2e4),
    second=st.floats(min_value=0, max_value=2e4),
    start=st.floats(min_value=0, max_value=1e6),
)
def test_a_refused_request_passes_after_exactly_the_wait_it_was_given(
    rate: float, burst: float, first: float, second: float, start: float
) -> None:
    limiter = RateLimiter(rate_per_s=rate, burst=burst)
    limiter.take("k", first, start)
    wait = limiter.take("k", second, start)
    if wait > 0:
        assert limiter.take("k", second, start + wait) == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rate_per_s": 0, "burst": 1},
        {"rate_per_s": 1, "burst": 0},
        {"rate_per_s": math.nan, "burst": 1},
        {"rate_per_s": 1, "burst": math.inf},
        {"rate_per_s": 1, "burst": 1, "max_keys": 0},
    ],
)
def test_nonsense_limits_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        RateLimiter(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("cost", [-1.0, math.nan, math.inf])
def test_nonsense_costs_are_refused(cost: float) -> None:
    with pytest.raises(ValueError, match="cost"):
        RateLimiter(rate_per_s=1, burst=1).take("k", cost, 0.0)

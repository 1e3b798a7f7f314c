"""The dispatcher against a real local receiver: signed deliveries from the outbox,
retries with growing delays and Retry-After, 410 disabling, giving up, forbidden targets,
and an outbox that commits out of id order."""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import Callable
from datetime import timedelta

import asyncpg
import httpx
import pytest
from standardwebhooks import Webhook

from tests.api.webhooks.conftest import (
    Answer,
    Clock,
    Receiver,
    attempts,
    delivered_count,
    deliveries,
    outbox,
    signature_matches,
    subscribe,
)
from touchpulse_api.metrics import ApiMetrics
from touchpulse_api.webhooks import store
from touchpulse_api.webhooks.dispatcher import WebhookDispatcher, backoff_s, parse_retry_after
from touchpulse_api.webhooks.signing import derive_secret, master_key, new_nonce
from touchpulse_shared.settings import Settings

Make = Callable[..., WebhookDispatcher]


async def test_a_delivery_is_signed_the_standard_webhooks_way(
    pool: asyncpg.Pool, settings: Settings, receiver: Receiver, make_dispatcher: Make
) -> None:
    _, secret = await subscribe(pool, settings, receiver.url)
    await outbox(pool, intervention_id="iv-42", customer_id="c-7")
    dispatcher = make_dispatcher()

    assert await dispatcher.run_once() == 2  # one outbox row fanned out, one delivery sent

    [request] = receiver.requests
    verified = Webhook(secret).verify(request.body, request.headers)
    assert verified["type"] == "intervention.opened"
    assert verified["data"]["intervention_id"] == "iv-42"
    assert verified["data"]["customer_id"] == "c-7"
    assert verified["timestamp"].endswith("Z")
    assert request.headers["content-type"] == "application/json"
    assert request.webhook_id.startswith("msg_")
    [row] = await deliveries(pool)
    assert (row["id"], row["state"], row["last_status"]) == (request.webhook_id, "delivered", 200)
    assert await pool.fetchval("SELECT count(*) FROM webhook_outbox") == 0
    [attempt] = await attempts(pool, row["id"])
    assert attempt["status"] == 200


async def test_only_enabled_subscriptions_with_the_kind_get_a_delivery(
    pool: asyncpg.Pool, settings: Settings, receiver: Receiver, make_dispatcher: Make
) -> None:
    opened, _ = await subscribe(pool, settings, receiver.url, ("intervention.opened",))
    both, _ = await subscribe(
        pool, settings, receiver.url, ("intervention.opened", "intervention.expired")
    )
    off, _ = await subscribe(pool, settings, receiver.url, ("intervention.expired",))
    await store.update_subscription(pool, off, {"enabled": False}, now=Clock()())
    await outbox(pool, "intervention.opened")
    await outbox(pool, "intervention.expired")

    await make_dispatcher().run_once()

    made = {(r["subscription_id"], r["kind"]) for r in await deliveries(pool)}
    assert made == {
        (opened, "intervention.opened"),
        (both, "intervention.opened"),
        (both, "intervention.expired"),
    }
    assert len(receiver.requests) == 3
    assert await pool.fetchval("SELECT count(*) FROM webhook_outbox") == 0


async def test_failures_are_retried_with_growing_delays_and_the_same_id(
    *,
    pool: asyncpg.Pool,
    settings: Settings,
    receiver: Receiver,
    clock: Clock,
    metrics: ApiMetrics,
    make_dispatcher: Make,
) -> None:
    _, secret = await subscribe(pool, settings, receiver.url)
    await outbox(pool)
    receiver.answer(Answer(503), Answer(500), Answer(502))
    dispatcher = make_dispatcher()
    start = clock.now

    await dispatcher.run_once()
    [row] = await deliveries(pool)
    assert row["state"] == "pending"
    assert row["next_attempt_at"] == start + timedelta(seconds=10)

    # Not due yet: nothing is sent however often the dispatcher runs.
    clock.advance(9)
    await dispatcher.run_once()
    assert len(receiver.requests) == 1

    # Each further failure doubles the delay (the jitter is pinned at its top).
    delays = []
    while (row := (await deliveries(pool))[0])["state"] == "pending":
        clock.now = row["next_attempt_at"]
        await dispatcher.run_once()
        after = (await deliveries(pool))[0]
        if after["state"] == "pending":
            delays.append((after["next_attempt_at"] - clock.now).total_seconds())
        row = after

    assert delays == [20, 40]
    assert row["state"] == "delivered"
    assert [r.webhook_id for r in receiver.requests] == [row["id"]] * 4
    assert all(signature_matches(secret, r) for r in receiver.requests)
    # Each attempt is signed at its own time.
    assert len({r.timestamp for r in receiver.requests}) == 4
    assert [a["status"] for a in await attempts(pool, row["id"])] == [503, 500, 502, 200]
    assert row["attempts"] == 4
    assert delivered_count(metrics, "retry") == 3
    assert delivered_count(metrics, "delivered") == 1


async def test_retry_after_is_honoured_when_longer_than_the_backoff(
    *,
    pool: asyncpg.Pool,
    settings: Settings,
    receiver: Receiver,
    clock: Clock,
    make_dispatcher: Make,
) -> None:
    await subscribe(pool, settings, receiver.url)
    await outbox(pool)
    http_date = email.utils.format_datetime(clock.now + timedelta(seconds=300), usegmt=True)
    receiver.answer(
        Answer(429, {"Retry-After": "120"}),
        Answer(503, {"Retry-After": http_date}),
        Answer(503, {"Retry-After": "1"}),  # shorter than the backoff: the backoff wins
    )
    dispatcher = make_dispatcher()

    await dispatcher.run_once()
    [row] = await deliveries(pool)
    assert row["next_attempt_at"] == clock.now + timedelta(seconds=120)
    assert row["last_status"] == 429

    clock.advance(119)
    await dispatcher.run_once()
    assert len(receiver.requests) == 1, "sent before Retry-After had passed"

    clock.advance(1)
    await dispatcher.run_once()
    [row] = await deliveries(pool)
    # The date was 300 s after the start; the attempt was made 120 s in.
    assert row["next_attempt_at"] == clock.now + timedelta(seconds=180)

    clock.now = row["next_attempt_at"]
    await dispatcher.run_once()
    [row] = await deliveries(pool)
    assert row["next_attempt_at"] == clock.now + timedelta(seconds=40)  # the 3rd failure

    clock.now = row["next_attempt_at"]
    await dispatcher.run_once()
    assert (await deliveries(pool))[0]["state"] == "delivered"
    assert len(receiver.requests) == 4


async def test_410_disables_the_subscription_and_stops_deliveries(
    *,
    pool: asyncpg.Pool,
    settings: Settings,
    receiver: Receiver,
    clock: Clock,
    metrics: ApiMetrics,
    make_dispatcher: Make,
) -> None:
    subscription_id, _ = await subscribe(pool, settings, receiver.url)
    await outbox(pool, intervention_id="iv-1")
    receiver.answer(Answer(410))
    dispatcher = make_dispatcher()

    await dispatcher.run_once()
    [row] = await deliveries(pool)
    assert (row["state"], row["last_status"]) == ("failed", 410)
    subscription = await store.get_subscription(pool, subscription_id)
    assert subscription is not None
    assert not subscription.enabled
    assert "410" in (subscription.disabled_reason or "")
    assert delivered_count(metrics, "disabled") == 1

    # New events for a disabled endpoint are not queued, and nothing more is sent.
    await outbox(pool, intervention_id="iv-2")
    for _ in range(3):
        clock.advance(3600)
        await dispatcher.run_once()
    assert len(receiver.requests) == 1
    assert len(await deliveries(pool)) == 1

    # Re-enabling is explicit; then new events flow again.
    await store.update_subscription(pool, subscription_id, {"enabled": True}, now=clock())
    await outbox(pool, intervention_id="iv-3")
    await dispatcher.run_once()
    assert len(receiver.requests) == 2
    assert receiver.requests[1].json()["data"]["intervention_id"] == "iv-3"


async def test_a_pending_delivery_waits_while_its_subscription_is_disabled(
    *,
    pool: asyncpg.Pool,
    settings: Settings,
    receiver: Receiver,
    clock: Clock,
    make_dispatcher: Make,
) -> None:
    subscription_id, _ = await subscribe(pool, settings, receiver.url)
    await outbox(pool)
    receiver.answer(Answer(503))
    dispatcher = make_dispatcher()
    await dispatcher.run_once()
    await store.update_subscription(pool, subscription_id, {"enabled": False}, now=clock())

    clock.advance(60)
    await dispatcher.run_once()
    assert len(receiver.requests) == 1

    await store.update_subscription(pool, subscription_id, {"enabled": True}, now=clock())
    await dispatcher.run_once()
    assert len(receiver.requests) == 2
    assert (await deliveries(pool))[0]["state"] == "delivered"


async def test_it_gives_up_24_hours_after_the_event(
    *,
    pool: asyncpg.Pool,
    settings: Settings,
    receiver: Receiver,
    clock: Clock,
    metrics: ApiMetrics,
    make_dispatcher: Make,
) -> None:
    await subscribe(pool, settings, receiver.url)
    await outbox(pool)
    receiver.default = Answer(500, body=b"database on fire")
    dispatcher = make_dispatcher()
    start = clock.now

    await dispatcher.run_once()
    sent = 1
    while (await deliveries(pool))[0]["state"] == "pending":
        row = (await deliveries(pool))[0]
        clock.now = max(clock.now, row["next_attempt_at"])
        await dispatcher.run_once()
        sent += 1
        assert sent < 100

    [row] = await deliveries(pool)
    assert row["state"] == "failed"
    assert row["last_error"] == "HTTP 500: database on fire"
    # The last attempt is made at the give-up time exactly, not after it.
    assert clock.now == start + timedelta(hours=24)
    # Capped at an hour: 10 s doubling to 3600 s takes 9 steps, then hourly for the rest.
    assert 25 < sent < 40
    assert delivered_count(metrics, "failed") == 1


async def test_a_forbidden_target_is_refused_before_any_connection(
    *,
    pool: asyncpg.Pool,
    settings: Settings,
    receiver: Receiver,
    metrics: ApiMetrics,
    make_dispatcher: Make,
) -> None:
    targets = [
        receiver.url,
        "http://[::1]:9/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/hook",
        "http://192.168.1.1/hook",
        "http://172.16.0.1/hook",
        "http://[fd00::1]/hook",
        "http://0.0.0.0:8080/hook",
        "http://localhost:9/hook",
    ]
    for url in targets:
        # Written straight to the store: as if DNS had pointed elsewhere when it was made.
        await subscribe(pool, settings, url)
    await outbox(pool)
    connections: list[httpx.Request] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        connections.append(request)
        raise AssertionError(f"a connection was attempted to {request.url}")

    strict = settings.model_copy(update={"webhook_allow_private_targets": False})
    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as http:
        dispatcher = make_dispatcher(settings=strict, http=http)
        await dispatcher.run_once()

    assert connections == []
    assert receiver.requests == []
    rows = await deliveries(pool)
    assert len(rows) == len(targets)
    assert {r["state"] for r in rows} == {"forbidden"}
    for row in rows:
        assert row["last_error"].startswith("forbidden_target: ")
        [attempt] = await attempts(pool, row["id"])
        assert attempt["status"] is None
    assert delivered_count(metrics, "forbidden") == len(targets)


async def test_an_outbox_row_committed_after_a_later_one_is_not_skipped(
    pool: asyncpg.Pool, db: str, settings: Settings, receiver: Receiver, make_dispatcher: Make
) -> None:
    await subscribe(pool, settings, receiver.url)
    dispatcher = make_dispatcher()
    slow = await asyncpg.connect(db)
    try:
        transaction = slow.transaction()
        await transaction.start()
        low = await outbox(slow, intervention_id="iv-low")  # takes the lower id …
        high = await outbox(pool, intervention_id="iv-high")  # … but commits second
        assert low < high

        await dispatcher.run_once()
        assert [r.json()["data"]["intervention_id"] for r in receiver.requests] == ["iv-high"]

        await transaction.commit()
    finally:
        await slow.close()
    await dispatcher.run_once()
    assert [r.json()["data"]["intervention_id"] for r in receiver.requests] == [
        "iv-high",
        "iv-low",
    ]


async def test_two_dispatchers_share_the_work_without_sending_twice(
    pool: asyncpg.Pool, settings: Settings, receiver: Receiver, make_dispatcher: Make
) -> None:
    await subscribe(pool, settings, receiver.url)
    for n in range(30):
        await outbox(pool, intervention_id=f"iv-{n}")
    first, second = make_dispatcher(batch_size=7), make_dispatcher(batch_size=7)

    for _ in range(10):
        await asyncio.gather(first.run_once(), second.run_once())

    rows = await deliveries(pool)
    assert len(rows) == 30
    assert {r["state"] for r in rows} == {"delivered"}
    ids = [r.webhook_id for r in receiver.requests]
    assert sorted(ids) == sorted(r["id"] for r in rows)


async def test_a_rotated_secret_signs_alongside_the_old_one_for_a_while(
    pool: asyncpg.Pool, settings: Settings, receiver: Receiver, clock: Clock, make_dispatcher: Make
) -> None:
    subscription_id, old = await subscribe(pool, settings, receiver.url)
    nonce = new_nonce()
    await store.rotate_nonce(
        pool, subscription_id, nonce, now=clock(), previous_until=clock() + timedelta(hours=1)
    )
    new = derive_secret(master_key(settings), subscription_id, nonce)
    await outbox(pool, intervention_id="iv-1")
    dispatcher = make_dispatcher()
    await dispatcher.run_once()

    request = receiver.requests[0]
    assert len(request.headers["webhook-signature"].split()) == 2
    Webhook(old).verify(request.body, request.headers)
    Webhook(new).verify(request.body, request.headers)

    clock.advance(3601)
    await outbox(pool, intervention_id="iv-2")
    await dispatcher.run_once()
    later = receiver.requests[1]
    assert len(later.headers["webhook-signature"].split()) == 1
    assert signature_matches(new, later)
    assert not signature_matches(old, later)


async def test_a_subscription_deleted_mid_flight_is_no_error(
    *,
    pool: asyncpg.Pool,
    settings: Settings,
    receiver: Receiver,
    clock: Clock,
    make_dispatcher: Make,
) -> None:
    subscription_id, _ = await subscribe(pool, settings, receiver.url)
    await outbox(pool)
    receiver.answer(Answer(200, hold=True))
    dispatcher = make_dispatcher()
    round_ = asyncio.create_task(dispatcher.run_once())
    await receiver.wait_for(1)
    assert await store.delete_subscription(pool, subscription_id)
    receiver.release.set()
    assert await round_ == 2  # the outbox row and the attempt
    assert await deliveries(pool) == []


def test_backoff_is_full_jitter_under_a_doubling_ceiling() -> None:
    ceilings = [backoff_s(n, base_s=10, cap_s=3600, rng=lambda: 1.0) for n in range(1, 12)]
    assert ceilings == [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]
    assert backoff_s(3, base_s=10, cap_s=3600, rng=lambda: 0.5) == 20
    assert backoff_s(3, base_s=10, cap_s=3600, rng=lambda: 0.0) == 1.0  # never at once
    assert backoff_s(10_000, base_s=10, cap_s=3600, rng=lambda: 1.0) == 3600


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("120", 120.0),
        (" 7 ", 7.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 60.0),
        ("Wed, 21 Oct 2015 07:00:00 GMT", 0.0),  # in the past
        ("soon", None),
        ("-5", None),
    ],
)
def test_retry_after_in_seconds_or_as_an_http_date(
    header: str | None, expected: float | None
) -> None:
    now = email.utils.parsedate_to_datetime("Wed, 21 Oct 2015 07:27:00 GMT")
    assert parse_retry_after(header, now) == expected

"""The webhook dispatcher: outbox → deliveries → signed POSTs, at least once.

Each round (:meth:`WebhookDispatcher.run_once`):

1. **fan-out** — committed ``webhook_outbox`` rows become one delivery per enabled
   subscription whose kinds match, and leave the outbox, in one statement;
2. **deliver** — due deliveries are *leased* (``next_attempt_at`` = now + lease, committed
   at once), sent, and the result recorded in a second short transaction: 2xx →
   ``delivered``; ``410`` → the subscription is disabled and the delivery ``failed``; a
   refused target → ``forbidden`` (never sent); anything else → retried with exponential
   backoff and full jitter (base 10 s, doubling, capped at 1 h, ``Retry-After`` honoured
   when longer) until 24 h after the delivery was made, then ``failed``.

No transaction stays open during a send. A dispatcher that dies mid-send leaves its lease
to run out; the delivery is then due again and sent with the same ``webhook-id``, so
nothing is lost and receivers can drop the duplicate. A delivery is only ``delivered``
after a 2xx. Several dispatchers (one per api replica) share the work through SKIP LOCKED.

Run on its own: ``python -m touchpulse_api.webhooks`` (settings from ``TOUCHPULSE_*``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.utils
import math
import random
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import orjson
import structlog
from prometheus_client import CollectorRegistry

from touchpulse_api.metrics import ApiMetrics
from touchpulse_api.webhooks import store
from touchpulse_api.webhooks.signing import derive_secret, master_key, signature_headers
from touchpulse_api.webhooks.targets import (
    ForbiddenTarget,
    Resolver,
    Target,
    TargetError,
    resolve_target,
    system_resolver,
)
from touchpulse_shared.db import Conn
from touchpulse_shared.db.pool import create_pool
from touchpulse_shared.logs import configure_logging
from touchpulse_shared.loops import LoopState
from touchpulse_shared.settings import ConfigError, Settings, load_settings

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]
USER_AGENT = "Touchpulse-Webhooks/1"
GIVE_UP_AFTER = timedelta(hours=24)
# How long past a send's time limit a lease lasts: the time to record the result.
_LEASE_MARGIN_S = 5.0
# How often the run loop reads its backlog for the gauges.
BACKLOG_EVERY_S = 5.0
_ERROR_BODY_CHARS = 200
_MAX_EXPONENT = 40  # 10 s * 2^40 is far beyond any cap: no float overflow, ever


def utc_now() -> datetime:
    return datetime.now(UTC)


def backoff_s(
    failures: int, *, base_s: float, cap_s: float, rng: Callable[[], float] = random.random
) -> float:
    """The delay after the ``failures``-th failure in a row: full jitter, uniform in
    (0, min(cap, base * 2^(failures - 1))], at least one second."""
    ceiling = min(cap_s, base_s * 2.0 ** min(max(failures - 1, 0), _MAX_EXPONENT))
    return max(1.0, rng() * ceiling)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` in seconds from now (delta-seconds or an HTTP date); None if absent
    or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is GMT by definition
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def webhook_body(kind: str, event_at: datetime, payload_json: str) -> bytes:
    """The Standard Webhooks payload: ``{"type", "timestamp", "data"}``.

    The same bytes on every attempt: the timestamp is the event's, not the attempt's.
    """
    return orjson.dumps(
        {"type": kind, "timestamp": event_at, "data": orjson.loads(payload_json)},
        option=orjson.OPT_UTC_Z,
    )


@dataclass(frozen=True)
class _Answer:
    status: int | None
    error: str | None
    retry_after_s: float | None = None


class WebhookDispatcher:
    """Delivers webhooks from the outbox; see the module docstring for the guarantees."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        metrics: ApiMetrics,
        clock: Clock = utc_now,
        *,
        http: httpx.AsyncClient | None = None,
        resolver: Resolver = system_resolver,
        rng: Callable[[], float] = random.random,
        batch_size: int = 50,
        fan_out_batch: int = 500,
        timeout_s: float = 10.0,
        lease_s: float = 60.0,
        base_delay_s: float = 10.0,
        max_delay_s: float = 3600.0,
        give_up_after: timedelta = GIVE_UP_AFTER,
        idle_s: float = 1.0,
        retention: timedelta = timedelta(days=30),
        monotonic: Callable[[], float] = time.monotonic,
        loop_state: LoopState | None = None,
        on_error: Callable[[], None] = lambda: None,
    ) -> None:
        if lease_s < timeout_s + _LEASE_MARGIN_S:
            # A shorter lease would let a second dispatcher send while the first still is.
            raise ValueError(
                f"lease_s ({lease_s}) must exceed timeout_s ({timeout_s}) by "
                f"{_LEASE_MARGIN_S} s at least"
            )
        self._pool = pool
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._resolver = resolver
        self._rng = rng
        self._batch_size = batch_size
        self._fan_out_batch = fan_out_batch
        self._timeout_s = timeout_s
        self._lease = timedelta(seconds=lease_s)
        self._base_delay_s = base_delay_s
        self._max_delay_s = max_delay_s
        self._give_up_after = give_up_after
        self._idle_s = idle_s
        # Heartbeat and errors of the run loop (``/healthz``, the loop metrics).
        self.loop_state = loop_state or LoopState("webhook_dispatcher", stuck_after_s=120.0)
        self._on_error = on_error
        self._next_backlog = 0.0
        self._retention = retention
        self._monotonic = monotonic
        self._master = master_key(settings)
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,
            # No proxy from the environment: the request must go to the address checked.
            trust_env=False,
            # A fresh connection per delivery: a pooled TLS connection to the same address
            # was verified for another subscription's host name.
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def run(self, stopping: asyncio.Event) -> None:
        """Dispatch until ``stopping`` is set (the round in flight finishes first)."""
        next_prune = self._monotonic()
        errors = 0
        try:
            while not stopping.is_set():
                try:
                    done = await self.run_once()
                    if self._monotonic() >= next_prune:
                        await self.prune()
                        next_prune = self._monotonic() + 3600
                    if time.monotonic() >= self._next_backlog:
                        await self.read_backlog()
                        self._next_backlog = time.monotonic() + BACKLOG_EVERY_S
                    errors = 0
                    self.loop_state.rounds += 1
                    self.loop_state.consecutive_errors = 0
                except Exception as exc:
                    # PostgreSQL down or restarting: keep trying, a little slower each time.
                    errors += 1
                    self.loop_state.errors += 1
                    self.loop_state.consecutive_errors = errors
                    self.loop_state.last_error = f"{type(exc).__name__}: {exc}"[:500]
                    self._on_error()
                    log.exception("webhooks.dispatcher.error", consecutive=errors)
                    done = 0
                # A round finished (well or not): the heartbeat /healthz reads.
                self.loop_state.last_round = time.monotonic()
                if done == 0 or errors:
                    pause = self._idle_s if not errors else min(30.0, 2.0**errors)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stopping.wait(), pause)
        finally:
            await self.aclose()

    async def run_once(self) -> int:
        """One fan-out and one delivery round; the outbox rows and deliveries handled."""
        now = self._clock()
        taken, made = await store.fan_out(
            self._pool,
            now=now,
            give_up_at=now + self._give_up_after,
            limit=self._fan_out_batch,
        )
        if taken:
            log.debug("webhooks.fanned_out", outbox_rows=taken, deliveries=made)
        claimed = await store.claim(
            self._pool, now=now, lease_until=now + self._lease, limit=self._batch_size
        )
        if claimed:
            results = await asyncio.gather(
                *(self._attempt(c) for c in claimed), return_exceptions=True
            )
            for item, result in zip(claimed, results, strict=True):
                if isinstance(result, BaseException):
                    # Not recorded: the lease runs out and the delivery is attempted again.
                    log.error(
                        "webhooks.record_failed",
                        delivery_id=item.id,
                        error=f"{type(result).__name__}: {result}",
                    )
                else:
                    self._metrics.webhook_deliveries.labels(result).inc()
        return taken + len(claimed)

    async def read_backlog(self) -> tuple[int, float]:
        """Outbox rows not fanned out yet plus deliveries due, and how long the oldest of
        them has waited; exported as the loop's backlog gauges."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                """
                SELECT (SELECT count(*) FROM webhook_outbox)
                     + (SELECT count(*) FROM webhook_delivery
                         WHERE state = 'pending' AND next_attempt_at <= $1) AS items,
                       extract(epoch FROM $1 - least(
                           (SELECT min(created_at) FROM webhook_outbox),
                           (SELECT min(next_attempt_at) FROM webhook_delivery
                             WHERE state = 'pending' AND next_attempt_at <= $1)))::float8 AS age
                """,
                self._clock(),
            )
        assert row is not None  # noqa: S101 - one row by construction
        items, age = int(row["items"]), max(row["age"] or 0.0, 0.0)
        self._metrics.loop_backlog.labels(self.loop_state.name).set(items)
        self._metrics.loop_backlog_age.labels(self.loop_state.name).set(age)
        return items, age

    async def prune(self) -> int:
        return await store.prune(self._pool, older_than=self._clock() - self._retention)

    def _secrets(self, claimed: store.Claimed, at: datetime) -> list[str]:
        in_force = [derive_secret(self._master, claimed.subscription_id, claimed.nonce)]
        if (
            claimed.previous_nonce is not None
            and claimed.previous_until is not None
            and at < claimed.previous_until
        ):
            in_force.append(
                derive_secret(self._master, claimed.subscription_id, claimed.previous_nonce)
            )
        return in_force

    async def _attempt(self, claimed: store.Claimed) -> str:
        """Send one delivery and record what happened; the metric's result label."""
        at = self._clock()
        started = self._monotonic()
        target: Target | None = None
        answer: _Answer
        try:
            async with asyncio.timeout(self._timeout_s):
                target = await resolve_target(
                    claimed.url,
                    allow_private=self._settings.webhook_allow_private_targets,
                    resolver=self._resolver,
                )
                answer = await self._post(target, claimed, at)
        except ForbiddenTarget as exc:
            # Checked again at every delivery: DNS may now point somewhere it must not.
            log.warning("webhooks.forbidden_target", delivery_id=claimed.id, reason=str(exc))
            async with self._pool.acquire() as conn:
                await store.record_final(
                    conn,
                    claimed,
                    state="forbidden",
                    at=at,
                    status=None,
                    error=f"forbidden_target: {exc}",
                    duration_ms=0.0,
                )
            return "forbidden"
        except TargetError as exc:
            answer = _Answer(None, str(exc))
        except TimeoutError:
            answer = _Answer(None, f"no answer within {self._timeout_s:g} s")
        duration_ms = (self._monotonic() - started) * 1000
        status = answer.status
        async with self._pool.acquire() as conn:
            if status is not None and 200 <= status < 300:
                await store.record_delivered(
                    conn, claimed, at=at, status=status, duration_ms=duration_ms
                )
                log.info("webhooks.delivered", delivery_id=claimed.id, status=status)
                return "delivered"
            error = answer.error or f"HTTP {status}"
            if status == 410:
                await store.record_final(
                    conn,
                    claimed,
                    state="failed",
                    at=at,
                    status=status,
                    error=error,
                    duration_ms=duration_ms,
                    disable_reason=f"the endpoint answered 410 Gone at {at.isoformat()}",
                )
                log.warning(
                    "webhooks.subscription_disabled",
                    subscription_id=claimed.subscription_id,
                    delivery_id=claimed.id,
                )
                return "disabled"
            return await self._retry_or_fail(
                conn, claimed, at=at, answer=answer, error=error, duration_ms=duration_ms
            )

    async def _retry_or_fail(
        self,
        conn: Conn,
        claimed: store.Claimed,
        *,
        at: datetime,
        answer: _Answer,
        error: str,
        duration_ms: float,
    ) -> str:
        if at >= claimed.give_up_at:
            await store.record_final(
                conn,
                claimed,
                state="failed",
                at=at,
                status=answer.status,
                error=error,
                duration_ms=duration_ms,
            )
            log.warning("webhooks.gave_up", delivery_id=claimed.id, error=error)
            return "failed"
        delay = backoff_s(
            claimed.failures + 1,
            base_s=self._base_delay_s,
            cap_s=self._max_delay_s,
            rng=self._rng,
        )
        if answer.retry_after_s is not None:
            delay = max(delay, answer.retry_after_s)
        # The last attempt is made at the give-up time, however long Retry-After asked for.
        next_at = min(at + timedelta(seconds=delay), claimed.give_up_at)
        await store.record_retry(
            conn,
            claimed,
            at=at,
            status=answer.status,
            error=error,
            duration_ms=duration_ms,
            next_attempt_at=next_at,
        )
        log.info(
            "webhooks.retry",
            delivery_id=claimed.id,
            error=error,
            next_attempt_at=next_at.isoformat(),
        )
        return "retry"

    async def _post(self, target: Target, claimed: store.Claimed, at: datetime) -> _Answer:
        body = webhook_body(claimed.kind, claimed.event_at, claimed.payload)
        timestamp = math.floor(at.timestamp())
        headers = {
            **signature_headers(self._secrets(claimed, at), claimed.id, timestamp, body),
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "host": target.host_header,
        }
        # TLS checks the certificate against the host name, not the address connected to.
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        failure = "no address to connect to"
        for address in target.addresses:
            try:
                async with self._http.stream(
                    "POST",
                    target.url_for(address),
                    content=body,
                    headers=headers,
                    extensions=extensions,
                ) as response:
                    status = response.status_code
                    if 200 <= status < 300:
                        return _Answer(status, None)
                    return _Answer(
                        status,
                        await _describe(response),
                        parse_retry_after(response.headers.get("retry-after"), self._clock()),
                    )
            except httpx.ConnectError as exc:
                failure = f"cannot connect to {address}: {exc or type(exc).__name__}"
                continue  # the host's next address may answer
            except httpx.TimeoutException:
                return _Answer(None, f"no answer within {self._timeout_s:g} s")
            except httpx.HTTPError as exc:
                return _Answer(None, f"{type(exc).__name__}: {exc}")
        return _Answer(None, failure)


async def _describe(response: httpx.Response) -> str:
    """``HTTP <status>`` and the start of the body, for the delivery log."""
    text = ""
    try:
        chunks = bytearray()
        async for chunk in response.aiter_raw():
            chunks.extend(chunk)
            if len(chunks) >= _ERROR_BODY_CHARS * 4:
                break
        text = chunks.decode("utf-8", "replace")
    except httpx.HTTPError:
        pass
    text = " ".join(text.split())[:_ERROR_BODY_CHARS]
    redirect = response.headers.get("location") if response.is_redirect else None
    detail = f"HTTP {response.status_code}"
    if redirect:
        detail += " (redirects are not followed)"
    return f"{detail}: {text}" if text else detail


# --- as its own process ------------------------------------------------------------------


async def serve(settings: Settings, *, timeout_s: float, lease_s: float) -> None:
    """Dispatch until SIGTERM or SIGINT."""
    assert settings.database_url is not None  # noqa: S101 - checked by main()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    # No statement cache, as in the api: a migration must not fail its transactions.
    pool = await create_pool(
        settings.database_url, service="webhooks", role="dispatcher", statement_cache_size=0
    )
    try:
        dispatcher = WebhookDispatcher(
            pool,
            settings,
            ApiMetrics(CollectorRegistry()),
            timeout_s=timeout_s,
            lease_s=lease_s,
        )
        log.info("webhooks.dispatcher.started")
        await dispatcher.run(stopping)
    finally:
        await pool.close()
    log.info("webhooks.dispatcher.stopped")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m touchpulse_api.webhooks", description="Run the webhook dispatcher."
    )
    parser.add_argument("--timeout-s", type=float, default=10.0, help="time limit per send")
    parser.add_argument(
        "--lease-s",
        type=float,
        default=60.0,
        help="how long a claimed delivery is reserved (after a crash: until it is retried)",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"touchpulse webhooks: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    if settings.database_url is None:
        print("touchpulse webhooks: TOUCHPULSE_DATABASE_URL must be set", file=sys.stderr)
        return 2
    asyncio.run(serve(settings, timeout_s=args.timeout_s, lease_s=args.lease_s))
    return 0

"""Background loops that never end silently, and say when they last made progress.

A service's background jobs (the outbox publisher, the deadline sweep, the webhook
dispatcher …) each run as a :func:`supervise`\\ d loop: a round that raises is logged with
its error and counted, and the loop goes on after a pause; only cancellation ends it. Every
round that finishes, successfully or not, is a heartbeat in :class:`Loops`; a loop whose
last heartbeat is older than its bound is *stuck* (blocked on a lock, a hung
acknowledgement, a dead socket nobody noticed), which ``/healthz`` reports as unhealthy.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger(__name__)

# After a failed round: quick first retries, then at most every 30 s.
_ERROR_PAUSE_MAX_S = 30.0


@dataclass
class LoopState:
    name: str
    stuck_after_s: float
    last_round: float = field(default_factory=time.monotonic)
    last_success: float | None = None
    rounds: int = 0
    errors: int = 0
    consecutive_errors: int = 0
    last_error: str | None = None

    def age(self, now: float | None = None) -> float:
        return max((time.monotonic() if now is None else now) - self.last_round, 0.0)

    def stuck(self, now: float | None = None) -> bool:
        return self.age(now) > self.stuck_after_s


class Loops:
    """The service's loops by name; what ``/healthz`` and the metrics read."""

    def __init__(self) -> None:
        self.states: dict[str, LoopState] = {}
        self.on_error: Callable[[str], None] = lambda name: None

    def register(self, name: str, stuck_after_s: float) -> LoopState:
        state = LoopState(name, stuck_after_s)
        self.states[name] = state
        return state

    def stuck(self) -> list[str]:
        now = time.monotonic()
        return sorted(name for name, s in self.states.items() if s.stuck(now))

    def report(self) -> dict[str, dict[str, object]]:
        now = time.monotonic()
        return {
            name: {
                "last_round_age_s": round(s.age(now), 3),
                "stuck_after_s": s.stuck_after_s,
                "stuck": s.stuck(now),
                "rounds": s.rounds,
                "errors": s.errors,
                "consecutive_errors": s.consecutive_errors,
                "last_error": s.last_error,
            }
            for name, s in sorted(self.states.items())
        }


async def supervise(
    loops: Loops,
    name: str,
    interval: float,
    job: Callable[[], Awaitable[object]],
    *,
    stuck_after_s: float,
) -> None:
    """Run ``job`` forever: again at once while it reports work (a truthy result), after
    ``interval`` otherwise, after a growing pause when it fails. Never ends on an error."""
    state = loops.states.get(name) or loops.register(name, stuck_after_s)
    while True:
        try:
            busy = await job()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            state.errors += 1
            state.consecutive_errors += 1
            state.last_error = f"{type(exc).__name__}: {exc}"[:500]
            state.last_round = time.monotonic()
            loops.on_error(name)
            pause = min(interval * 2**state.consecutive_errors, _ERROR_PAUSE_MAX_S)
            log.warning(
                "background.loop.failed",
                loop=name,
                error=state.last_error,
                consecutive=state.consecutive_errors,
                retry_in_s=pause,
                exc_info=not isinstance(exc, (OSError, TimeoutError)),
            )
            await asyncio.sleep(pause)
            continue
        now = time.monotonic()
        state.rounds += 1
        state.consecutive_errors = 0
        state.last_round = now
        state.last_success = now
        if not busy:
            await asyncio.sleep(interval)

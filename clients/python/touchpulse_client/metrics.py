"""Hooks for the caller's own metrics: the client depends on no metrics library.

Hooks run on the client's delivery thread (the event loop, for the async client): they must
be quick and must not block. An exception in a hook is logged and otherwise ignored.
"""

from __future__ import annotations

from typing import Protocol

from touchpulse_client.results import Outcome


class ClientMetrics(Protocol):
    def on_batch_sent(self, *, events: int, size_bytes: int, status: int, seconds: float) -> None:
        """A request was answered (``status`` 0 when it got no answer: a connection error
        or a timeout)."""

    def on_retry(self, *, events: int, attempt: int, delay_s: float, reason: str) -> None:
        """Events will be sent again after ``delay_s`` (``reason``: ``"429"``, ``"503"``,
        ``"5xx"``, ``"connection"``)."""

    def on_drop(self, outcome: Outcome) -> None:
        """An event will not be delivered: dropped on a full queue, or expired."""

    def on_queue_depth(self, depth: int) -> None:
        """Events waiting in memory, after each change of a batch's fate."""


class NoMetrics:
    """Every hook a no-op: subclass it and override the ones you need."""

    def on_batch_sent(self, *, events: int, size_bytes: int, status: int, seconds: float) -> None:
        return None

    def on_retry(self, *, events: int, attempt: int, delay_s: float, reason: str) -> None:
        return None

    def on_drop(self, outcome: Outcome) -> None:
        return None

    def on_queue_depth(self, depth: int) -> None:
        return None

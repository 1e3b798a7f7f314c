"""Helpers every service's metrics module uses."""

from __future__ import annotations

import threading


class BoundedLabel:
    """Passes the first ``limit`` distinct values through, then says ``other``.

    Some label values come from clients (touchpoints in events, segments in CRM profiles);
    without a cap a client could create unbounded time series.
    """

    def __init__(self, limit: int = 64) -> None:
        self._seen: set[str] = set()
        self._limit = limit
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        with self._lock:
            if len(self._seen) < self._limit:
                self._seen.add(value)
                return value
        return "other"

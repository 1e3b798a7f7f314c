"""Helpers every service's metrics module uses."""

from __future__ import annotations

import threading

from prometheus_client import Gauge


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


class CatalogueInfo:
    """One ``…_catalogue_info{version, hash} 1`` series: the promise catalogue a process runs.

    Every service declares its own gauge (the metric names are per service) and shows the
    catalogue through this, so that the series of a replaced catalogue goes and an alert can
    compare hashes across services (two services on different hashes: a skew).
    """

    def __init__(self, gauge: Gauge) -> None:
        self._gauge = gauge
        self._shown: tuple[str, str] | None = None

    def show(self, version: str, content_hash: str) -> None:
        if (version, content_hash) != self._shown:
            # Clear and set with no await between: a scrape never sees both or neither.
            self._gauge.clear()
            self._gauge.labels(version, content_hash).set(1)
            self._shown = (version, content_hash)

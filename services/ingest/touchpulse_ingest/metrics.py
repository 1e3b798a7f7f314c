"""Every metric ingest exports, in one place, on an injected registry.

Labels are bounded: routes are templates, statuses are codes, reasons come from a fixed
set, and touchpoints, sources and event types — which clients choose — are capped (see
:class:`BoundedLabel`). A touchpoint the catalogue does not know is labelled ``unknown``, so
made-up touchpoints never take one of the capped places.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from touchpulse_shared.metrics import BoundedLabel, CatalogueInfo

# Produce acknowledgements take ~1-20 ms on a healthy loopback broker; the top buckets catch
# the slow tail up to the 503 bound.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# One event is ~250 B; a full batch of 1,000 is ~250 kB; the body limit is 5 MiB.
_SIZE_BUCKETS = (256, 1024, 4096, 16_384, 65_536, 262_144, 1_048_576, 4_194_304)
_BATCH_BUCKETS = (1, 2, 5, 10, 50, 100, 250, 500, 1000, 5000)


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.touchpoint = BoundedLabel()
        self.source = BoundedLabel()
        self.event_type = BoundedLabel()
        self.requests = Counter(
            "touchpulse_ingest_requests_total",
            "HTTP requests by route template and status code",
            ["route", "status"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "touchpulse_ingest_request_duration_seconds",
            "HTTP request duration, body read to response",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.events_accepted = Counter(
            "touchpulse_ingest_events_accepted_total",
            "Events acknowledged by Kafka",
            ["touchpoint"],
            registry=registry,
        )
        self.events_rejected = Counter(
            "touchpulse_ingest_events_rejected_total",
            "Events refused, by reason (invalid, forbidden, unknown_touchpoint, "
            "unknown_event_type, wrong_measure_kind, missing_measure, too_old, too_new, "
            "rate_limited, unavailable)",
            ["reason", "touchpoint"],
            registry=registry,
        )
        self.events_unmatched = Counter(
            "touchpulse_ingest_events_unmatched_total",
            "Events accepted that no promise judges, opens or fulfils, by source and type",
            ["source", "type"],
            registry=registry,
        )
        self.catalogue_info = Gauge(
            "touchpulse_ingest_catalogue_info",
            "The promise catalogue ingest checks events against (value 1; its version and"
            " content sha256 as labels)",
            ["version", "hash"],
            registry=registry,
        )
        self._catalogue = CatalogueInfo(self.catalogue_info)
        self.produce_duration = Histogram(
            "touchpulse_ingest_produce_duration_seconds",
            "Time from handing a request's records to the producer to Kafka's acknowledgement",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.body_bytes = Histogram(
            "touchpulse_ingest_request_body_bytes",
            "Size of accepted-for-parsing request bodies",
            ["route"],
            buckets=_SIZE_BUCKETS,
            registry=registry,
        )
        self.batch_events = Histogram(
            "touchpulse_ingest_batch_events",
            "Events per batch request",
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.producer_ready = Gauge(
            "touchpulse_ingest_producer_ready",
            "1 while a Kafka producer is connected and alive",
            registry=registry,
        )
        self.producer_replacements = Counter(
            "touchpulse_ingest_producer_replacements_total",
            "Producers replaced after a fatal error",
            registry=registry,
        )
        self._replacements_seen = 0

    def producer_replaced(self, total: int) -> None:
        """Advance the counter to the producer supervisor's running total."""
        if total > self._replacements_seen:
            self.producer_replacements.inc(total - self._replacements_seen)
            self._replacements_seen = total

    def catalogue_version(self, version: str, content_hash: str) -> None:
        """Show the catalogue in effect (one series: the old catalogue's is removed)."""
        self._catalogue.show(version, content_hash)

    def unmatched(self, source: str, event_type: str, count: int) -> None:
        self.events_unmatched.labels(self.source(source), self.event_type(event_type)).inc(count)

    def rejected(self, reason: str, touchpoint: str | None) -> None:
        label = self.touchpoint(touchpoint) if touchpoint else "unknown"
        self.events_rejected.labels(reason, label).inc()

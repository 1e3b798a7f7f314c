"""Every metric the api exports, on an injected registry; never labelled by customer."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from touchpulse_shared.loops import Loops
from touchpulse_shared.metrics import CatalogueInfo

# Reads from PostgreSQL answer in 1-15 ms when healthy; the top buckets catch slow queries.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "touchpulse_api_requests_total",
            "HTTP requests by route template and status code",
            ["route", "status"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "touchpulse_api_request_duration_seconds",
            "HTTP request duration",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.interventions_acknowledged = Counter(
            "touchpulse_api_interventions_acknowledged_total",
            "Interventions acknowledged",
            registry=registry,
        )
        self.interventions_resolved = Counter(
            "touchpulse_api_interventions_resolved_total",
            "Interventions resolved",
            registry=registry,
        )
        # The desk's and the API's other moves, beside acknowledged and resolved: how much
        # of the work is notes, snoozes and reassignments (one counter each, no labels).
        self.interventions_noted = Counter(
            "touchpulse_api_interventions_noted_total",
            "Notes added to interventions",
            registry=registry,
        )
        self.interventions_snoozed = Counter(
            "touchpulse_api_interventions_snoozed_total",
            "Interventions snoozed (or woken early)",
            registry=registry,
        )
        self.interventions_reassigned = Counter(
            "touchpulse_api_interventions_reassigned_total",
            "Interventions reassigned",
            registry=registry,
        )
        self.time_to_acknowledge = Histogram(
            "touchpulse_api_time_to_acknowledge_seconds",
            "From an intervention opening to its acknowledgement",
            buckets=(60, 300, 900, 3600, 4 * 3600, 8 * 3600, 24 * 3600, 3 * 86400, 7 * 86400),
            registry=registry,
        )
        self.webhook_deliveries = Counter(
            "touchpulse_api_webhook_deliveries_total",
            "Webhook delivery attempts by result (delivered, retry, failed, disabled)",
            ["result"],
            registry=registry,
        )
        self.loop_round_age = Gauge(
            "touchpulse_api_loop_last_round_age_seconds",
            "Seconds since each background loop last finished a round (stuck when it grows)",
            ["loop"],
            registry=registry,
        )
        self.loop_errors = Counter(
            "touchpulse_api_loop_errors_total",
            "Background loop rounds that failed (the loop goes on), by loop",
            ["loop"],
            registry=registry,
        )
        self.catalogue_info = Gauge(
            "touchpulse_api_catalogue_info",
            "The promise catalogue the api explains and previews with (value 1; its version"
            " and content sha256 as labels)",
            ["version", "hash"],
            registry=registry,
        )
        self.catalogue = CatalogueInfo(self.catalogue_info)
        self.loop_backlog = Gauge(
            "touchpulse_api_loop_backlog_items",
            "Work waiting for each background loop (webhook outbox rows and due deliveries)",
            ["loop"],
            registry=registry,
        )
        self.loop_backlog_age = Gauge(
            "touchpulse_api_loop_backlog_age_seconds",
            "How long the oldest item waiting for each background loop has waited (0 when none)",
            ["loop"],
            registry=registry,
        )

    def watch_loops(self, loops: Loops) -> None:
        """Each loop's round age, read at scrape time; its errors counted as they happen."""
        for name, state in loops.states.items():
            self.loop_round_age.labels(name).set_function(state.age)
            self.loop_errors.labels(name)
        loops.on_error = lambda name: self.loop_errors.labels(name).inc()

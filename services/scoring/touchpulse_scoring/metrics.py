"""Every metric scoring exports, in one place, on an injected registry.

Labels are bounded: touchpoints and promises come from the catalogue (a closed set), and
dead-letter reasons from a fixed list; never a customer id.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Event-to-health: ingest receipt to the commit that applied the event. Healthy is tens of
# milliseconds; the top buckets show backlogs.
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_BATCH_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_BATCH_RECORDS = (1, 5, 10, 50, 100, 250, 500, 1000, 5000)


class ScoringMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.events = Counter(
            "touchpulse_scoring_events_total",
            "Records consumed, by result (applied, duplicate, dead_letter)",
            ["result"],
            registry=registry,
        )
        self.outcomes = Counter(
            "touchpulse_scoring_outcomes_total",
            "Outcomes recorded, by touchpoint, promise and whether the promise was kept",
            ["touchpoint", "promise", "result"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "touchpulse_scoring_dead_letters_total",
            "Records sent to the dead-letter topic, by reason",
            ["reason"],
            registry=registry,
        )
        self.dead_letter_floods = Counter(
            "touchpulse_scoring_dead_letter_floods_total",
            "Batches of which most records were dead letters (an incident)",
            registry=registry,
        )
        self.batch_records = Histogram(
            "touchpulse_scoring_batch_records",
            "Records per batch transaction",
            buckets=_BATCH_RECORDS,
            registry=registry,
        )
        self.batch_duration = Histogram(
            "touchpulse_scoring_batch_duration_seconds",
            "Batch transaction duration, decode to commit",
            buckets=_BATCH_SECONDS,
            registry=registry,
        )
        self.event_to_health = Histogram(
            "touchpulse_scoring_event_to_health_seconds",
            "Ingest receipt to the committed health update",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.interventions_opened = Counter(
            "touchpulse_scoring_interventions_opened_total",
            "Interventions opened",
            registry=registry,
        )
        self.interventions_expired = Counter(
            "touchpulse_scoring_interventions_expired_total",
            "Open interventions nobody acknowledged in time",
            registry=registry,
        )
        self.deadlines_expired = Counter(
            "touchpulse_scoring_deadlines_expired_total",
            "Deadline promises breached by absence (no event in time)",
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "touchpulse_scoring_consumer_lag_records",
            "Records not yet consumed, per partition of the events topic",
            ["partition"],
            registry=registry,
        )
        self.data_lost = Counter(
            "touchpulse_scoring_data_lost_records_total",
            "Records deleted by retention before scoring applied them",
            registry=registry,
        )
        self.outbox_published = Counter(
            "touchpulse_scoring_outbox_published_total",
            "Records published from the outbox (health, interventions, dead letters)",
            registry=registry,
        )
        self.catalogue_info = Gauge(
            "touchpulse_scoring_catalogue_info",
            "The promise catalogue in effect (value 1, version as a label)",
            ["version"],
            registry=registry,
        )

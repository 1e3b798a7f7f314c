"""Every metric scoring exports, in one place, on an injected registry.

Labels are bounded: touchpoints and promises come from the catalogue (a closed set),
dead-letter reasons from a fixed list, segments (from CRM profiles) are capped; never a
customer id.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from touchpulse_scoring.state_figures import StateFigures
from touchpulse_shared.loops import Loops
from touchpulse_shared.metrics import BoundedLabel, CatalogueInfo

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
            "Records consumed, by result (applied, duplicate, erased, dead_letter)",
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
        # State gauges: refreshed from PostgreSQL on a timer (see state_figures.py). Every
        # instance reports the same values; aggregate them with max, never sum.
        self.segment = BoundedLabel(limit=32)
        self.health_customers = Gauge(
            "touchpulse_journey_health_customers",
            "Customers by segment and journey-health band (red, amber, green; none: unscored)",
            ["segment", "band"],
            registry=registry,
        )
        self.health_by_score = Gauge(
            "touchpulse_journey_health_score_range_customers",
            "Scored customers by segment and ten-point journey-health range (0-10 … 90-100)",
            ["segment", "range"],
            registry=registry,
        )
        self.health_mean = Gauge(
            "touchpulse_journey_health_score_mean",
            "Mean journey health (0-100) of the scored customers of a segment",
            ["segment"],
            registry=registry,
        )
        self.interventions_current = Gauge(
            "touchpulse_interventions_current",
            "Interventions now open or acknowledged",
            ["state"],
            registry=registry,
        )
        self.interventions_overdue = Gauge(
            "touchpulse_interventions_unacknowledged_overdue",
            "Open interventions nobody acknowledged within the policy's acknowledge_within_hours",
            registry=registry,
        )
        self.interventions_oldest_unacknowledged = Gauge(
            "touchpulse_interventions_oldest_unacknowledged_age_seconds",
            "Age of the oldest open, unacknowledged intervention (0 when none)",
            registry=registry,
        )
        self.state_refreshed = Gauge(
            "touchpulse_scoring_state_refresh_timestamp_seconds",
            "When the state gauges were last read from PostgreSQL (Unix time)",
            registry=registry,
        )
        self.loop_round_age = Gauge(
            "touchpulse_scoring_loop_last_round_age_seconds",
            "Seconds since each background loop last finished a round (stuck when it grows)",
            ["loop"],
            registry=registry,
        )
        self.loop_errors = Counter(
            "touchpulse_scoring_loop_errors_total",
            "Background loop rounds that failed (the loop goes on), by loop",
            ["loop"],
            registry=registry,
        )
        self.loop_backlog = Gauge(
            "touchpulse_scoring_loop_backlog_items",
            "Work waiting for each background loop (outbox rows, deadlines past due, …)",
            ["loop"],
            registry=registry,
        )
        self.loop_backlog_age = Gauge(
            "touchpulse_scoring_loop_backlog_age_seconds",
            "How long the oldest item waiting for each background loop has waited (0 when none)",
            ["loop"],
            registry=registry,
        )
        # Lifecycle (lifecycle.py): bounded labels, one per table the loop prunes.
        self.lifecycle_rows_removed = Counter(
            "touchpulse_scoring_lifecycle_rows_removed_total",
            "Rows the lifecycle loop deleted, by table (processed_event, outcome, deadline, "
            "early_fulfilment, journey_health_history)",
            ["table"],
            registry=registry,
        )
        self.lifecycle_partitions_dropped = Counter(
            "touchpulse_scoring_lifecycle_partitions_dropped_total",
            "Whole partitions the lifecycle loop dropped, by table (journey_health_history)",
            ["table"],
            registry=registry,
        )
        self.catalogue_info = Gauge(
            "touchpulse_scoring_catalogue_info",
            "The promise catalogue in effect (value 1; its version and content sha256 as labels)",
            ["version", "hash"],
            registry=registry,
        )
        self.catalogue = CatalogueInfo(self.catalogue_info)
        self.catalogue_version_reused = Counter(
            "touchpulse_scoring_catalogue_version_reused_total",
            "Catalogues recorded whose version string an earlier catalogue with other content"
            " already had (an edit that forgot to change the version)",
            registry=registry,
        )

    def set_state(self, figures: StateFigures, *, at: float) -> None:
        """Replace the state gauges; labels that vanished (a segment emptied) go too.

        Clear and set run with no await between them, so a scrape on this event loop never
        sees the gauges half-written.
        """
        self.health_customers.clear()
        for (segment, band), customers in figures.customers.items():
            self.health_customers.labels(self.segment(segment), band).inc(customers)
        self.health_by_score.clear()
        for (segment, score_range), customers in figures.by_score.items():
            self.health_by_score.labels(self.segment(segment), score_range).inc(customers)
        self.health_mean.clear()
        for segment, mean in figures.mean_score.items():
            # Segments folded into "other" would overwrite each other's means; skip them.
            if self.segment(segment) == segment:
                self.health_mean.labels(segment).set(mean)
        for state, count in figures.interventions.items():
            self.interventions_current.labels(state).set(count)
        self.interventions_overdue.set(figures.overdue)
        self.interventions_oldest_unacknowledged.set(figures.oldest_unacknowledged_s)
        self.state_refreshed.set(at)

    def watch_loops(self, loops: Loops) -> None:
        """Each loop's round age, read at scrape time; its errors counted as they happen."""
        for name, state in loops.states.items():
            self.loop_round_age.labels(name).set_function(state.age)
            self.loop_errors.labels(name)
        loops.on_error = lambda name: self.loop_errors.labels(name).inc()

    def set_backlogs(self, backlogs: dict[str, tuple[int, float]]) -> None:
        for name, (items, age_s) in backlogs.items():
            self.loop_backlog.labels(name).set(items)
            self.loop_backlog_age.labels(name).set(age_s)

    def count_pruned(self, rows: Mapping[str, int], partitions: Mapping[str, int]) -> None:
        """What one lifecycle round removed."""
        for table, removed in rows.items():
            self.lifecycle_rows_removed.labels(table).inc(removed)
        for table, dropped in partitions.items():
            self.lifecycle_partitions_dropped.labels(table).inc(dropped)

    def set_lag(self, lag: dict[int, int]) -> None:
        """Replace the per-partition lag: partitions moved to another instance drop out, so
        a sum across instances never counts a partition twice or keeps a stale figure."""
        self.consumer_lag.clear()
        for partition, records in lag.items():
            self.consumer_lag.labels(str(partition)).set(records)

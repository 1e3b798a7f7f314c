"""Every metric of every service follows the naming rules and is in the one documented table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from touchpulse_api.metrics import ApiMetrics
from touchpulse_ingest.metrics import IngestMetrics
from touchpulse_scoring.metrics import ScoringMetrics

# Histograms measure something with a unit; the name says which.
UNITS = ("_seconds", "_bytes", "_records", "_events")
FORBIDDEN_LABELS = {"customer", "customer_id", "event_id", "journey_id", "intervention_id"}


def _metrics() -> list[tuple[str, str, tuple[str, ...]]]:
    found = []
    for cls in (IngestMetrics, ScoringMetrics, ApiMetrics):
        holder = cls(CollectorRegistry())
        for value in vars(holder).values():
            if isinstance(value, MetricWrapperBase):
                kind = str(value._type)
                name = str(value._name) + ("_total" if kind == "counter" else "")
                found.append((name, kind, tuple(str(label) for label in value._labelnames)))
    return found


METRICS = _metrics()


@pytest.mark.parametrize(("name", "kind", "labels"), METRICS, ids=[m[0] for m in METRICS])
def test_name_and_labels_follow_the_rules(name: str, kind: str, labels: tuple[str, ...]) -> None:
    assert name.startswith("touchpulse_")
    assert re.fullmatch(r"[a-z][a-z0-9_]*", name)
    if kind == "histogram":
        assert name.endswith(UNITS), f"{name}: a histogram's name ends with its unit"
    if kind == "gauge":
        assert not name.endswith("_total"), f"{name}: only counters end in _total"
    assert not FORBIDDEN_LABELS & set(labels), f"{name}: never labelled by customer or event"


def test_the_documented_table_is_the_code() -> None:
    text = Path("docs/operations.md").read_text()
    rows = re.findall(r"^\| `(touchpulse_[a-z0-9_]+)` \| (\w+) \| ([^|]*) \|", text, re.M)
    documented = {
        name: (kind, tuple(re.findall(r"`(\w+)`", labels))) for name, kind, labels in rows
    }
    in_code = {name: (kind, labels) for name, kind, labels in METRICS}
    assert documented == in_code
    assert len({m[0] for m in METRICS}) == len(METRICS), "a metric name is declared twice"

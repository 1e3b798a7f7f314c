"""Event corpora and the independent checks every scoring test applies to the database."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.scoring.pipeline.conftest import Pipeline
from touchpulse_scoring.domain import load_catalogue_file
from touchpulse_shared.contract import EVENT_ADAPTER, ExperienceEventV1

CATALOGUE = load_catalogue_file("deploy/promises.yaml")
# Three weeks ago at 09:00 UTC: inside the time window scoring applies like ingest (90 days
# by default), with the corpora's longest (2,500 events 7 minutes apart) in the past.
START = datetime.now(UTC).replace(hour=9, minute=0, second=0, microsecond=0) - timedelta(days=21)
KINDS = ("call", "invoice", "survey", "delivery")


@dataclass(frozen=True)
class EngineRecord:
    """The attributes of an aiokafka ConsumerRecord the engine reads: what a test hands
    ``Engine.handle`` when it drives the engine without a broker."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def event_shape(kind: str, rng: random.Random) -> tuple[str, str, dict[str, Any]]:
    """Touchpoint, type and measures of a ``kind`` of event, kept or broken at random."""
    shapes: dict[str, tuple[str, str, dict[str, Any]]] = {
        "call": (
            "call_centre",
            "call.answered",
            {
                "wait_seconds": rng.choice([20, 45, 90, 300, 700]),
                "first_contact_resolution": rng.random() < 0.7,
            },
        ),
        "invoice": (
            "billing",
            "invoice.issued",
            {
                "invoice_correct": rng.random() < 0.8,
                "days_after_delivery": rng.choice([1, 2, 5, 20]),
            },
        ),
        "survey": (
            "survey",
            "survey.answered",
            {"csat": rng.choice([1, 3, 4, 5]), "nps": rng.choice([2, 6, 8, 10])},
        ),
        "delivery": (
            "delivery",
            "delivery.completed",
            {"damaged": rng.random() < 0.1, "all_items_delivered": rng.random() < 0.9},
        ),
    }
    return shapes[kind]


def make_event(
    n: int, customer: str, at: datetime, kind: str, rng: random.Random, **extra: Any
) -> ExperienceEventV1:
    touchpoint, event_type, measures = event_shape(kind, rng)
    return EVENT_ADAPTER.validate_python(
        {
            "event_id": f"e-{n}",
            "source": "test-source",
            "customer_id": customer,
            "touchpoint": touchpoint,
            "type": event_type,
            "occurred_at": at,
            "measures": measures,
            **extra,
        }
    )


def recompute(outcomes: list[Any], as_of: Mapping[str, datetime]) -> dict[str, float | None]:
    """Journey health straight from the brief's formulas over the stored outcomes, read at
    each customer's ``as_of`` (the newest event time applied), with the policy's prior."""
    policy = CATALOGUE.policy
    half_life_s = policy.half_life_days * 86_400
    lam = policy.weakest_link_lambda
    sums: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0.0]))
    for o in outcomes:
        at = as_of[o["customer_id"]]
        decay = 2 ** ((o["occurred_at"] - at).total_seconds() / half_life_s)
        pair = sums[o["customer_id"]][o["touchpoint"]]
        pair[0] += o["weight"] * o["score"] * decay
        pair[1] += o["weight"] * decay
    result: dict[str, float | None] = {}
    for customer, by_touchpoint in sums.items():
        priors = {t: policy.prior.for_touchpoint(t) for t in by_touchpoint}
        health = {
            t: (s + priors[t].weight * priors[t].score) / (w + priors[t].weight)
            for t, (s, w) in by_touchpoint.items()
            if w > 0
        }
        importance = {t: CATALOGUE.touchpoints[t] for t in health}
        weighted = sum(importance[t] * h for t, h in health.items()) / sum(importance.values())
        result[customer] = 100 * ((1 - lam) * weighted + lam * min(health.values()))
    return result


def corpus(count: int, customers: int, seed: int) -> list[ExperienceEventV1]:
    rng = random.Random(seed)
    names = [f"C-{i}" for i in range(customers)]
    kinds = ["call", "invoice", "survey", "delivery"]
    return [
        make_event(n, rng.choice(names), START + timedelta(minutes=7 * n), rng.choice(kinds), rng)
        for n in range(count)
    ]


async def check_ledger(pipeline: Pipeline, events: list[ExperienceEventV1]) -> dict[str, int]:
    """Lost, counted twice, and state that differs from a recomputation: all must be 0."""
    unique = {(e.source, e.event_id) for e in events}
    processed = {
        (r["source"], r["event_id"])
        for r in await pipeline.fetch("SELECT source, event_id FROM processed_event")
    }
    outcomes = await pipeline.fetch("SELECT * FROM outcome")
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for o in outcomes:
        counts[(o["customer_id"], o["touchpoint"])] += 1
    twice = 0
    drift = 0
    for row in await pipeline.fetch("SELECT * FROM touchpoint_health"):
        # The incremental state counts each applied outcome once; a double application
        # (or a lost one) makes it disagree with the outcome table.
        if row["outcomes"] != counts[(row["customer_id"], row["touchpoint"])]:
            twice += 1
    journeys = await pipeline.fetch("SELECT customer_id, score, as_of FROM journey_health")
    expected = recompute(outcomes, {r["customer_id"]: r["as_of"] for r in journeys})
    for row in journeys:
        want = expected.get(row["customer_id"])
        if want is None or not math.isclose(row["score"], want, rel_tol=1e-9, abs_tol=1e-9):
            drift += 1
    return {"lost": len(unique - processed), "counted_twice": twice, "state_drift": drift}

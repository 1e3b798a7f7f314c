"""``make bench-backtest``: ``touchpulse catalogue backtest``'s re-judging, in events per
CPU-second of one core, beside the ceilings of the same events measured in the same run.

Everything runs in this one process, single-threaded, from memory (no broker, no
database: what is measured is the judging, which is all the back-test does once the events
are read). A simulator corpus (``customers`` customers with profiles, duplicates and
out-of-order events included) is decoded once into events. Then, in pairs, alternating:

- **back-test, one promise tightened**: the pure core (``touchpulse_scoring.backtest.core``)
  re-judging the corpus under the shipped catalogue and under a candidate whose
  call-answer promise is tightened (the figure the issue sets a target for: events
  re-judged per CPU-second, each under both catalogues);
- **back-test, identical candidate**: the same with a candidate equal to the live one;
- **the domain's own loop** (the ceiling): ``judge_event`` over the same events once, under
  the live catalogue, each customer's deadlines folded in, as scoring's per-event step
  does — no health, no decision, no second catalogue;
- **a dict-update loop of the same shape** (the floor of any Python loop here): one dict
  lookup and store per event, grouped by customer;
- **decoding the records** the CLI reads (``decode_record`` on the Kafka records ingest
  writes), for scale: what reading the topic costs per event before any judging.

CPU time is this process's (``time.process_time``): a loaded machine slows the wall clock,
not the CPU-seconds. Run ``python -m tests.bench.backtest [--quick]``; the result is printed
and written to ``.touchpulse/bench/backtest-<UTC time>.json``. Speed is reported, never
asserted.
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from typing import Any

from tests.bench.common import (
    Figure,
    Site,
    Spread,
    close_report,
    figure_table,
    machine,
    ratio,
    sayer,
    stage_main,
    table,
    versions,
)
from touchpulse_scoring.backtest import core
from touchpulse_scoring.domain import (
    NO_PROFILE,
    Catalogue,
    CustomerProfile,
    Deadline,
    DeadlineRef,
    Fulfilment,
    UnscorableEvent,
    judge_event,
    parse_catalogue,
)
from touchpulse_shared.contract import (
    EVENT_ADAPTER,
    ExperienceEventV1,
    decode_record,
    encode_record,
)
from touchpulse_shared.settings import Settings
from touchpulse_shared.simulator import Simulator, SimulatorConfig

say = sayer("bench-backtest")

#: The issue's target: events re-judged per second per core.
TARGET_PER_CPU_S = 100_000
START = datetime(2026, 11, 2, 9, tzinfo=UTC)
PACKAGES = ("pydantic", "orjson")


@dataclass(frozen=True)
class Plan:
    name: str
    pairs: int
    events: int
    customers: int


FULL = Plan(name="full", pairs=3, events=100_000, customers=10_000)
QUICK = Plan(name="quick", pairs=1, events=10_000, customers=1_000)

#: Every figure the stage reports, each with a ceiling and a ratio.
FIGURE_KEYS = (
    "tightened_per_cpu_s_vs_domain",
    "identical_per_cpu_s_vs_domain",
    "domain_per_cpu_s_vs_dict_loop",
    "decode_per_cpu_s_vs_dict_loop",
)
PHASES = ("tightened", "identical", "domain loop", "dict loop", "decode")


@dataclass(frozen=True)
class Corpus:
    events: list[ExperienceEventV1]
    records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]
    profiles: dict[str, CustomerProfile]
    live: Catalogue
    identical: Catalogue
    tightened: Catalogue


def _catalogues() -> tuple[Catalogue, Catalogue, Catalogue]:
    with open("deploy/promises.yaml", encoding="utf-8") as handle:
        text = handle.read()
    live = parse_catalogue(text)
    identical = parse_catalogue(text.replace('version: "', 'version: "same-', 1))
    tight = text.replace('version: "', 'version: "tight-', 1)
    old = '    expect: {op: "<=", target: 60}\n    tolerance: 540'
    if old not in tight:
        raise RuntimeError("deploy/promises.yaml no longer has the call-answer promise's terms")
    tight = tight.replace(old, '    expect: {op: "<=", target: 20}\n    tolerance: 60', 1)
    return live, identical, parse_catalogue(tight)


def corpus(plan: Plan) -> Corpus:
    sim = Simulator(
        SimulatorConfig(seed=16, customers=plan.customers, bad_rate=0.0, rate=200.0), START
    )
    raw = sim.events(plan.events)
    events = [EVENT_ADAPTER.validate_python(e) for e in raw]
    received = datetime.now(UTC)
    records = []
    for event in events:
        record = encode_record(event, producer="ingest", received_at=received)
        records.append((record.key, record.value, list(record.headers)))
    profiles = {
        c: CustomerProfile(
            segment=p["segment"],
            customer_since=date.fromisoformat(p["customer_since"]),
            value=p["value"],
            reach=p["reach"],
        )
        for c, p in sim.profiles()
    }
    live, identical, tightened = _catalogues()
    return Corpus(events, records, profiles, live, identical, tightened)


def _timed(work: Callable[[], object]) -> float:
    """CPU-seconds of ``work`` in this process, with the collector out of the way (a full
    collection over the corpus would be charged to whichever phase it fell in)."""
    gc.collect()
    gc.disable()
    try:
        began = time.process_time()
        work()
        return time.process_time() - began
    finally:
        gc.enable()


def domain_loop(
    events: Sequence[ExperienceEventV1], catalogue: Catalogue, profiles: dict[str, CustomerProfile]
) -> int:
    """The ceiling: scoring's per-event step once per event, deadlines kept per customer."""
    deadlines: dict[str, dict[DeadlineRef, Deadline]] = defaultdict(dict)
    early: dict[str, dict[DeadlineRef, Fulfilment]] = defaultdict(dict)
    outcomes = 0
    for event in events:
        customer = event.customer_id
        try:
            judged = judge_event(
                event,
                catalogue,
                profiles.get(customer, NO_PROFILE),
                deadlines[customer],
                early[customer],
            )
        except UnscorableEvent:
            continue
        judged.fold_into(deadlines[customer], early[customer])
        outcomes += len(judged.outcomes)
    return outcomes


def dict_loop(events: Sequence[ExperienceEventV1]) -> int:
    """The floor: one lookup and one store per event, by customer, as the core groups them."""
    found: dict[str, int] = {}
    for event in events:
        found[event.customer_id] = found.get(event.customer_id, 0) + len(event.measures)
    return len(found)


def decode_loop(records: Sequence[tuple[bytes, bytes, list[tuple[str, bytes]]]]) -> int:
    decoded = 0
    for key, value, headers in records:
        decode_record(key, value, headers)
        decoded += 1
    return decoded


def measure(plan: Plan, data: Corpus) -> list[dict[str, float]]:
    n = len(data.events)
    pairs = []
    for index in range(plan.pairs):
        say(f"pair {index + 1} of {plan.pairs}")
        spent = {
            "tightened": _timed(
                lambda: core.backtest(data.events, data.profiles, data.live, data.tightened)
            ),
            "identical": _timed(
                lambda: core.backtest(data.events, data.profiles, data.live, data.identical)
            ),
            "domain loop": _timed(lambda: domain_loop(data.events, data.live, data.profiles)),
            "dict loop": _timed(lambda: dict_loop(data.events)),
            "decode": _timed(lambda: decode_loop(data.records)),
        }
        pairs.append({phase: n / s if s > 0 else float("nan") for phase, s in spent.items()})
    return pairs


def figures(pairs: list[dict[str, float]]) -> dict[str, Figure]:
    def median(phase: str) -> float:
        return statistics.median(p[phase] for p in pairs)

    def figure(label: str, value: str, ceiling_label: str, ceiling: str, **extra: Any) -> Figure:
        return Figure(
            label=label,
            unit="events/CPU-s",
            value=median(value),
            ceiling_label=ceiling_label,
            ceiling=median(ceiling),
            ratio=Spread.of(ratio(p[value], p[ceiling]) for p in pairs),
            **extra,
        )

    tightened = median("tightened")
    return {
        "tightened_per_cpu_s_vs_domain": figure(
            "back-test, one promise tightened (both catalogues)",
            "tightened",
            "judge_event loop, one catalogue (events/CPU-s)",
            "domain loop",
            target=f">= {TARGET_PER_CPU_S:,} events/CPU-s",
            met=tightened >= TARGET_PER_CPU_S,
        ),
        "identical_per_cpu_s_vs_domain": figure(
            "back-test, identical candidate",
            "identical",
            "judge_event loop, one catalogue (events/CPU-s)",
            "domain loop",
        ),
        "domain_per_cpu_s_vs_dict_loop": figure(
            "judge_event loop, one catalogue",
            "domain loop",
            "dict-update loop (events/CPU-s)",
            "dict loop",
        ),
        "decode_per_cpu_s_vs_dict_loop": figure(
            "decoding the records (decode_record)",
            "decode",
            "dict-update loop (events/CPU-s)",
            "dict loop",
        ),
    }


def cpu_profile(pairs: list[dict[str, float]]) -> dict[str, Any]:
    return {
        phase: {
            "unit": "event",
            "us_per_unit": {"bench": 1e6 / statistics.median(p[phase] for p in pairs)},
            "cores": {"bench": 1.0},
        }
        for phase in PHASES
    }


def cpu_table(profile: dict[str, Any]) -> str:
    rows = [[phase, f"{data['us_per_unit']['bench']:.2f}"] for phase, data in profile.items()]
    return table(["phase", "CPU µs per event (one core)"], rows)


def run(plan: Plan, settings: Settings, site: Site | None = None) -> dict[str, Any]:
    """The stage; ``settings`` and ``site`` are the suite's, unused: no server is involved."""
    del settings, site
    started = datetime.now(UTC)
    say(f"generating {plan.events:,} events of {plan.customers:,} customers")
    data = corpus(plan)
    say("measuring")
    pairs = measure(plan, data)
    found = figures(pairs)
    last = core.backtest(data.events, data.profiles, data.live, data.tightened)
    return {
        "benchmark": "backtest",
        "mode": plan.name,
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "machine": machine(),
        "versions": versions(PACKAGES),
        "settings": {
            "plan": asdict(plan),
            "corpus": {
                "events": len(data.events),
                "customers": len(data.profiles),
                "candidate": data.tightened.version,
            },
        },
        "figures": {key: found[key].as_dict() for key in FIGURE_KEYS},
        "targets": {
            "tightened_per_cpu_s_vs_domain": {
                "min": TARGET_PER_CPU_S,
                "met": found["tightened_per_cpu_s_vs_domain"].met,
            }
        },
        "cpu": cpu_profile(pairs),
        "peak_rss_bytes": {"bench": _peak_rss()},
        "work": {
            "events": last.events,
            "duplicates": last.duplicates,
            "customers_changed": last.customers_changed,
            "moved": last.moved,
            "would_open": len(last.interventions.would_open),
        },
        "pairs": pairs,
        "notes": [
            "One process, one thread, from memory: CPU-seconds of this process per phase, "
            f"on a machine of {os.cpu_count()} cores (other tenants slow the wall clock only)."
        ],
        "warnings": [],
    }


def _peak_rss() -> int | None:
    try:
        import resource  # noqa: PLC0415 - POSIX only

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    except (ImportError, OSError):
        return None


def report(result: dict[str, Any]) -> str:
    work = result["work"]
    corpus_ = result["settings"]["corpus"]
    lines = [
        f"Touchpulse back-test benchmark ({result['mode']}), {result['started_at']}",
        f"{corpus_['events']:,} simulator events ({work['duplicates']:,} duplicates among them)"
        f" of {corpus_['customers']:,} customers re-judged under the shipped catalogue and"
        f" {corpus_['candidate']}: {work['customers_changed']:,} customers change,"
        f" {work['moved']:,} move band, {work['would_open']:,} cases would open;"
        f" {len(result['pairs'])} pair(s)",
        *result["notes"],
        "",
        figure_table(result["figures"], FIGURE_KEYS),
        "",
        "CPU microseconds per event, median over pairs:",
    ]
    return close_report(lines, cpu_table(result["cpu"]), result)


def main(argv: Sequence[str] | None = None) -> int:
    return stage_main(
        "backtest",
        __doc__,
        argv,
        quick="10,000 events, one pair",
        plans=(FULL, QUICK),
        run=run,
        report=report,
        say=say,
    )


if __name__ == "__main__":
    sys.exit(main())

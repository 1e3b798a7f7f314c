"""``make bench``: every benchmark stage on one broker and one database server, in one run.

One Kafka broker and one PostgreSQL server (started here, unless ``KAFKA_BOOTSTRAP_SERVERS``
/ ``TOUCHPULSE_DATABASE_URL`` name servers) serve, one after the other, each stage with
topics and a database of its own (removed when the stage ends):

1. ingest (``tests/bench/ingest.py``): batch and single paths against Kafka's
   ``ProducerPerformance`` and a bare ASGI route;
2. scoring (``tests/bench/scoring.py``): events per CPU-second against a plain asyncpg
   upsert loop and ``ConsumerPerformance``; event-to-health latency at fixed offered rates
   against ``EndToEndLatency``;
3. replay (``tests/bench/replay.py``): ``touchpulse-scoring replay`` rebuilding the scoring
   corpus against the same upsert loop;
4. scale (``tests/bench/scale.py``): one scoring instance against two on 6 partitions;
5. api (``tests/bench/api.py``): the health read's maximum and its p99 under load;
6. history (``tests/bench/history.py``): scoring's cost per event and the health read's
   latency on a database holding a year of history against an empty one, and the bytes per
   customer that year leaves before and after the lifecycle's pruning;
7. desk (``tests/bench/desk.py``): the action desk's queue and customer pages' server time
   with 10,000 open interventions and 100,000 customers, against a bare route;
8. backtest (``tests/bench/backtest.py``): ``touchpulse catalogue backtest``'s re-judging in
   events per CPU-second of one core, against the pure domain's own loop (no server).

Printed: one table of every figure beside its ceiling and their ratio, then the CPU per
unit of work and the peak memory of every process, stage by stage. Written: one JSON file
with the machine, the versions, the settings of every stage and every figure.

Run ``python -m tests.bench [--quick | --smoke]``; the result goes to
``.touchpulse/bench/suite-<UTC time>.json`` (``--output`` names another file). ``--smoke`` is
``--quick`` with the replay and history stages in their smallest form (the smoke test's).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

import psutil

from tests.bench import api, backtest, desk, history, ingest, replay, scale, scoring
from tests.bench.common import (
    FIGURE_HEADER,
    Site,
    arguments,
    bench_settings,
    clock,
    figure_row,
    guarded,
    machine,
    open_site,
    publish,
    sayer,
    table,
)
from touchpulse_shared.settings import Settings

say = sayer("bench")

#: The suite's modes: the stages' full plans, their quick ones, or the quick ones with the
#: replay and history stages at their smallest (the smoke test's).
FULL, QUICK, SMOKE = "full", "quick", "smoke"
#: The scoring corpus' pre-filled events in the suite: the scoring and replay stages'.
SUITE_EVENTS = {FULL: 60_000, QUICK: 5_000, SMOKE: 5_000}

#: The stages in the order they run, each with its plans for the full run and ``--quick``.
#: The plans are the stages' own, trimmed where the suite must fit in 20 minutes on 2 cores
#: (ingest runs 3 pairs instead of 4, scoring's pre-filled topic holds 60,000 events instead
#: of 100,000, and the replay rebuilds the same corpus) and its quick mode in a few minutes
#: (scoring's topic: 5,000 instead of 10,000; ingest's and the api's measured windows
#: shorter).
STAGES: tuple[tuple[str, ModuleType, Callable[[str], Any]], ...] = (
    (
        "ingest",
        ingest,
        lambda mode: (
            dataclasses.replace(ingest.FULL, pairs=3)
            if mode == FULL
            else dataclasses.replace(ingest.QUICK, duration_s=1.0, open_duration_s=1.5)
        ),
    ),
    (
        "scoring",
        scoring,
        lambda mode: dataclasses.replace(
            scoring.FULL if mode == FULL else scoring.QUICK, events=SUITE_EVENTS[mode]
        ),
    ),
    (
        "replay",
        replay,
        lambda mode: dataclasses.replace(
            replay.FULL if mode == FULL else replay.QUICK, events=SUITE_EVENTS[mode]
        ),
    ),
    ("scale", scale, lambda mode: scale.FULL if mode == FULL else scale.QUICK),
    (
        "api",
        api,
        lambda mode: (
            api.FULL if mode == FULL else dataclasses.replace(api.QUICK, open_duration_s=1.5)
        ),
    ),
    (
        "history",
        history,
        lambda mode: {FULL: history.FULL, QUICK: history.QUICK, SMOKE: history.SMOKE}[mode],
    ),
    ("desk", desk, lambda mode: desk.FULL if mode == FULL else desk.QUICK),
    ("backtest", backtest, lambda mode: backtest.FULL if mode == FULL else backtest.QUICK),
)

#: Per stage, the phases whose CPU per unit of work is reported per process (the stage's
#: headline phases), and the names of its processes as printed.
PROCESS_PHASES: Mapping[str, tuple[str, ...]] = {
    "ingest": ("ingest batch", "ingest single (closed)"),
    "scoring": ("scoring (pre-filled topic)",),
    "replay": ("replay (pre-filled topic)",),
    "scale": ("1 instance", "2 instances"),
    "api": ("health (closed)", "health (open, ingesting)"),
    "history": (
        f"pre-loaded customers, {history.EMPTY}",
        f"pre-loaded customers, {history.YEAR}",
        f"health read, {history.EMPTY}",
        f"health read, {history.YEAR}",
    ),
    "desk": ("queue (closed)", "customer (closed)"),
    "backtest": ("tightened",),
}
PROCESS_NAMES: Mapping[str, Mapping[str, str]] = {
    "ingest": {"server": "ingest", "kafka": "kafka", "loadgen": "load generator"},
    "scoring": {
        "scoring": "scoring",
        "postgres": "postgres",
        "kafka": "kafka",
        "bench": "bench process",
    },
    "replay": {
        "replay": "replay",
        "postgres": "postgres",
        "kafka": "kafka",
        "bench": "bench process",
    },
    "scale": {
        "scoring": "scoring",
        "scoring-1": "scoring-1",
        "scoring-2": "scoring-2",
        "postgres": "postgres",
        "kafka": "kafka",
    },
    "api": {
        "api": "api",
        "postgres": "postgres",
        "ingest": "ingest",
        "scoring": "scoring",
        "kafka": "kafka",
        "loadgen": "load generator",
    },
    "history": {
        "scoring": "scoring",
        "api": "api",
        "postgres": "postgres",
        "kafka": "kafka",
        "bench": "bench process",
    },
    "desk": {"api": "api", "postgres": "postgres", "loadgen": "load generator", "kafka": "kafka"},
    "backtest": {"bench": "bench process"},
}
# How often the servers' memory is sampled (their peak within each stage).
RSS_SAMPLE_S = 0.5


class ServerMemory:
    """The broker's and PostgreSQL's resident memory, sampled in a thread, peak per stage.

    The broker is one process (VmHWM would be its peak since it started, across stages, so
    its current RSS is sampled). PostgreSQL is the postmaster and its children: reported are
    the largest RSS one process reached and the largest total of their proportional set
    sizes (PSS: each shared page divided among the processes that map it, so shared buffers
    count once: what PostgreSQL as a whole takes).
    """

    def __init__(self, kafka_pid: int | None, postgres_pid: int | None) -> None:
        self._kafka = kafka_pid
        self._postgres = postgres_pid
        self._peaks: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_forever, daemon=True)

    def _sample(self) -> None:
        found: dict[str, int] = {}
        with_errors = (psutil.Error, OSError)
        if self._kafka is not None:
            with contextlib.suppress(psutil.Error, OSError):
                found["kafka"] = psutil.Process(self._kafka).memory_info().rss
        if self._postgres is not None:
            with contextlib.suppress(psutil.Error, OSError):
                root = psutil.Process(self._postgres)
                sizes, shares = [], []
                for proc in [root, *root.children(recursive=True)]:
                    try:
                        memory = proc.memory_full_info()
                    except with_errors:
                        continue
                    sizes.append(memory.rss)
                    shares.append(memory.pss)
                found["postgres (largest process)"] = max(sizes)
                found["postgres (all, PSS)"] = sum(shares)
        with self._lock:
            for name, value in found.items():
                self._peaks[name] = max(self._peaks.get(name, 0), value)

    def _sample_forever(self) -> None:
        while not self._stop.wait(RSS_SAMPLE_S):
            self._sample()

    def start(self) -> None:
        self._sample()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def take(self) -> dict[str, int]:
        """The peaks since the last call (the stage that just ended); starts over."""
        self._sample()
        with self._lock:
            peaks, self._peaks = self._peaks, {}
        return peaks


def run(mode: str, settings: Settings) -> dict[str, Any]:
    started = datetime.now(UTC)
    began = clock()
    stages: dict[str, dict[str, Any]] = {}
    durations: dict[str, float] = {}
    server_rss: dict[str, dict[str, int]] = {}
    with open_site(settings, say, shared=True) as site:
        memory = ServerMemory(site.kafka.pid, site.postgres.pid)
        memory.start()
        try:
            memory.take()  # the servers' start-up is no stage's
            for name, module, plan in STAGES:
                say(f"stage {name}")
                at = clock()
                stages[name] = module.run(plan(mode), settings, site)
                durations[name] = clock() - at
                server_rss[name] = memory.take()
        finally:
            memory.stop()
        servers = describe_servers(site)
    found = all_figures(stages)
    return {
        "benchmark": "suite",
        "mode": mode,
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "wall_s": clock() - began,
        "stage_wall_s": durations,
        "machine": machine(),
        "versions": merged_versions(stages),
        "settings": {
            "servers": servers,
            "stages": {name: stage["settings"] for name, stage in stages.items()},
        },
        "figures": found,
        "processes": processes(stages, server_rss),
        "targets": {name: stage.get("targets", {}) for name, stage in stages.items()},
        "notes": [
            "Every stage ran on the same broker and database server, one after the other, "
            "with topics and a database of its own.",
            *(note for stage in stages.values() for note in stage["notes"]),
        ],
        "warnings": [f"{name}: {w}" for name, stage in stages.items() for w in stage["warnings"]],
        "stages": stages,
    }


def describe_servers(site: Site) -> dict[str, Any]:
    return {
        "kafka": {
            "where": "local" if site.kafka.local else "external",
            "bootstrap": site.kafka.address,
        },
        "postgresql": {"where": "local" if site.postgres.local else "external"},
        "workdir": str(site.workdir),
    }


def merged_versions(stages: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    found: dict[str, str] = {}
    for stage in stages.values():
        found.update(stage["versions"])
    return dict(sorted(found.items(), key=lambda item: (item[0] != "python", item[0])))


def all_figures(stages: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every stage's figures under ``<stage>.<key>``, each naming its stage."""
    return {
        f"{name}.{key}": {"stage": name, **figure}
        for name, stage in stages.items()
        for key, figure in stage["figures"].items()
    }


def processes(
    stages: Mapping[str, Mapping[str, Any]], server_rss: Mapping[str, Mapping[str, int]]
) -> dict[str, dict[str, Any]]:
    """Per stage and process: CPU-seconds per unit of work (and cores busy) in the stage's
    headline phases, and peak resident memory."""
    found: dict[str, dict[str, Any]] = {}
    for name, stage in stages.items():
        names = PROCESS_NAMES[name]
        rss: dict[str, int | None] = {
            k: v for k, v in stage["peak_rss_bytes"].items() if k != "kafka"
        }
        rss.update(server_rss.get(name, {}))
        each: dict[str, dict[str, Any]] = {}
        for phase in PROCESS_PHASES[name]:
            data = stage["cpu"].get(phase)
            if data is None:
                continue
            for key, shown in names.items():
                us = data["us_per_unit"].get(key)
                if us is None or not math.isfinite(us):
                    continue
                entry = each.setdefault(shown, {"cpu": {}})
                entry["cpu"][phase] = {
                    "unit": data["unit"],
                    "cpu_s_per_unit": us / 1e6,
                    "cores": data["cores"].get(key),
                }
        for key, value in rss.items():
            shown = names.get(key, key)
            each.setdefault(shown, {"cpu": {}})["peak_rss_bytes"] = value
        for entry in each.values():
            entry.setdefault("peak_rss_bytes", None)
        found[name] = each
    return found


# --- the report --------------------------------------------------------------------------------


def figures_table(found: Mapping[str, Mapping[str, Any]]) -> str:
    header = ["stage", *FIGURE_HEADER]
    rows = [[f["stage"], *figure_row(f)] for f in found.values()]
    return table(header, rows)


def _mib(value: int | None) -> str:
    return "-" if not value else f"{value / 2**20:,.0f} MiB"


def processes_table(found: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    rows = []
    for stage, each in found.items():
        for process, entry in each.items():
            cpu = entry["cpu"]
            if not cpu:
                rows.append([stage, process, "-", "-", "-", _mib(entry["peak_rss_bytes"])])
            for phase, data in cpu.items():
                cores = data["cores"]
                rows.append(
                    [
                        stage,
                        process,
                        phase,
                        f"{data['cpu_s_per_unit'] * 1e6:,.1f} µs/{data['unit']}",
                        "-" if cores is None else f"{cores:.2f}",
                        _mib(entry["peak_rss_bytes"]),
                    ]
                )
    header = ["stage", "process", "phase", "CPU per unit", "cores", "peak RSS"]
    return table(header, rows)


def report(result: Mapping[str, Any]) -> str:
    mach = result["machine"]
    servers = result["settings"]["servers"]
    minutes, seconds = divmod(result["wall_s"], 60)
    lines = [
        f"Touchpulse benchmarks ({result['mode']}), {result['started_at']}, "
        f"{minutes:.0f} min {seconds:.0f} s: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in result["stage_wall_s"].items()),
        f"machine: {mach['nproc']} cores, {mach['memory_bytes'] / 2**30:.1f} GiB memory, "
        f"{mach['cpu_model']}, {mach['platform']}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()),
        f"servers: Kafka {servers['kafka']['where']}, PostgreSQL "
        f"{servers['postgresql']['where']}; {result['notes'][0]}",
        *result["notes"][1:],
        "",
        "Every figure beside its ceiling, measured in the same run; ratio = value / ceiling "
        "(median of the pairs, with their range where pairs are interleaved):",
        figures_table(result["figures"]),
        "",
        "Every process: CPU per unit of work (cores busy) in each stage's headline phases, "
        "and peak resident memory (kafka and postgres: sampled within the stage):",
        processes_table(result["processes"]),
    ]
    details: Sequence[tuple[str, Callable[[dict[str, Any]], str], str]] = (
        ("ingest", ingest.cpu_table, "CPU µs per unit (cores), median over pairs"),
        ("scoring", scoring.cpu_table, "CPU µs per event or record (cores), median over pairs"),
        ("replay", replay.cpu_table, "CPU µs per event (cores), median over pairs"),
        ("scale", scale.cpu_table, "CPU µs per event or record (cores), median over pairs"),
        ("api", api.cpu_table, "CPU µs per request served (cores), median over pairs"),
        ("history", history.cpu_table, "CPU µs per event or request (cores)"),
        ("desk", desk.cpu_table, "CPU µs per page served (cores)"),
        ("backtest", backtest.cpu_table, "CPU µs per event, one core"),
    )
    for name, cpu_table, what in details:
        stage = result["stages"].get(name)
        if stage is not None:
            lines += ["", f"{name}: {what}; other = the rest of the machine:"]
            lines.append(cpu_table(stage["cpu"]))
    stage = result["stages"].get("history")
    if stage is not None:
        lines += [
            "",
            "history: tables (MiB with indexes and TOAST) after the year, after the "
            "lifecycle's pruning, and compacted:",
            history.history_sizes(stage),
        ]
    lines += [f"warning: {w}" for w in result["warnings"]]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = arguments(
        "python -m tests.bench",
        __doc__,
        quick="every stage in its quick mode: one pair, short phases (about 4 min)",
        output="suite",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="--quick with the replay and history stages at their smallest (the smoke test)",
    )
    args = parser.parse_args(argv)
    mode = SMOKE if args.smoke else QUICK if args.quick else FULL

    def body() -> int:
        settings = bench_settings()
        publish(run(mode, settings), args.output, settings, "suite", report)
        return 0

    return guarded(say, body)


if __name__ == "__main__":
    sys.exit(main())

"""What every Touchpulse benchmark needs: load generators, percentiles, per-process CPU and
memory, servers under test as child processes, and the result file.

Load generators run on an asyncio loop in the benchmark's own process; they share the
machine's cores with the servers they load, so every run reports their CPU too.

- :func:`closed_loop`: each worker sends its next request as soon as the previous one is
  answered; the rate it reaches is the server's capacity (given enough workers).
- :func:`open_loop`: requests are sent on a fixed schedule whatever the answers do; latency
  is measured from the *scheduled* send time, so a server that falls behind is charged for
  the queueing it causes (no coordinated omission).

Both freeze this process's heap first (:func:`gc.freeze`): its own full garbage
collections would otherwise stall it and be counted as the server's latency.

A worker is a :data:`Call`: an async callable sending one request and returning the HTTP
status and the units of work it accomplished (events acknowledged, requests served; 0 if
it failed). Status 0 stands for a transport error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import importlib.metadata
import itertools
import math
import os
import platform
import pstats
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import asyncpg
import httpx
import orjson
import psutil
import uvloop
from aiokafka.admin import AIOKafkaAdminClient

from touchpulse_shared.db.migrate import migrate_url
from touchpulse_shared.logs import configure_logging
from touchpulse_shared.settings import ConfigError, Settings, load_settings
from touchpulse_shared.stack.kafka import kafka_libs
from touchpulse_shared.stack.local import Endpoint, LocalStack
from touchpulse_shared.stack.procs import StackError, spawn, stop, wait_until

Outcome = tuple[int, int]
Call = Callable[[], Awaitable[Outcome]]

# Requests still in flight when a phase ends get this long to finish before they are
# abandoned (and counted as incomplete).
DRAIN_S = 10.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Cores taken by processes outside the benchmark above which a phase is flagged as disturbed.
OTHER_CORES_WARNING = 0.25
# uvloop's loop.time() has millisecond steps (libuv's cached loop time): far too coarse for
# latencies of a few milliseconds, so every timestamp comes from this clock instead.
clock = time.perf_counter
LOOPBACK = "127.0.0.1"


class BenchError(RuntimeError):
    """The benchmark could not measure what it set out to (not: the system was slow)."""


# --- statistics ----------------------------------------------------------------------------


def percentile(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile of already sorted values (NaN if there are none)."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True)
class Spread:
    """The median of repeated measurements and their range."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        finite = [v for v in values if math.isfinite(v)]
        if not finite:
            return cls(math.nan, math.nan, math.nan, 0)
        return cls(statistics.median(finite), min(finite), max(finite), len(finite))

    def as_dict(self) -> dict[str, float]:
        return {"median": self.median, "min": self.low, "max": self.high, "n": self.n}


def ratio(value: float, ceiling: float) -> float:
    return value / ceiling if ceiling > 0 and math.isfinite(ceiling) else math.nan


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """The ``q``-quantile (0-1) of a Prometheus histogram: ``(upper bound, cumulative count)``
    pairs in order, ``+Inf`` last, interpolated linearly inside the bucket (as PromQL's
    ``histogram_quantile``). NaN when the histogram is empty."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return math.nan
    rank = q * total
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower  # above the last finite bucket: its bound is all we know
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower


def latency_summary(ordered_s: Sequence[float]) -> dict[str, float]:
    """Milliseconds: p50, p90, p99, p99.9, max and mean of sorted latencies in seconds."""
    mean = statistics.fmean(ordered_s) if ordered_s else math.nan
    return {
        "count": float(len(ordered_s)),
        "p50_ms": percentile(ordered_s, 50) * 1000,
        "p90_ms": percentile(ordered_s, 90) * 1000,
        "p99_ms": percentile(ordered_s, 99) * 1000,
        "p999_ms": percentile(ordered_s, 99.9) * 1000,
        "max_ms": (ordered_s[-1] if ordered_s else math.nan) * 1000,
        "mean_ms": mean * 1000,
    }


# --- processes: CPU and memory ---------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    # Field 2 (the command) may hold spaces and parentheses: count fields after its end.
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads included (/proc/<pid>/stat)."""
    fields = _stat_fields(pid)
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / CLK_TCK


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and of all its descendants, live or already gone.

    For servers that fork a process per connection or task (PostgreSQL's postmaster): each
    live process counts with its own time plus that of the children it has reaped
    (``cutime``/``cstime``), so a backend that exits between two readings still counts,
    through its parent. Children are read before their parent: one reaped in between counts
    twice in that reading (rare: PostgreSQL's backends live as long as their connections).
    """
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        children = []
    total = 0.0
    for child_pid in [c.pid for c in children] + [pid]:
        try:
            fields = _stat_fields(child_pid)
        except (OSError, ValueError):
            if child_pid == pid:
                raise
            continue  # exited since it was listed: its time is now its parent's
        # utime, stime, cutime, cstime: fields 14-17 of proc(5)
        total += sum(int(f) for f in fields[11:15]) / CLK_TCK
    return total


def peak_rss_bytes(pid: int) -> int | None:
    """The process's peak resident set size (VmHWM), or None if it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all cores; /proc/stat), steal included."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def kernel_irq_seconds() -> float:
    """CPU seconds the machine spent in interrupts and soft interrupts (/proc/stat): mostly
    the network stack, loopback included. No process's own time counts it."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return (int(fields[6]) + int(fields[7])) / CLK_TCK


#: The name under which :class:`CpuMeter` reports the whole machine.
MACHINE = "machine"
#: Derived: the machine minus every named process; other tenants of a shared machine.
OTHER = "other"
#: With ``CpuMeter(kernel=True)``: interrupts and soft interrupts, apart from ``other``.
KERNEL_IRQ = "kernel_irq"


@dataclass
class CpuMeter:
    """CPU seconds of named processes, read together so their deltas cover one interval.

    The machine's total comes with them (as ``machine``), so that a delta also shows what
    everything else took (``other``): on a shared machine, the noise in a measurement.
    """

    pids: dict[str, int]
    #: Processes measured with all their descendants (:func:`tree_cpu_seconds`).
    trees: dict[str, int] = field(default_factory=dict)
    #: Report the kernel's interrupt time as ``kernel_irq`` rather than within ``other``.
    kernel: bool = False

    def read(self) -> dict[str, float]:
        seconds: dict[str, float] = {MACHINE: machine_busy_seconds()}
        if self.kernel:
            seconds[KERNEL_IRQ] = kernel_irq_seconds()
        for name, pid in self.pids.items():
            try:
                seconds[name] = cpu_seconds(pid)
            except (OSError, ValueError, IndexError):
                seconds[name] = math.nan
        for name, pid in self.trees.items():
            try:
                seconds[name] = tree_cpu_seconds(pid)
            except (OSError, ValueError, IndexError):
                seconds[name] = math.nan
        return seconds

    @staticmethod
    def delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
        return account_other({name: after[name] - before[name] for name in before if name in after})


def account_other(spent: dict[str, float]) -> dict[str, float]:
    """Set ``other`` in CPU seconds per process: the machine's total minus the named ones."""
    if MACHINE in spent:
        named = (s for name, s in spent.items() if name not in {MACHINE, OTHER})
        spent[OTHER] = max(0.0, spent[MACHINE] - sum(s for s in named if math.isfinite(s)))
    return spent


# --- load generation -------------------------------------------------------------------------


@dataclass
class LoadResult:
    """One phase of load: what was completed inside its measurement window."""

    window_s: float
    #: Units of work done by requests that completed inside the window.
    units: int = 0
    #: Requests that completed inside the window, by status (0: transport error).
    statuses: Counter[int] = field(default_factory=Counter)
    #: Sorted latencies (s) of successful requests measured in the window.
    latencies_s: list[float] = field(default_factory=list)
    #: CPU seconds per process over the window.
    cpu_s: dict[str, float] = field(default_factory=dict)
    offered_per_s: float | None = None
    #: Open loop: how late the generator itself was in sending, at worst.
    max_send_lag_s: float = 0.0
    #: Requests scheduled or in flight that never completed within the drain time.
    incomplete: int = 0

    @property
    def units_per_s(self) -> float:
        return self.units / self.window_s

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    def cpu_per_unit(self) -> dict[str, float]:
        return {name: s / self.units if self.units else math.nan for name, s in self.cpu_s.items()}

    def cores(self) -> dict[str, float]:
        return {name: s / self.window_s for name, s in self.cpu_s.items()}

    def as_dict(self) -> dict[str, Any]:
        return {
            "window_s": self.window_s,
            "units": self.units,
            "units_per_s": self.units_per_s,
            "requests": self.requests,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "latency": latency_summary(self.latencies_s),
            "cpu_s": self.cpu_s,
            "cpu_s_per_unit": self.cpu_per_unit(),
            "cores": self.cores(),
            "offered_per_s": self.offered_per_s,
            "max_send_lag_ms": self.max_send_lag_s * 1000,
            "incomplete": self.incomplete,
        }


class _CpuWindow:
    """Reads the meter exactly when the window opens and when it closes."""

    def __init__(self, meter: CpuMeter | None, start: float, end: float) -> None:
        self._first: dict[str, float] = {}
        self._last: dict[str, float] = {}
        self._closed = asyncio.Event()
        self._handles: list[asyncio.TimerHandle] = []
        if meter is None:
            self._closed.set()
            return
        loop = asyncio.get_running_loop()
        self._handles = [
            loop.call_later(start - clock(), lambda: self._first.update(meter.read())),
            loop.call_later(end - clock(), lambda: self._close(meter)),
        ]

    def _close(self, meter: CpuMeter) -> None:
        self._last.update(meter.read())
        self._closed.set()

    async def delta(self) -> dict[str, float]:
        # Every request may be answered before the window ends (an open loop's last one is
        # due just before): the CPU still counts up to the window's end.
        await self._closed.wait()
        return CpuMeter.delta(self._first, self._last) if self._first else {}

    def cancel(self) -> None:
        for handle in self._handles:
            handle.cancel()


def _freeze_heap() -> None:
    # A full collection over this process's heap (pydantic, asyncpg, aiokafka are imported)
    # stalls the generator for tens of milliseconds, which would show up as server latency;
    # frozen objects are never scanned again.
    gc.collect()
    gc.freeze()


async def _finish(tasks: Sequence[asyncio.Task[None]], deadline: float) -> int:
    """Wait for ``tasks`` until ``deadline`` (:func:`clock`); cancel the rest, return how many."""
    _, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - clock()))
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    for task in tasks:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error
    return len(pending)


async def closed_loop(
    calls: Sequence[Call],
    *,
    warmup_s: float,
    duration_s: float,
    meter: CpuMeter | None = None,
    drain_s: float = DRAIN_S,
) -> LoadResult:
    """Every call runs back to back for ``warmup_s + duration_s``; the window is the last part."""
    _freeze_heap()
    start = clock()
    opens, closes = start + warmup_s, start + warmup_s + duration_s
    result = LoadResult(window_s=duration_s)
    cpu = _CpuWindow(meter, opens, closes)

    async def worker(call: Call) -> None:
        while (sent := clock()) < closes:
            status, units = await call()
            done = clock()
            if opens <= done <= closes:
                result.statuses[status] += 1
                result.units += units
                if units:
                    result.latencies_s.append(done - sent)

    try:
        tasks = [asyncio.create_task(worker(call)) for call in calls]
        result.incomplete = await _finish(tasks, closes + drain_s)
        result.cpu_s = await cpu.delta()
    finally:
        cpu.cancel()
    result.latencies_s.sort()
    return result


async def open_loop(
    calls: Sequence[Call],
    *,
    rate_per_s: float,
    warmup_s: float,
    duration_s: float,
    meter: CpuMeter | None = None,
    drain_s: float = DRAIN_S,
) -> LoadResult:
    """Requests due every ``1/rate_per_s`` seconds, sent by whichever call is free.

    Latency counts from the time a request was due, so time spent waiting for a free
    connection (because answers are slow) is part of it. Requests due before the window
    opens are warm-up and are not measured.
    """
    _freeze_heap()
    # A little lead, so the first request is not already late when the loop first looks.
    start = clock() + 0.05
    opens, closes = start + warmup_s, start + warmup_s + duration_s
    total = math.floor((warmup_s + duration_s) * rate_per_s)
    result = LoadResult(window_s=duration_s, offered_per_s=rate_per_s)
    cpu = _CpuWindow(meter, opens, closes)
    due_times: asyncio.Queue[float | None] = asyncio.Queue()
    measured = 0

    async def dispatch() -> None:
        nonlocal measured
        for i in range(total):
            due = start + i / rate_per_s
            wait = due - clock()
            if wait > 0:
                await asyncio.sleep(wait)
            else:
                result.max_send_lag_s = max(result.max_send_lag_s, -wait)
            measured += opens <= due < closes
            due_times.put_nowait(due)
        for _ in calls:
            due_times.put_nowait(None)

    answered = 0

    async def worker(call: Call) -> None:
        nonlocal answered
        while (due := await due_times.get()) is not None:
            status, units = await call()
            done = clock()
            if opens <= done <= closes:
                result.units += units  # the rate achieved inside the window
            if opens <= due < closes:
                answered += 1
                result.statuses[status] += 1
                if units:
                    result.latencies_s.append(done - due)

    try:
        tasks = [asyncio.create_task(dispatch())]
        tasks += [asyncio.create_task(worker(call)) for call in calls]
        await _finish(tasks, closes + drain_s)
        result.cpu_s = await cpu.delta()
    finally:
        cpu.cancel()
    result.incomplete = measured - answered
    result.latencies_s.sort()
    return result


# --- HTTP clients ----------------------------------------------------------------------------


def raw_request(
    method: str, path: str, *, host: str, headers: Mapping[str, str], body: bytes = b""
) -> bytes:
    """One HTTP/1.1 request, encoded once so that sending it costs the generator nothing."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class HttpConnection:
    """One keep-alive HTTP/1.1 connection that sends pre-encoded requests one at a time.

    Much cheaper per request than a general client (no header objects, no URL parsing), so
    that on a shared 2-core machine the generator takes as little CPU as possible from the
    server it measures. It understands only Content-Length bodies, which is all uvicorn
    sends for non-streaming responses. Transport failures return status 0 and reconnect.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        try:
            if self._reader is None or self._writer is None:
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
            self._writer.write(raw)
            await self._writer.drain()
            head = await self._reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            lowered = head.lower()
            # No Content-Length (a chunked answer) raises ValueError here: not supported.
            at = lowered.index(b"\r\ncontent-length:")
            length = int(lowered[at + 17 : lowered.index(b"\r\n", at + 2)])
            body = await self._reader.readexactly(length) if length else b""
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            await self.close()
            return 0, b""
        if b"\r\nconnection: close" in lowered:
            await self.close()
        return status, body

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def raw_calls(
    connections: Sequence[HttpConnection],
    requests: Sequence[bytes],
    units: Callable[[int, bytes], int],
) -> list[Call]:
    """One call per connection, all sending ``requests`` in turn (cycling)."""
    turn = itertools.cycle(requests)

    def bind(connection: HttpConnection) -> Call:
        async def call() -> Outcome:
            status, body = await connection.request(next(turn))
            return status, units(status, body)

        return call

    return [bind(c) for c in connections]


def ok_requests(status: int, body: bytes) -> int:
    """Units of work in an answer to a read: one request served (200), or none."""
    return 1 if status == 200 else 0


# --- servers under test ----------------------------------------------------------------------


class Server:
    """A server under test as a child process: started, ready when ``ready_path`` answers
    200, stopped with SIGTERM. It dies with this process if this process dies first."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        port: int,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        ready_path: str = "/",
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.port = port
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.url = f"http://{LOOPBACK}:{port}"
        self.ready_path = ready_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError(f"{self.name} is not running")
        return self._proc.pid

    def start(self, *, timeout: float = 60.0) -> None:
        self.launch()
        self.wait_ready(timeout=timeout)

    def launch(self) -> None:
        """Start the process without waiting for it (:meth:`wait_ready` waits): several
        servers then start side by side."""
        self._proc = spawn(self.argv, log_path=self.log_path, env=self.env, cwd=self.cwd)

    def wait_ready(self, *, timeout: float = 60.0) -> None:
        if self._proc is None:
            raise RuntimeError(f"{self.name} is not running")
        try:
            wait_until(
                self._ready,
                timeout=timeout,
                what=self.name,
                proc=self._proc,
                log_path=self.log_path,
                interval=0.2,
            )
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        try:
            return httpx.get(self.url + self.ready_path, timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, *, timeout: float = 15.0) -> None:
        if self._proc is not None:
            stop(self._proc, timeout=timeout)
            self._proc = None

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def uvicorn_argv(app: str, port: int) -> list[str]:
    """The bare-baseline server: the same uvicorn set-up as the services (one worker)."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]


# --- profiles of servers under test -----------------------------------------------------------

#: Sent to a server run by :func:`serve_profiled`: start profiling, stop and write the profile.
PROFILE_START = signal.SIGUSR1
PROFILE_STOP = signal.SIGUSR2


def serve_profiled(serve: Callable[[], object], path: Path) -> None:
    """Run a server's entry point (``serve``) in this process, profiled on request.

    cProfile runs only between :data:`PROFILE_START` and :data:`PROFILE_STOP` (signals sent
    by the benchmark around a load phase), so start-up and idle time stay out of it; on
    :data:`PROFILE_STOP` the profile is written to ``path`` (whole: written aside, then
    renamed). The signals are handled in the main thread, between two Python instructions:
    promptly under load, within the server's idle tick otherwise. The default (wall) timer:
    a CPU timer costs a system call per function call and distorts more than it corrects.
    """
    profiler = cProfile.Profile()

    def start(signum: int, frame: FrameType | None) -> None:
        profiler.enable()

    def stop_and_write(signum: int, frame: FrameType | None) -> None:
        profiler.disable()
        partial = path.with_name(path.name + ".partial")
        profiler.dump_stats(partial)
        partial.replace(path)

    signal.signal(PROFILE_START, start)
    signal.signal(PROFILE_STOP, stop_and_write)
    serve()


def profile_summary(
    stats: pstats.Stats,
    areas: Sequence[tuple[str, str]],
    *,
    waiting: Sequence[str] = (),
    paths: Sequence[tuple[str, str, str]] = (),
    top: int = 20,
) -> dict[str, Any]:
    """Where a profiled process's time went: shares of its own time by area, the cumulative
    share of chosen call paths, and the top functions by own and by cumulative time.

    ``areas`` are ``(fragment, area)`` pairs, first match wins, matched against a
    function's file (or, for built-ins, ``"~ <name>"``). ``paths`` are ``(file fragment,
    function name, label)``: each one's share is the cumulative time of the functions of
    that name in a matching file (everything they called included). Functions whose name
    contains one of ``waiting`` (an event loop's poll, which also holds its idle time) are
    counted apart and left out of the shares.
    """
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]]
    raw = stats.stats  # type: ignore[attr-defined]

    def where(key: tuple[str, int, str]) -> str:
        filename, _, function = key
        return f"{filename} {function}" if filename == "~" else filename

    def name(key: tuple[str, int, str]) -> str:
        filename, line, function = key
        return function if filename == "~" else f"{Path(filename).name}:{line} {function}"

    waited = {k for k in raw if any(w in k[2] for w in waiting)}
    working = {k: v for k, v in raw.items() if k not in waited}
    total = sum(v[2] for v in working.values()) or math.nan
    by_area: dict[str, float] = {}
    for key, entry in working.items():
        area = next((a for fragment, a in areas if fragment in where(key)), "other")
        by_area[area] = by_area.get(area, 0.0) + entry[2]

    def ranked(index: int) -> list[dict[str, Any]]:
        chosen = sorted(working.items(), key=lambda item: -item[1][index])[:top]
        return [
            {
                "function": name(key),
                "calls": entry[1],
                "own_s": entry[2],
                "cumulative_s": entry[3],
                "own_share": entry[2] / total,
                "cumulative_share": entry[3] / total,
            }
            for key, entry in chosen
        ]

    def cumulative(fragment: str, function: str) -> float:
        found = (v[3] for k, v in working.items() if k[2] == function and fragment in k[0])
        return sum(found) / total

    return {
        "own_s": total,
        "waiting_s": sum(raw[k][2] for k in waited),
        "paths": {label: cumulative(fragment, function) for fragment, function, label in paths},
        "areas": dict(sorted(((a, t / total) for a, t in by_area.items()), key=lambda i: -i[1])),
        "top_own": ranked(2),
        "top_cumulative": ranked(3),
    }


# --- the record of a run ---------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "cpu_model": model,
        "platform": platform.platform(),
    }


def versions(packages: Iterable[str]) -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in packages:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def utc_stamp(at: datetime | None = None) -> str:
    return (at or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")


def write_result(path: Path, data: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n"
    )
    return path


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned text columns, as wide as their widest cell."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = [cell.ljust(width) for cell, width in zip(cells, widths, strict=True)]
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def check_other(warnings: list[str], what: str, cores: float) -> None:
    """Flag a phase in which processes outside the benchmark took more than a quarter core."""
    if cores > OTHER_CORES_WARNING:
        warnings.append(f"{what}: other processes on the machine took {cores:.2f} cores meanwhile")


def per_unit(spent: Mapping[str, float], units: float) -> dict[str, float]:
    return {name: s / units if units else math.nan for name, s in spent.items()}


# --- figures: a value beside its ceiling ------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """One reported figure: its value, the ceiling measured in the same run, their ratio
    (median and range over the pairs) and, where the issue sets one, the target."""

    label: str
    unit: str
    value: float
    ceiling_label: str
    ceiling: float
    ratio: Spread
    target: str = ""
    met: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "unit": self.unit,
            "value": self.value,
            "ceiling_label": self.ceiling_label,
            "ceiling": self.ceiling,
            "ratio": self.ratio.as_dict(),
            "target": self.target,
            "met": self.met,
        }


FIGURE_HEADER = ("figure", "value", "ceiling", "ceiling value", "ratio (min-max)", "target", "met")


def format_number(value: float, unit: str, *, with_unit: bool = True) -> str:
    if not math.isfinite(value):
        return "n/a"
    if unit == "ms":
        return f"{value:.2f} ms"
    if unit == "x":
        return f"{value:.2f}x"
    return f"{value:,.0f}" + (f" {unit}" if with_unit else "")


def figure_row(f: Mapping[str, Any]) -> list[str]:
    """A figure (as in a result file) as printed: value, ceiling, ratio with its range, target."""
    spread = f"{f['ratio']['median']:.3f}"
    if f["ratio"]["n"] > 1:
        spread += f" ({f['ratio']['min']:.3f}-{f['ratio']['max']:.3f}, n={f['ratio']['n']})"
    met = "-" if f["met"] is None else ("yes" if f["met"] else "NO")
    return [
        f["label"],
        format_number(f["value"], f["unit"]),
        f["ceiling_label"],
        # The ceiling's label names the unit (records/s, events/s, requests/s).
        format_number(f["ceiling"], f["unit"], with_unit=False),
        spread,
        f["target"] or "-",
        met,
    ]


def figure_table(found: Mapping[str, Mapping[str, Any]], keys: Sequence[str]) -> str:
    return table(FIGURE_HEADER, [figure_row(found[key]) for key in keys])


def cpu_cells(data: Mapping[str, Any], columns: Sequence[str]) -> list[str]:
    """One row of a CPU table: µs per unit (cores) per process, then the other tenants' cores."""
    cells = [data["unit"]]
    for name in columns:
        us = data["us_per_unit"].get(name)
        cores = data["cores"].get(name)
        if us is None:
            cells.append("-")
        else:
            cells.append(f"{us:.2f}" + ("" if cores is None else f" ({cores:.2f})"))
    other = data["cores"].get(OTHER)
    cells.append("-" if other is None else f"{other:.2f}")
    return cells


def rss_line(rss: Mapping[str, int | None]) -> str:
    return "peak RSS: " + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in rss.items() if v)


def close_report(lines: Sequence[str], cpu: str, result: Mapping[str, Any]) -> str:
    """A stage's report: ``lines``, then its CPU table, peak memory and warnings."""
    tail = [cpu, "", rss_line(result["peak_rss_bytes"])]
    tail += [f"warning: {w}" for w in result["warnings"]]
    return "\n".join([*lines, *tail])


# --- where a benchmark runs: one broker, one database server ---------------------------------

Say = Callable[[str], None]


def sayer(name: str) -> Say:
    """Progress lines on stderr, so that they never mix with the report on stdout."""

    def say(message: str) -> None:
        print(f"[{name} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    return say


@dataclass
class Site:
    """The broker and database server a benchmark stage runs on, the loop it drives them
    with and the folder for its logs.

    ``shared``: other stages run on the same servers (``python -m tests.bench``), so a stage
    removes the topics and databases it created when it ends; on servers of its own it
    leaves them to be stopped with the servers (servers named by the settings are always
    cleaned up).
    """

    settings: Settings
    kafka: Endpoint
    postgres: Endpoint
    workdir: Path
    runner: asyncio.Runner
    shared: bool = False

    def logs(self, stage: str) -> Path:
        path = self.workdir / "bench" / stage if self.shared else self.workdir / "bench"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def remove_topics_later(
        self, exit_stack: contextlib.ExitStack, names: Sequence[str], say: Say
    ) -> None:
        if self.shared or not self.kafka.local:
            chosen = list(names)
            exit_stack.callback(
                cleanup,
                f"topics {chosen}",
                lambda: self.runner.run(delete_topics(self.kafka.address, chosen)),
                say,
            )

    def new_database(self, exit_stack: contextlib.ExitStack | None, name: str, say: Say) -> str:
        """A fresh, migrated database on the server; dropped by ``exit_stack`` where it must."""
        url = self.runner.run(create_database(self.postgres.address, name))
        if exit_stack is not None and (self.shared or not self.postgres.local):
            exit_stack.callback(
                cleanup,
                f"database {name}",
                lambda: self.runner.run(drop_database(self.postgres.address, name)),
                say,
            )
        return url

    def drop_database(self, url: str) -> None:
        self.runner.run(drop_database(self.postgres.address, url.rpartition("/")[2]))


@contextlib.contextmanager
def open_site(settings: Settings, say: Say, *, shared: bool = False) -> Iterator[Site]:
    """Kafka and PostgreSQL (started here unless the settings name servers) and a uvloop
    runner; everything started is stopped on the way out, on errors and Ctrl-C too."""
    with contextlib.ExitStack() as exit_stack:
        stack = exit_stack.enter_context(LocalStack(settings))
        say("starting Kafka and PostgreSQL (unless the settings name servers)")
        kafka, postgres = stack.kafka(), stack.postgres()
        runner = exit_stack.enter_context(asyncio.Runner(loop_factory=uvloop.new_event_loop))
        yield Site(settings, kafka, postgres, stack.workdir, runner, shared)


def cleanup(what: str, action: Callable[[], object], say: Say) -> None:
    # Tear-down of something on a server: report, never mask the error (or interrupt) that
    # got us here.
    try:
        action()
    except Exception as exc:
        say(f"could not remove {what}: {exc}")


async def delete_topics(bootstrap: str, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        await admin.delete_topics(names)
    finally:
        await admin.close()


def _admin_url(url: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/postgres"


async def create_database(server_url: str, name: str) -> str:
    conn = await asyncpg.connect(_admin_url(server_url))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = f"{server_url.rpartition('/')[0]}/{name}"
    await migrate_url(url)
    return url


async def drop_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(_admin_url(server_url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def postgres_version(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


# --- Kafka's own tools -----------------------------------------------------------------------

TOOL_JVM = ("-Xmx512m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true")
TOOL_TIMEOUT_S = 120.0
_TOOL_LOG4J = "rootLogger.level = WARN\nrootLogger.appenderRef.out.ref = OUT\n" + (
    "appender.out.type = Console\nappender.out.name = OUT\n"
    "appender.out.layout.type = PatternLayout\nappender.out.layout.pattern = %p %m%n\n"
)


def children_cpu_seconds() -> float:
    """CPU seconds of this process's children that have exited and been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def java_version() -> str:
    java = shutil.which("java")
    if java is None:
        return "not found"
    result = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)  # noqa: S603
    lines = (result.stderr or result.stdout).splitlines()
    return lines[0] if lines else "unknown"


def run_kafka_tool(
    settings: Settings,
    logs: Path,
    log_name: str,
    main_class: str,
    args: Sequence[str],
    *,
    meter: CpuMeter,
) -> tuple[str, dict[str, Any]]:
    """One of Kafka's tools (``org.apache.kafka.tools.<main_class>``, the machine's Java) run
    to completion; its output, wall time and the CPU of ``meter``'s processes and of the
    tool itself (``tool_incl_jvm_start``, from RUSAGE_CHILDREN)."""
    libs = kafka_libs(settings.cache_dir, settings.kafka_version)
    java = shutil.which("java")
    if java is None:
        raise BenchError(f"Java is needed for Kafka's {main_class} and is not on PATH")
    log4j = logs / "tools-log4j2.properties"
    log4j.write_text(_TOOL_LOG4J)
    log_path = logs / f"{log_name}.log"
    argv = [
        java,
        *TOOL_JVM,
        f"-Dlog4j2.configurationFile={log4j}",
        "-cp",
        f"{libs}/*",
        f"org.apache.kafka.tools.{main_class}",
        *args,
    ]
    before, tool_before, started = meter.read(), children_cpu_seconds(), clock()
    proc = spawn(argv, log_path=log_path)
    try:
        code = proc.wait(TOOL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{main_class} took over {TOOL_TIMEOUT_S:.0f} s") from None
    finally:
        stop(proc, timeout=10)
    wall_s = clock() - started
    output = log_path.read_text(errors="replace")
    if code != 0:
        raise BenchError(f"{main_class} exited with {code}:\n{output[-2000:]}")
    cpu = CpuMeter.delta(before, meter.read())
    cpu["tool_incl_jvm_start"] = children_cpu_seconds() - tool_before
    account_other(cpu)
    return output, {"wall_s_incl_jvm_start": wall_s, "cpu_s": cpu}


# --- the command line of a benchmark ---------------------------------------------------------


def interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM takes the same way out as Ctrl-C: everything started is stopped on the way.
    raise KeyboardInterrupt


def arguments(prog: str, doc: str | None, *, quick: str, output: str) -> argparse.ArgumentParser:
    """A benchmark's command line: ``--quick`` and ``--output``."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.splitlines()[0] if doc else None)
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument(
        "--output",
        type=Path,
        help=f"the result file (default .touchpulse/bench/{output}-<UTC time>.json)",
    )
    return parser


def bench_settings() -> Settings:
    settings = load_settings()
    # Provisioning logs would interleave with the report on stdout.
    configure_logging(settings.model_copy(update={"log_level": "WARNING"}))
    return settings


def guarded(say: Say, body: Callable[[], int]) -> int:
    """Run a benchmark's body: Ctrl-C and SIGTERM stop what it started (130); a benchmark
    that could not measure, a stack that would not start or bad settings say why (1)."""
    signal.signal(signal.SIGTERM, interrupt)
    try:
        return body()
    except KeyboardInterrupt:
        say("interrupted; what was started has been stopped")
        return 130
    except (BenchError, StackError, ConfigError) as exc:
        say(f"failed: {exc}")
        return 1


def stage_main(
    name: str,
    doc: str | None,
    argv: Sequence[str] | None,
    *,
    quick: str,
    plans: tuple[Any, Any],
    run: Callable[[Any, Settings], Mapping[str, Any]],
    report: Callable[[Any], str],
    say: Say,
) -> int:
    """A stage's command line when it has no options of its own: ``--quick`` picks the
    second of ``plans`` (full, quick), the result is written and its report printed."""
    args = arguments(f"python -m tests.bench.{name}", doc, quick=quick, output=name).parse_args(
        argv
    )

    def body() -> int:
        settings = bench_settings()
        publish(
            run(plans[1] if args.quick else plans[0], settings), args.output, settings, name, report
        )
        return 0

    return guarded(say, body)


def publish(
    result: Mapping[str, Any],
    output: Path | None,
    settings: Settings,
    name: str,
    report: Callable[[Any], str],
) -> Path:
    """Write the result file (``output``, or ``.touchpulse/bench/<name>-<UTC time>.json``)
    and print the report."""
    path = output or settings.state_dir / "bench" / f"{name}-{utc_stamp()}.json"
    write_result(path, result)
    print(report(result))
    print(f"\nwrote {path}")
    return path

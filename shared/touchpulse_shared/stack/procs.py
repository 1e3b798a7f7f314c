"""Child processes that cannot outlive the process that started them.

Every server the local stack starts (the Kafka JVM, the PostgreSQL postmaster) is spawned
through :func:`spawn`, which asks the kernel to SIGKILL the child when its parent dies
(``PR_SET_PDEATHSIG``). A test run or ``make run`` that is killed with SIGKILL, or crashes,
therefore leaves no broker or database behind, with no cleanup code having to run.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import fcntl
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

T = TypeVar("T")

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


class StackError(RuntimeError):
    """A local server could not be started, or did not become ready in time."""


def _die_with_parent() -> None:
    # Runs in the child between fork and exec, after subprocess has switched the user
    # (a credential change clears the death signal, so it must be set after it).
    if _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        os._exit(127)
    # The parent may have died between fork and prctl; then nobody would ever kill us.
    if os.getppid() == 1:
        os._exit(127)


def spawn(
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session with output appended to ``log_path``.

    Its own session keeps a terminal's Ctrl-C away from it: the parent decides the order
    in which servers stop. PR_SET_PDEATHSIG fires when the *thread* that forked exits, so
    servers must be spawned from a long-lived thread (the main one).
    """
    if threading.current_thread() is not threading.main_thread():
        raise StackError("servers must be spawned from the main thread (see PR_SET_PDEATHSIG)")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log: IO[bytes]
    with open(log_path, "ab") as log:
        return subprocess.Popen(  # noqa: S603 - argv is built by this package, never from input
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            user=user,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - spawned from the main thread only
        )


def stop(proc: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, timeout: float) -> None:
    """Ask ``proc`` to stop with ``sig``; SIGKILL its whole session if it does not in time."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the server binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(
    ready: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
    interval: float = 0.1,
) -> None:
    """Poll ``ready`` until it is true; fail early if ``proc`` exits, with its log's tail."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise StackError(f"{what} exited with code {proc.returncode}{_tail(log_path)}")
        if ready():
            return
        if time.monotonic() > deadline:
            raise StackError(f"{what} was not ready within {timeout:.0f} s{_tail(log_path)}")
        time.sleep(interval)


def _tail(log_path: Path | None, lines: int = 30) -> str:
    if log_path is None or not log_path.exists():
        return ""
    text = log_path.read_text(errors="replace").splitlines()[-lines:]
    return f"; last lines of {log_path}:\n" + "\n".join(text)


def run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from synchronous code, even inside a running loop.

    The stack is synchronous (it must spawn from the main thread), but its readiness
    checks speak Kafka and PostgreSQL through asyncio clients.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, factory()).result()


#: Written into a cached folder as its last step: without it the folder is incomplete.
COMPLETE_MARKER = ".complete"


def fetch_once(folder: Path, fetch: Callable[[], None]) -> Path:
    """``folder``, filled by ``fetch`` (which writes :data:`COMPLETE_MARKER` in it last)
    unless an earlier run already did.

    make test and make run (or two test workers) may ask at once: a file lock beside the
    folder lets one fetch while the others wait, then find the marker.
    """
    if (folder / COMPLETE_MARKER).exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / COMPLETE_MARKER).exists():
            fetch()
    return folder

"""Prometheus and promtool from Debian's package, with no system install.

``apt-get download`` fetches the ``.deb`` into a folder of our own and ``dpkg-deb -x``
unpacks it there; nothing is installed, no service is enabled. Both programs are static
Go binaries (libc only), so the two files are all that is kept. They are cached per
Debian version in a git-ignored folder, like the Kafka jars, and serve the rule checks
(``promtool check``/``promtool test rules``) and the tests that run a real Prometheus.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import yaml

from touchpulse_shared.stack.procs import (
    COMPLETE_MARKER,
    StackError,
    fetch_once,
    free_port,
    spawn,
    stop,
    wait_until,
)

# The version the rules and tests were written against (Debian bookworm). When Debian
# replaces it with a point release the old .deb leaves the mirror and the download fails
# with a message saying so; bump this then (see `apt-cache policy prometheus`).
DEBIAN_VERSION = "2.42.0+ds-5+deb12u1"
_PACKAGE = "prometheus"
_BINARIES = ("prometheus", "promtool")

# A fresh TSDB on 2 busy cores is ready in about a second; half a minute means trouble.
READY_TIMEOUT_S = 30.0
# Prometheus flushes its head block on SIGTERM; that takes well under a second in tests.
STOP_TIMEOUT_S = 15.0
_APT_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class PrometheusTools:
    prometheus: Path
    promtool: Path
    version: str


def prometheus_tools(cache_dir: Path, version: str = DEBIAN_VERSION) -> PrometheusTools:
    """The ``prometheus`` and ``promtool`` binaries of Debian ``version``, fetched on first use."""
    bin_dir = cache_dir.resolve() / _PACKAGE / version / "bin"
    fetch_once(bin_dir, lambda: _fetch(bin_dir, version))
    return PrometheusTools(
        prometheus=bin_dir / "prometheus", promtool=bin_dir / "promtool", version=version
    )


def _fetch(bin_dir: Path, version: str) -> None:
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise StackError(f"{tool} is needed to fetch Prometheus (a Debian machine)")
    staging = Path(tempfile.mkdtemp(prefix="fetch-", dir=bin_dir.parent))
    try:
        deb = _download(staging, version)
        unpacked = staging / "root"
        _run(["dpkg-deb", "-x", str(deb), str(unpacked)], what=f"unpacking {deb.name}")
        out = staging / "bin"
        out.mkdir()
        for name in _BINARIES:
            src = unpacked / "usr" / "bin" / name
            if not src.is_file():
                raise StackError(f"{deb.name} holds no usr/bin/{name}")
            shutil.copy2(src, out / name)
            # A binary that cannot run here (wrong architecture, missing loader) should fail
            # the fetch, not the first check that happens to use it.
            _run([str(out / name), "--version"], what=f"running {name} --version")
        (out / COMPLETE_MARKER).write_text(version)
        if bin_dir.exists():
            shutil.rmtree(bin_dir)
        out.rename(bin_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _download(staging: Path, version: str) -> Path:
    cmd = ["apt-get", "download", f"{_PACKAGE}={version}"]
    first = _apt(cmd, staging)
    if first.returncode != 0:
        # A fresh machine (CI, a container) has no package lists, and stale lists point
        # at a .deb the mirror no longer has; one update fixes both.
        update = _apt(["apt-get", "update"], staging)
        if update.returncode != 0:
            raise StackError(
                f"apt-get download {_PACKAGE}={version} failed and apt-get update (needs root)"
                f" failed too:\n{_output(first)}\n{_output(update)}"
            )
        again = _apt(cmd, staging)
        if again.returncode != 0:
            raise StackError(
                f"apt-get could not download {_PACKAGE}={version} even after apt-get update;"
                " if Debian has replaced it with a newer point release (apt-cache policy"
                f" {_PACKAGE}), update DEBIAN_VERSION in {__name__}:\n{_output(again)}"
            )
    debs = sorted(staging.glob(f"{_PACKAGE}_*.deb"))
    if len(debs) != 1:
        raise StackError(f"apt-get download left {[d.name for d in debs]} in {staging}")
    return debs[0]


def _apt(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - fixed argv
        cmd, cwd=cwd, capture_output=True, text=True, check=False, timeout=_APT_TIMEOUT_S
    )


def _run(cmd: list[str], *, what: str) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        raise StackError(f"{what} failed:\n{_output(result)}")


def _output(result: subprocess.CompletedProcess[str]) -> str:
    return (result.stdout + result.stderr)[-3000:]


class LocalPrometheus:
    """A Prometheus on loopback scraping ``targets`` and evaluating ``rule_files``.

    Each start writes a fresh config and TSDB under ``workdir``. Lifecycle endpoints are on
    so a test can ``POST /-/reload`` after rewriting a rule file.
    """

    def __init__(
        self,
        *,
        tools: PrometheusTools,
        workdir: Path,
        targets: Mapping[str, Sequence[str]],
        scrape_interval: str = "1s",
        rule_files: Sequence[Path] = (),
        host: str = "127.0.0.1",
    ) -> None:
        self.tools = tools
        self.workdir = workdir
        self.targets = {job: list(addrs) for job, addrs in targets.items()}
        self.scrape_interval = scrape_interval
        self.rule_files = [Path(p).resolve() for p in rule_files]
        self.host = host
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "prometheus.log"

    @property
    def config_path(self) -> Path:
        return self.workdir / "prometheus.yml"

    def _write_config(self) -> None:
        config = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": addrs}]}
                for job, addrs in self.targets.items()
            ],
        }
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def start(self, *, timeout: float = READY_TIMEOUT_S) -> None:
        if self._proc is not None:
            raise StackError("Prometheus is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        data = self.workdir / "data"
        shutil.rmtree(data, ignore_errors=True)
        self._write_config()
        self.port = free_port(self.host)
        argv = [
            str(self.tools.prometheus),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={data}",
            f"--web.listen-address={self.host}:{self.port}",
            "--web.enable-lifecycle",
        ]
        self._proc = spawn(argv, log_path=self.log_path, cwd=self.workdir)
        try:
            wait_until(
                self._ready,
                timeout=timeout,
                what="Prometheus",
                proc=self._proc,
                log_path=self.log_path,
            )
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1.0) as resp:  # noqa: S310
                return int(resp.status) == 200
        except (urllib.error.URLError, OSError):
            # Refused before the listener is up; 503 while the TSDB is still opening.
            return False

    def stop(self, *, timeout: float = STOP_TIMEOUT_S) -> None:
        if self._proc is not None:
            stop(self._proc, timeout=timeout)
            self._proc = None

    def __enter__(self) -> LocalPrometheus:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

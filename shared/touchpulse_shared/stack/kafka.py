"""A real single-node Apache Kafka 4.x broker (KRaft), run with the machine's Java.

The jars come from Maven Central through ``mvn dependency:copy-dependencies`` on the pom
beside this module and are cached per version in a git-ignored folder. Each start gets a
fresh data directory, listens on loopback only, and is stopped with a controlled shutdown.
"""

from __future__ import annotations

import base64
import contextlib
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from touchpulse_shared.stack.procs import (
    COMPLETE_MARKER,
    StackError,
    fetch_once,
    free_port,
    port_open,
    run_async,
    spawn,
    stop,
    wait_until,
)

POM = Path(__file__).parent / "kafka" / "pom.xml"

# Start-up on 2 busy cores takes several seconds; a minute means something is wrong.
READY_TIMEOUT_S = 90.0
# A single node's controlled shutdown normally takes 1-5 s.
STOP_TIMEOUT_S = 30.0

_JVM_OPTS = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-Djava.awt.headless=true",
)

_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.state.name = state.change.logger
logger.state.level = WARN
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = WARN
"""


def kafka_libs(cache_dir: Path, version: str) -> Path:
    """The folder holding every runtime jar of Kafka ``version``, fetched on first use."""
    libs = cache_dir.resolve() / "kafka" / version / "libs"
    return fetch_once(libs, lambda: _fetch(libs, version))


def _fetch(libs: Path, version: str) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError("Maven (mvn) is needed to fetch the Kafka jars and is not on PATH")
    staging = Path(tempfile.mkdtemp(prefix="libs-", dir=libs.parent))
    cmd = [
        mvn,
        "--batch-mode",
        "--quiet",
        "--file",
        str(POM),
        f"-Dkafka.version={version}",
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={staging}",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise StackError(
            f"could not fetch Apache Kafka {version} from Maven Central:\n"
            + (result.stdout + result.stderr)[-3000:]
        )
    _check_jars(staging, version)
    (staging / COMPLETE_MARKER).write_text(version)
    if libs.exists():
        shutil.rmtree(libs)
    staging.rename(libs)


def _check_jars(libs: Path, version: str) -> None:
    # Mixed Kafka module versions or two logging bindings fail at run time in confusing
    # ways; refuse such a set up front.
    kafka = [j.name for j in libs.glob("kafka*.jar")]
    wrong = [name for name in kafka if not name.endswith(f"-{version}.jar")]
    if not kafka or wrong:
        raise StackError(f"Kafka jars do not all have version {version}: {sorted(wrong)}")
    bindings = [j.name for j in libs.glob("*.jar") if j.name.startswith(("log4j-slf4j", "slf4j-"))]
    bindings = [b for b in bindings if not b.startswith("slf4j-api")]
    if len(bindings) != 1:
        raise StackError(f"expected exactly one SLF4J binding among the jars, found {bindings}")


def _cluster_id() -> str:
    # KRaft cluster ids are 16 random bytes in URL-safe base64 without padding; made here
    # rather than by `StorageTool random-uuid` to save a JVM start.
    # One that starts with "-" would be read as an option by the storage tool's parser.
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


class LocalKafka:
    """One broker+controller process with its own fresh data directory under ``workdir``."""

    def __init__(self, *, libs: Path, workdir: Path, host: str = "127.0.0.1") -> None:
        self.libs = libs
        self.workdir = workdir
        self.host = host
        self.port = 0
        self.controller_port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "kafka.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _java(self, main: str, *args: str, heap: tuple[str, ...] = _JVM_OPTS) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise StackError("Java 17+ is needed to run Kafka and is not on PATH")
        return [
            java,
            *heap,
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            "-cp",
            f"{self.libs}/*",
            main,
            *args,
        ]

    def _write_config(self) -> Path:
        data = self.workdir / "data"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"{self.host}:{self.controller_port}",
            "listeners": (
                f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}"
            ),
            "advertised.listeners": (
                f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}"
            ),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(data),
            # One node: every internal topic can have one replica only.
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            # Fewer internal partitions and no rebalance delay: far faster group joins on 2 cores.
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.num.partitions": "1",
            "group.initial.rebalance.delay.ms": "0",
            "num.network.threads": "2",
            "num.io.threads": "2",
            # Topics are created on purpose with their configs, never by a typo in a client.
            "auto.create.topics.enable": "false",
        }
        config = self.workdir / "server.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.workdir / "log4j2.properties").write_text(_LOG4J2)
        return config

    def start(self, *, timeout: float = READY_TIMEOUT_S) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port(self.host)
        self.controller_port = free_port(self.host)
        config = self._write_config()
        fmt = self._java(
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "--cluster-id",
            _cluster_id(),
            "--config",
            str(config),
            heap=("-Xmx256m", "-Djava.awt.headless=true"),
        )
        result = subprocess.run(fmt, capture_output=True, text=True, check=False)  # noqa: S603
        if result.returncode != 0:
            raise StackError(f"kafka storage format failed:\n{result.stdout}{result.stderr}")
        self._launch(config, timeout)

    def _launch(self, config: Path, timeout: float) -> None:
        self._proc = spawn(self._java("kafka.Kafka", str(config)), log_path=self.log_path)
        try:
            wait_until(
                lambda: port_open(self.host, self.port),
                timeout=timeout,
                what="Kafka broker",
                proc=self._proc,
                log_path=self.log_path,
            )
            wait_until(
                self._answers_metadata,
                timeout=timeout,
                what="Kafka broker metadata",
                proc=self._proc,
                log_path=self.log_path,
                interval=0.5,
            )
        except BaseException:
            self.stop()
            raise

    def kill(self) -> None:
        """SIGKILL the broker, keeping its data: a crash, for fault tests."""
        if self._proc is not None:
            stop(self._proc, sig=9, timeout=STOP_TIMEOUT_S)
            self._proc = None

    def restart(self, *, timeout: float = READY_TIMEOUT_S) -> None:
        """Start again on the same ports and data after :meth:`kill` or a kept stop."""
        if self._proc is not None:
            raise StackError("the broker is still running")
        self._launch(self.workdir / "server.properties", timeout)

    def _answers_metadata(self) -> bool:
        return run_async(lambda: kafka_ready(self.bootstrap_servers))

    def stop(self, *, timeout: float = STOP_TIMEOUT_S, keep_workdir: bool = False) -> None:
        if self._proc is not None:
            stop(self._proc, timeout=timeout)
            self._proc = None
        if not keep_workdir:
            shutil.rmtree(self.workdir / "data", ignore_errors=True)

    def __enter__(self) -> LocalKafka:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def kafka_ready(bootstrap_servers: str) -> bool:
    """True once a broker answers a metadata request with itself as a live node."""
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415 - keep stack import cheap

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=5000)
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
        return bool(cluster.get("brokers"))
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


@contextlib.contextmanager
def local_kafka(*, cache_dir: Path, version: str, workdir: Path) -> Iterator[LocalKafka]:
    broker = LocalKafka(libs=kafka_libs(cache_dir, version), workdir=workdir)
    with broker:
        yield broker

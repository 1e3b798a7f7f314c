"""Real Apache Kafka 4.x (KRaft) on loopback, run with the machine's Java: one
broker+controller node (:class:`LocalKafka`), or three of them in one cluster
(:class:`LocalKafkaCluster`) with a three-voter controller quorum and replication factor 3.

The jars come from Maven Central through ``mvn dependency:copy-dependencies`` on the pom
beside this module and are cached per version in a git-ignored folder. Each start gets a
fresh data directory, listens on loopback only, and is stopped with a controlled shutdown.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
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
# Three JVMs share 2 cores and the machine with the services: a smaller heap each.
CLUSTER_JVM_OPTS = (
    "-Xms128m",
    "-Xmx384m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-Djava.awt.headless=true",
)
_TOOL_HEAP = ("-Xmx256m", "-Djava.awt.headless=true")

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
    # KRaft cluster ids (and directory ids) are 16 random bytes in URL-safe base64 without
    # padding; made here rather than by `StorageTool random-uuid` to save a JVM start.
    # One that starts with "-" would be read as an option by the storage tool's parser.
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


class LocalKafka:
    """One broker+controller process with its own fresh data directory under ``workdir``.

    Alone (the default) it is a single-voter quorum with replication factor 1; as a node of
    a :class:`LocalKafkaCluster` it is one voter of three, with the cluster's settings.
    """

    def __init__(
        self,
        *,
        libs: Path,
        workdir: Path,
        host: str = "127.0.0.1",
        node_id: int = 1,
        heap: tuple[str, ...] = _JVM_OPTS,
    ) -> None:
        self.libs = libs
        self.workdir = workdir
        self.host = host
        self.node_id = node_id
        self.heap = heap
        self.port = 0
        self.controller_port = 0
        #: Set by the cluster this node belongs to (None: a single node).
        self.cluster: LocalKafkaCluster | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def controller_endpoint(self) -> str:
        return f"{self.host}:{self.controller_port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "kafka.log"

    @property
    def config_path(self) -> Path:
        return self.workdir / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def metadata_dir(self) -> Path:
        """Where the metadata log (and the node's quorum identity) lives."""
        return self.workdir / "metadata" if self.cluster is not None else self.data_dir

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _java(self, main: str, *args: str, heap: tuple[str, ...] | None = None) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise StackError("Java 17+ is needed to run Kafka and is not on PATH")
        return [
            java,
            *(heap if heap is not None else self.heap),
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            "-cp",
            f"{self.libs}/*",
            main,
            *args,
        ]

    def _props(self) -> dict[str, str]:
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.bootstrap.servers": self.controller_endpoint,
            "listeners": (
                f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}"
            ),
            "advertised.listeners": (
                f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}"
            ),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
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
        if self.cluster is not None:
            props.update(self.cluster.node_props())
            props["metadata.log.dir"] = str(self.metadata_dir)
        return props

    def _write_config(self) -> Path:
        config = self.config_path
        config.write_text("".join(f"{k}={v}\n" for k, v in self._props().items()))
        (self.workdir / "log4j2.properties").write_text(_LOG4J2)
        return config

    def _allocate(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port(self.host)
        self.controller_port = free_port(self.host)

    def _format(self, cluster_id: str, *quorum: str) -> None:
        """``StorageTool format`` of this node's directories (``quorum``: how the voters
        are bootstrapped: --standalone, --initial-controllers or --no-initial-controllers)."""
        fmt = self._java(
            "kafka.tools.StorageTool",
            "format",
            *quorum,
            "--cluster-id",
            cluster_id,
            "--config",
            str(self.config_path),
            heap=_TOOL_HEAP,
        )
        result = subprocess.run(fmt, capture_output=True, text=True, check=False)  # noqa: S603
        if result.returncode != 0:
            raise StackError(f"kafka storage format failed:\n{result.stdout}{result.stderr}")

    def start(self, *, timeout: float = READY_TIMEOUT_S) -> None:
        self._allocate()
        self._write_config()
        self._format(_cluster_id(), "--standalone")
        self._launch(timeout)

    def _spawn(self) -> None:
        self._proc = spawn(self._java("kafka.Kafka", str(self.config_path)), log_path=self.log_path)

    def _wait_ready(self, timeout: float) -> None:
        try:
            wait_until(
                lambda: port_open(self.host, self.port),
                timeout=timeout,
                what=f"Kafka broker {self.node_id}",
                proc=self._proc,
                log_path=self.log_path,
            )
            wait_until(
                self._answers_metadata,
                timeout=timeout,
                what=f"Kafka broker {self.node_id} metadata",
                proc=self._proc,
                log_path=self.log_path,
                interval=0.5,
            )
        except BaseException:
            self.stop(keep_workdir=True)
            raise

    def _launch(self, timeout: float) -> None:
        self._spawn()
        self._wait_ready(timeout)

    def kill(self) -> None:
        """SIGKILL the broker, keeping its data: a crash, for fault tests."""
        if self._proc is not None:
            stop(self._proc, sig=9, timeout=STOP_TIMEOUT_S)
            self._proc = None

    def restart(self, *, timeout: float = READY_TIMEOUT_S) -> None:
        """Start again on the same ports and data after :meth:`kill` or a kept stop."""
        if self._proc is not None:
            raise StackError("the broker is still running")
        self._launch(timeout)

    def _answers_metadata(self) -> bool:
        # In a cluster another node may answer: ready means this node is a registered,
        # unfenced broker in the answer.
        node = self.node_id if self.cluster is not None else None
        return run_async(lambda: kafka_ready(self.bootstrap_servers, node_id=node))

    def stop(self, *, timeout: float = STOP_TIMEOUT_S, keep_workdir: bool = False) -> None:
        if self._proc is not None:
            stop(self._proc, timeout=timeout)
            self._proc = None
        if not keep_workdir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            shutil.rmtree(self.metadata_dir, ignore_errors=True)

    def __enter__(self) -> LocalKafka:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def directory_id(log_dir: Path) -> str:
    """The ``directory.id`` the storage tool wrote in ``log_dir``'s meta.properties."""
    for line in (log_dir / "meta.properties").read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "directory.id":
            return value.strip()
    raise StackError(f"no directory.id in {log_dir / 'meta.properties'}")


class LocalKafkaCluster:
    """Three broker+controller nodes on loopback, one cluster: a three-voter KRaft quorum
    (dynamic, KIP-853, bootstrapped with ``--initial-controllers``), every topic at
    replication factor 3 with ``min.insync.replicas`` 2 and unclean leader election off,
    so an acknowledged (acks=all) record is on two brokers at least and survives the loss
    of any one. Each node's metadata log has its own folder (``metadata.log.dir``), apart
    from its partitions' data.
    """

    def __init__(
        self,
        *,
        libs: Path,
        workdir: Path,
        size: int = 3,
        node: Callable[[int, Path], LocalKafka] | None = None,
    ) -> None:
        if size != 3:
            raise StackError("a local cluster has 3 nodes (a majority survives one loss)")
        self.libs = libs
        self.workdir = workdir
        self.cluster_id = ""

        def default(node_id: int, path: Path) -> LocalKafka:
            return LocalKafka(libs=libs, workdir=path, node_id=node_id, heap=CLUSTER_JVM_OPTS)

        make = node or default
        self.nodes = [make(i, workdir / f"node-{i}") for i in range(1, size + 1)]
        for member in self.nodes:
            member.cluster = self
        #: node id -> the directory id its controller is a voter with.
        self.voters: dict[int, str] = {}

    def node_props(self) -> dict[str, str]:
        """What every node of the cluster sets beyond a single node's configuration."""
        return {
            "controller.quorum.bootstrap.servers": ",".join(
                n.controller_endpoint for n in self.nodes
            ),
            # An acknowledged record is on two brokers at least, and a broker that may
            # miss acknowledged records never becomes a leader.
            "default.replication.factor": "3",
            "min.insync.replicas": "2",
            "unclean.leader.election.enable": "false",
            "offsets.topic.replication.factor": "3",
            "transaction.state.log.replication.factor": "3",
            "transaction.state.log.min.isr": "2",
            "share.coordinator.state.topic.replication.factor": "3",
            "share.coordinator.state.topic.min.isr": "2",
            # Fault runs fence a dead broker and move leadership within seconds, not 9 s.
            "broker.session.timeout.ms": "6000",
            "broker.heartbeat.interval.ms": "1000",
        }

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(n.bootstrap_servers for n in self.nodes)

    @property
    def node_ids(self) -> set[int]:
        return {n.node_id for n in self.nodes}

    @property
    def controllers(self) -> str:
        return ",".join(n.controller_endpoint for n in self.nodes if n.running)

    def node(self, node_id: int) -> LocalKafka:
        return next(n for n in self.nodes if n.node_id == node_id)

    def start(self, *, timeout: float = READY_TIMEOUT_S) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for member in self.nodes:
            member._allocate()
        self.cluster_id = _cluster_id()
        self.voters = {n.node_id: _cluster_id() for n in self.nodes}
        initial = ",".join(
            f"{n.node_id}@{n.host}:{n.controller_port}:{self.voters[n.node_id]}" for n in self.nodes
        )
        for member in self.nodes:
            member._write_config()
        try:
            # Three storage-tool JVMs at once: they are independent and each takes seconds.
            _each(
                self.nodes, lambda n: n._format(self.cluster_id, "--initial-controllers", initial)
            )
            # Every node before any wait: none is ready until a majority of voters is up.
            for member in self.nodes:
                member._spawn()
            for member in self.nodes:
                member._wait_ready(timeout)
            wait_until(
                lambda: run_async(lambda: brokers(self.bootstrap_servers)) == self.node_ids,
                timeout=timeout,
                what="three registered Kafka brokers",
                interval=0.5,
            )
        except BaseException:
            self.stop()
            raise

    def restart_empty(self, node_id: int, *, timeout: float = READY_TIMEOUT_S) -> None:
        """Start a killed node again with nothing on its disk, as after a disk replacement.

        Its partitions' data is re-replicated from the other brokers. Its metadata log is
        gone too, so it may not come back as the voter it was: a voter with an empty log
        could help elect a leader that misses committed metadata (the reason KIP-853 gives
        controllers a directory id). It is formatted with ``--no-initial-controllers`` (a
        new directory id), starts as an observer, and replaces its old self in the quorum:
        the old (id, directory id) voter is removed and the new one added, as Kafka's
        operations guide says for a controller that lost its disk.
        """
        member = self.node(node_id)
        if member.running:
            raise StackError(f"node {node_id} is still running")
        shutil.rmtree(member.data_dir, ignore_errors=True)
        shutil.rmtree(member.metadata_dir, ignore_errors=True)
        member._format(self.cluster_id, "--no-initial-controllers")
        new_id = directory_id(member.metadata_dir)
        member._launch(timeout)
        old_id = self.voters[node_id]
        others = ",".join(n.controller_endpoint for n in self.nodes if n is not member)
        # Removal first: the voter set holds one voter per node id.
        self._quorum_tool(
            member,
            "--bootstrap-controller",
            others,
            "remove-controller",
            "--controller-id",
            str(node_id),
            "--controller-directory-id",
            old_id,
            timeout=timeout,
        )
        # Adding needs the new one caught up with the leader (it fetches as an observer).
        self._quorum_tool(
            member,
            "--command-config",
            str(member.config_path),
            "--bootstrap-controller",
            others,
            "add-controller",
            timeout=timeout,
        )
        self.voters[node_id] = new_id

    def _quorum_tool(self, member: LocalKafka, *args: str, timeout: float) -> None:
        """``kafka-metadata-quorum`` with ``args``, retried until it succeeds or times out."""
        cmd = member._java("org.apache.kafka.tools.MetadataQuorumCommand", *args, heap=_TOOL_HEAP)
        outputs: list[str] = []

        def attempt() -> bool:
            result = subprocess.run(  # noqa: S603 - argv built here
                cmd, capture_output=True, text=True, check=False, timeout=60
            )
            outputs.append(result.stdout + result.stderr)
            return result.returncode == 0

        try:
            wait_until(attempt, timeout=timeout, what=f"metadata quorum {args[-1]}", interval=2.0)
        except StackError as exc:
            raise StackError(f"{exc}\n{outputs[-1] if outputs else ''}") from exc

    def stop(self, *, timeout: float = STOP_TIMEOUT_S) -> None:
        # All at once: a node's controlled shutdown waits on the others (leadership moves),
        # and one by one the last node would wait for a quorum that is gone.
        _each(self.nodes, lambda n: n.stop(timeout=timeout))

    def __enter__(self) -> LocalKafkaCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _each(nodes: Sequence[LocalKafka], action: Callable[[LocalKafka], None]) -> None:
    with concurrent.futures.ThreadPoolExecutor(len(nodes)) as pool:
        for future in [pool.submit(action, n) for n in nodes]:
            future.result()


async def kafka_ready(bootstrap_servers: str, *, node_id: int | None = None) -> bool:
    """True once a broker answers a metadata request with a live node (``node_id`` among
    them, when given)."""
    live = await brokers(bootstrap_servers)
    return node_id in live if node_id is not None else bool(live)


async def brokers(bootstrap_servers: str) -> set[int]:
    """The ids of the live brokers the cluster reports (none when it does not answer)."""
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415 - keep stack import cheap

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=5000)
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
        return {int(b["node_id"]) for b in cluster.get("brokers", [])}
    except Exception:
        return set()
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


@contextlib.contextmanager
def local_kafka(*, cache_dir: Path, version: str, workdir: Path) -> Iterator[LocalKafka]:
    broker = LocalKafka(libs=kafka_libs(cache_dir, version), workdir=workdir)
    with broker:
        yield broker


@contextlib.contextmanager
def local_kafka_cluster(
    *, cache_dir: Path, version: str, workdir: Path
) -> Iterator[LocalKafkaCluster]:
    cluster = LocalKafkaCluster(libs=kafka_libs(cache_dir, version), workdir=workdir)
    with cluster:
        yield cluster

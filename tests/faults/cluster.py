"""Three Kafka brokers under the fault harness, and the faults that only a cluster has.

:class:`ClusterHarness` runs the same stack as :class:`~tests.faults.harness.Harness` but
on a three-node KRaft cluster (:class:`~touchpulse_shared.stack.kafka.LocalKafkaCluster`):
every topic at replication factor 3 with ``min.insync.replicas`` 2, unclean leader
election off. Each node advertises its own :class:`FaultProxy`, so every client
connection and every replica fetch to that broker passes through it (the controller
quorum's own traffic does not: a partitioned broker stays a live member of the cluster,
only unreachable for clients and peers).

The faults, each run under load by :func:`~tests.faults.faults.run_fault` and checked
against the ledger (lost 0, counted twice 0, drift 0):

- the leader of the busiest events partition SIGKILLed, leadership moving to a replica
  that has every acknowledged record, then restarted;
- a broker partitioned away (its proxy blackholed), then healed;
- two of three brokers down: nothing can be acknowledged (ingest answers 503, never 202),
  until one is back and 202s resume;
- a broker restarted with an empty disk: its partitions are re-replicated from the others
  and its controller replaces its old self in the quorum.

After each heal the cluster must be whole again (every replica in sync) before the next
fault starts, so no fault begins on a cluster still recovering from the one before.
"""

from __future__ import annotations

import contextlib
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from tests.faults.faults import Fault
from tests.faults.harness import SOURCE, Harness, ProxiedKafka, pace
from tests.faults.proxy import FaultProxy
from tests.scoring.pipeline.ledger import event_shape
from touchpulse_shared.stack.kafka import (
    CLUSTER_JVM_OPTS,
    LocalKafka,
    LocalKafkaCluster,
    kafka_libs,
)
from touchpulse_shared.stack.procs import StackError

BROKERS = 3
# Every replica back in sync after a heal; an empty disk re-replicates a few MB.
WHOLE_WITHIN_S = 120.0
# A new leader is elected once the controller fences the dead broker
# (broker.session.timeout.ms, 6 s in the local cluster) plus an election.
LEADER_MOVES_WITHIN_S = 30.0
# Once a second broker is back, a quorum forms, the missing one is fenced and leaders
# move: acknowledgements resume within this.
ACKS_RESUME_WITHIN_S = 90.0
# A request answered 202 just after the kills had its records replicated before them.
IN_FLIGHT_GRACE_S = 1.5
ACCEPTED_METRIC = "touchpulse_ingest_events_accepted_total"


class ClusterHarness(Harness):
    """The fault harness on three brokers, each behind its own proxy."""

    def __init__(self, *, scoring_members: int = 1, workdir: Path | None = None) -> None:
        super().__init__(scoring_members=scoring_members, workdir=workdir)
        # Topics are provisioned by Harness.start from these settings: RF 3, min ISR 2.
        self.base = self.base.model_copy(
            update={"local_kafka_brokers": BROKERS, "topic_replication_factor": BROKERS}
        )
        self.proxies = [FaultProxy(f"kafka-{n}") for n in range(1, BROKERS + 1)]
        self.cluster: LocalKafkaCluster | None = None

    def start_kafka(self) -> tuple[str, str]:
        for proxy in self.proxies:
            self.loop.call(proxy.start())
        libs = kafka_libs(self.base.cache_dir, self.base.kafka_version)

        def node(node_id: int, path: Path) -> LocalKafka:
            return ProxiedKafka(
                libs=libs,
                workdir=path,
                proxy=self.proxies[node_id - 1],
                node_id=node_id,
                heap=CLUSTER_JVM_OPTS,
            )

        self.cluster = LocalKafkaCluster(libs=libs, workdir=self.workdir / "kafka", node=node)
        self.cluster.start()
        proxied = ",".join(f"127.0.0.1:{p.port}" for p in self.proxies)
        return self.cluster.bootstrap_servers, proxied

    @property
    def direct_kafka(self) -> str:
        assert self.cluster is not None
        return self.cluster.bootstrap_servers

    def node(self, node_id: int) -> ProxiedKafka:
        assert self.cluster is not None
        member = self.cluster.node(node_id)
        assert isinstance(member, ProxiedKafka)
        return member

    def close(self) -> None:
        # The services first, while Kafka is there for their graceful shutdown; then the
        # brokers, while their proxies still carry replication for the controlled shutdown.
        self.stop_services()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.stop()
        for proxy in self.proxies:
            with contextlib.suppress(Exception):
                self.loop.call(proxy.close(), timeout=10)
        super().close()

    # --- what the faults read from the cluster ----------------------------------------------

    def partitions(self) -> list[dict[str, Any]]:
        """Every partition of every topic: topic, partition, leader, replicas, isr."""

        async def describe() -> list[dict[str, Any]]:
            admin = AIOKafkaAdminClient(
                bootstrap_servers=self._live_bootstrap(), request_timeout_ms=5000
            )
            await admin.start()
            try:
                names = [t for t in await admin.list_topics() if not t.startswith("__")]
                topics = await admin.describe_topics(names)
            finally:
                await admin.close()
            return [
                {"topic": t["topic"], **p}
                for t in topics
                if t["error_code"] == 0
                for p in t["partitions"]
            ]

        return self.loop.call(describe(), timeout=30)

    def busiest_events_partition(self) -> tuple[int, int]:
        """(partition, leader) of the events partition holding the most records."""
        topic = self.settings.events_topic

        layout = [p for p in self.partitions() if p["topic"] == topic]

        async def ends() -> dict[int, int]:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._live_bootstrap(), enable_auto_commit=False
            )
            await consumer.start()
            try:
                parts = [TopicPartition(topic, p["partition"]) for p in layout]
                offsets = await consumer.end_offsets(parts)
            finally:
                await consumer.stop()
            return {tp.partition: offset for tp, offset in offsets.items()}

        offsets = self.loop.call(ends(), timeout=30)
        busiest = max(offsets, key=lambda p: offsets[p])
        leader = next(p["leader"] for p in layout if p["partition"] == busiest)
        return busiest, int(leader)

    def _live_bootstrap(self) -> str:
        assert self.cluster is not None
        return ",".join(n.bootstrap_servers for n in self.cluster.nodes if n.running)

    def wait_whole(self, notes: list[str], *, within_s: float = WHOLE_WITHIN_S) -> float | None:
        """Until every replica of every partition is in sync again; the seconds it took,
        or None (and a FAIL note naming what lagged)."""
        started = time.monotonic()
        lagging: list[str] = []
        while time.monotonic() - started < within_s:
            with contextlib.suppress(Exception):
                lagging = [
                    f"{p['topic']}-{p['partition']} isr {sorted(p['isr'])}"
                    for p in self.partitions()
                    if len(p["isr"]) < BROKERS or p["leader"] < 0
                ]
                if not lagging:
                    return time.monotonic() - started
            time.sleep(0.5)
        notes.append(f"FAIL: replicas not back in sync within {within_s:.0f} s: {lagging[:4]}")
        return None

    def accepted(self) -> float:
        """Events ingest has acknowledged so far (its own counter)."""
        assert self.ingest is not None
        return self.ingest.metric(ACCEPTED_METRIC)

    def probe(self, n: int) -> int:
        """One valid event posted to ingest; the status it got (0: no answer in time)."""
        assert self.ingest is not None
        # A call answered quickly: a valid event of a touchpoint the catalogue judges.
        touchpoint, event_type, measures = event_shape("call", random.Random(n))
        event = {
            "event_id": f"probe-{time.monotonic_ns()}-{n}",
            "source": SOURCE,
            "customer_id": f"F-probe-{n % 5}",
            "touchpoint": touchpoint,
            "type": event_type,
            "occurred_at": datetime.now(UTC).isoformat(),
            "measures": measures,
        }
        try:
            answer = httpx.post(
                f"{self.ingest.url}/v1/events",
                json=event,
                headers={"Authorization": f"Bearer {self.key}"},
                timeout=15,
            )
        except httpx.HTTPError:
            return 0
        return answer.status_code


# --- the faults -------------------------------------------------------------------------------


def _cluster(h: Harness) -> ClusterHarness:
    if not isinstance(h, ClusterHarness):
        raise StackError("a three-broker fault needs the ClusterHarness")
    return h


@dataclass
class LeaderKill(Fault):
    """SIGKILL of the broker leading the busiest events partition; a replica in sync takes
    over (unclean election is off, so only one holding every acknowledged record can);
    the broker is restarted on its data and catches up."""

    name: str = "cluster-leader-kill"
    hold_s: float = 2.0
    victim: int = 0

    def inject(self, h: Harness) -> None:
        c = _cluster(h)
        partition, self.victim = c.busiest_events_partition()
        c.node(self.victim).kill()
        killed = time.monotonic()
        topic = c.settings.events_topic

        def new_leader() -> int | None:
            with contextlib.suppress(Exception):
                for p in c.partitions():
                    if p["topic"] == topic and p["partition"] == partition:
                        leader = int(p["leader"])
                        return leader if leader not in (-1, self.victim) else None
            return None

        leader = None
        while leader is None and time.monotonic() - killed < LEADER_MOVES_WITHIN_S:
            leader = new_leader()
            if leader is None:
                time.sleep(0.25)
        if leader is None:
            self.notes.append(f"FAIL: partition {partition} had no new leader in time")
        else:
            self.notes.append(
                f"partition {partition}: leader {self.victim} killed, broker {leader} led "
                f"after {time.monotonic() - killed:.1f} s"
            )

    def heal(self, h: Harness) -> None:
        c = _cluster(h)
        c.node(self.victim).restart()
        took = c.wait_whole(self.notes)
        if took is not None:
            self.notes.append(f"broker {self.victim} back in every ISR {took:.1f} s after start")


@dataclass
class BrokerPartitioned(Fault):
    """The leader of the busiest events partition cut off from clients and its peers: its
    proxy blackholes every byte for longer than ingest's produce timeout (its controller
    link stays, so it stays a live leader). Requests to it end in 503; the bytes held meanwhile
    (produce requests ingest gave up on, fetches) arrive on the heal, late, as a healed
    network delivers them; the followers then catch up.

    The ISR does not shrink: no write reaches the leader while it is cut off, so its
    followers never fall behind it.
    """

    name: str = "cluster-broker-partitioned"
    hold_s: float = 8.0
    victim: int = 0

    def inject(self, h: Harness) -> None:
        c = _cluster(h)
        partition, self.victim = c.busiest_events_partition()
        proxy = c.proxies[self.victim - 1]
        c.loop.loop.call_soon_threadsafe(proxy.set_mode, "blackhole", 0.0)
        self.notes.append(
            f"broker {self.victim} (leader of partition {partition}) blackholed {self.hold_s:.0f} s"
        )

    def heal(self, h: Harness) -> None:
        c = _cluster(h)
        proxy = c.proxies[self.victim - 1]
        c.loop.loop.call_soon_threadsafe(proxy.set_mode, "pass", 0.0)
        took = c.wait_whole(self.notes)
        if took is not None:
            self.notes.append(f"every replica in sync {took:.1f} s after the heal")


@dataclass
class TwoBrokersDown(Fault):
    """Two of three brokers SIGKILLed: with one broker left no record can reach two
    in-sync replicas (and the controller quorum is lost), so ingest must refuse with 503 —
    never a 202 — until a second broker is back; then 202s resume; then the third.

    Proved from both sides: ingest's own count of acknowledged events does not move while
    the two are down (after a short grace for requests whose records were replicated just
    before the kills), and probe events posted meanwhile are each answered 503.
    """

    name: str = "cluster-two-brokers-down"
    hold_s: float = 0.0  # the window is held inside inject, probing
    window_s: float = 10.0
    victims: tuple[int, ...] = ()

    def inject(self, h: Harness) -> None:
        c = _cluster(h)
        _, leader = c.busiest_events_partition()
        other = next(n for n in range(1, BROKERS + 1) if n != leader)
        self.victims = (leader, other)
        for victim in self.victims:
            c.node(victim).kill()
        pace(IN_FLIGHT_GRACE_S)
        before = c.accepted()
        statuses: list[int] = []
        window_ends = time.monotonic() + self.window_s
        n = 0
        while time.monotonic() < window_ends:
            n += 1
            statuses.append(c.probe(n))
        accepted = c.accepted() - before
        if accepted:
            self.notes.append(f"FAIL: {accepted:.0f} events acknowledged with one broker up")
        if not statuses or any(s != 503 for s in statuses):
            self.notes.append(f"FAIL: probes with one broker up answered {sorted(set(statuses))}")
        else:
            self.notes.append(
                f"brokers {self.victims} down {self.window_s:.0f} s: {len(statuses)} probes all"
                " 503, 0 events acknowledged"
            )

    def heal(self, h: Harness) -> None:
        c = _cluster(h)
        first, second = self.victims
        back = time.monotonic()
        c.node(first).restart()
        status, n = 0, 0
        while time.monotonic() - back < ACKS_RESUME_WITHIN_S:
            n += 1
            status = c.probe(1000 + n)
            if status == 202:
                break
            if status != 503:
                self.notes.append(f"FAIL: a probe while recovering was answered {status}")
        if status == 202:
            self.notes.append(
                f"broker {first} back: 202 again after {time.monotonic() - back:.1f} s"
            )
        else:
            self.notes.append(
                f"FAIL: no 202 within {ACKS_RESUME_WITHIN_S:.0f} s of a second broker"
            )
        c.node(second).restart()
        c.wait_whole(self.notes)


@dataclass
class EmptyDiskRestart(Fault):
    """A broker SIGKILLed and restarted with nothing on its disk (partition data and
    metadata log): it re-replicates every partition from the others, and its controller
    rejoins the quorum as a new voter (new directory id) in place of the old one."""

    name: str = "cluster-empty-disk-restart"
    hold_s: float = 3.0
    victim: int = 0

    def inject(self, h: Harness) -> None:
        c = _cluster(h)
        _, self.victim = c.busiest_events_partition()
        c.node(self.victim).kill()

    def heal(self, h: Harness) -> None:
        c = _cluster(h)
        assert c.cluster is not None
        old = c.cluster.voters[self.victim]
        started = time.monotonic()
        c.cluster.restart_empty(self.victim)
        if c.cluster.voters[self.victim] == old:
            self.notes.append("FAIL: the wiped controller kept its old directory id")
        took = c.wait_whole(self.notes)
        if took is not None:
            self.notes.append(
                f"broker {self.victim} wiped: voter replaced, every partition re-replicated"
                f" {time.monotonic() - started:.1f} s after the restart began"
            )


def cluster_faults(round_: int) -> list[Fault]:
    return [
        LeaderKill(),
        BrokerPartitioned(),
        TwoBrokersDown(),
        EmptyDiskRestart(),
    ]

"""The client through faults, against the real ingest and a real broker: the broker stopped
and restarted, ingest SIGKILLed and restarted, a rate limit hit, the client's own process
killed with events spooled while ingest was down.

Each proves the same thing: every event the client accepted is acknowledged by ingest and is
on the topic, and only those. Copies beyond the first can exist only where ingest answered
503 or the connection broke after Kafka had the record (ingest's contract: "may or may not
be stored"); they carry the same ``(source, event_id)`` and the same bytes, which is what
makes scoring count them once. So the checks are: the set of ids on the topic equals the
set accepted; every copy of an id is byte-identical; there are no more extra copies than
events the client sent again. The broker fault, where copies are likeliest, also runs
scoring over the result and checks Touchpulse's state with the fault harness's ledger
(tests/faults): nothing lost, nothing applied twice, health as recomputed.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from tests.client.conftest import (
    SOURCE,
    Ingest,
    IngestProcess,
    Results,
    ScoringProcess,
    ingest_settings,
    new_key,
    read_topic,
)
from tests.faults.check import check, drain
from tests.faults.ledger import Ledger
from touchpulse_client import ClientConfig, EventBuilder, NoMetrics, Spool, Status, TouchpulseClient
from touchpulse_shared.provision import provision
from touchpulse_shared.stack.kafka import LocalKafka
from touchpulse_shared.stack.procs import spawn, stop, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

#: A client tuned for tests: short linger, and retries capped at half a second so a
#: healed fault is noticed quickly.
FAST = ClientConfig(linger_s=0.01, max_batch_events=40, backoff_cap_s=0.5)
FAULT_S = 30.0


class Watch(NoMetrics):
    """The answers the client got, with when each request started."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.answers: list[tuple[float, float, int]] = []  # (started, answered, status)
        self.retried_events = 0
        self.reasons: set[str] = set()

    def on_batch_sent(self, *, events: int, size_bytes: int, status: int, seconds: float) -> None:
        now = time.monotonic()
        with self.lock:
            self.answers.append((now - seconds, now, status))

    def on_retry(self, *, events: int, attempt: int, delay_s: float, reason: str) -> None:
        with self.lock:
            self.retried_events += events
            self.reasons.add(reason)

    def seen(self, status: int) -> bool:
        with self.lock:
            return any(s == status for _, _, s in self.answers)

    def answered_after(self, moment: float, status: int) -> bool:
        with self.lock:
            return any(s == status and at > moment for _, at, s in self.answers)


class Sender:
    """Sends events at a steady pace on a thread of its own until stopped: the stream the
    faults hit in its middle."""

    def __init__(self, client: TouchpulseClient, builder: EventBuilder, per_s: float) -> None:
        self.client = client
        self.builder = builder
        self.per_s = per_s
        self.accepted: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        i = 0
        while not self._stop.wait(1 / self.per_s):
            event = self.builder.event(
                customer_id=f"F-{i % 31}", type="call.answered", measures={"wait_seconds": i}
            )
            self.client.send(event)
            self.accepted.append(event.event_id)
            i += 1

    def __enter__(self) -> Sender:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


async def assert_exactly_the_accepted(
    bootstrap: str, topic: str, accepted: set[str], resent: int
) -> None:
    on_topic = await read_topic(bootstrap, topic, SOURCE)
    assert on_topic.ids == accepted
    extra = on_topic.counts.total() - len(accepted)
    assert extra <= resent, (extra, resent)
    # Every copy of an event is the same bytes: a retry is the same event, not a new one.
    assert all(len(values) == 1 for values in on_topic.values.values())


async def test_broker_stopped_and_restarted_mid_stream(
    own_broker: LocalKafka, client_db: str, tmp_path: Path
) -> None:
    settings = ingest_settings(own_broker.bootstrap_servers, client_db, "events")
    await provision(settings)  # every topic scoring needs, on this broker
    process = IngestProcess(settings, tmp_path)
    process.start()
    results, watch = Results(), Watch()
    try:
        key = await new_key(client_db)
        builder = EventBuilder(SOURCE, touchpoint="call_centre")
        with TouchpulseClient(process.url, key, FAST, on_result=results, metrics=watch) as client:
            with Sender(client, builder, per_s=150) as sender:
                wait_until(lambda: watch.seen(202), timeout=FAULT_S, what="first deliveries")
                own_broker.stop(keep_workdir=True)
                wait_until(lambda: watch.seen(503), timeout=FAULT_S, what="a 503 from ingest")
                restarted = time.monotonic()
                own_broker.restart()
                wait_until(
                    lambda: watch.answered_after(restarted, 202),
                    timeout=FAULT_S * 2,
                    what="deliveries after the restart",
                )
            report = client.flush(timeout=FAULT_S * 2)
        accepted = set(sender.accepted)
        assert report.pending == 0
        assert report.rejected_count == 0
        assert results.ids(Status.ACCEPTED) == accepted
        assert not results.reported_twice
        assert "503" in watch.reasons
        await assert_exactly_the_accepted(
            own_broker.bootstrap_servers, "events", accepted, watch.retried_events
        )
        # And in Touchpulse's state, by the fault harness's own ledger: scoring applies
        # every accepted event once, copies or not (nothing lost, nothing twice, health as
        # recomputed from the stored outcomes).
        scoring = ScoringProcess(settings, tmp_path)
        scoring.start()
        try:
            missing, _ = await drain(client_db, SOURCE, accepted, within_s=FAULT_S)
            ledger = Ledger(acked=accepted)
            verdict = await check(client_db, SOURCE, ledger, None)
        finally:
            scoring.kill()
        assert missing == 0
        assert verdict == {"lost": 0, "rejected_present": 0, "twice": 0, "drift": 0}
    finally:
        process.kill()


async def test_ingest_killed_and_restarted_mid_stream(own_ingest: Ingest) -> None:
    ingest = own_ingest
    results, watch = Results(), Watch()
    builder = EventBuilder(SOURCE, touchpoint="call_centre")
    with TouchpulseClient(ingest.url, ingest.key, FAST, on_result=results, metrics=watch) as client:
        with Sender(client, builder, per_s=150) as sender:
            wait_until(lambda: watch.seen(202), timeout=FAULT_S, what="first deliveries")
            ingest.process.kill()
            wait_until(lambda: watch.seen(0), timeout=FAULT_S, what="a refused connection")
            restarted = time.monotonic()
            ingest.process.start()
            wait_until(
                lambda: watch.answered_after(restarted, 202),
                timeout=FAULT_S,
                what="deliveries after the restart",
            )
        report = client.flush(timeout=FAULT_S)
    accepted = set(sender.accepted)
    assert report.pending == 0
    assert results.ids(Status.ACCEPTED) == accepted
    assert "connection" in watch.reasons
    await assert_exactly_the_accepted(
        ingest.bootstrap, ingest.topic, accepted, watch.retried_events
    )


async def test_rate_limit_is_honoured_and_everything_arrives(
    kafka_bootstrap: str, client_db: str, topic: str, tmp_path: Path
) -> None:
    # 200 events a second with a burst of 100: 300 events need at least 1 s.
    settings = ingest_settings(
        kafka_bootstrap, client_db, topic, rate_limit_events_per_s=200, rate_limit_burst=100
    )
    process = IngestProcess(settings, tmp_path)
    process.start()
    try:
        key = await new_key(client_db)
        results, watch = Results(), Watch()
        builder = EventBuilder(SOURCE, touchpoint="survey")
        started = time.monotonic()
        config = ClientConfig(linger_s=0.01, max_batch_events=50, backoff_base_s=0.05)
        with TouchpulseClient(process.url, key, config, on_result=results, metrics=watch) as c:
            c.send_many(
                builder.event(customer_id=f"R-{i}", type="survey.answered", measures={"csat": 5})
                for i in range(300)
            )
            report = c.flush(timeout=FAULT_S)
        took = time.monotonic() - started
    finally:
        process.kill()
    assert report.delivered == 300
    assert took >= 0.95
    refusals = [at for _, at, status in watch.answers if status == 429]
    assert refusals, "the limit was hit"
    # Retry-After: 1 held back every request: none started within the second after a 429
    # (a client on its own backoff of 50 ms would have come back twenty times).
    for refused_at in refusals:
        too_soon = [
            begun for begun, _, _ in watch.answers if refused_at < begun < refused_at + 0.95
        ]
        assert not too_soon, (refused_at, too_soon)
    await assert_exactly_the_accepted(kafka_bootstrap, topic, results.ids(Status.ACCEPTED), 0)


async def test_spooled_events_survive_the_client_killed_while_ingest_is_down(
    kafka_bootstrap: str, client_db: str, topic: str, tmp_path: Path
) -> None:
    process = IngestProcess(ingest_settings(kafka_bootstrap, client_db, topic), tmp_path)
    key = await new_key(client_db)
    spool, ids_file = tmp_path / "spool", tmp_path / "ids"
    # Ingest is not running: the writer's events can only wait in its spool.
    writer = spawn(
        [
            sys.executable,
            "-m",
            "tests.client.spool_writer",
            process.url,
            key,
            str(spool),
            "300",
            str(ids_file),
        ],
        log_path=tmp_path / "writer.log",
    )
    try:
        wait_until(ids_file.exists, timeout=FAULT_S, what="the writer's events", proc=writer)
    finally:
        stop(writer, sig=9, timeout=10)
    assert writer.returncode == -9
    sent = set(ids_file.read_text().split())
    assert len(sent) == 300

    process.start()
    try:
        results = Results()
        config = ClientConfig(spool_dir=spool, linger_s=0.01)
        with TouchpulseClient(process.url, key, config, on_result=results) as client:
            report = client.flush(timeout=FAULT_S)
    finally:
        process.kill()
    assert report.delivered == 300
    assert report.spooled == 0
    assert results.ids(Status.ACCEPTED) == sent
    await assert_exactly_the_accepted(kafka_bootstrap, topic, sent, 0)
    # Acknowledged means gone: a third client finds nothing to send, and one small segment.
    reopened = Spool(spool)
    try:
        assert reopened.recovered() == []
        assert [p.stat().st_size for p in reopened.segment_files()] == [0]
    finally:
        reopened.close()

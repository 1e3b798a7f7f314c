"""The bounded queue and what close() reports, with Touchpulse out of reach (a port nobody
listens on): every event stays pending, so the queue fills."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.client.conftest import Results
from touchpulse_client import (
    AsyncTouchpulseClient,
    ClientClosed,
    ClientConfig,
    Event,
    EventBuilder,
    FullPolicy,
    NoMetrics,
    Outcome,
    QueueFull,
    Status,
    TouchpulseClient,
)
from touchpulse_shared.stack.procs import free_port

BUILDER = EventBuilder("queue-tests", touchpoint="web")


def _event(i: int) -> Event:
    return BUILDER.event(customer_id=f"C-{i}", type="page.viewed", measures={"load_seconds": 1})


@pytest.fixture
def nowhere() -> str:
    return f"http://127.0.0.1:{free_port()}"


class Drops(NoMetrics):
    def __init__(self) -> None:
        self.dropped: list[Outcome] = []
        self.depths: list[int] = []

    def on_drop(self, outcome: Outcome) -> None:
        self.dropped.append(outcome)


def test_drop_newest_reports_the_dropped_and_close_the_undelivered(nowhere: str) -> None:
    results, drops = Results(), Drops()
    config = ClientConfig(max_queue_events=3, full_policy=FullPolicy.DROP_NEWEST)
    client = TouchpulseClient(nowhere, "tpk_x", config, on_result=results, metrics=drops)
    events = [_event(i) for i in range(5)]
    futures = [client.send(e) for e in events]
    assert [f.result(0).status for f in futures[3:]] == [Status.DROPPED, Status.DROPPED]
    assert [o.event_id for o in drops.dropped] == [e.event_id for e in events[3:]]
    report = client.close(timeout=0.3)
    assert report.dropped_count == 2
    assert set(report.undelivered) == {e.event_id for e in events[:3]}
    assert not report.complete
    assert {f.result(0).status for f in futures[:3]} == {Status.UNDELIVERED}
    assert results.ids(Status.UNDELIVERED) == set(report.undelivered)
    with pytest.raises(ClientClosed):
        client.send(_event(9))


def test_raise_and_block_refuse_when_full(nowhere: str) -> None:
    config = ClientConfig(max_queue_events=2, full_policy=FullPolicy.RAISE)
    with TouchpulseClient(nowhere, "tpk_x", config) as client:
        client.send_many([_event(0), _event(1)])
        with pytest.raises(QueueFull):
            client.send(_event(2))
        assert client.pending == 2
        client.close(timeout=0)
    config = ClientConfig(max_queue_events=1, block_timeout_s=0.3)
    with TouchpulseClient(nowhere, "tpk_x", config) as client:
        client.send(_event(0))
        started = time.monotonic()
        with pytest.raises(QueueFull):
            client.send(_event(1))
        assert 0.25 < time.monotonic() - started < 3
        client.close(timeout=0)


async def test_the_async_client_waits_for_room_without_blocking_its_loop(nowhere: str) -> None:
    config = ClientConfig(max_queue_events=1, block_timeout_s=0.3)
    async with AsyncTouchpulseClient(nowhere, "tpk_x", config) as client:
        await client.send(_event(0))
        with pytest.raises(QueueFull):
            await client.send(_event(1))
        report = await client.close(timeout=0)
    assert report.pending == 0
    assert len(report.undelivered) == 1


def test_an_event_past_give_up_after_expires(nowhere: str) -> None:
    drops = Drops()
    config = ClientConfig(give_up_after_s=0.3, linger_s=0, backoff_cap_s=0.2)
    with TouchpulseClient(nowhere, "tpk_x", config, metrics=drops) as client:
        future = client.send(_event(0))
        assert future.result(timeout=10).status is Status.EXPIRED
        report = client.flush(timeout=5)
    assert report.dropped_count == 1
    assert [o.status for o in drops.dropped] == [Status.EXPIRED]


def test_closing_with_a_spool_keeps_what_was_not_delivered(nowhere: str, tmp_path: Path) -> None:
    config = ClientConfig(spool_dir=tmp_path / "spool")
    client = TouchpulseClient(nowhere, "tpk_x", config)
    futures = client.send_many([_event(i) for i in range(4)])
    report = client.close(timeout=0.2)
    assert report.spooled == 4
    assert report.undelivered == ()
    assert {f.result(0).status for f in futures} == {Status.SPOOLED}
    # The next client on the spool starts with them: pending before anything is sent.
    again = TouchpulseClient(nowhere, "tpk_x", config)
    assert again.pending == 4
    assert again.close(timeout=0).spooled == 4

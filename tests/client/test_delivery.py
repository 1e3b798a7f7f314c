"""The client against the real ingest when nothing goes wrong: every event gets its own
result, good ones are on the topic once, refused ones are reported with ingest's reasons
and never retried."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.client.conftest import Ingest, Results, read_topic
from touchpulse_client import (
    AsyncTouchpulseClient,
    ClientConfig,
    EventBuilder,
    NoMetrics,
    Status,
    TouchpulseClient,
)

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


class Sent(NoMetrics):
    def __init__(self) -> None:
        self.requests: list[int] = []

    def on_batch_sent(self, *, events: int, size_bytes: int, status: int, seconds: float) -> None:
        self.requests.append(status)


async def test_each_event_gets_its_result_and_lands_once(ingest: Ingest) -> None:
    results, metrics = Results(), Sent()
    builder = EventBuilder(ingest.source)
    config = ClientConfig(max_batch_events=40, linger_s=0.02)
    good, bad = [], []
    with TouchpulseClient(
        ingest.url, ingest.key, config, on_result=results, metrics=metrics
    ) as client:
        futures = []
        for i in range(200):
            make = builder.cloudevent if i % 3 == 0 else builder.event
            event = make(
                customer_id=f"C-{i % 17}",
                touchpoint="call_centre",
                type="call.answered",
                measures={"wait_seconds": 30 + i},
            )
            good.append(event.event_id)
            futures.append(client.send(event))
            if i % 50 == 0:
                # Refused by the promise catalogue (a boolean where a number is judged) and
                # by the clock: rejected with ingest's reasons, never retried.
                wrong = builder.event(
                    customer_id="C-x",
                    touchpoint="call_centre",
                    type="call.answered",
                    measures={"wait_seconds": True},
                )
                late = builder.event(
                    customer_id="C-y",
                    touchpoint="billing",
                    type="invoice.issued",
                    occurred_at=datetime.now(UTC) + timedelta(days=3),
                )
                bad += [wrong.event_id, late.event_id]
                futures += [client.send(wrong), client.send(late)]
        # The same event again while the first copy is pending: sent once.
        duplicate = client.send(
            builder.event(
                customer_id="C-0",
                touchpoint="call_centre",
                type="call.answered",
                measures={"wait_seconds": 1},
                event_id=good[-1],
            )
        )
        report = client.flush(timeout=30)
    assert duplicate.result().status is Status.DUPLICATE
    assert report.delivered == len(good)
    assert report.rejected_count == len(bad)
    assert report.duplicates == 1
    assert report.pending == 0
    assert {f.result().status for f in futures} == {Status.ACCEPTED, Status.REJECTED}
    assert results.ids(Status.ACCEPTED) == set(good)
    assert results.ids(Status.REJECTED) == set(bad)
    reasons = {o.event_id: o for o in report.rejected}
    wrong_errors = reasons[bad[0]].problem
    assert wrong_errors is not None
    assert wrong_errors["errors"][0]["code"] == "wrong_measure_kind"
    assert reasons[bad[0]].http_status == 422
    late_errors = reasons[bad[1]].problem
    assert late_errors is not None
    assert late_errors["errors"][0]["code"] == "time_window"
    # Batched, and nothing was sent twice: one request per batch, every one a 202.
    assert set(metrics.requests) == {202}
    assert len(metrics.requests) < len(good) / 10
    on_topic = await read_topic(ingest.bootstrap, ingest.topic, ingest.source)
    assert on_topic.ids == set(good)
    assert max(on_topic.counts.values()) == 1


async def test_the_async_client_delivers_and_reports(ingest: Ingest) -> None:
    results = Results()
    builder = EventBuilder(ingest.source, touchpoint="survey")
    async with AsyncTouchpulseClient(
        ingest.url, ingest.key, ClientConfig(linger_s=0.01), on_result=results
    ) as client:
        futures = await client.send_many(
            builder.cloudevent(customer_id=f"S-{i}", type="survey.answered", measures={"csat": 4})
            for i in range(120)
        )
        outcomes = [await f for f in futures]
        report = await client.close(timeout=30)
    assert {o.status for o in outcomes} == {Status.ACCEPTED}
    assert report.delivered == 120
    assert report.complete
    on_topic = await read_topic(ingest.bootstrap, ingest.topic, ingest.source)
    assert on_topic.ids == {o.event_id for o in outcomes}


async def test_too_large_is_split_or_refused_and_an_unknown_key_refused(
    ingest: Ingest,
) -> None:
    metrics = Sent()
    builder = EventBuilder(ingest.source, touchpoint="delivery")
    # About 4.5 kB each: 40 of them are far over ingest's 64 KiB here.
    wordy = {f"note_{i}": "x" * 200 for i in range(20)}
    events = [
        builder.event(customer_id=f"D-{i}", type="delivery.completed", attributes=wordy)
        for i in range(40)
    ]
    huge = builder.event(
        customer_id="D-x", type="delivery.completed", attributes={"a": "y" * 70_000}
    )
    config = ClientConfig(max_batch_events=40, max_batch_bytes=5_000_000, linger_s=0.05)
    with TouchpulseClient(ingest.url, ingest.key, config, metrics=metrics) as client:
        futures = client.send_many(events)
        refused = client.send(huge)
        report = client.flush(timeout=30)
    assert report.delivered == 40
    assert {f.result().status for f in futures} == {Status.ACCEPTED}
    assert 413 in metrics.requests
    outcome = refused.result()
    assert (outcome.status, outcome.http_status) == (Status.REJECTED, 413)
    on_topic = await read_topic(ingest.bootstrap, ingest.topic, ingest.source)
    assert on_topic.ids == {e.event_id for e in events}

    # A key ingest does not know: every event refused with the answer's problem, at once.
    with TouchpulseClient(ingest.url, "tpk_nope_nope", ClientConfig(linger_s=0)) as client:
        unknown_key = client.send(builder.event(customer_id="D-1", type="delivery.completed"))
        outcome = unknown_key.result(timeout=30)
    assert (outcome.status, outcome.http_status) == (Status.REJECTED, 401)
    assert outcome.problem is not None
    assert outcome.problem["status"] == 401

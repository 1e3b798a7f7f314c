"""The client's parts on their own: backoff, Retry-After, the event builder (checked against
the contract's own parser) and the spool's files."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from touchpulse_client import (
    Backoff,
    EventBuilder,
    EventFormat,
    Spool,
    SpoolError,
    build_event,
    parse_retry_after,
)
from touchpulse_client.spool import _FRAME
from touchpulse_shared.contract import parse_event_json, parse_structured

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_backoff_is_full_jitter_under_a_doubling_capped_bound() -> None:
    backoff = Backoff(base_s=0.1, cap_s=2.0, rng=random.Random(7))
    assert [backoff.bound(n) for n in range(1, 8)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    assert backoff.bound(10_000) == 2.0  # a long outage neither overflows nor grows
    draws = [backoff.delay(4) for _ in range(2000)]
    assert 0 <= min(draws) < 0.05
    assert 0.75 < max(draws) <= 0.8
    # Spread, not in step: a quarter of the draws in each quarter of the range, roughly.
    assert 400 < sum(d < 0.2 for d in draws) < 600


def test_retry_after_is_a_floor_on_the_backoff() -> None:
    backoff = Backoff(base_s=0.1, cap_s=2.0, rng=random.Random(1))
    assert all(backoff.delay(1, retry_after_s=5.0) == 5.0 for _ in range(50))
    assert all(backoff.delay(9, retry_after_s=0.0) <= 2.0 for _ in range(50))


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("5", 5.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        (format_datetime(NOW + timedelta(seconds=30), usegmt=True), 30.0),
        ("Sun, 01 Mar 2026 12:00:45 GMT", 45.0),
        (format_datetime(NOW - timedelta(hours=1), usegmt=True), 0.0),  # past: no wait
        ("Sunday, 01-Mar-26 12:00:10 GMT", 10.0),  # RFC 850, still allowed to arrive
        (None, None),
        ("", None),
        ("soon", None),
        ("-3", None),
        ("1.5", None),
    ],
)
def test_retry_after_in_seconds_or_an_http_date(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == seconds


def test_native_events_meet_the_contract_and_keep_their_id() -> None:
    builder = EventBuilder("billing-prod", touchpoint="billing")
    event = builder.event(
        customer_id="C-1",
        type="invoice.issued",
        occurred_at=datetime(2026, 3, 1, 13, 0, tzinfo=UTC),
        journey_id="order-9",
        measures={"invoice_correct": False, "days_after_delivery": 3},
        attributes={"invoice": "INV-1", "note": "naïve <script>", "amount": 12.5, "x": None},
    )
    parsed = parse_event_json(event.body)
    assert parsed.event_id == event.event_id
    assert parsed.identity == event.identity == ("billing-prod", event.event_id)
    assert parsed.measures == {"invoice_correct": False, "days_after_delivery": 3.0}
    assert parsed.attributes["note"] == "naïve <script>"
    assert parsed.journey_id == "order-9"
    # The id is the event's: two builds are two events; the same build is one.
    assert builder.event(customer_id="C-1", type="invoice.issued").event_id != event.event_id
    assert len({event.event_id for _ in range(3)}) == 1


def test_cloudevents_meet_the_contract() -> None:
    event = EventBuilder("/surveys/nps").cloudevent(
        customer_id="kunde-ø1", touchpoint="survey", type="survey.answered", measures={"csat": 2}
    )
    assert event.format is EventFormat.CLOUDEVENT
    parsed = parse_structured(event.body)
    assert (parsed.source, parsed.event_id, parsed.customer_id) == (
        "/surveys/nps",
        event.event_id,
        "kunde-ø1",
    )
    assert parsed.measures == {"csat": 2.0}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"occurred_at": datetime(2026, 3, 1, 12, 0)}, "time zone"),  # noqa: DTZ001 - the point
        ({"measures": {"wait": float("nan")}}, "finite"),
        ({"measures": {"wait": "45"}}, "finite"),
        ({"attributes": {"a": float("inf")}}, "finite"),
        ({"attributes": {"a": [1]}}, "text, a number"),
        ({"customer_id": "C-\ud800"}, "not valid Unicode"),
    ],
)
def test_what_cannot_be_sent_is_refused_when_built(fields: dict[str, object], message: str) -> None:
    base: dict[str, object] = {
        "source": "s",
        "customer_id": "C-1",
        "touchpoint": "web",
        "type": "page.viewed",
    }
    with pytest.raises(ValueError, match=message):
        build_event(**{**base, **fields})  # type: ignore[arg-type]


def _events(n: int, prefix: str = "e") -> list:  # type: ignore[type-arg]
    builder = EventBuilder("s", touchpoint="web")
    return [
        builder.event(customer_id="C", type="page.viewed", event_id=f"{prefix}-{i}")
        for i in range(n)
    ]


def test_the_spool_gives_back_what_was_not_acknowledged(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    events = _events(5)
    seqs = spool.append(events)
    spool.ack([seqs[0], seqs[3]])
    spool.close()
    reopened = Spool(tmp_path)
    recovered = reopened.recovered()
    assert [s.event.event_id for s in recovered] == ["e-1", "e-2", "e-4"]
    assert [s.event for s in recovered] == [events[1], events[2], events[4]]
    # Opening compacted it: one segment, holding only the three.
    assert len(reopened.segment_files()) == 1
    reopened.close()


def test_a_torn_write_at_the_tail_is_ignored(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(_events(3))
    spool.close()
    (segment,) = sorted(tmp_path.glob("*.spool"))
    data = segment.read_bytes()
    # A crash in the middle of the third record's write: its frame is there, its end is not.
    length, _ = _FRAME.unpack_from(data, 0)
    first = _FRAME.size + length
    second = first + _FRAME.size + _FRAME.unpack_from(data, first)[0]
    segment.write_bytes(data[: second + 20])
    reopened = Spool(tmp_path)
    assert [s.event.event_id for s in reopened.recovered()] == ["e-0", "e-1"]
    reopened.close()


def test_acknowledged_segments_are_deleted_oldest_first(tmp_path: Path) -> None:
    # Tiny segments: every append after the first rolls to a new file.
    spool = Spool(tmp_path, segment_bytes=64)
    first = spool.append(_events(2, "a"))
    second = spool.append(_events(2, "b"))
    third = spool.append(_events(2, "c"))
    assert len(spool.segment_files()) == 3
    # The middle segment fully acknowledged is kept: the oldest still holds a pending event
    # (and deleting a newer segment first could drop acks of older events).
    spool.ack(second)
    assert len(spool.segment_files()) == 3
    spool.ack(first)
    assert len(spool.segment_files()) == 1  # the first two go, in order
    assert [s.event.event_id for s in spool] == ["c-0", "c-1"]
    spool.ack(third)
    assert spool.pending_count == 0
    spool.close()
    reopened = Spool(tmp_path)
    assert reopened.recovered() == []
    reopened.close()


def test_a_long_pending_event_is_copied_forward_so_old_segments_go(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=64)
    (stuck, done) = spool.append(_events(2, "old"))
    spool.ack([done])
    for round_ in range(8):
        spool.ack(spool.append(_events(2, f"r{round_}")))
    # Not one file per round: the stuck event was copied forward, the rest reclaimed.
    assert len(spool.segment_files()) <= 5
    assert [s.event.event_id for s in spool] == ["old-0"]
    spool.close()
    reopened = Spool(tmp_path)
    assert [s.seq for s in reopened.recovered()] == [stuck]
    reopened.close()


def test_one_client_per_spool(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    with pytest.raises(SpoolError, match="in use"):
        Spool(tmp_path)
    spool.close()
    Spool(tmp_path).close()  # free again once closed (or its process died)

"""Poison written straight onto the events topic by a foreign producer while good events
flow: every poison record reaches the dead-letter topic with its reason, every good event is
applied, and the consumer keeps going. tests/scoring/pipeline/test_pipeline.py covers not
JSON, a missing producer header, an unknown touchpoint and a wrong measure kind; these are
the other shapes."""

from __future__ import annotations

import asyncio
import contextlib
import random
from datetime import timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError

from tests.scoring.pipeline.conftest import (  # the fixture is re-used here by name
    SETTLE_S,
    Pipeline,
    pipeline,  # noqa: F401
    pipeline_settings,  # noqa: F401
    running_scoring,
)
from tests.scoring.pipeline.ledger import START, make_event
from touchpulse_shared.contract import encode_record

Headers = list[tuple[str, bytes]]


def _poison(valid: Any) -> list[tuple[str, bytes | None, bytes | None, Headers, str]]:
    """(name, key, value, headers, expected dead-letter reason)."""
    headers: Headers = list(valid.headers)

    def swap(name: str, value: bytes) -> Headers:
        return [(n, value if n == name else v) for n, v in headers]

    k, v, h = valid.key, valid.value, headers
    return [
        ("a JSON array", k, b"[1, 2, 3]", h, "invalid_event"),
        ("JSON of another shape", k, b'{"hello": "world"}', h, "invalid_event"),
        ("a JSON string", k, b'"event"', h, "invalid_event"),
        ("an unknown schema", k, v, swap("touchpulse-schema", b"v9"), "unknown_schema"),
        ("an unknown content type", k, v, swap("content-type", b"text/plain"), "unknown_schema"),
        ("a garbage received-at", k, v, swap("touchpulse-received-at", b"x"), "bad_header"),
        ("a ce_id that disagrees", k, v, swap("ce_id", b"someone-else"), "bad_header"),
        ("a producer not in UTF-8", k, v, swap("touchpulse-producer", b"\xff"), "foreign_producer"),
        ("a null value (a tombstone)", k, None, h, "missing_value"),
        ("no key", None, v, h, "key_mismatch"),
        ("another customer's key", b"someone-else", v, h, "key_mismatch"),
        ("NaN in the value", k, v.replace(b"}", b',"x":NaN}', 1), h, "not_json"),
        # Header bytes a foreign producer may send: the dead letter keeps them as they are.
        ("a NUL byte in a header value", k, b"\x00", [*h, ("x-trace", b"a\x00b")], "not_json"),
        ("a NUL in a header name", k, b"{", [*h, ("x\x00y", b"v")], "not_json"),
        ("invalid UTF-8 in a header value", k, b"{", [*h, ("x-b", b"\xc3\x28")], "not_json"),
    ]


async def _largest(producer: AIOKafkaProducer, topic: str, key: bytes, headers: Headers) -> Any:
    """The largest record (not JSON) the topic accepts: its dead letter, a little larger
    with the added headers, is what could overflow the dead-letter topic."""
    for size in range(1_048_576, 900_000, -256):
        try:
            return await (await producer.send(topic, b"x" * size, key=key, headers=headers))
        except MessageSizeTooLargeError:
            continue
    raise AssertionError("no large record was accepted")


async def test_every_poison_record_is_dead_lettered_and_good_events_keep_flowing(
    pipeline: Pipeline,  # noqa: F811
) -> None:
    settings = pipeline.settings
    rng = random.Random(11)
    good = [
        make_event(n, f"Q-{n % 4}", START + timedelta(minutes=n), "call", rng) for n in range(24)
    ]
    valid = encode_record(good[0], producer="ingest", received_at=START)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        poison = _poison(valid)
        expected: dict[tuple[int, int], tuple[str, str]] = {}
        async with running_scoring(settings) as service:
            await pipeline.produce(good[:12])
            for name, key, value, headers, reason in poison:
                sent = await (
                    await producer.send(settings.events_topic, value, key=key, headers=headers)
                )
                expected[(sent.partition, sent.offset)] = (name, reason)
            await pipeline.produce(good[12:])
            await pipeline.wait_for("SELECT count(*) FROM processed_event", len(good))
            dead = await _dead_letters(
                settings.dead_letter_topic, settings.kafka_bootstrap_servers or "", len(expected)
            )
            assert not service_stopped(service), "the consumer stopped"
            # Still consuming: one more good event after all of it is applied.
            await pipeline.produce([make_event(99, "Q-late", START, "call", rng)])
            await pipeline.wait_for("SELECT count(*) FROM processed_event", len(good) + 1)
    finally:
        await producer.stop()

    got = dead
    want = {where: reason for where, (_, reason) in expected.items()}
    missing = [expected[w][0] for w in want if w not in got]
    assert missing == [], f"never dead-lettered: {missing}"
    wrong = [(expected[w][0], got[w], r) for w, r in want.items() if got[w] != r]
    assert wrong == [], wrong
    scored = await pipeline.fetch("SELECT DISTINCT customer_id FROM journey_health ORDER BY 1")
    assert [r["customer_id"] for r in scored] == ["Q-0", "Q-1", "Q-2", "Q-3", "Q-late"]


def service_stopped(service: Any) -> bool:
    return bool(service.stopping.is_set())


async def _dead_letters(
    topic: str, bootstrap: str, count: int, *, within_s: float = SETTLE_S
) -> dict[tuple[int, int], str]:
    """The dead letters' reasons, by the (partition, offset) of the original record."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    found: dict[tuple[int, int], str] = {}
    try:
        # What arrived within the bound is returned: the caller names what is missing.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within_s):
                while len(found) < count:
                    for batch in (await consumer.getmany(timeout_ms=300)).values():
                        for record in batch:
                            headers = dict(record.headers)
                            where = (
                                int(headers["touchpulse-dlq-partition"]),
                                int(headers["touchpulse-dlq-offset"]),
                            )
                            found[where] = headers["touchpulse-dlq-reason"].decode()
    finally:
        await consumer.stop()
    return found


async def test_the_largest_record_the_topic_takes_is_dead_lettered(
    pipeline: Pipeline,  # noqa: F811
) -> None:
    settings = pipeline.settings
    rng = random.Random(12)
    valid = encode_record(make_event(0, "H-0", START, "call", rng), producer="x", received_at=START)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    await producer.start()
    try:
        async with running_scoring(settings):
            huge = await _largest(producer, settings.events_topic, valid.key, valid.headers)
            await pipeline.produce([make_event(1, "H-1", START, "call", rng)])
            await pipeline.wait_for("SELECT count(*) FROM processed_event", 1)
            dead = await _dead_letters(
                settings.dead_letter_topic, settings.kafka_bootstrap_servers or "", 1, within_s=60
            )
    finally:
        await producer.stop()
    assert dead == {(huge.partition, huge.offset): "not_json"}

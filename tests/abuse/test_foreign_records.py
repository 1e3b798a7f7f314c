"""Records any ordinary Kafka producer writes: applied or dead-lettered, never a crash.

- Kafka's own Java client (the jars ``touchpulse stack fetch`` caches, run as a single-file
  Java program) writes valid events in every codec Kafka supports — gzip, snappy, lz4 and
  zstd — and scoring applies all of them (before aiokafka's codec libraries were installed,
  the first lz4 batch stopped the consumer with ``UnsupportedCodecError``).
- Header values that are not UTF-8 are only bytes: an event with one beside its own headers is
  applied, a receipt time that is not UTF-8 is a dead letter (``bad_header``).
- A header *name* that is not UTF-8 (Java cannot write one; librdkafka and hand-built batches
  can) made aiokafka raise ``UnicodeDecodeError`` out of every fetch of its partition: it is
  a dead letter (``bad_header``) now, its name escaped in the dead letter, and the events
  behind it in the same partition are applied.
"""

from __future__ import annotations

import asyncio
import base64
import random
import shutil
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from aiokafka.record.util import calc_crc32c

from tests.abuse.test_poison import _dead_letters, service_stopped
from tests.scoring.pipeline.conftest import (  # the fixture is re-used here by name
    SETTLE_S,
    Pipeline,
    pipeline,  # noqa: F401
    pipeline_settings,  # noqa: F401
    running_scoring,
)
from tests.scoring.pipeline.ledger import make_event
from touchpulse_shared.contract import ExperienceEventV1, KafkaRecord, encode_record
from touchpulse_shared.kafka.records import read_batch_leniently
from touchpulse_shared.stack.kafka import kafka_libs

JAVA_PRODUCER = Path(__file__).parent / "java" / "ForeignProducer.java"
CODECS = ("gzip", "snappy", "lz4", "zstd")
Headers = list[tuple[str, bytes]]


def _line(codec: str, key: bytes, value: bytes, headers: Headers) -> str:
    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    fields = [codec, b64(key), b64(value), *(f"{b64(n.encode())}:{b64(v)}" for n, v in headers)]
    return "\t".join(fields)


async def _java_produce(bootstrap: str, topic: str, lines: list[str], libs: Path) -> list[str]:
    java = shutil.which("java")
    assert java is not None, "the JDK's java is needed (make setup's prerequisites)"
    proc = await asyncio.create_subprocess_exec(
        java,
        "-Xmx128m",
        "-cp",
        f"{libs}/*",
        str(JAVA_PRODUCER),
        bootstrap,
        topic,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(180):
        out, err = await proc.communicate(("\n".join(lines) + "\n").encode())
    assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
    return [line for line in out.decode().splitlines() if line.startswith("sent ")]


def _now_events(prefix: str, customers: int, count: int, seed: int) -> list[ExperienceEventV1]:
    rng = random.Random(seed)
    base = datetime.now(UTC) - timedelta(hours=2)
    return [
        make_event(
            n, f"{prefix}-{n % customers}", base + timedelta(minutes=n), "call", rng
        ).model_copy(update={"event_id": f"{prefix}-e-{n}"})
        for n in range(count)
    ]


async def test_a_java_producer_in_every_codec_is_applied(pipeline: Pipeline) -> None:  # noqa: F811
    settings = pipeline.settings
    libs = kafka_libs(settings.cache_dir, settings.kafka_version)
    lines: list[str] = []
    applied: list[ExperienceEventV1] = []
    for index, codec in enumerate(CODECS):
        events = _now_events(f"J{codec}", 2, 4, seed=index)
        applied.extend(events)
        for event in events:
            # Another producer (not ingest): its window is anchored on the record timestamp.
            record = encode_record(event, producer="java-backfill", received_at=datetime.now(UTC))
            lines.append(_line(codec, record.key, record.value, record.headers))
    # Header values that are not UTF-8: bytes beside the event's own headers are ignored; a
    # receipt time that is not UTF-8 cannot be read.
    extra, unreadable = _now_events("Jbytes", 1, 2, seed=9)
    applied.append(extra)
    record = encode_record(extra, producer="java-backfill", received_at=datetime.now(UTC))
    lines.append(_line("lz4", record.key, record.value, [*record.headers, ("x-b", b"\xff\xfe")]))
    record = encode_record(unreadable, producer="java-backfill", received_at=datetime.now(UTC))
    broken = [(n, b"\xff2026" if n == "touchpulse-received-at" else v) for n, v in record.headers]
    lines.append(_line("zstd", record.key, record.value, broken))

    async with running_scoring(settings) as service:
        sent = await _java_produce(
            settings.kafka_bootstrap_servers or "", settings.events_topic, lines, libs
        )
        assert sorted({line.split()[1] for line in sent}) == sorted(CODECS)
        assert len(sent) == len(lines)
        await pipeline.wait_for("SELECT count(*) FROM processed_event", len(applied))
        dead = await _dead_letters(
            settings.dead_letter_topic, settings.kafka_bootstrap_servers or "", 1
        )
        assert not service_stopped(service), "the consumer stopped"

    processed = await pipeline.fetch("SELECT event_id FROM processed_event ORDER BY 1")
    assert [r["event_id"] for r in processed] == sorted(e.event_id for e in applied)
    assert list(dead.values()) == ["bad_header"]
    scored = await pipeline.fetch("SELECT customer_id FROM journey_health ORDER BY 1")
    assert [r["customer_id"] for r in scored] == sorted({e.customer_id for e in applied})


PLACEHOLDER = "x-bad-name"
UNDECODABLE = b"x-\xff\xfe\xc3(lder"  # as long as the placeholder, not UTF-8


async def _send_undecodable_name(
    producer: AIOKafkaProducer, topic: str, partition: int, record: KafkaRecord
) -> tuple[int, int]:
    """A record whose header name is not UTF-8: built by aiokafka with a placeholder name,
    whose bytes are then replaced (and the batch's CRC-32C recomputed)."""
    assert len(UNDECODABLE) == len(PLACEHOLDER)
    batch = producer.create_batch()
    assert batch.append(
        key=record.key,
        value=record.value,
        timestamp=None,
        headers=[*record.headers, (PLACEHOLDER, b"v")],
    )
    buffer = batch._build()
    at = bytes(buffer).index(PLACEHOLDER.encode())
    buffer[at : at + len(UNDECODABLE)] = UNDECODABLE
    struct.pack_into(">I", buffer, 17, calc_crc32c(bytes(buffer[21:])))
    meta = await (await producer.send_batch(batch, topic, partition=partition))
    return meta.partition, meta.offset


async def test_a_header_name_that_is_not_utf8_is_a_dead_letter_not_a_crash(
    pipeline: Pipeline,  # noqa: F811
) -> None:
    settings = pipeline.settings
    before, poisoned, after = (
        _now_events("Hb", 1, 3, seed=1),
        _now_events("Hp", 1, 1, seed=2)[0],
        _now_events("Ha", 1, 3, seed=3),
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    await producer.start()
    try:
        async with running_scoring(settings) as service:
            partition = 0
            for event in before:
                record = encode_record(event, producer="ingest", received_at=datetime.now(UTC))
                await (
                    await producer.send(
                        settings.events_topic,
                        record.value,
                        key=record.key,
                        headers=record.headers,
                        partition=partition,
                    )
                )
            record = encode_record(poisoned, producer="ingest", received_at=datetime.now(UTC))
            where = await _send_undecodable_name(producer, settings.events_topic, partition, record)
            for event in after:  # behind it in the same partition
                record = encode_record(event, producer="ingest", received_at=datetime.now(UTC))
                await (
                    await producer.send(
                        settings.events_topic,
                        record.value,
                        key=record.key,
                        headers=record.headers,
                        partition=partition,
                    )
                )
            await pipeline.wait_for("SELECT count(*) FROM processed_event", len(before + after))
            dead = await _dead_letters(
                settings.dead_letter_topic, settings.kafka_bootstrap_servers or "", 1
            )
            assert not service_stopped(service), "the consumer stopped"
    finally:
        await producer.stop()
    assert dead == {where: "bad_header"}
    names = await _dead_letter_header_names(pipeline)
    # The dead letter keeps the header, its undecodable bytes escaped; the event is intact.
    assert "x-\\xff\\xfe\\xc3(lder" in names
    processed = await pipeline.fetch("SELECT event_id FROM processed_event ORDER BY 1")
    assert [r["event_id"] for r in processed] == sorted(e.event_id for e in before + after)


async def _dead_letter_header_names(run: Pipeline) -> list[str]:
    consumer = AIOKafkaConsumer(
        run.settings.dead_letter_topic,
        bootstrap_servers=run.settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        async with asyncio.timeout(SETTLE_S):
            while True:
                for batch in (await consumer.getmany(timeout_ms=300)).values():
                    for record in batch:
                        return [name for name, _ in record.headers]
    finally:
        await consumer.stop()


@pytest.mark.parametrize("codec", [0, 1, 2, 3, 4])  # none, gzip, snappy, lz4, zstd
def test_the_lenient_reader_reads_what_aiokafka_reads(codec: int) -> None:
    builder = DefaultRecordBatchBuilder(2, codec, 0, -1, -1, 0, batch_size=1 << 20)
    for n in range(5):
        builder.append(
            n,
            timestamp=1_700_000_000_000 + n,
            key=None if n == 2 else f"k{n}".encode(),
            value=None if n == 3 else b"v" * n,
            headers=[("a", b"1"), ("b", None)] if n % 2 else [],
        )
    raw = bytes(builder.build())
    expected = [
        (r.offset, r.timestamp, r.key, r.value, list(r.headers)) for r in DefaultRecordBatch(raw)
    ]
    got = [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in read_batch_leniently(raw)]
    assert got == expected


def test_the_lenient_reader_keeps_an_undecodable_name_as_surrogates() -> None:
    builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, 0, batch_size=1 << 20)
    builder.append(0, timestamp=1, key=b"k", value=b"v", headers=[(PLACEHOLDER, b"x")])
    raw = bytearray(builder.build())
    at = bytes(raw).index(PLACEHOLDER.encode())
    raw[at : at + len(UNDECODABLE)] = UNDECODABLE
    (record,) = read_batch_leniently(bytes(raw))
    ((name, value),) = record.headers
    assert name.encode("utf-8", "surrogateescape") == UNDECODABLE
    assert value == b"x"

"""Fetched record batches that never fail on a header name that is not UTF-8.

Kafka's record format allows any bytes in a header name (the Java client writes UTF-8, but
librdkafka, kcat and hand-built batches need not), while aiokafka decodes each name strictly
as UTF-8 while it iterates a fetched batch. One such record raises ``UnicodeDecodeError``
out of ``getmany`` on every fetch: the consumer can neither read the record nor anything
behind it in its partition.

:func:`install` puts a drop-in for the fetcher's ``MemoryRecords`` in place. Every batch is
still read by aiokafka's own (compiled) reader; only when that reader fails on a header name
is the batch read again here, with the Kafka v2 batch layout, keeping undecodable name bytes
as lone surrogates (``errors="surrogateescape"``). The record then reaches the consumer like
any other, and ``decode_record`` turns it into a dead letter (``bad_header``) instead of a
crash. The fast path costs one slice per batch.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiokafka.consumer.fetcher as _fetcher
from aiokafka.codec import gzip_decode, lz4_decode, snappy_decode, zstd_decode
from aiokafka.errors import CorruptRecordException
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import decode_varint

# The v2 record batch header (KIP-98): offsets of the fields read here.
_LENGTH_OFFSET = 8
_LOG_OVERHEAD = 12
_MAGIC_OFFSET = 16
_ATTRIBUTES = struct.Struct(">h")
_ATTRIBUTES_OFFSET = 21
_BASE_TIMESTAMP = struct.Struct(">q")
_BASE_TIMESTAMP_OFFSET = 27
_MAX_TIMESTAMP_OFFSET = 35
_RECORDS_OFFSET = 61
_CODEC_MASK = 0x07
_TIMESTAMP_TYPE_MASK = 0x08
_CODECS = {1: gzip_decode, 2: snappy_decode, 3: lz4_decode, 4: zstd_decode}


@dataclass(frozen=True, slots=True)
class LenientRecord:
    """One record of a batch read here: what the fetcher's ``_consumer_record`` reads."""

    offset: int
    timestamp: int
    timestamp_type: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    checksum: None = None


def read_batch_leniently(batch: bytes) -> list[LenientRecord]:
    """The records of one v2 record batch, header names decoded with ``surrogateescape``."""
    base_offset = struct.unpack_from(">q", batch, 0)[0]
    (attributes,) = _ATTRIBUTES.unpack_from(batch, _ATTRIBUTES_OFFSET)
    (base_timestamp,) = _BASE_TIMESTAMP.unpack_from(batch, _BASE_TIMESTAMP_OFFSET)
    (max_timestamp,) = _BASE_TIMESTAMP.unpack_from(batch, _MAX_TIMESTAMP_OFFSET)
    log_append_time = bool(attributes & _TIMESTAMP_TYPE_MASK)
    codec = attributes & _CODEC_MASK
    body = memoryview(batch)[_RECORDS_OFFSET:]
    if codec:
        if codec not in _CODECS:
            raise CorruptRecordException(f"unknown compression codec {codec}")
        data = bytearray(_CODECS[codec](body.tobytes()))
    else:
        data = bytearray(body)
    records = []
    pos = 0
    while pos < len(data):
        length, pos = decode_varint(data, pos)
        end = pos + length
        pos += 1  # attributes, unused in v2 records
        timestamp_delta, pos = decode_varint(data, pos)
        offset_delta, pos = decode_varint(data, pos)
        key, pos = _bytes(data, pos)
        value, pos = _bytes(data, pos)
        count, pos = decode_varint(data, pos)
        headers: list[tuple[str, bytes | None]] = []
        for _ in range(count):
            name, pos = _bytes(data, pos)
            header_value, pos = _bytes(data, pos)
            headers.append(((name or b"").decode("utf-8", "surrogateescape"), header_value))
        if pos != end:
            raise CorruptRecordException("a record's length does not match its content")
        records.append(
            LenientRecord(
                offset=base_offset + offset_delta,
                timestamp=max_timestamp if log_append_time else base_timestamp + timestamp_delta,
                timestamp_type=1 if log_append_time else 0,
                key=key,
                value=value,
                headers=headers,
            )
        )
    return records


def _bytes(data: bytearray, pos: int) -> tuple[bytes | None, int]:
    length, pos = decode_varint(data, pos)
    if length < 0:
        return None, pos
    if pos + length > len(data):
        raise CorruptRecordException("a record field runs past the end of its batch")
    return bytes(data[pos : pos + length]), pos + length


class _Batch:
    """aiokafka's batch, read again here if its reader fails on a header name."""

    def __init__(self, fast: Any, raw: bytes) -> None:
        self._fast = fast
        self._raw = raw
        self._records: Iterator[Any] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fast, name)

    def __iter__(self) -> _Batch:
        return self

    def __next__(self) -> Any:
        if self._records is None:
            try:
                self._records = iter(list(self._fast))
            except UnicodeDecodeError:
                self._records = iter(read_batch_leniently(self._raw))
        return next(self._records)


class TolerantMemoryRecords:
    """``MemoryRecords`` for the fetcher: the same batches, each able to fall back."""

    def __init__(self, bytes_data: bytes) -> None:
        self._data = bytes_data
        self._inner = MemoryRecords(bytes_data)
        self._pos = 0

    def size_in_bytes(self) -> int:
        size: int = self._inner.size_in_bytes()
        return size

    def has_next(self) -> bool:
        return bool(self._inner.has_next())

    def next_batch(self) -> Any:
        start = self._pos
        batch = self._inner.next_batch()
        if batch is None:
            return None
        (length,) = struct.unpack_from(">i", self._data, start + _LENGTH_OFFSET)
        self._pos = start + _LOG_OVERHEAD + length
        if self._data[start + _MAGIC_OFFSET] < 2:
            return batch  # v0/v1 records have no headers
        return _Batch(batch, bytes(self._data[start : self._pos]))


def install() -> None:
    """Make every consumer in this process fetch through :class:`TolerantMemoryRecords`."""
    _fetcher.MemoryRecords = TolerantMemoryRecords

"""The on-disk spool: events the client accepted, kept until ingest has answered for them.

A spool is a directory of append-only segment files (``segment-<n>.spool``) and a lock
file. Each record is framed as ``length (4 bytes) | crc32 (4 bytes) | payload``:

- ``A`` records add an event: its sequence number, format, source and id, and its body;
- ``K`` records acknowledge sequence numbers: the event got a final answer (accepted or
  refused) and need not be sent again.

The order of effects: an event's ``A`` record is written and fsynced **before** ``send()``
returns, so an event the client accepted survives the host process being killed; a ``K``
record is written only after ingest's answer, so a crash between the answer and the ``K``
resends the event — with the same id, which Touchpulse recognises as the same event.

Reading, a record whose frame is short or whose checksum does not match ends the segment:
that is a write torn by a crash, and the event it held had not been acknowledged to the
caller (its fsync had not returned).

Space is reclaimed from the oldest segment on: a segment all of whose events are
acknowledged is deleted, but only when every older one is gone too (its ``K`` records may
acknowledge events of older segments, so deleting it first would resurrect them). When an
old segment is held only by a few long-pending events, those are copied to the newest
segment (same sequence numbers) and the old one deleted. Opening a spool rewrites the
events still pending into one fresh segment and deletes the rest.

One client at a time: the lock file is held with ``flock``, which the kernel releases
when the process dies, however it dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import struct
import threading
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from touchpulse_client.errors import SpoolError
from touchpulse_client.events import Event, EventFormat

_FRAME = struct.Struct(">II")
_ADD = b"A"
_ACK = b"K"
_SUFFIX = ".spool"
#: Segments beyond this many trigger copying the oldest one's pending events forward.
_MAX_SEGMENTS = 4


@dataclass(frozen=True)
class SpooledEvent:
    seq: int
    event: Event


def _segment_name(number: int) -> str:
    return f"segment-{number:010d}{_SUFFIX}"


def _frame(payload: bytes) -> bytes:
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def _read_records(path: Path) -> tuple[list[bytes], int]:
    """The whole records of a segment and the offset where they end."""
    data = path.read_bytes()
    records: list[bytes] = []
    offset = 0
    while offset + _FRAME.size <= len(data):
        length, crc = _FRAME.unpack_from(data, offset)
        start = offset + _FRAME.size
        payload = data[start : start + length]
        if len(payload) != length or zlib.crc32(payload) != crc:
            break
        records.append(payload)
        offset = start + length
    return records, offset


def _add_payload(seq: int, event: Event) -> bytes:
    head = json.dumps(
        {
            "seq": seq,
            "format": event.format.value,
            "source": event.source,
            "event_id": event.event_id,
            "customer_id": event.customer_id,
        },
        ensure_ascii=True,
    ).encode()
    return _ADD + head + b"\n" + event.body


def _parse_add(payload: bytes) -> SpooledEvent:
    head, _, body = payload[1:].partition(b"\n")
    meta = json.loads(head)
    event = Event(
        source=meta["source"],
        event_id=meta["event_id"],
        customer_id=meta["customer_id"],
        format=EventFormat(meta["format"]),
        body=body,
    )
    return SpooledEvent(int(meta["seq"]), event)


class Spool:
    """A directory of segments; thread-safe (appends come from callers, acks from the
    delivery loop)."""

    def __init__(
        self, directory: Path, *, segment_bytes: int = 8 * 1024 * 1024, fsync: bool = True
    ) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self._fsync = fsync
        self._mutex = threading.Lock()
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._lock_file: IO[bytes] = open(directory / "lock", "ab")  # noqa: SIM115
        except OSError as exc:
            raise SpoolError(f"the spool {directory} cannot be used: {exc}") from exc
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise SpoolError(f"the spool {directory} is in use by another client") from None
        #: pending seq -> (segment number, event)
        self._pending: dict[int, tuple[int, Event]] = {}
        #: segment number -> events of it still pending
        self._live: dict[int, int] = {}
        self._next_seq = 1
        self._active: IO[bytes] | None = None
        self._active_number = 0
        self._active_size = 0
        self._recovered = self._recover()

    # --- opening ---------------------------------------------------------------------------

    def _segments(self) -> list[tuple[int, Path]]:
        found = []
        for path in self.directory.glob(f"segment-*{_SUFFIX}"):
            number = path.name.removeprefix("segment-").removesuffix(_SUFFIX)
            if number.isdigit():
                found.append((int(number), path))
        return sorted(found)

    def _recover(self) -> list[SpooledEvent]:
        added: dict[int, SpooledEvent] = {}
        acked: set[int] = set()
        segments = self._segments()
        for _, path in segments:
            records, _ = _read_records(path)
            for payload in records:
                if payload[:1] == _ADD:
                    spooled = _parse_add(payload)
                    added[spooled.seq] = spooled  # a copy made by compaction: same event
                elif payload[:1] == _ACK:
                    acked.update(json.loads(payload[1:]))
        pending = [added[seq] for seq in sorted(added) if seq not in acked]
        self._next_seq = max([*added, *acked, 0]) + 1
        # One fresh segment with what is pending, written and synced before the old ones go:
        # a crash in between leaves both, and reading both gives the same events.
        number = (segments[-1][0] + 1) if segments else 1
        self._open_segment(number)
        for spooled in pending:
            self._write(_add_payload(spooled.seq, spooled.event))
            self._pending[spooled.seq] = (number, spooled.event)
        self._live[number] = len(pending)
        self._sync()
        for old, path in segments:
            path.unlink()
            self._live.pop(old, None)
        self._sync_directory()
        return pending

    def recovered(self) -> list[SpooledEvent]:
        """What the previous client left undelivered, oldest first (read once, at open)."""
        recovered, self._recovered = self._recovered, []
        return recovered

    # --- writing ---------------------------------------------------------------------------

    def _open_segment(self, number: int) -> None:
        if self._active is not None:
            self._active.close()
        self._active = open(self.directory / _segment_name(number), "ab")  # noqa: SIM115
        self._active_number = number
        self._active_size = self._active.tell()
        self._live.setdefault(number, 0)
        self._sync_directory()

    def _write(self, payload: bytes) -> None:
        if self._active is None:
            raise SpoolError("the spool is closed")
        framed = _frame(payload)
        self._active.write(framed)
        self._active_size += len(framed)

    def _sync(self) -> None:
        if self._active is None:
            raise SpoolError("the spool is closed")
        self._active.flush()
        if self._fsync:
            os.fsync(self._active.fileno())

    def _sync_directory(self) -> None:
        if not self._fsync:
            return
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def append(self, events: Iterable[Event]) -> list[int]:
        """Write the events and sync: when this returns they survive a crash. Their
        sequence numbers, in order."""
        with self._mutex:
            if self._active is None:
                raise SpoolError("the spool is closed")
            if self._active_size >= self.segment_bytes:
                self._open_segment(self._active_number + 1)
            seqs = []
            for event in events:
                seq = self._next_seq
                self._next_seq += 1
                self._write(_add_payload(seq, event))
                self._pending[seq] = (self._active_number, event)
                self._live[self._active_number] += 1
                seqs.append(seq)
            try:
                self._sync()
            except OSError as exc:
                raise SpoolError(f"the spool {self.directory} cannot be written: {exc}") from exc
            return seqs

    def ack(self, seqs: Iterable[int]) -> None:
        """The events got a final answer: record it, then reclaim what that freed."""
        with self._mutex:
            known = [seq for seq in seqs if seq in self._pending]
            if not known or self._active is None:
                return
            self._write(_ACK + json.dumps(known).encode())
            self._sync()
            for seq in known:
                number, _ = self._pending.pop(seq)
                self._live[number] -= 1
            self._reclaim()

    def _reclaim(self) -> None:
        """Delete the oldest segments that hold nothing pending (oldest first, see the module
        docstring); copy forward the few events holding an old segment when there are too
        many segments."""
        deleted = False
        while True:
            numbers = sorted(self._live)
            oldest = numbers[0]
            if oldest == self._active_number:
                break
            if self._live[oldest] > 0:
                if len(numbers) <= _MAX_SEGMENTS:
                    break
                stuck = [(s, e) for s, (n, e) in self._pending.items() if n == oldest]
                for seq, event in sorted(stuck, key=lambda pair: pair[0]):
                    self._write(_add_payload(seq, event))
                    self._pending[seq] = (self._active_number, event)
                    self._live[self._active_number] += 1
                self._sync()
            (self.directory / _segment_name(oldest)).unlink(missing_ok=True)
            del self._live[oldest]
            deleted = True
        if deleted:
            self._sync_directory()

    # --- reading ---------------------------------------------------------------------------

    @property
    def pending_count(self) -> int:
        with self._mutex:
            return len(self._pending)

    def segment_files(self) -> list[Path]:
        return [path for _, path in self._segments()]

    def close(self) -> None:
        with self._mutex:
            if self._active is not None:
                with contextlib.suppress(OSError):
                    self._sync()
                self._active.close()
                self._active = None
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()

    def __iter__(self) -> Iterator[SpooledEvent]:
        with self._mutex:
            snapshot = sorted(self._pending.items())
        return iter(SpooledEvent(seq, event) for seq, (_, event) in snapshot)

"""Dead letters: records scoring cannot use, sent on with the reason and their origin.

A dead letter keeps the original key, value and headers untouched (so it can be replayed
once the cause is fixed) and adds headers saying why and where it came from. The one
exception: a header name that is not UTF-8 cannot be written again by this client, so its
undecodable bytes are written as ``\\xNN`` escapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from touchpulse_shared.contract import format_rfc3339

HEADER_REASON = "touchpulse-dlq-reason"
HEADER_DETAIL = "touchpulse-dlq-detail"
HEADER_TOPIC = "touchpulse-dlq-topic"
HEADER_PARTITION = "touchpulse-dlq-partition"
HEADER_OFFSET = "touchpulse-dlq-offset"
HEADER_FAILED_AT = "touchpulse-dlq-failed-at"
_MAX_DETAIL = 1000  # a header, not a log: keep the record small


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]
    reason: str
    detail: str

    def record_headers(self, failed_at: datetime) -> list[tuple[str, bytes]]:
        added = [
            (HEADER_REASON, self.reason.encode()),
            (HEADER_DETAIL, self.detail[:_MAX_DETAIL].encode("utf-8", "replace")),
            (HEADER_TOPIC, self.topic.encode()),
            (HEADER_PARTITION, str(self.partition).encode()),
            (HEADER_OFFSET, str(self.offset).encode()),
            (HEADER_FAILED_AT, format_rfc3339(failed_at).encode()),
        ]
        original = [
            (_printable_name(name), value)
            for name, value in self.headers
            if not name.startswith("touchpulse-dlq-")
        ]
        return original + added


def _printable_name(name: str) -> str:
    """A header name as it can be written again: a name that was not UTF-8 (its bytes kept
    as lone surrogates by the fetcher) gets its undecodable bytes as ``\\xNN`` escapes."""
    try:
        name.encode()
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return name

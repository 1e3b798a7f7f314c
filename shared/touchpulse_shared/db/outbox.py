"""Rows for ``kafka_outbox``: Kafka records written in the transaction of the change they
announce, published afterwards by scoring's outbox publisher (touchpulse_scoring.outbox).

Scoring writes health, intervention and dead-letter records here; the api writes profile
records, intervention moves and erasure tombstones. One row format and one insert for all
of them, so what the publisher reads back is what every writer wrote.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import TypeAlias

import orjson

from touchpulse_shared.db import Conn

#: ``(topic, key, value, headers)``: headers as JSON text, see :func:`outbox_row`.
OutboxRow: TypeAlias = tuple[str, bytes | None, bytes | None, str]


def outbox_row(
    topic: str, key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]] = ()
) -> OutboxRow:
    """A row for ``kafka_outbox`` (header values kept as latin-1 text in JSON)."""
    encoded = orjson.dumps([_header_entry(name, raw) for name, raw in headers]).decode()
    return (topic, key, value, encoded)


def decode_headers(encoded: str | bytes) -> list[tuple[str, bytes]]:
    """The Kafka headers of an outbox row, as :func:`outbox_row` was given them."""
    return [_header(entry) for entry in orjson.loads(encoded)]


def _header_entry(name: str, raw: bytes) -> list[str]:
    text = raw.decode("latin-1")
    if "\x00" in name or "\x00" in text:
        # jsonb cannot hold \u0000, and a dead letter keeps a foreign producer's headers as
        # they came: such a header goes as base64, marked, so the batch can still commit.
        return [_b64(name.encode()), _b64(raw), "base64"]
    return [name, text]


def _header(entry: list[str]) -> tuple[str, bytes]:
    if len(entry) == 3 and entry[2] == "base64":
        return base64.b64decode(entry[0]).decode(), base64.b64decode(entry[1])
    name, text = entry
    return name, text.encode("latin-1")


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


async def insert_outbox(conn: Conn, rows: Sequence[OutboxRow]) -> None:
    """Insert ``rows`` in one statement, in the caller's transaction, in the order given."""
    if not rows:
        return
    topics, keys, values, headers = zip(*rows, strict=True)
    await conn.execute(
        """
        INSERT INTO kafka_outbox (topic, key, value, headers)
        SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::jsonb[])
        """,
        list(topics),
        list(keys),
        list(values),
        list(headers),
    )

"""Where a customer's events live: Kafka's default partitioner, in one place.

Ingest places each event with it (so any other client, and ingest's single-event path
through the producer's own partitioner, agree), and scoring uses it to know which
partition's watermark says whether a customer's events are applied up to a time.
"""

from __future__ import annotations

from aiokafka.partitioner import murmur2

#: Distinct keys remembered at most; the cache is dropped whole when full.
_CACHE_MAX = 100_000


def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2) puts ``key`` on."""
    if partitions <= 0:
        raise ValueError(f"a topic has at least one partition, not {partitions}")
    partition: int = (murmur2(key) & 0x7FFFFFFF) % partitions
    return partition


class Partitioner:
    """:func:`partition_of` with a bounded cache: aiokafka's murmur2 is pure Python and
    customers recur. The cache is dropped whenever the partition count changes."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self._cache: dict[bytes, int] = {}

    def __call__(self, key: bytes) -> int:
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        partition = partition_of(key, self.partitions)
        self._cache[key] = partition
        return partition

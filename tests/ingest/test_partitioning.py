"""Ingest's batch path places a customer where Kafka's default partitioner (and so any other
client, and ingest's own single-event path) would."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from touchpulse_ingest.producer import EventProducer


@given(
    keys=st.lists(st.binary(min_size=1, max_size=64), min_size=1, max_size=50),
    partitions=st.integers(1, 64),
)
def test_batch_partitioning_matches_kafkas_default_partitioner(
    keys: list[bytes], partitions: int
) -> None:
    producer = EventProducer(bootstrap_servers="127.0.0.1:9", topic="t", linger_ms=0)
    producer._partitions = partitions
    reference = DefaultPartitioner()
    everything = list(range(partitions))
    for key in keys * 2:  # the second round is answered from the cache
        assert producer.partition_for(key) == reference(key, everything, everything)

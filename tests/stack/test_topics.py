"""Topic creation against the real broker: configs applied, idempotent, mismatches refused."""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.conftest import unique
from touchpulse_shared.kafka.topics import (
    TopicError,
    describe_partitions,
    describe_topic_configs,
    ensure_topics,
    topic_specs,
)
from touchpulse_shared.settings import Settings


def _settings(partitions: int = 6) -> Settings:
    run = unique("t")
    return Settings(
        events_topic=f"{run}.events",
        dead_letter_topic=f"{run}.dlq",
        health_topic=f"{run}.health",
        interventions_topic=f"{run}.interventions",
        profiles_topic=f"{run}.profiles",
        events_partitions=partitions,
    )


async def test_creates_every_topic_with_its_partitions_and_configs(
    kafka_admin: AIOKafkaAdminClient,
) -> None:
    settings = _settings(partitions=4)
    specs = topic_specs(settings)
    names = [s.name for s in specs]
    try:
        created = await ensure_topics(kafka_admin, specs)
        assert sorted(created) == sorted(names)

        partitions = await describe_partitions(kafka_admin, names)
        assert partitions[settings.events_topic] == 4
        assert partitions[settings.health_topic] == 4, "health is co-partitioned with events"

        configs = await describe_topic_configs(kafka_admin, names)
        assert configs[settings.events_topic]["cleanup.policy"] == "delete"
        assert configs[settings.events_topic]["retention.ms"] == str(168 * 3_600_000)
        assert configs[settings.dead_letter_topic]["cleanup.policy"] == "delete"
        assert configs[settings.health_topic]["cleanup.policy"] == "compact"
        assert configs[settings.interventions_topic]["cleanup.policy"] == "compact"
        assert configs[settings.profiles_topic]["cleanup.policy"] == "compact"
        assert partitions[settings.profiles_topic] == 4, "profiles co-partitioned with events"
        assert configs[settings.health_topic]["min.insync.replicas"] == "1"

        assert await ensure_topics(kafka_admin, specs) == [], "a second run creates nothing"
    finally:
        await kafka_admin.delete_topics(names)


async def test_an_existing_topic_with_the_wrong_cleanup_policy_is_refused(
    kafka_admin: AIOKafkaAdminClient,
) -> None:
    settings = _settings()
    # Someone created the health topic by hand, without compaction: erasure would not work.
    await kafka_admin.create_topics([NewTopic(settings.health_topic, 6, 1)])
    try:
        with pytest.raises(TopicError, match=r"cleanup\.policy=delete"):
            await ensure_topics(kafka_admin, topic_specs(settings))
    finally:
        await kafka_admin.delete_topics([s.name for s in topic_specs(settings)])


def test_production_replication_asks_for_two_in_sync_replicas() -> None:
    specs = topic_specs(Settings(topic_replication_factor=3))
    assert {s.configs["min.insync.replicas"] for s in specs} == {"2"}
    assert {s.replication_factor for s in specs} == {3}


def test_cluster_ids_never_look_like_options() -> None:
    # A random id starting with "-" once made the storage tool's argument parser fail.
    from touchpulse_shared.stack.kafka import _cluster_id  # noqa: PLC0415

    ids = [_cluster_id() for _ in range(2000)]
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)

"""The Kafka topics Touchpulse owns, and their idempotent creation.

- ``touchpoint.events.v1`` (key: customer id; delete): the raw events, kept for replay.
- ``touchpoint.events.dlq.v1`` (delete): records scoring could not use, with the reason.
- ``journey.health.v1`` (key: customer id; compacted): the latest health per customer;
  erasure writes a tombstone.
- ``interventions.v1`` (key: intervention; compacted): the latest state of each one.
- ``customer.profiles.v1`` (key: customer id; compacted): the latest CRM profile per
  customer, written by the api with the profile (outbox) so replays can rebuild with it;
  erasure writes a tombstone.

The health and profiles topics have as many partitions as the events topic so a customer's
health and profile land on the partition number its events came from (co-partitioned for
stream joins).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from touchpulse_shared.settings import Settings

log = structlog.get_logger(__name__)

_HOUR_MS = 3_600_000
# Kafka's default record size limit, stated on the events topic so the dead-letter topic can
# be sized against it: a dead letter is the original record plus its reason headers, and a
# record the events topic took must never be too large to dead-letter (the outbox would
# retry it forever and hold back everything behind it).
EVENTS_MAX_MESSAGE_BYTES = 1_048_588
DEAD_LETTER_MAX_MESSAGE_BYTES = 2 * EVENTS_MAX_MESSAGE_BYTES
_TOPIC_ALREADY_EXISTS = 36
# Broker-side wait for topic creation; a single node answers in well under a second.
CREATE_TIMEOUT_MS = 30_000


class TopicError(RuntimeError):
    """A topic could not be created, or exists with a setting that breaks Touchpulse."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    configs: Mapping[str, str] = field(default_factory=dict)

    @property
    def compacted(self) -> bool:
        return self.configs.get("cleanup.policy") == "compact"


def _min_isr(replication_factor: int) -> str:
    # RF 3 with min ISR 2 survives one broker loss without giving up acks=all; a single
    # node can only ever have one in-sync replica.
    return str(min(2, replication_factor))


def topic_specs(settings: Settings) -> list[TopicSpec]:
    rf = settings.topic_replication_factor
    common = {"min.insync.replicas": _min_isr(rf)}
    compacted = {
        **common,
        "cleanup.policy": "compact",
        # Tombstones (erasure) must stay long enough for every reader to see them.
        "delete.retention.ms": str(24 * _HOUR_MS),
        "min.compaction.lag.ms": str(_HOUR_MS),
        "segment.ms": str(6 * _HOUR_MS),
    }
    return [
        TopicSpec(
            settings.events_topic,
            settings.events_partitions,
            rf,
            {
                **common,
                "cleanup.policy": "delete",
                "retention.ms": str(settings.events_retention_hours * _HOUR_MS),
                # The producer's timestamp is when the touchpoint system sent the event.
                "message.timestamp.type": "CreateTime",
                "max.message.bytes": str(EVENTS_MAX_MESSAGE_BYTES),
            },
        ),
        TopicSpec(
            settings.dead_letter_topic,
            min(settings.events_partitions, 3),
            rf,
            {
                **common,
                "cleanup.policy": "delete",
                "retention.ms": str(settings.dead_letter_retention_hours * _HOUR_MS),
                "max.message.bytes": str(DEAD_LETTER_MAX_MESSAGE_BYTES),
            },
        ),
        TopicSpec(settings.health_topic, settings.events_partitions, rf, compacted),
        TopicSpec(settings.interventions_topic, settings.events_partitions, rf, compacted),
        TopicSpec(settings.profiles_topic, settings.events_partitions, rf, compacted),
    ]


async def ensure_topics(admin: Any, specs: Sequence[TopicSpec]) -> list[str]:
    """Create the missing topics of ``specs``; return the names created.

    Existing topics are checked, not altered: a compacted topic that is not compacted (or
    the reverse) is an error, since erasure and replay depend on it; a different partition
    count is only logged, because changing it would move customers between partitions.
    """
    from aiokafka.admin import NewTopic  # noqa: PLC0415 - aiokafka is untyped; keep it local

    existing = set(await admin.list_topics())
    missing = [s for s in specs if s.name not in existing]
    created: list[str] = []
    raced: set[str] = set()
    if missing:
        response = await admin.create_topics(
            [
                NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=dict(s.configs))
                for s in missing
            ],
            timeout_ms=CREATE_TIMEOUT_MS,
        )
        for topic, code, *rest in response.topic_errors:
            # Another process created it between our list and create (or the metadata we
            # listed was stale): it still has to pass the checks below.
            if code == _TOPIC_ALREADY_EXISTS:
                raced.add(topic)
                continue
            if code != 0:
                message = rest[0] if rest else ""
                raise TopicError(f"creating topic {topic} failed with error {code}: {message}")
            created.append(topic)
    await _check_existing(admin, [s for s in specs if s.name in existing | raced])
    if created:
        log.info("kafka.topics.created", topics=created)
    return created


async def _check_existing(admin: Any, specs: Sequence[TopicSpec]) -> None:
    if not specs:
        return
    partitions = await describe_partitions(admin, [s.name for s in specs])
    configs = await describe_topic_configs(admin, [s.name for s in specs])
    for spec in specs:
        policy = configs.get(spec.name, {}).get("cleanup.policy", "delete")
        if ("compact" in policy) != spec.compacted:
            raise TopicError(
                f"topic {spec.name} has cleanup.policy={policy}, Touchpulse needs "
                f"{spec.configs.get('cleanup.policy')}; fix or delete the topic"
            )
        wanted = spec.configs.get("max.message.bytes")
        actual = configs.get(spec.name, {}).get("max.message.bytes")
        if wanted is not None and actual is not None and int(actual) < int(wanted):
            # A smaller limit on an older topic: dead letters of large records would stall
            # the outbox. Raised with kafka-configs.sh --alter; not changed behind anyone's back.
            log.warning(
                "kafka.topics.max_message_bytes_too_small",
                topic=spec.name,
                actual=int(actual),
                needed=int(wanted),
            )
        if partitions.get(spec.name) != spec.partitions:
            log.warning(
                "kafka.topics.partitions_differ",
                topic=spec.name,
                actual=partitions.get(spec.name),
                configured=spec.partitions,
            )


async def describe_partitions(admin: Any, names: Sequence[str]) -> dict[str, int]:
    topics = await admin.describe_topics(list(names))
    return {t["topic"]: len(t["partitions"]) for t in topics if t["error_code"] == 0}


async def describe_topic_configs(admin: Any, names: Sequence[str]) -> dict[str, dict[str, str]]:
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType  # noqa: PLC0415

    responses = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
    )
    result: dict[str, dict[str, str]] = {}
    for response in responses:
        for resource in response.to_object()["resources"]:
            entries = resource["config_entries"]
            result[resource["resource_name"]] = {
                e["config_names"]: e["config_value"] for e in entries
            }
    return result


async def ensure_topics_at(bootstrap_servers: str, specs: Sequence[TopicSpec]) -> list[str]:
    """:func:`ensure_topics` with an admin client of its own."""
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=30_000)
    await admin.start()
    try:
        return await ensure_topics(admin, specs)
    finally:
        await admin.close()

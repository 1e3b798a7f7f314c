"""What every process may do at start, and all of it idempotent: schema and topics."""

from __future__ import annotations

from dataclasses import dataclass

from touchpulse_shared.db.migrate import migrate_url
from touchpulse_shared.kafka.topics import ensure_topics_at, topic_specs
from touchpulse_shared.settings import Settings


@dataclass(frozen=True)
class Provisioned:
    migrations_applied: list[int]
    topics_created: list[str]


async def provision(settings: Settings) -> Provisioned:
    if settings.database_url is None or settings.kafka_bootstrap_servers is None:
        raise ValueError("provision needs resolved settings (a database URL and Kafka servers)")
    applied = await migrate_url(settings.database_url)
    created = await ensure_topics_at(settings.kafka_bootstrap_servers, topic_specs(settings))
    return Provisioned([m.version for m in applied], created)

"""The real ingest (and api), in process, on the real Kafka and PostgreSQL: the ingest
fixtures are re-used here by name."""

from tests.ingest.conftest import (  # noqa: F401
    client,
    ingest_db,
    ingest_settings,
)

"""The abuse suite's real services (separate processes, their own database and topic)."""

from tests.abuse.conftest import (  # noqa: F401 - fixtures
    abuse_db,
    api,
    api_settings,
    ingest,
    ingest_settings,
)

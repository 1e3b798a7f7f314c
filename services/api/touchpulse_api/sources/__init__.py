"""Feedback for touchpoint owners: a source's quality over a window and its dead letters
(docs/api.md, "Sources"). Read from what scoring and ingest count (migration 0012)."""

from touchpulse_api.sources.routes import router

__all__ = ["router"]

"""Touchpulse ingest client."""

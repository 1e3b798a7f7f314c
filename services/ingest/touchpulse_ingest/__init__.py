"""Touchpulse ingest service."""

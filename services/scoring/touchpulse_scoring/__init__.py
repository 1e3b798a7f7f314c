"""Touchpulse scoring service."""

"""Touchpulse api service."""

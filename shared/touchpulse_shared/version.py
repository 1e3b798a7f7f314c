"""The installed Touchpulse version, for ``--version`` on every entry point."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def touchpulse_version() -> str:
    try:
        return version("touchpulse")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"

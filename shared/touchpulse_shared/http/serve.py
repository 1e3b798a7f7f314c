"""How both web services run: one uvicorn process, heap frozen after start-up."""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Callable, Sequence

import uvicorn
from fastapi import FastAPI

from touchpulse_shared.logs import configure_logging
from touchpulse_shared.settings import ENV_PREFIX, ConfigError, Settings, load_settings
from touchpulse_shared.version import touchpulse_version


def command_line(name: str, summary: str, argv: Sequence[str] | None = None) -> None:
    """``--help`` and ``--version``, answered before any setting is read (exit 0); the
    service takes no other argument (exit 2 naming it)."""
    parser = argparse.ArgumentParser(
        prog=name,
        description=summary,
        epilog=f"Configured by {ENV_PREFIX}* environment variables or the TOML file named by "
        f"{ENV_PREFIX}CONFIG_FILE (see README.md's settings table); `touchpulse config` "
        "prints the configuration in effect, secrets masked.",
    )
    parser.add_argument("--version", action="version", version=f"{name} {touchpulse_version()}")
    parser.parse_args(sys.argv[1:] if argv is None else argv)


def serve(
    name: str,
    build: Callable[[Settings], FastAPI],
    port: Callable[[Settings], int],
    *,
    summary: str = "",
    bad_config: tuple[type[Exception], ...] = (),
) -> None:
    """Build the app from the settings (exit 2 naming the problem if they, or anything in
    ``bad_config``, say the configuration is unusable), then serve until SIGTERM/Ctrl-C."""
    command_line(name, summary)
    unusable: tuple[type[Exception], ...] = (ConfigError, ValueError, *bad_config)
    try:
        settings = load_settings()
        app = build(settings)
    except unusable as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        sys.exit(2)
    configure_logging(settings)
    # Everything imported so far lives as long as the process: move it out of the
    # collector's reach, so full collections (measured at ~50 ms with it) stay short and
    # do not set the p99.
    gc.collect()
    gc.freeze()
    uvicorn.run(
        app,
        host=settings.host,
        port=port(settings),
        log_level=settings.log_level.lower(),
        # Its records go through configure_logging's handler (JSON in JSON mode), not the
        # plain-text handlers uvicorn would install.
        log_config=None,
        # Requests are counted in metrics; a log line per request would dwarf the rest.
        access_log=False,
        # Requests in flight (waiting on Kafka or PostgreSQL) get this long to finish.
        timeout_graceful_shutdown=10,
    )

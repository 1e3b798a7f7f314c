"""How both web services run: one uvicorn process, heap frozen after start-up."""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI

from touchpulse_shared.logs import configure_logging
from touchpulse_shared.settings import ConfigError, Settings, load_settings


def serve(
    name: str,
    build: Callable[[Settings], FastAPI],
    port: Callable[[Settings], int],
    *,
    bad_config: tuple[type[Exception], ...] = (),
) -> None:
    """Build the app from the settings (exit 2 naming the problem if they, or anything in
    ``bad_config``, say the configuration is unusable), then serve until SIGTERM/Ctrl-C."""
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
        # Requests are counted in metrics; a log line per request would dwarf the rest.
        access_log=False,
        # Requests in flight (waiting on Kafka or PostgreSQL) get this long to finish.
        timeout_graceful_shutdown=10,
    )

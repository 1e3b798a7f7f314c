"""``touchpulse-api``: serve the API with uvicorn."""

from __future__ import annotations

import gc
import sys

import uvicorn

from touchpulse_api.app import build_app
from touchpulse_scoring.domain import CatalogueError
from touchpulse_shared.logs import configure_logging
from touchpulse_shared.settings import ConfigError, load_settings


def main() -> None:
    try:
        settings = load_settings()
        app = build_app(settings)
    except (ConfigError, CatalogueError, ValueError) as exc:
        print(f"touchpulse-api: {exc}", file=sys.stderr)
        sys.exit(2)
    configure_logging(settings)
    # Start-up objects out of the collector's reach: short full collections, steady p99.
    gc.collect()
    gc.freeze()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.api_port,
        log_level=settings.log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()

"""``touchpulse-scoring``: run the scoring consumer."""

from __future__ import annotations

import asyncio
import sys

from touchpulse_scoring.domain import CatalogueError
from touchpulse_scoring.service import main_async
from touchpulse_shared.logs import configure_logging
from touchpulse_shared.settings import ConfigError, load_settings


def main() -> None:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"touchpulse-scoring: {exc}", file=sys.stderr)
        sys.exit(2)
    configure_logging(settings)
    try:
        asyncio.run(main_async(settings))
    except (CatalogueError, ValueError) as exc:
        print(f"touchpulse-scoring: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

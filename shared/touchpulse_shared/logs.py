"""Structured logs: JSON lines for machines by default, a readable console form for people."""

from __future__ import annotations

import logging
import sys

import structlog

from touchpulse_shared.settings import Settings


def configure_logging(settings: Settings) -> None:
    level = getattr(logging, settings.log_level)
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if settings.log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # Logs go to stderr: stdout carries what a command prints for people and scripts.
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=level, format="%(levelname)s %(name)s %(message)s")
    # aiokafka logs every reconnect attempt at INFO/WARNING; the services report state.
    logging.getLogger("aiokafka").setLevel(max(level, logging.WARNING))
    # httpx logs every request at INFO: the simulator and make run's live view would drown
    # the output in their own polling.
    logging.getLogger("httpx").setLevel(max(level, logging.WARNING))

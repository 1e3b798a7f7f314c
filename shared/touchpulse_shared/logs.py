"""Structured logs: JSON lines for machines by default, a readable console form for people.

Third-party libraries (uvicorn, aiokafka, asyncpg, asyncio) log through the standard
library; their records go through the same renderer, so in JSON mode every line on stderr
is one JSON object. No line carries a secret from the settings: the values are masked
wherever they appear, whoever logged them.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from touchpulse_shared.settings import Settings

MASK = "***"


class SecretScrubber:
    """A processor replacing each secret value in a log line's strings by ``***``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first: one secret containing another is masked whole.
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def _clean(self, value: object) -> object:
        if isinstance(value, str):
            for secret in self.secrets:
                if secret in value:
                    value = value.replace(secret, MASK)
            return value
        if isinstance(value, dict):
            return {k: self._clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean(v) for v in value]
        if self.secrets and not isinstance(value, int | float | bool | type(None)):
            # Anything else is rendered through str() or repr(): judge that text.
            text = str(value)
            cleaned = self._clean(text)
            return value if cleaned == text else cleaned
        return value

    def __call__(self, logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
        if not self.secrets:
            return event
        return {key: self._clean(value) for key, value in event.items()}


def configure_logging(settings: Settings) -> None:
    level = getattr(logging, settings.log_level)
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if settings.log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    scrub = SecretScrubber(settings.secret_values())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            scrub,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # Logs go to stderr: stdout carries what a command prints for people and scripts.
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    # The standard library's records (uvicorn, aiokafka, asyncpg, asyncio, ...) rendered as
    # structlog's own: the same keys (event, level, timestamp) plus the logger's name.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                scrub,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # uvicorn configures its loggers not to propagate, each with a plain-text handler of
    # its own (unless run with log_config=None, as serve() does): send them to the root.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
        named = logging.getLogger(name)
        named.handlers.clear()
        named.propagate = True
    # aiokafka logs every reconnect attempt at INFO/WARNING; the services report state.
    logging.getLogger("aiokafka").setLevel(max(level, logging.WARNING))
    # httpx logs every request at INFO: the simulator and make run's live view would drown
    # the output in their own polling.
    logging.getLogger("httpx").setLevel(max(level, logging.WARNING))

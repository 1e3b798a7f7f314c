"""A client for Touchpulse ingest that does not lose events.

Build events with :func:`build_event` or an :class:`EventBuilder` (the id is chosen then,
once), hand them to :class:`TouchpulseClient` or :class:`AsyncTouchpulseClient`, and read
each event's :class:`Outcome` from its future, from ``on_result``, or from the
:class:`DeliveryReport` that ``flush()`` and ``close()`` return. See docs/client.md.
"""

from touchpulse_client.aio import AsyncTouchpulseClient
from touchpulse_client.backoff import Backoff, parse_retry_after
from touchpulse_client.client import TouchpulseClient
from touchpulse_client.config import ClientConfig, FullPolicy
from touchpulse_client.errors import ClientClosed, QueueFull, SpoolError, TouchpulseClientError
from touchpulse_client.events import Event, EventBuilder, EventFormat, build_event
from touchpulse_client.metrics import ClientMetrics, NoMetrics
from touchpulse_client.results import DeliveryReport, Outcome, Status
from touchpulse_client.spool import Spool

__all__ = [
    "AsyncTouchpulseClient",
    "Backoff",
    "ClientClosed",
    "ClientConfig",
    "ClientMetrics",
    "DeliveryReport",
    "Event",
    "EventBuilder",
    "EventFormat",
    "FullPolicy",
    "NoMetrics",
    "Outcome",
    "QueueFull",
    "Spool",
    "SpoolError",
    "Status",
    "TouchpulseClient",
    "TouchpulseClientError",
    "build_event",
    "parse_retry_after",
]

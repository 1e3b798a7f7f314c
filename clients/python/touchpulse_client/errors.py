"""The client's exceptions. Per-event refusals are results (:class:`Outcome`), not these."""

from __future__ import annotations


class TouchpulseClientError(Exception):
    """The root of everything this package raises."""


class QueueFull(TouchpulseClientError):
    """``send()`` found no room (policy ``raise``, or ``block`` after its timeout)."""


class ClientClosed(TouchpulseClientError):
    """``send()`` after ``close()``."""


class SpoolError(TouchpulseClientError):
    """The spool cannot be used: locked by another client, or not writable."""

"""Time windows given in a query (``since``/``until``): one rule for every route that takes
one, so the same mistake gets the same answer everywhere."""

from __future__ import annotations

from datetime import datetime

from touchpulse_shared.http.problems import Problem


def require_ordered(since: datetime | None, until: datetime | None) -> None:
    """Refuse a window that ends before it starts: a client's slip (two dates swapped), not
    a question with an empty answer. 422 naming ``since``."""
    if since is not None and until is not None and since > until:
        raise Problem(
            422,
            "invalid-request",
            "Invalid Request",
            "The window ends before it starts",
            errors=[
                {
                    "pointer": "/query/since",
                    "detail": "since must not be later than until",
                    "code": "window_inverted",
                }
            ],
        )

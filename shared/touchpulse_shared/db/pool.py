"""PostgreSQL connections the services hold: named, and dead when the server says so.

**Named.** Every pool and connection carries ``application_name`` =
``touchpulse-<service>/<role>`` (``touchpulse-scoring/consumer``, ``touchpulse-api/webhooks``
…), so an operator reading ``pg_stat_activity`` can tell them apart, and terminate exactly
the ones they mean to.

**Dead when the server says so.** When PostgreSQL terminates a session
(``pg_terminate_backend``, ``idle_in_transaction_session_timeout``, a failover, a pooler
restart) while the client holds it *idle* — in a pool, or idle in a transaction while the
outbox publisher waits for Kafka — the server sends a FATAL ``ErrorResponse`` no operation
asked for, then closes the socket. asyncpg (0.32) cannot place an error outside an
operation: its protocol parks itself in "consuming an error until ReadyForQuery" (state 2)
and waits for a ReadyForQuery that never comes. Until the end of the stream reaches it one
or two event-loop turns later, ``is_closed()`` still says open; the next operation on that
connection — ``BEGIN``, ``ROLLBACK``, the pool's reset on release, any query — is refused
with ``InternalClientError: cannot switch to state 15; another operation (2) is in
progress``: the dead session's error and the new operation on one connection at once.
That error is neither a ``PostgresError`` nor an ``InterfaceError``, so it went past every
"database unavailable" handler: the scoring consumer died, and the background loops
(the outbox publisher first) ended silently.

:class:`Connection` closes that window where it opens: an operation refused because the
protocol is still consuming a dead session's error, or is failed, aborts the connection
(the pool then drops it and connects afresh) and raises
:class:`asyncpg.ConnectionDoesNotExistError` — what it is, a lost connection — before
anything was sent. Callers keep their one rule: a lost connection is a database outage, the
transaction did not happen (or, for a COMMIT in flight, its outcome is unknown and the
offsets and dedupe in that same transaction decide on the retry).
"""

from __future__ import annotations

from typing import Any

import asyncpg

#: Everything that means "the database is unavailable or the session was lost; retry".
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    TimeoutError,
)

# The protocol's refusals that mean "this connection's session is gone", not a caller's bug:
# state 2 is PROTOCOL_ERROR_CONSUME (a server error without its ReadyForQuery), "failed" is
# a protocol already given up.
_DEAD_SESSION = ("another operation (2) is in progress", 'protocol is in the "failed" state')


def application_name(service: str, role: str) -> str:
    """``touchpulse-<service>/<role>``, at most PostgreSQL's 63 bytes."""
    return f"touchpulse-{service}/{role}"[:63]


class Connection(asyncpg.Connection):
    """An asyncpg connection that reports a session the server terminated as lost."""

    def _lost(self, exc: asyncpg.InternalClientError) -> BaseException:
        if not any(marker in str(exc) for marker in _DEAD_SESSION):
            return exc
        self.terminate()
        lost = asyncpg.ConnectionDoesNotExistError(
            f"the server ended this session (protocol: {exc})"
        )
        lost.__cause__ = exc
        return lost

    async def execute(self, query: str, *args: Any, **kwargs: Any) -> str:
        try:
            return await super().execute(query, *args, **kwargs)
        except asyncpg.InternalClientError as exc:
            raise self._lost(exc) from exc

    async def _execute(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super()._execute(*args, **kwargs)  # type: ignore[misc]
        except asyncpg.InternalClientError as exc:
            raise self._lost(exc) from exc

    async def _executemany(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super()._executemany(*args, **kwargs)  # type: ignore[misc]
        except asyncpg.InternalClientError as exc:
            raise self._lost(exc) from exc


async def keep_session(conn: asyncpg.Connection) -> None:
    """A pool's ``reset=`` for users that never change session state: nothing is sent.

    By default asyncpg resets a connection on every release with a query of its own
    (``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;``): a round trip
    and a server-side statement per request, undoing session state the api never creates.
    Every api request runs single statements or transactions; its advisory locks are
    transaction-scoped (``pg_advisory_xact_lock``, released at COMMIT or ROLLBACK); it
    declares no cursor outside a transaction, LISTENs to nothing and SETs no session
    setting (``application_name`` is a startup parameter, not a SET). What asyncpg still
    does with ``reset=`` given — roll back a transaction left open, drop listeners —
    happens before this is called. A pool whose users do change session state keeps the
    default.
    """


async def create_pool(
    url: str, *, service: str, role: str, min_size: int = 1, max_size: int = 4, **kwargs: Any
) -> asyncpg.Pool:
    """A pool of named :class:`Connection`\\ s."""
    settings = {
        **kwargs.pop("server_settings", {}),
        "application_name": application_name(service, role),
    }
    return await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        connection_class=Connection,
        server_settings=settings,
        **kwargs,
    )


async def connect(url: str, *, service: str, role: str, **kwargs: Any) -> Connection:
    """One named :class:`Connection`."""
    settings = {
        **kwargs.pop("server_settings", {}),
        "application_name": application_name(service, role),
    }
    conn: Connection = await asyncpg.connect(
        url, connection_class=Connection, server_settings=settings, **kwargs
    )
    return conn

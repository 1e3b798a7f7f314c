"""``touchpulse sources``: a touchpoint team's view of its own events, through the api.

Calls the api over HTTP (``TOUCHPULSE_API_URL``, default this machine's api) with
``TOUCHPULSE_API_KEY``: the events:write key a team posts with reads its own source, an
admin key any source. Failures are one line on stderr and a non-zero exit: 2 for a
missing or refused setting, 1 for anything the api or the network said.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import orjson
import typer

from touchpulse_shared.settings import ConfigError, Settings, load_settings

sources_app = typer.Typer(
    no_args_is_help=True,
    help="What happened to a source's events: quality over a window, dead letters.",
)

# A bound for an api on a loaded machine, not an expectation.
TIMEOUT_S = 30.0
_RELATIVE = re.compile(r"(\d{1,6})([mhd])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


class CommandFailed(Exception):
    """What to say on stderr, and the exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def when(value: str | None, now: datetime) -> str | None:
    """A time option: ``90m``, ``24h`` or ``7d`` before now, else passed on as written (the
    api checks it is an RFC 3339 date-time and names the field when not)."""
    if value is None:
        return None
    match = _RELATIVE.fullmatch(value.strip())
    if match is None:
        return value
    delta = timedelta(**{_UNITS[match[2]]: int(match[1])})
    return (now - delta).isoformat().replace("+00:00", "Z")


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        raise CommandFailed(f"touchpulse: {exc}", 2) from None


def client_for(settings: Settings) -> httpx.Client:
    if settings.api_key is None:
        raise CommandFailed(
            "touchpulse: TOUCHPULSE_API_KEY must be set (an events:write key reads its own"
            " source, an admin key every source)",
            2,
        )
    base = settings.api_url or f"http://{settings.host}:{settings.api_port}"
    return httpx.Client(
        base_url=base,
        headers={"Authorization": f"Bearer {settings.api_key.get_secret_value()}"},
        timeout=TIMEOUT_S,
    )


def get(client: httpx.Client, path: str, params: dict[str, Any]) -> dict[str, Any]:
    """The api's JSON answer, or :class:`CommandFailed` with its problem in one line."""
    try:
        response = client.get(path, params={k: v for k, v in params.items() if v is not None})
    except httpx.HTTPError as exc:
        raise CommandFailed(
            f"touchpulse: the api at {client.base_url} is unreachable: {exc}"
        ) from None
    if response.status_code != 200:
        raise CommandFailed(f"touchpulse: {problem_line(response)}")
    answer: dict[str, Any] = response.json()
    return answer


def problem_line(response: httpx.Response) -> str:
    """A problem+json answer as one line: status, detail, and each field named."""
    try:
        problem = response.json()
    except ValueError:
        return f"{response.status_code} {response.reason_phrase}"
    if not isinstance(problem, dict):
        return f"{response.status_code} {response.reason_phrase}"
    line = f"{response.status_code} {problem.get('detail') or problem.get('title') or ''}"
    fields = [
        f"{e.get('pointer', '?')}: {e.get('detail', '')}"
        for e in problem.get("errors") or []
        if isinstance(e, dict)
    ]
    return line + (f" ({'; '.join(fields)})" if fields else "")


def quality_text(answer: dict[str, Any]) -> str:
    """The quality answer for a person."""

    def spread(counts: dict[str, int]) -> str:
        return ", ".join(f"{name} {count}" for name, count in counts.items())

    rejected, dead, unmatched = answer["rejected"], answer["dead_lettered"], answer["unmatched"]
    rows = [
        f"{answer['source']}: {answer['since']} to {answer['until']}",
        f"  accepted       {answer['accepted']:>8}   duplicates {answer['duplicates']}",
        f"  rejected       {rejected['total']:>8}   {spread(rejected['by_reason'])}",
        f"  dead-lettered  {dead['total']:>8}   {spread(dead['by_reason'])}",
        f"  unmatched      {unmatched['total']:>8}   {spread(unmatched['by_type'])}",
        f"  last event     {answer['last_event_at'] or 'none'}",
    ]
    return "\n".join(row.rstrip() for row in rows)


def dead_letters(client: httpx.Client, params: dict[str, Any], limit: int) -> Iterator[Any]:
    """Up to ``limit`` dead letters, newest first, page after page."""
    cursor: str | None = None
    given = 0
    while given < limit:
        page = get(
            client, "/v1/dead-letters", {**params, "limit": min(200, limit), "cursor": cursor}
        )
        for item in page["items"][: limit - given]:
            given += 1
            yield item
        cursor = page["next_cursor"]
        if cursor is None:
            return


def dead_letter_text(item: dict[str, Any]) -> str:
    where = f"{item['topic']}/{item['partition']}@{item['offset']}"
    named = f"{item['source'] or '(no source)'} {item['event_id'] or '(no event id)'}"
    kind = f" {item['event_type']}" if item["event_type"] else ""
    # Details come from producers' records: shown as text, control characters escaped.
    detail = item["detail"].encode("unicode_escape").decode("ascii")
    return f"{item['dead_lettered_at']}  {item['reason']}  {named}{kind}  {where}\n    {detail}"


def _run(body: Any) -> None:
    try:
        body()
    except CommandFailed as exc:
        typer.echo(exc.message, err=True)
        raise typer.Exit(exc.status) from None


@sources_app.command("quality")
def quality(
    source: Annotated[str, typer.Argument(help="the source, as events name it")],
    since: Annotated[
        str | None, typer.Option(help="RFC 3339, or 90m / 24h / 7d ago; default: 24h")
    ] = None,
    until: Annotated[str | None, typer.Option(help="RFC 3339, or 1h ago; default: now")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="the api's JSON answer")] = False,
) -> None:
    """Events accepted, rejected at the edge, dead-lettered and unmatched, and the last seen."""

    def body() -> None:
        now = datetime.now(UTC)
        with client_for(_settings()) as client:
            answer = get(
                client,
                # Sources may hold slashes (CloudEvents sources are URI references).
                f"/v1/sources/{quote(source, safe='')}/quality",
                {"since": when(since, now), "until": when(until, now)},
            )
        typer.echo(orjson.dumps(answer).decode() if as_json else quality_text(answer))

    _run(body)


@sources_app.command("dead-letters")
def list_dead_letters(
    source: Annotated[
        str | None, typer.Option(help="only this source's (an events:write key: its own)")
    ] = None,
    reason: Annotated[str | None, typer.Option(help="only this reason, e.g. not_json")] = None,
    since: Annotated[str | None, typer.Option(help="RFC 3339, or 90m / 24h / 7d ago")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="at most this many")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """Recent dead letters, newest first: reason, detail, event id and where they were read."""

    def body() -> None:
        params = {"source": source, "reason": reason, "since": when(since, datetime.now(UTC))}
        shown = 0
        with client_for(_settings()) as client:
            for item in dead_letters(client, params, limit):
                typer.echo(orjson.dumps(item).decode() if as_json else dead_letter_text(item))
                shown += 1
        if not shown and not as_json:
            typer.echo("no dead letters", err=True)

    _run(body)

"""``touchpulse catalogue …``: the commands for owning the promise catalogue.

The shared ``touchpulse`` command imports no service, so it finds this typer app through
the ``touchpulse.cli`` entry point declared in pyproject.toml
(``catalogue = "touchpulse_scoring.catalogue_tools.cli:app"``). The command bodies import
their work lazily: every ``touchpulse`` invocation loads this module to list its commands.

Adding a command: define it below with ``@app.command("…")`` and keep its heavy imports
inside the function, as ``check``, ``diff`` and ``backtest`` do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    no_args_is_help=True,
    help="The promise catalogue: check a file, diff two versions, before shipping them.",
)

#: Exit codes shared by the commands: as diff(1) and most checkers use them.
EXIT_OK = 0
EXIT_FOUND = 1
EXIT_USAGE = 2


@app.command("check")
def check(
    file: Annotated[
        Path, typer.Argument(help="the catalogue YAML to check", exists=True, dir_okay=False)
    ],
    *,
    json_output: Annotated[
        bool, typer.Option("--json", help="print a JSON report instead of text")
    ] = False,
) -> None:
    """Validate a catalogue exactly as ingest and scoring do, every problem at once.

    Exits 0 when the services would take the file (and prints what it promises), 1 when
    they would refuse it (one line per problem, with its line, promise and field), 2 on
    usage errors.
    """
    from touchpulse_scoring.catalogue_tools import check  # noqa: PLC0415

    loaded = check.load(file)
    typer.echo(check.render_json(loaded) if json_output else check.render_text(loaded))
    raise typer.Exit(EXIT_OK if loaded.ok else EXIT_FOUND)


@app.command("diff")
def diff(
    old: Annotated[
        Path, typer.Argument(help="the catalogue in effect", exists=True, dir_okay=False)
    ],
    new: Annotated[
        Path, typer.Argument(help="the candidate catalogue", exists=True, dir_okay=False)
    ],
    *,
    json_output: Annotated[
        bool, typer.Option("--json", help="print a JSON report instead of text")
    ] = False,
) -> None:
    """What NEW changes against OLD, in the catalogue's terms: promises added and removed,
    their changed fields (targets, tolerances, weights, severity, segment terms), policy,
    touchpoints, tracking plan and version.

    Exits 0 when both promise the same (and prints nothing, as diff(1)), 1 when they
    differ, 2 when either file is invalid (its problems as `check` prints them) or on
    usage errors.
    """
    from touchpulse_scoring.catalogue_tools import check as checking  # noqa: PLC0415
    from touchpulse_scoring.catalogue_tools import diff as diffing  # noqa: PLC0415

    before, after = checking.load(old), checking.load(new)
    if before.catalogue is None or after.catalogue is None:
        invalid = [loaded for loaded in (before, after) if not loaded.ok]
        if json_output:
            typer.echo("[" + ",\n".join(checking.render_json(i) for i in invalid) + "]")
        for loaded in invalid:
            typer.echo(loaded.problems_text(), err=True)
        raise typer.Exit(EXIT_USAGE)
    result = diffing.diff_catalogues(before.catalogue, after.catalogue)
    if json_output:
        typer.echo(diffing.render_json(result, before, after))
    elif not result.identical:
        typer.echo(diffing.render_text(result, before, after))
    raise typer.Exit(EXIT_OK if result.identical else EXIT_FOUND)


@app.command("backtest")
def backtest(
    candidate: Annotated[
        Path, typer.Argument(help="the candidate catalogue", exists=True, dir_okay=False)
    ],
    *,
    since: Annotated[
        str | None,
        typer.Option(help="re-judge events written at or after this RFC 3339 time"),
    ] = None,
    days: Annotated[
        float | None,
        typer.Option(min=0, help="re-judge the events of the last N days (instead of --since)"),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="print the report as JSON instead of tables")
    ] = False,
) -> None:
    """Re-judge the events retained on the events topic under the live catalogue
    (TOUCHPULSE_PROMISE_CATALOGUE) and under CANDIDATE, in memory, and report what would
    change: per promise and segment, bands, interventions, the customers most affected.

    Writes nothing anywhere: no consumer group, no offsets, no database row. Progress goes
    to stderr. Exits 0 when nothing would change, 1 when something would, 2 when a
    catalogue is invalid or on usage errors.
    """
    import asyncio  # noqa: PLC0415
    from datetime import UTC, datetime, timedelta  # noqa: PLC0415

    from touchpulse_scoring.backtest import command, render  # noqa: PLC0415
    from touchpulse_scoring.catalogue_tools import check as checking  # noqa: PLC0415
    from touchpulse_shared.settings import ConfigError, load_settings  # noqa: PLC0415

    if since is not None and days is not None:
        typer.echo("touchpulse: give --since or --days, not both", err=True)
        raise typer.Exit(EXIT_USAGE)
    start: datetime | None = None
    if since is not None:
        try:
            start = datetime.fromisoformat(since)
        except ValueError:
            start = None
        if start is None or start.utcoffset() is None:
            typer.echo(f"touchpulse: --since {since!r} is not a time with a UTC offset", err=True)
            raise typer.Exit(EXIT_USAGE)
    elif days is not None:
        start = datetime.now(UTC) - timedelta(days=days)
    try:
        settings = load_settings()
    except ConfigError as exc:
        typer.echo(f"touchpulse: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    live, proposed = checking.load(settings.promise_catalogue), checking.load(candidate)
    invalid = [loaded for loaded in (live, proposed) if not loaded.ok]
    if live.catalogue is None or proposed.catalogue is None:
        for loaded in invalid:
            typer.echo(loaded.problems_text(), err=True)
        raise typer.Exit(EXIT_USAGE)
    try:
        report, _ = asyncio.run(
            command.run(settings, live.catalogue, proposed.catalogue, since=start)
        )
    except command.BacktestError as exc:
        typer.echo(f"touchpulse: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    typer.echo(report.to_json() if json_output else render.render_text(report))
    raise typer.Exit(EXIT_OK if report.empty else EXIT_FOUND)

"""``touchpulse catalogue …``: the commands for owning the promise catalogue.

The shared ``touchpulse`` command imports no service, so it finds this typer app through
the ``touchpulse.cli`` entry point declared in pyproject.toml
(``catalogue = "touchpulse_scoring.catalogue_tools.cli:app"``). The command bodies import
their work lazily: every ``touchpulse`` invocation loads this module to list its commands.

Adding a command (the back-test, issue 16): define it below with ``@app.command("…")`` and
keep its heavy imports inside the function, as ``check`` and ``diff`` do.
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

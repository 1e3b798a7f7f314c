"""``touchpulse-scoring``: run the scoring consumer, or ``replay`` the topic to check it."""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import structlog
import typer
import uvloop

from touchpulse_scoring.domain import CatalogueError, load_catalogue_file
from touchpulse_scoring.engine import TimeWindow
from touchpulse_scoring.replay import ReplayError, ReplayReport, replay
from touchpulse_scoring.service import main_async
from touchpulse_shared.logs import configure_logging
from touchpulse_shared.settings import ConfigError, Settings, load_settings
from touchpulse_shared.version import touchpulse_version

log = structlog.get_logger(__name__)

app = typer.Typer(
    add_completion=False, help=__doc__, context_settings={"help_option_names": ["-h", "--help"]}
)


def _settings() -> Settings:
    try:
        settings = load_settings()
    except ConfigError as exc:
        typer.echo(f"touchpulse-scoring: {exc}", err=True)
        raise typer.Exit(2) from None
    configure_logging(settings)
    if settings.database_url is None or settings.kafka_bootstrap_servers is None:
        typer.echo(
            "touchpulse-scoring: TOUCHPULSE_DATABASE_URL and TOUCHPULSE_KAFKA_BOOTSTRAP_SERVERS "
            "must be set",
            err=True,
        )
        raise typer.Exit(2)
    return settings


#: The cyclic collector's thresholds for scoring's processes (Python's are 700, 10, 10).
GC_THRESHOLDS = (50_000, 50, 100)


def tune_collector() -> None:
    """Set the collector for a process that keeps a large long-lived heap.

    Scoring keeps up to ``scoring_window_outcomes`` outcomes and the open cases decoded in
    memory (hundreds of thousands of objects, none in a reference cycle), while each batch
    allocates and drops as many short-lived ones. Under Python's default thresholds the
    older generations are walked again and again over that heap: about 30 % of scoring's
    CPU per event late in the bench corpus, none of it finding garbage
    (docs/performance.md). The young generation still runs, every 50,000 allocations; the
    oldest rarely. Start-up objects are frozen out of the collector's reach altogether.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    log.info("scoring.collector", thresholds=list(gc.get_threshold()), frozen=gc.get_freeze_count())


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"touchpulse-scoring {touchpulse_version()}")
        raise typer.Exit


@app.callback(invoke_without_command=True)
def run(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", is_eager=True, callback=_print_version
        ),
    ] = False,
) -> None:
    """Consume the events topic and keep journey health (the default command)."""
    del version  # answered by its callback, before any setting is read
    if ctx.invoked_subcommand is not None:
        return
    settings = _settings()
    tune_collector()
    try:
        # uvloop: the standard loop's machinery was a fifth of scoring's own time.
        uvloop.run(main_async(settings))
    except CatalogueError as exc:
        typer.echo(f"touchpulse-scoring: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command("replay")
def replay_command(
    scratch_url: Annotated[
        str | None,
        typer.Option(help="database to rebuild into (default: a new one on the live server)"),
    ] = None,
    keep: Annotated[bool, typer.Option(help="keep the scratch database afterwards")] = False,
) -> None:
    """Rebuild state from the profiles topic and the events topic's beginning (interventions
    muted) and compare it with the live state; exit 0 when they agree, 1 when they do not."""
    settings = _settings()
    tune_collector()
    live_url = settings.database_url or ""
    catalogue = load_catalogue_file(settings.promise_catalogue)
    created = scratch_url is None
    scratch = scratch_url or _with_database(live_url, f"touchpulse_replay_{int(time.time())}")
    if created:
        asyncio.run(_create_database(live_url, scratch))
    try:
        report = uvloop.run(
            replay(
                live_url=live_url,
                scratch_url=scratch,
                bootstrap_servers=settings.kafka_bootstrap_servers or "",
                topic=settings.events_topic,
                profiles_topic=settings.profiles_topic,
                catalogue=catalogue,
                window=TimeWindow.from_settings(settings),
            )
        )
    except ReplayError as exc:
        typer.echo(f"touchpulse-scoring replay: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        if created and not keep:
            asyncio.run(_drop_database(live_url, scratch))
    _print(report)
    raise typer.Exit(0 if report.matches else 1)


def _print(report: ReplayReport) -> None:
    typer.echo(f"profiles loaded:           {report.profiles}")
    typer.echo(f"records replayed:          {report.records}")
    typer.echo(f"customers compared:        {report.customers_compared}")
    typer.echo(f"equal:                     {report.equal}")
    typer.echo(f"different:                 {len(report.different)} {report.different[:10]}")
    typer.echo(f"only in live state:        {len(report.only_live)} {report.only_live[:10]}")
    typer.echo(f"only in replay:            {len(report.only_replay)} {report.only_replay[:10]}")
    typer.echo(f"changed since snapshot:    {report.changed_since_snapshot} (not compared)")
    typer.echo(
        f"profile changed meanwhile: {len(report.profile_pending)} "
        f"{report.profile_pending[:10]} (written after the replay began; not compared)"
    )
    typer.echo(
        f"profile missing on topic:  {len(report.profile_missing)} {report.profile_missing[:10]}"
    )
    typer.echo(
        f"differ, profile changed:   {len(report.profile_changed)} "
        f"{report.profile_changed[:10]} (changed after their events were scored)"
    )
    typer.echo(
        f"unreadable profiles:       {len(report.unreadable_profiles)} "
        f"{report.unreadable_profiles[:10]}"
    )
    typer.echo("replay equals live state" if report.matches else "replay DIFFERS from live state")


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def _create_database(live_url: str, scratch_url: str) -> None:
    conn = await asyncpg.connect(live_url)
    try:
        await conn.execute(f'CREATE DATABASE "{urlsplit(scratch_url).path.lstrip("/")}"')
    finally:
        await conn.close()


async def _drop_database(live_url: str, scratch_url: str) -> None:
    conn = await asyncpg.connect(live_url)
    try:
        name = urlsplit(scratch_url).path.lstrip("/")
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()

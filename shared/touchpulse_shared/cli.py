"""``touchpulse``: run the local stack, apply migrations, create topics, export schemas."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Annotated

import asyncpg
import httpx
import typer
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

from touchpulse_shared.auth import (
    InvalidKeySpec,
    KeyRecord,
    Scope,
    create_key,
    list_keys,
    lookup,
    parse_key,
    revoke_key,
    validate_spec,
)
from touchpulse_shared.db.migrate import migrate_url, migration_states_url
from touchpulse_shared.kafka.topics import ensure_topics_at, topic_specs
from touchpulse_shared.logs import configure_logging
from touchpulse_shared.people import (
    InvalidPerson,
    Person,
    Role,
    create_person,
    disable_person,
    list_people,
    reset_password,
)
from touchpulse_shared.settings import (
    ConfigError,
    Settings,
    env_name,
    load_settings,
    redact_url,
    reveal,
    shown,
)
from touchpulse_shared.sources_cli import sources_app
from touchpulse_shared.stack import runner
from touchpulse_shared.stack.kafka import kafka_libs
from touchpulse_shared.stack.procs import StackError
from touchpulse_shared.version import touchpulse_version

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help=__doc__,
    context_settings={"help_option_names": ["-h", "--help"]},
    # Docstrings are wrapped at 100 columns in the source: markdown joins a paragraph's lines
    # again (the default keeps each line break, so help came out in ragged half-lines).
    rich_markup_mode="markdown",
)
stack_app = typer.Typer(no_args_is_help=True, help="The local Kafka and PostgreSQL.")
schema_app = typer.Typer(
    no_args_is_help=True, help="JSON Schemas: the event contract's and the promise catalogue's."
)
keys_app = typer.Typer(no_args_is_help=True, help="API keys: create (shown once), list, revoke.")
app.add_typer(stack_app, name="stack")
app.add_typer(schema_app, name="schema")
app.add_typer(keys_app, name="keys")
app.add_typer(sources_app, name="sources")
users_app = typer.Typer(
    no_args_is_help=True, help="People who sign in to the desk: create, list, disable, reset."
)
app.add_typer(users_app, name="users")

#: Services add their own sub-commands here (pyproject.toml's entry points) without this
#: package importing them: ``touchpulse catalogue`` comes from scoring this way.
PLUGIN_GROUP = "touchpulse.cli"


def _add_plugins(parent: typer.Typer, entries: Iterable[EntryPoint] | None = None) -> None:
    """Add each ``touchpulse.cli`` entry point's typer app under its name (``entries``
    instead of the installed ones: the tests)."""
    found = entry_points(group=PLUGIN_GROUP) if entries is None else entries
    for entry in sorted(found, key=lambda e: e.name):
        try:
            sub = entry.load()
        except Exception as exc:
            # One broken plug-in must not take the other commands down; said on every run, so
            # it is fixed rather than found missing the day it is needed.
            print(f"touchpulse: the {entry.name!r} commands cannot load: {exc}", file=sys.stderr)
            continue
        if not isinstance(sub, typer.Typer):
            print(f"touchpulse: {entry.value} is not a typer app; skipped", file=sys.stderr)
            continue
        parent.add_typer(sub, name=entry.name)


_add_plugins(app)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"touchpulse {touchpulse_version()}")
        raise typer.Exit


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", is_eager=True, callback=_print_version
        ),
    ] = False,
    debug: Annotated[
        bool,
        typer.Option("--debug", help="Show a failure's traceback, not only its one line."),
    ] = False,
) -> None:
    # --debug is read by main() before typer parses the line; declared here for --help.
    del version, debug


def _settings() -> Settings:
    try:
        settings = load_settings()
    except ConfigError as exc:
        typer.echo(f"touchpulse: {exc}", err=True)
        raise typer.Exit(2) from None
    configure_logging(settings)
    return settings


#: What the running command reaches (PostgreSQL at its URL, Kafka at its servers), so that
#: failing to is said in one line naming it rather than the driver's traceback.
_reaching: dict[str, str] = {}
_POSTGRES_UNREACHABLE = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InvalidAuthorizationSpecificationError,  # a wrong user or password
    asyncpg.InvalidCatalogNameError,  # no such database
    asyncpg.CannotConnectNowError,  # starting up or shutting down
    asyncpg.TooManyConnectionsError,
)
_KAFKA_UNREACHABLE = (KafkaConnectionError, KafkaTimeoutError)


def _required(value: str | None, field: str) -> str:
    if value is None:
        typer.echo(f"touchpulse: {env_name(field)} must be set for this command", err=True)
        raise typer.Exit(2)
    if field == "database_url":
        _reaching["postgres"] = f"PostgreSQL at {redact_url(value)}"
    elif field == "kafka_bootstrap_servers":
        _reaching["kafka"] = f"Kafka at {value}"
    return value


def _failure(exc: BaseException) -> str:
    """One line for a command that failed: what it could not reach, and why."""
    kind = type(exc).__name__
    cause = " ".join(str(exc).split()).removeprefix(f"{kind}: ") or kind
    if isinstance(exc, _POSTGRES_UNREACHABLE):
        targets = [_reaching.get("postgres", "PostgreSQL")]
    elif isinstance(exc, _KAFKA_UNREACHABLE):
        targets = [_reaching.get("kafka", "Kafka")]
    elif isinstance(exc, ConnectionError | TimeoutError | socket.gaierror) or (
        type(exc) is OSError and exc.filename is None  # asyncpg's "Multiple exceptions"
    ):
        targets = list(_reaching.values())
    else:
        targets = []
    if targets:
        return f"cannot reach {' / '.join(targets)}: {cause} ({kind})"
    return f"failed: {cause} ({kind})"


@app.command()
def run() -> None:
    """Start Kafka and PostgreSQL (unless configured), migrate, create topics, start every
    service; Ctrl-C or SIGTERM stops it all."""
    settings = _settings()
    try:
        runner.run(settings, typer.echo)
    except StackError as exc:
        typer.echo(f"touchpulse: {exc}", err=True)
        raise typer.Exit(1) from None


@stack_app.command("fetch")
def stack_fetch() -> None:
    """Fetch (once) and cache the Kafka jars from Maven Central and Prometheus from Debian;
    install Debian's chromium when missing and cache axe-core from npm (the desk's browser
    tests)."""
    # Imported here so the other commands do not load the fetch code they never use.
    from touchpulse_shared.stack.browser import axe_script, ensure_chromium  # noqa: PLC0415
    from touchpulse_shared.stack.prometheus import prometheus_tools  # noqa: PLC0415

    settings = _settings()
    try:
        if settings.kafka_bootstrap_servers is not None:
            typer.echo("Kafka is configured; no jars needed.")
        else:
            libs = kafka_libs(settings.cache_dir, settings.kafka_version)
            typer.echo(f"Apache Kafka {settings.kafka_version} jars: {libs}")
        # Always fetched: the rule checks and their tests need promtool even with a real Kafka.
        tools = prometheus_tools(settings.cache_dir)
        # The desk's browser tests run in make test: the browser and the rules they check.
        chromium = ensure_chromium()
        axe = axe_script(settings.cache_dir)
    except StackError as exc:
        typer.echo(f"touchpulse: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Prometheus {tools.version}: {tools.prometheus}")
    typer.echo(f"promtool {tools.version}: {tools.promtool}")
    typer.echo(f"chromium: {chromium}")
    typer.echo(f"axe-core: {axe}")


@app.command()
def simulate(
    *,
    ingest_url: Annotated[
        str | None, typer.Option(help="ingest's base URL; default: this machine's ingest")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(help="events:write key (or TOUCHPULSE_SIMULATOR_API_KEY)")
    ] = None,
    rate: Annotated[float, typer.Option(min=0.1, help="events per second offered")] = 20.0,
    seed: Annotated[int, typer.Option(help="same seed and start, same events")] = 1,
    customers: Annotated[int, typer.Option(min=1)] = 200,
    breach_rate: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="one share of decisions breaking their promise everywhere; default: the "
            "realistic per-decision rates of docs/simulator.md",
        ),
    ] = None,
    touchpoint_breach_rate: Annotated[
        list[str] | None,
        typer.Option(help="TOUCHPOINT=RATE, overrides --breach-rate there (repeatable)"),
    ] = None,
    incident: Annotated[
        list[str] | None,
        typer.Option(help="TOUCHPOINT:START_S:DURATION_S[:RATE], e.g. delivery:60:3600"),
    ] = None,
    premium_share: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.2,
    bad_rate: Annotated[
        float, typer.Option(min=0.0, max=0.99, help="share of malformed events (422)")
    ] = 0.01,
    duplicate_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="share of events sent twice")
    ] = 0.01,
    out_of_order_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="share of events sent after later ones")
    ] = 0.02,
    deadline_window: Annotated[
        float, typer.Option(min=30.0, help="seconds from an order to its delivery deadline")
    ] = 60.0,
    format: Annotated[
        str, typer.Option(help="native (JSON batches) or cloudevents (a CloudEvents batch)")
    ] = "native",
    source: Annotated[str, typer.Option(help="the source the key is bound to")] = "simulator",
    batch: Annotated[int, typer.Option(min=1, max=1000, help="events per request")] = 20,
    duration: Annotated[
        float | None, typer.Option(help="seconds to run; default: until Ctrl-C")
    ] = None,
    total: Annotated[int | None, typer.Option(min=1, help="stop after this many events")] = None,
    api_url: Annotated[
        str | None, typer.Option(help="the api's base URL: PUT the customers' profiles first")
    ] = None,
    admin_key: Annotated[
        str | None, typer.Option(help="admin key for --api-url (and health:read to measure)")
    ] = None,
    measure: Annotated[
        bool,
        typer.Option(
            help="with --api-url and --duration or --total: finish the journeys begun, wait "
            "for scoring, and score the intervention queue against the ground truth"
        ),
    ] = True,
    scoring_metrics_url: Annotated[
        list[str] | None,
        typer.Option(help="scoring's /metrics base URL, one per instance (repeatable)"),
    ] = None,
    measure_timeout: Annotated[
        float, typer.Option(min=1.0, help="seconds to wait for scoring before scoring anyway")
    ] = 300.0,
) -> None:
    """Post synthetic customer journeys through the real ingest API at a paced rate.

    Prints what was sent (by touchpoint and type, malformed, duplicates, out of order) and
    what ingest answered, also after Ctrl-C or SIGTERM; exits 1 when ingest refused the key
    or accepted nothing. A measured run (see --measure) also prints the queue's recall and
    precision against what the simulator did to each customer (docs/simulator.md).
    """
    # Imported here: only this command needs the HTTP client and the generator.
    from touchpulse_shared import simulator  # noqa: PLC0415

    settings = _settings()
    key = api_key or reveal(settings.simulator_api_key)
    if not key:
        typer.echo("touchpulse: give --api-key or set TOUCHPULSE_SIMULATOR_API_KEY", err=True)
        raise typer.Exit(2)
    if (api_url is None) != (admin_key is None):
        typer.echo("touchpulse: --api-url and --admin-key go together", err=True)
        raise typer.Exit(2)
    if format not in ("native", "cloudevents"):
        typer.echo(f"touchpulse: --format is native or cloudevents, not {format!r}", err=True)
        raise typer.Exit(2)
    try:
        config = simulator.SimulatorConfig(
            seed=seed,
            customers=customers,
            breach_rate=breach_rate,
            breach_rates=simulator.parse_breach_rates(touchpoint_breach_rate or []),
            premium_share=premium_share,
            bad_rate=bad_rate,
            source=source,
            rate=rate,
            deadline_window_s=deadline_window,
            incidents=tuple(simulator.Incident.parse(text) for text in incident or []),
            duplicate_rate=duplicate_rate,
            out_of_order_rate=out_of_order_rate,
            format="cloudevents" if format == "cloudevents" else "native",
        )
    except ValueError as exc:
        typer.echo(f"touchpulse: {exc}", err=True)
        raise typer.Exit(2) from None
    sent = simulator.Sent()
    failed = None
    score = None
    scoring_urls = tuple(
        scoring_metrics_url or [f"http://{settings.host}:{settings.scoring_metrics_port}"]
    )
    try:
        score = asyncio.run(
            simulator.run(
                config,
                ingest_url=ingest_url or f"http://{settings.host}:{settings.ingest_port}",
                api_key=key,
                rate=rate,
                duration_s=duration,
                total=total,
                batch=batch,
                api_url=api_url,
                admin_key=admin_key,
                sent=sent,
                echo=typer.echo,
                measure_queue=measure and (duration is not None or total is not None),
                scoring_urls=scoring_urls,
                measure_timeout_s=measure_timeout,
            )
        )
    except asyncio.CancelledError:
        pass  # a second Ctrl-C: report what was sent so far
    except httpx.HTTPError as exc:
        failed = f"touchpulse: {exc}"
    typer.echo(sent.summary())
    if score is not None:
        typer.echo(score.summary())
    if failed is not None:
        typer.echo(failed, err=True)
    if failed is not None or sent.stopped is not None or (sent.posted and not sent.accepted):
        raise typer.Exit(1)


@app.command()
def migrate(
    status: Annotated[
        bool,
        typer.Option(
            "--status", help="Show each migration: applied (when), pending or changed; apply none."
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be applied, and apply none.")
    ] = False,
) -> None:
    """Apply the schema migrations to the configured database. --status and --dry-run only
    read it; both exit 1 when a migration was changed after it was applied."""
    settings = _settings()
    url = _required(settings.database_url, "database_url")
    if not (status or dry_run):
        applied = asyncio.run(migrate_url(url))
        typer.echo(f"applied: {[m.version for m in applied] or 'nothing, already current'}")
        return
    states = asyncio.run(migration_states_url(url))
    pending = [m for m in states if m.state == "pending"]
    for m in states if status else pending:
        when = "" if m.applied_at is None else f"  {m.applied_at.isoformat(timespec='seconds')}"
        mode = "" if m.transactional else "  (outside a transaction)"
        typer.echo(f"{m.version:04d}_{m.name}  {m.state}{when}{mode}")
    if dry_run:
        typer.echo(
            f"would apply: {[m.version for m in pending]}"
            if pending
            else "would apply: nothing, already current"
        )
    else:
        typer.echo(f"{len(pending)} pending")
    changed = [m for m in states if m.state == "changed"]
    if changed:
        typer.echo(
            "touchpulse: changed after they were applied (migrate refuses them): "
            + ", ".join(f"{m.version:04d}_{m.name}" for m in changed),
            err=True,
        )
        raise typer.Exit(1)


@app.command()
def topics() -> None:
    """Create the Touchpulse topics (with their configs) on the configured cluster."""
    settings = _settings()
    servers = _required(settings.kafka_bootstrap_servers, "kafka_bootstrap_servers")
    created = asyncio.run(ensure_topics_at(servers, topic_specs(settings)))
    typer.echo(f"created: {created or 'nothing, all exist'}")


@app.command()
def config() -> None:
    """Validate the configuration and print it."""
    settings = _settings()
    # Secrets as ***(fingerprint), passwords in URLs as ***: the output gets pasted.
    for name in type(settings).model_fields:
        value = shown(name, getattr(settings, name))
        typer.echo(f"{env_name(name)}={'' if value is None else value}")


#: Services add JSON Schemas of their own files (the promise catalogue's) through entry
#: points naming a function that returns ``{file name: schema}``.
SCHEMA_GROUP = "touchpulse.schemas"


@schema_app.command("export")
def schema_export(
    directory: Annotated[Path, typer.Argument(help="where to write the JSON Schema files")],
) -> None:
    """Write the JSON Schemas (the docs/schema files): the event contract's, and those the
    services add (the promise catalogue's)."""
    from touchpulse_shared.contract.schema import (  # noqa: PLC0415
        export_json_schemas,
        json_schemas,
    )

    schemas = json_schemas()
    for entry in sorted(entry_points(group=SCHEMA_GROUP), key=lambda e: e.name):
        # Unlike a missing command, a missing schema would go unnoticed: fail loudly.
        schemas.update(entry.load()())
    for path in export_json_schemas(directory, schemas):
        typer.echo(str(path))


# InvalidKeySpec.field -> the option that carries it.
_KEY_OPTIONS = {
    "name": "--name",
    "scopes": "--scope",
    "source": "--source",
    "touchpoints": "--touchpoint",
}


async def _keys_connection(url: str) -> asyncpg.Connection:
    # Migrated first, so the first key can be made on a database nothing has started on yet.
    await migrate_url(url)
    return await asyncpg.connect(url)


def _key_line(record: KeyRecord) -> str:
    state = f"revoked {record.revoked_at:%Y-%m-%d %H:%M:%S%z}" if record.revoked_at else "active"
    touchpoints = "all" if record.touchpoints is None else ",".join(sorted(record.touchpoints))
    return (
        f"{record.key_id}  {record.name!r}  scopes={','.join(sorted(record.scopes))}"
        f"  source={record.source or '-'}  touchpoints={touchpoints}"
        f"  created {record.created_at:%Y-%m-%d %H:%M:%S%z}  {state}"
    )


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="who or what uses the key, e.g. 'billing system'")],
    scope: Annotated[list[Scope], typer.Option(help="a scope to grant; repeat for several")],
    source: Annotated[
        str | None, typer.Option(help="the source an events:write key writes events for")
    ] = None,
    touchpoint: Annotated[
        list[str] | None,
        typer.Option(help="a touchpoint an events:write key may write; repeat; none means all"),
    ] = None,
) -> None:
    """Create an API key and print it: the only time it is shown (Touchpulse keeps its hash)."""
    settings = _settings()
    try:
        validate_spec(name=name, scopes=scope, source=source, touchpoints=touchpoint or None)
    except InvalidKeySpec as exc:
        raise typer.BadParameter(exc.message, param_hint=f"'{_KEY_OPTIONS[exc.field]}'") from None
    url = _required(settings.database_url, "database_url")

    async def _create() -> tuple[str, KeyRecord]:
        conn = await _keys_connection(url)
        try:
            return await create_key(
                conn,
                name=name,
                scopes=scope,
                source=source,
                touchpoints=touchpoint or None,
                now=datetime.now(UTC),
            )
        finally:
            await conn.close()

    plaintext, record = asyncio.run(_create())
    typer.echo(_key_line(record))
    typer.echo(f"key: {plaintext}")
    typer.echo("touchpulse: store the key now; it will not be shown again", err=True)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[
        str, typer.Argument(help="the key's id, as `touchpulse keys list` shows (or the whole key)")
    ],
) -> None:
    """Revoke an API key; services refuse it once their key cache expires."""
    settings = _settings()
    url = _required(settings.database_url, "database_url")
    # Someone holding a leaked key may paste the whole of it; its id is all that is needed.
    parsed = parse_key(key_id)
    key_id = key_id if parsed is None else parsed[0]

    async def _revoke() -> tuple[bool, KeyRecord | None]:
        conn = await _keys_connection(url)
        try:
            revoked = await revoke_key(conn, key_id, now=datetime.now(UTC))
            return revoked, await lookup(conn, key_id)
        finally:
            await conn.close()

    revoked, record = asyncio.run(_revoke())
    if record is None:
        typer.echo(f"touchpulse: there is no key with id {key_id!r}", err=True)
        raise typer.Exit(1)
    typer.echo(("revoked: " if revoked else "already revoked: ") + _key_line(record))


@keys_app.command("list")
def keys_list() -> None:
    """List the API keys, revoked ones included (never their secrets)."""
    settings = _settings()
    url = _required(settings.database_url, "database_url")

    async def _list() -> list[KeyRecord]:
        conn = await _keys_connection(url)
        try:
            return await list_keys(conn)
        finally:
            await conn.close()

    records = asyncio.run(_list())
    for record in records:
        typer.echo(_key_line(record))
    if not records:
        typer.echo("no keys yet: create one with `touchpulse keys create`")


def _person_line(person: Person) -> str:
    state = f"disabled {person.disabled_at:%Y-%m-%d %H:%M:%S%z}" if person.disabled_at else "active"
    return f"{person.login}  {person.display_name!r}  role={person.role.value}  {state}"


def _read_password(from_stdin: bool) -> str:
    """The new password: the first line of stdin, or asked twice at a hidden prompt. Never
    an argument: argv shows in `ps` and shell history."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    password: str = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    return password


_STDIN_HELP = "read the password from the first line of stdin instead of a prompt"


@users_app.command("create")
def users_create(
    login: Annotated[str, typer.Argument(help="the sign-in name, e.g. an e-mail address")],
    name: Annotated[str, typer.Option(help="the name the desk shows")],
    role: Annotated[Role, typer.Option(help="agent, lead or admin")] = Role.AGENT,
    password_stdin: Annotated[bool, typer.Option(help=_STDIN_HELP)] = False,
) -> None:
    """Create a person who can sign in to the desk."""
    settings = _settings()
    url = _required(settings.database_url, "database_url")
    password = _read_password(password_stdin)

    async def _create() -> Person:
        conn = await _keys_connection(url)
        try:
            return await create_person(
                conn,
                login=login,
                display_name=name,
                role=role,
                password=password,
                now=datetime.now(UTC),
            )
        finally:
            await conn.close()

    try:
        person = asyncio.run(_create())
    except InvalidPerson as exc:
        typer.echo(f"touchpulse: {exc.message}", err=True)
        raise typer.Exit(1) from None
    typer.echo(_person_line(person))


@users_app.command("list")
def users_list() -> None:
    """List the people, disabled ones included (never their password hashes)."""
    settings = _settings()
    url = _required(settings.database_url, "database_url")

    async def _list() -> list[Person]:
        conn = await _keys_connection(url)
        try:
            return await list_people(conn)
        finally:
            await conn.close()

    people = asyncio.run(_list())
    for person in people:
        typer.echo(_person_line(person))
    if not people:
        typer.echo("no people yet: create one with `touchpulse users create`")


@users_app.command("disable")
def users_disable(login: Annotated[str, typer.Argument(help="the person's login")]) -> None:
    """Disable a person: sign-in refused, every session of theirs revoked at once."""
    settings = _settings()
    url = _required(settings.database_url, "database_url")

    async def _disable() -> Person | None:
        conn = await _keys_connection(url)
        try:
            return await disable_person(conn, login, now=datetime.now(UTC))
        finally:
            await conn.close()

    person = asyncio.run(_disable())
    if person is None:
        typer.echo(f"touchpulse: there is no person {login!r}", err=True)
        raise typer.Exit(1)
    typer.echo(_person_line(person))


@users_app.command("reset-password")
def users_reset_password(
    login: Annotated[str, typer.Argument(help="the person's login")],
    password_stdin: Annotated[bool, typer.Option(help=_STDIN_HELP)] = False,
) -> None:
    """Set a new password; every session of the person is revoked."""
    settings = _settings()
    url = _required(settings.database_url, "database_url")
    password = _read_password(password_stdin)

    async def _reset() -> bool:
        conn = await _keys_connection(url)
        try:
            return await reset_password(conn, login, password, now=datetime.now(UTC))
        finally:
            await conn.close()

    try:
        done = asyncio.run(_reset())
    except InvalidPerson as exc:
        typer.echo(f"touchpulse: {exc.message}", err=True)
        raise typer.Exit(1) from None
    if not done:
        typer.echo(f"touchpulse: there is no person {login!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"password reset for {login}; their sessions are revoked")


def main() -> None:
    # --debug anywhere on the line: a failure shows its traceback, not just its one line.
    debug = "--debug" in sys.argv[1:]
    if debug:
        sys.argv.remove("--debug")
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if debug:
            raise
        print(f"touchpulse: {_failure(exc)} (--debug shows the traceback)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

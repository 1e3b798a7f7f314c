"""Typed configuration shared by every Touchpulse process.

Values come, strongest first, from: arguments in code, environment variables
(``TOUCHPULSE_<NAME>``), the TOML file named by ``TOUCHPULSE_CONFIG_FILE``, then the defaults
below. Settings are built once at a process's entry point (:func:`load_settings`) and
handed down; nothing reads the environment at import time.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "TOUCHPULSE_"
CONFIG_FILE_ENV = "TOUCHPULSE_CONFIG_FILE"

Port = Annotated[int, Field(ge=1, le=65535)]
#: The dedupe window is at least the events topic's retention plus this.
DEDUPE_MARGIN_HOURS = 24


class ConfigError(ValueError):
    """The configuration is invalid; the message names every offending setting."""


#: Settings whose values are secrets: shown as ``***`` with a short fingerprint (so two
#: deployments can be compared) in ``touchpulse config``, reprs and logs, never in clear.
SECRET_FIELDS = frozenset({"webhook_signing_key", "simulator_api_key", "api_key"})
# user:password@ in a URL's authority, and password=... in its query (libpq's form).
_URL_PASSWORD = re.compile(r"(?<=://)([^/@:]*):([^/@]*)@")
_QUERY_PASSWORD = re.compile(r"(?i)(?<=[?&]password=)[^&]*")


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (``postgresql://tp:***@db/tp``)."""
    return _QUERY_PASSWORD.sub("***", _URL_PASSWORD.sub(r"\1:***@", url))


def _url_passwords(url: str) -> list[str]:
    return [m.group(2) for m in _URL_PASSWORD.finditer(url)] + _QUERY_PASSWORD.findall(url)


def reveal(secret: SecretStr | str | None) -> str | None:
    """A secret setting's value, for the one place that uses it (settings built without
    validation, as ``model_copy(update=...)`` does, may hold it as a plain string)."""
    return secret.get_secret_value() if isinstance(secret, SecretStr) else secret


def fingerprint(secret: str) -> str:
    """``***`` and the first 8 hex digits of the secret's SHA-256: enough to tell two
    values apart, nothing to recover one from (every secret here is long and random)."""
    return f"***({hashlib.sha256(secret.encode()).hexdigest()[:8]})"


def shown(name: str, value: Any) -> Any:
    """A setting's value as it may be printed or logged."""
    if value is None:
        return None
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if name in SECRET_FIELDS:
        return fingerprint(str(value))
    if name.endswith("_url") and isinstance(value, str):
        return redact_url(value)
    return value


class Settings(BaseSettings):
    """Everything a Touchpulse process can be configured with."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        validate_default=True,
    )

    # --- Kafka -------------------------------------------------------------------------
    kafka_bootstrap_servers: str | None = Field(
        default=None,
        # The plain name is what Kafka tooling and operators already export.
        validation_alias=AliasChoices(
            "TOUCHPULSE_KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"
        ),
        description="host:port[,host:port…] of a Kafka cluster; unset starts a local broker",
    )
    events_topic: str = Field("touchpoint.events.v1", min_length=1, max_length=249)
    dead_letter_topic: str = Field("touchpoint.events.dlq.v1", min_length=1, max_length=249)
    health_topic: str = Field("journey.health.v1", min_length=1, max_length=249)
    interventions_topic: str = Field("interventions.v1", min_length=1, max_length=249)
    profiles_topic: str = Field("customer.profiles.v1", min_length=1, max_length=249)
    events_partitions: int = Field(
        6, ge=1, le=1000, description="partitions of the events topic (the unit of scale)"
    )
    topic_replication_factor: int = Field(
        1, ge=1, le=10, description="1 on one node; 3 (with min.insync.replicas=2) in production"
    )
    events_retention_hours: int = Field(
        168, ge=1, description="how long raw events stay on the topic for replay"
    )
    dead_letter_retention_hours: int = Field(720, ge=1)

    # --- PostgreSQL --------------------------------------------------------------------
    database_url: str | None = Field(
        default=None,
        description="postgresql://user:password@host:port/db; unset starts an embedded server",
    )

    # --- local stack -------------------------------------------------------------------
    kafka_version: str = Field(
        "4.1.1",
        pattern=r"^4\.\d+\.\d+$",
        description="Apache Kafka 4.x version for the local broker",
    )
    local_kafka_brokers: int = Field(
        1,
        description="brokers of the local Kafka (when kafka_bootstrap_servers is unset): 1, or 3 "
        "for a KRaft cluster whose topics have replication factor 3 and min.insync.replicas 2",
    )
    cache_dir: Path = Field(Path(".cache"), description="downloaded jars (git-ignored)")
    state_dir: Path = Field(
        Path(".touchpulse"), description="per-run data and logs of the local stack (git-ignored)"
    )

    run_demo_rate: float = Field(
        20.0,
        ge=0,
        le=10_000,
        description="events per second the simulator posts under `touchpulse run` (0: none)",
    )
    run_live_interval_s: float = Field(
        5.0, ge=0, description="how often `touchpulse run` prints its live view (0: never)"
    )

    # --- process -----------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"
    host: str = Field("127.0.0.1", description="interface the services listen on")
    ingest_port: Port = 8081
    api_port: Port = 8082
    scoring_metrics_port: Port = 8083

    # --- ingest ------------------------------------------------------------------------
    ingest_max_batch_items: int = Field(
        1000, ge=1, le=10_000, description="events in one batch request at most"
    )
    ingest_max_body_bytes: int = Field(
        5 * 1024 * 1024, ge=1024, description="request body size at most (413 above it)"
    )
    ingest_produce_timeout_ms: int = Field(
        5000,
        ge=100,
        le=60_000,
        description="how long a request waits for Kafka's acknowledgement before a 503",
    )
    ingest_retry_after_s: int = Field(5, ge=1, description="Retry-After sent with a 503")
    ingest_linger_ms: int = Field(
        5, ge=0, le=1000, description="producer batching delay: throughput against latency"
    )
    ingest_max_event_age_hours: int = Field(
        24 * 90, ge=1, description="events older than this are refused (422)"
    )
    ingest_max_clock_skew_s: int = Field(
        900, ge=0, description="events this far in the future are still accepted"
    )
    ingest_quality_flush_s: float = Field(
        5.0,
        gt=0,
        le=300,
        description="how often ingest adds its edge-rejection counts per source to PostgreSQL "
        "(a crash loses at most this many seconds of them)",
    )
    rate_limit_events_per_s: float = Field(
        2000.0, gt=0, description="sustained events per second per API key"
    )
    rate_limit_burst: float = Field(
        10_000.0, gt=0, description="events a key may send at once before 429s"
    )
    auth_cache_s: float = Field(
        5.0, ge=0, description="how long a verified key is trusted before re-reading it"
    )

    # --- scoring -----------------------------------------------------------------------
    promise_catalogue: Path = Field(
        Path("deploy/promises.yaml"),
        description="the promise catalogue (YAML); re-read when the file changes",
    )
    scoring_group_id: str = Field("touchpulse-scoring", min_length=1)
    scoring_max_batch: int = Field(
        500, ge=1, le=10_000, description="records per batch transaction at most"
    )
    scoring_window_outcomes: int = Field(
        250_000,
        ge=0,
        le=10_000_000,
        description="outcomes of customers' explanation windows kept in memory between "
        "batches (least recently used dropped first; 0 keeps none), and as many gaps of "
        "decoded open cases: bounds scoring's memory",
    )
    scoring_sweep_interval_s: float = Field(
        1.0, gt=0, description="how often expired deadlines are looked for"
    )
    scoring_state_metrics_interval_s: float = Field(
        15.0,
        gt=0,
        description="how often health-by-segment and intervention-queue gauges are read "
        "from PostgreSQL",
    )
    scoring_stuck_after_s: float = Field(
        60.0, gt=0, description="/healthz fails when the consumer loop made no progress this long"
    )
    # Lifecycle (docs/scoring.md, "Lifecycle"): what scoring's pruning loop keeps.
    scoring_dedupe_window_hours: int = Field(
        14 * 24,
        ge=1,
        description="the idempotency promise: a retry of an event (same source and event_id) "
        "within this many hours of the first copy counts once; at least the events topic's "
        "retention plus a day",
    )
    scoring_outcome_keep_days: int = Field(
        0,
        ge=0,
        le=36_500,
        description="keep every outcome at least this many days, beyond what the health "
        "explanation and the intervention triggers need (0: only what they need)",
    )
    scoring_history_full_days: int = Field(
        30,
        ge=1,
        le=36_500,
        description="days of journey-health history kept at full resolution; older days keep "
        "each customer's last and highest point of the day",
    )
    scoring_history_keep_days: int = Field(
        400,
        ge=366,
        le=36_500,
        description="days of journey-health history kept (at least a year: the api's "
        "longest trend), removed by whole months past it",
    )
    scoring_lifecycle_interval_s: float = Field(
        60.0,
        gt=0,
        description="how often the pruning loop looks for rows to remove when its last round "
        "found none (a round that found its fill is followed at once by the next)",
    )
    source_dead_letter_keep_days: int = Field(
        14,
        ge=1,
        le=3650,
        description="days the dead letters listed by GET /v1/dead-letters are kept (the "
        "dead-letter topic keeps the records themselves for dead_letter_retention_hours)",
    )
    source_quality_keep_days: int = Field(
        90,
        ge=1,
        le=3650,
        description="days of the hourly per-source counters GET /v1/sources/{source}/quality "
        "reads are kept",
    )
    scoring_lifecycle_batch_rows: int = Field(
        5000,
        ge=100,
        le=100_000,
        description="rows one pruning statement removes at most, in one short transaction",
    )

    # --- api ---------------------------------------------------------------------------
    api_max_page_size: int = Field(200, ge=1, le=1000, description="page size cap of lists")
    api_rate_limit_per_s: float = Field(
        50.0, gt=0, description="sustained requests per second per API key"
    )
    api_rate_limit_burst: float = Field(200.0, gt=0, description="requests a key may burst")
    api_explanation_cache: int = Field(
        10_000,
        ge=0,
        le=1_000_000,
        description="customers whose health explanation each api process keeps between reads "
        "(checked against the journey row's revision and the catalogue on every read; least "
        "recently used dropped first; 0 keeps none): about 8 kB each with a full "
        "explanation (kept as the answer's JSON), so this bounds the api's memory",
    )
    # --- desk (the people's web pages under /desk) -------------------------------------
    desk_session_idle_minutes: int = Field(
        30, ge=1, le=24 * 60, description="a desk session unused this long is refused"
    )
    desk_session_absolute_hours: int = Field(
        12, ge=1, le=24 * 30, description="a desk session is refused this long after sign-in"
    )
    desk_signin_max_failures: int = Field(
        5,
        ge=1,
        le=1000,
        description="failed sign-ins per account, and (x4) per address, within "
        "desk_signin_window_minutes before further attempts are refused",
    )
    desk_signin_window_minutes: int = Field(
        15, ge=1, le=24 * 60, description="how far back failed sign-ins count"
    )
    desk_trust_forwarded_proto: bool = Field(
        False,
        description="take X-Forwarded-Proto (set by a TLS-terminating proxy) as the scheme "
        "that decides the cookie's Secure flag; only behind a proxy that sets it",
    )
    webhook_signing_key: SecretStr | None = Field(
        default=None,
        min_length=32,
        description="master key webhook secrets are derived from (never stored); "
        "unset: a random one per state dir, for local runs only",
    )
    webhook_allow_private_targets: bool = Field(
        False,
        description="allow webhook URLs on loopback, link-local and private networks "
        "(local testing only)",
    )

    # --- CLI commands that call the api (touchpulse sources) -----------------------------
    api_url: str | None = Field(
        default=None,
        pattern=r"^https?://\S+$",
        description="the api's base URL for CLI commands that call it; default: this "
        "machine's api (host and api_port)",
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="the API key those commands send: an events:write key reads its own "
        "source, an admin key every source",
    )

    # --- simulator ---------------------------------------------------------------------
    simulator_api_key: SecretStr | None = Field(
        default=None,
        description="events:write key the simulator posts with (touchpulse simulate)",
    )

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # repr() (and so any log line or traceback showing the settings) masks secrets.
        for name, value in super().__repr_args__():
            yield name, value if name is None else shown(name, value)

    def secret_values(self) -> list[str]:
        """The secrets set in these settings, passwords in URLs included (as written and
        percent-decoded): what a log line must never carry (see touchpulse_shared.logs)."""
        found: set[str] = set()
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if not isinstance(value, str) or not value:
                continue
            if name in SECRET_FIELDS:
                found.add(value)
            elif name.endswith("_url"):
                for password in _url_passwords(value):
                    found |= {password, unquote(password)}
        return sorted(found - {""})

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _bootstrap_list(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"'{server}' is not host:port")
        return value

    @field_validator("local_kafka_brokers")
    @classmethod
    def _one_or_three_brokers(cls, value: int) -> int:
        # Two brokers cannot keep min.insync.replicas 2 through the loss of one; more than
        # three do not fit beside the services on a laptop.
        if value not in (1, 3):
            raise ValueError("must be 1 or 3")
        return value

    @field_validator("scoring_dedupe_window_hours")
    @classmethod
    def _dedupe_covers_the_topic(cls, value: int, info: ValidationInfo) -> int:
        # Two copies of an event that are both still on the events topic must count once,
        # whoever reads the topic again; the day covers clock skew and a scoring backlog.
        retention = info.data.get("events_retention_hours")
        if isinstance(retention, int) and value < retention + DEDUPE_MARGIN_HOURS:
            raise ValueError(
                f"must be at least the events topic's retention plus {DEDUPE_MARGIN_HOURS} "
                f"hours ({retention + DEDUPE_MARGIN_HOURS})"
            )
        return value

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with postgresql://")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_FILE_ENV)
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)


def env_name(field: str) -> str:
    """The environment variable that sets ``field``."""
    return f"{ENV_PREFIX}{field.upper()}"


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, or raise :class:`ConfigError` naming every bad setting."""
    config_file = os.environ.get(CONFIG_FILE_ENV)
    if config_file and not Path(config_file).is_file():
        raise ConfigError(f"{CONFIG_FILE_ENV}: no such file: {config_file}")
    # A mistyped variable would otherwise be silently ignored and its default used.
    known = {env_name(name) for name in Settings.model_fields} | {CONFIG_FILE_ENV}
    unknown = sorted(k for k in os.environ if k.startswith(ENV_PREFIX) and k not in known)
    if unknown:
        raise ConfigError("unknown setting(s): " + ", ".join(unknown))
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    except ValueError as exc:  # the TOML file does not parse
        raise ConfigError(f"{CONFIG_FILE_ENV}: {exc}") from None


def _describe(exc: ValidationError) -> str:
    lines = ["invalid configuration:"]
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "?"
        name = field if field.startswith(ENV_PREFIX) else env_name(field)
        # URLs may carry passwords: never echo them back.
        hidden = error["type"] == "extra_forbidden" or "url" in name.lower()
        shown = "" if hidden else f" (got {error.get('input')!r})"
        lines.append(f"  {name}: {error['msg']}{shown}")
    return "\n".join(lines)

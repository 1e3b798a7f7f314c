"""Configuration: environment, file, defaults, and errors that name the setting."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from touchpulse_shared.settings import ConfigError, Settings, env_name, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The suite itself may run against servers named in the environment.
    for name in (
        "KAFKA_BOOTSTRAP_SERVERS",
        "TOUCHPULSE_KAFKA_BOOTSTRAP_SERVERS",
        "TOUCHPULSE_DATABASE_URL",
        "TOUCHPULSE_CONFIG_FILE",
    ):
        monkeypatch.delenv(name, raising=False)


def test_defaults_start_a_local_stack_with_six_partitions() -> None:
    settings = load_settings()
    assert settings.kafka_bootstrap_servers is None
    assert settings.database_url is None
    assert settings.events_partitions == 6
    assert settings.events_topic == "touchpoint.events.v1"


def test_environment_overrides_with_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOUCHPULSE_EVENTS_PARTITIONS", "12")
    monkeypatch.setenv("TOUCHPULSE_DATABASE_URL", "postgresql://u@db:5432/tp")
    settings = load_settings()
    assert settings.events_partitions == 12
    assert settings.database_url == "postgresql://u@db:5432/tp"


def test_the_plain_kafka_variable_names_a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    assert load_settings().kafka_bootstrap_servers == "k1:9092,k2:9092"


def test_a_file_sets_values_and_the_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "touchpulse.toml"
    config.write_text('events_partitions = 3\nlog_level = "DEBUG"\n')
    monkeypatch.setenv("TOUCHPULSE_CONFIG_FILE", str(config))
    monkeypatch.setenv("TOUCHPULSE_LOG_LEVEL", "ERROR")
    settings = load_settings()
    assert settings.events_partitions == 3
    assert settings.log_level == "ERROR"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TOUCHPULSE_EVENTS_PARTITIONS", "0"),
        ("TOUCHPULSE_EVENTS_PARTITIONS", "many"),
        ("TOUCHPULSE_KAFKA_BOOTSTRAP_SERVERS", "no-port"),
        ("TOUCHPULSE_DATABASE_URL", "mysql://x"),
        ("TOUCHPULSE_LOG_LEVEL", "LOUD"),
        ("TOUCHPULSE_INGEST_PORT", "70000"),
        ("TOUCHPULSE_KAFKA_VERSION", "3.9.0"),
    ],
)
def test_an_invalid_value_names_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load_settings()


def test_a_database_url_is_never_echoed_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOUCHPULSE_DATABASE_URL", "mysql://admin:s3cret@db/x")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "s3cret" not in str(caught.value)


def test_a_mistyped_variable_is_an_error_not_a_silent_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TOUCHPULSE_EVENT_PARTITIONS", "3")
    with pytest.raises(ConfigError, match="TOUCHPULSE_EVENT_PARTITIONS"):
        load_settings()


def test_an_unknown_key_in_the_file_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "touchpulse.toml"
    config.write_text("partitions = 3\n")
    monkeypatch.setenv("TOUCHPULSE_CONFIG_FILE", str(config))
    with pytest.raises(ConfigError, match="PARTITIONS"):
        load_settings()


def test_a_missing_config_file_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TOUCHPULSE_CONFIG_FILE", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="TOUCHPULSE_CONFIG_FILE"):
        load_settings()


def test_the_cli_refuses_to_start_and_names_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TOUCHPULSE_EVENTS_PARTITIONS", "-1")
    result = subprocess.run(
        [sys.executable, "-m", "touchpulse_shared.cli", "config"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2
    assert "TOUCHPULSE_EVENTS_PARTITIONS" in result.stderr


def test_the_example_file_in_deploy_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    example = Path(__file__).parents[1] / "deploy" / "touchpulse.example.toml"
    monkeypatch.setenv("TOUCHPULSE_CONFIG_FILE", str(example))
    assert load_settings().events_partitions == 6


def test_the_dedupe_window_covers_the_events_topic_and_a_day(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The idempotency promise: two copies of an event both still on the topic count once."""
    defaults = load_settings()
    assert defaults.scoring_dedupe_window_hours >= defaults.events_retention_hours + 24
    monkeypatch.setenv("TOUCHPULSE_EVENTS_RETENTION_HOURS", "400")
    with pytest.raises(ConfigError, match=r"TOUCHPULSE_SCORING_DEDUPE_WINDOW_HOURS.*424"):
        load_settings()
    monkeypatch.setenv("TOUCHPULSE_SCORING_DEDUPE_WINDOW_HOURS", "424")
    assert load_settings().scoring_dedupe_window_hours == 424


def test_every_setting_is_a_row_of_the_readme_settings_table() -> None:
    """Named in full, or as a ``_TAIL`` beside a sibling in its row (``TOUCHPULSE_INGEST_PORT``
    / ``_API_PORT``: the tail replaces the end of the sibling's name)."""
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    documented: set[str] = set()
    for row in (line for line in readme.splitlines() if line.startswith("| `TOUCHPULSE_")):
        named = row.split("|")[1]
        full = re.findall(r"`(TOUCHPULSE_[A-Z0-9_]+)`", named)
        documented.update(full)
        for tail in re.findall(r"`(_[A-Z0-9_]+)`", named):
            for name in full:
                parts = name.split("_")
                documented.update("_".join(parts[:k]) + tail for k in range(1, len(parts)))
    missing = sorted(env_name(f) for f in Settings.model_fields if env_name(f) not in documented)
    assert missing == [], f"settings missing from the README's table: {missing}"

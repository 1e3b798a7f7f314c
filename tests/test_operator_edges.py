"""What a new operator meets first: the entry points answer --help and --version without any
configuration, `touchpulse config` and the logs never show a secret, a command that cannot
reach its database says so in one line, and every log line is JSON in JSON mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from tests.abuse.conftest import started
from touchpulse_scoring.main import GC_THRESHOLDS
from touchpulse_shared.settings import Settings, redact_url
from touchpulse_shared.stack.procs import free_port

BIN = Path(sys.executable).parent
ENTRY_POINTS = ("touchpulse", "touchpulse-ingest", "touchpulse-scoring", "touchpulse-api")
SIGNING_KEY = "signing-" + "s3cr3t" * 8
SIMULATOR_KEY = "tpk_simulator_" + "x9" * 16
PASSWORD = "pg-pass-w0rd-42"  # noqa: S105 - a made-up one, to be found missing


def _env(**settings: str) -> dict[str, str]:
    """The environment of a fresh shell: no setting of the suite's, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOUCHPULSE_", "KAFKA_"))}
    return env | settings


def _run_all(commands: list[list[str]], env: dict[str, str]) -> list[tuple[int, str, str]]:
    """Run the commands side by side (each is mostly interpreter start-up)."""
    running = [
        subprocess.Popen(  # noqa: S603
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for command in commands
    ]
    done = []
    for proc in running:
        out, err = proc.communicate(timeout=120)
        done.append((proc.returncode, out, err))
    return done


def test_help_and_version_need_no_settings() -> None:
    # A configuration that could not load: any attempt to read it would exit 2.
    env = _env(TOUCHPULSE_NOT_A_SETTING="1", TOUCHPULSE_EVENTS_PARTITIONS="many")
    commands = [
        [str(BIN / name), flag] for name in ENTRY_POINTS for flag in ("--help", "--version")
    ]
    commands += [[str(BIN / "touchpulse"), "-h"], [str(BIN / "touchpulse-api"), "-h"]]
    for command, (code, out, err) in zip(commands, _run_all(commands, env), strict=True):
        assert code == 0, (command, out, err)
        assert "setting" not in err.lower(), (command, err)
        if command[1] == "--version":
            assert out.strip() == f"{Path(command[0]).name} 0.1.0", command
        else:
            assert "usage" in out.lower(), (command, out)


def test_config_masks_every_secret() -> None:
    url = f"postgresql://touchpulse:{PASSWORD}@db.internal:5432/touchpulse"
    env = _env(
        TOUCHPULSE_DATABASE_URL=url,
        TOUCHPULSE_WEBHOOK_SIGNING_KEY=SIGNING_KEY,
        TOUCHPULSE_SIMULATOR_API_KEY=SIMULATOR_KEY,
        TOUCHPULSE_API_KEY="tpk_reader_" + "q7" * 16,
    )
    [(code, out, err)] = _run_all([[str(BIN / "touchpulse"), "config"]], env)
    assert code == 0, err
    for secret in (PASSWORD, SIGNING_KEY, SIMULATOR_KEY, "q7q7q7"):
        assert secret not in out + err
    lines = dict(line.split("=", 1) for line in out.splitlines())
    assert lines["TOUCHPULSE_DATABASE_URL"] == redact_url(url)
    assert "db.internal" in lines["TOUCHPULSE_DATABASE_URL"]
    # A fingerprint tells two keys apart without showing either.
    assert lines["TOUCHPULSE_WEBHOOK_SIGNING_KEY"].startswith("***(")
    assert lines["TOUCHPULSE_WEBHOOK_SIGNING_KEY"] != lines["TOUCHPULSE_SIMULATOR_API_KEY"]
    assert lines["TOUCHPULSE_EVENTS_PARTITIONS"] == "6"
    settings = Settings(
        database_url=url, webhook_signing_key=SIGNING_KEY, simulator_api_key=SIMULATOR_KEY
    )
    # Secret types: printing, formatting or dumping one shows its mask.
    assert isinstance(settings.webhook_signing_key, SecretStr)
    assert isinstance(settings.simulator_api_key, SecretStr)
    assert SIMULATOR_KEY not in str(settings.model_dump())
    assert PASSWORD not in repr(settings)
    assert SIGNING_KEY not in repr(settings)


def test_a_command_that_cannot_reach_its_database_or_broker_says_so_in_one_line() -> None:
    url = f"postgresql://touchpulse:{PASSWORD}@127.0.0.1:{free_port()}/touchpulse"
    broker = f"127.0.0.1:{free_port()}"
    env = _env(
        TOUCHPULSE_DATABASE_URL=url,
        TOUCHPULSE_KAFKA_BOOTSTRAP_SERVERS=broker,
        TOUCHPULSE_LOG_LEVEL="ERROR",
    )
    commands = [
        [str(BIN / "touchpulse"), "migrate"],
        [str(BIN / "touchpulse"), "keys", "list"],
        [str(BIN / "touchpulse"), "migrate", "--debug"],
        [str(BIN / "touchpulse"), "topics"],
    ]
    (migrate, keys, debug, topics) = _run_all(commands, env)
    code, _, err = topics
    assert code == 1, err
    # aiokafka's own error lines (JSON) come first; the command's verdict is the last line.
    verdict = err.strip().splitlines()[-1]
    assert verdict.startswith(f"touchpulse: cannot reach Kafka at {broker}: "), err
    assert "Traceback" not in err
    for code, out, err in (migrate, keys):
        assert code == 1, err
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert f"cannot reach PostgreSQL at {redact_url(url)}" in lines[0], err
        assert "refused" in lines[0].lower() or "connect" in lines[0].lower(), err
        assert PASSWORD not in err + out
        assert "Traceback" not in err
    code, _, err = debug
    assert code != 0
    assert "Traceback" in err or "ConnectionRefusedError" in err


@pytest.mark.postgres
@pytest.mark.kafka
async def test_every_line_of_a_service_log_is_json_without_secrets(
    base_settings: Settings, fresh_database: str, kafka_bootstrap: str, topic: str
) -> None:
    """Every service of a run — ingest, scoring and the api — started with the secrets set:
    no log line is plain text, and no secret is in any log line or any /metrics."""
    settings = base_settings.model_copy(
        update={
            "database_url": fresh_database,
            "kafka_bootstrap_servers": kafka_bootstrap,
            "events_topic": topic,
            "ingest_port": free_port(),
            "scoring_metrics_port": free_port(),
            "api_port": free_port(),
            "log_format": "json",
            "log_level": "INFO",
            "webhook_signing_key": SIGNING_KEY,
            "simulator_api_key": SIMULATOR_KEY,
        }
    )
    logs: dict[str, Path] = {}
    metrics: dict[str, str] = {}
    async with (
        started("api", settings) as api,
        started("ingest", settings) as ingest,
        started("scoring", settings) as scoring,
    ):
        for name, service in (("api", api), ("ingest", ingest), ("scoring", scoring)):
            metrics[name] = (await service.http.get("/metrics")).text
            logs[name] = service.process.log_path
        refused = await api.http.get("/v1/promises", headers={"Authorization": "Bearer tpk_x"})
        assert refused.status_code == 401
        posted = await ingest.http.post(
            "/v1/events", json={}, headers={"Authorization": "Bearer tpk_x"}
        )
        assert posted.status_code == 401
    for name, text in metrics.items():
        assert f"touchpulse_{name}" in text, name
    for name, log_path in logs.items():
        lines = [line for line in log_path.read_text().splitlines() if line.strip()]
        assert lines, name
        records = [json.loads(line) for line in lines]  # raises on a plain-text line
        assert all({"event", "level", "timestamp"} <= r.keys() for r in records), (name, lines)
        for secret in (SIGNING_KEY, SIMULATOR_KEY):
            assert secret not in log_path.read_text(), name
            assert secret not in metrics[name], name
    # Scoring set its collector for its long-lived heap before it started (main.py).
    scoring_records = [
        json.loads(line) for line in logs["scoring"].read_text().splitlines() if line
    ]
    tuned = [r for r in scoring_records if r["event"] == "scoring.collector"]
    assert [r["thresholds"] for r in tuned] == [list(GC_THRESHOLDS)], scoring_records
    api_records = [json.loads(line) for line in logs["api"].read_text().splitlines() if line]
    # uvicorn's own lines (started, shutting down) are among them, as JSON.
    assert "uvicorn.error" in {r.get("logger") for r in api_records}
    assert any("Application startup complete" in r["event"] for r in api_records)
    assert httpx.URL(api.url).port == settings.api_port

"""``touchpulse simulate``: its options are checked before anything is sent, and it reports
what it sent even when nothing got through."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog
from typer.testing import CliRunner

from touchpulse_shared.cli import app
from touchpulse_shared.stack.procs import free_port

runner = CliRunner()


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """The command points structlog at the runner's stderr, which closes after it: restore
    the configuration so later tests do not log into a closed file."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--incident", "delivery:soon:3600", "incident"),
        ("--touchpoint-breach-rate", "delivery", "TOUCHPOINT=RATE"),
        ("--touchpoint-breach-rate", "delivery=2", "between 0 and 1"),
        ("--format", "xml", "native or cloudevents"),
    ],
)
def test_a_bad_option_stops_before_posting(option: str, value: str, message: str) -> None:
    result = runner.invoke(app, ["simulate", "--api-key", "tpk_x_y", option, value])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_the_admin_key_goes_with_the_api_url() -> None:
    result = runner.invoke(app, ["simulate", "--api-key", "k", "--api-url", "http://api"])
    assert result.exit_code == 2
    assert "--admin-key" in result.output


def test_nothing_accepted_is_reported_and_fails() -> None:
    # Nothing listens on a free port: every request fails to connect.
    ingest = f"http://127.0.0.1:{free_port()}"
    args = ["--api-key", "tpk_x_y", "--ingest-url", ingest, "--total", "30", "--rate", "300"]
    options = ["--format", "cloudevents", "--incident", "delivery:0:60"]
    result = runner.invoke(app, ["simulate", *args, *options])
    assert result.exit_code == 1, result.output
    assert "posted 30" in result.output
    assert "unavailable 30" in result.output
    assert "ConnectError" in result.output

"""Schemathesis against the real ingest process (the api's run is tests/api/test_fuzz.py): no
server error other than ingest's documented 503, and every response as its OpenAPI
document says. `make test` runs a bounded number of examples per operation; `make fuzz`
sets FUZZ_EXAMPLES=1000 for thousands of cases, for both services."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.abuse.conftest import SOURCE, Service, fuzz_examples
from touchpulse_shared.auth import Scope

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

CHECKS = (
    "not_a_server_error,response_schema_conformance,status_code_conformance,"
    "content_type_conformance"
)
# 503 is ingest's documented answer when Kafka does not acknowledge in time (a loaded
# machine can make that happen); any other 5xx is a bug.
CONFIG = """
[checks.not_a_server_error]
expected-statuses = ["2XX", "3XX", "4XX", "503"]
"""


def schemathesis(
    url: str, key: str, examples: int, workdir: Path, *extra: str
) -> tuple[int, str, dict[str, Any]]:
    """Run the CLI; answers its exit code, its output and the JSON run report."""
    config = workdir / "schemathesis.toml"
    config.write_text(CONFIG)
    report = workdir / "report.json"
    result = subprocess.run(  # noqa: S603 - the project's own tool, fixed arguments
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "--config-file",
            str(config),
            "run",
            f"{url}/openapi.json",
            "--checks",
            CHECKS,
            "--header",
            f"Authorization: Bearer {key}",
            "--max-examples",
            str(examples),
            "--seed",
            "20261123",
            "--request-timeout",
            "20",
            "--workers",
            "1",  # two shared cores: one worker keeps the server, not the fuzzer, busy
            "--report",
            "json",
            "--report-json-path",
            str(report),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=max(600, examples * 10),
        check=False,
        cwd=workdir,
    )
    summary: dict[str, Any] = json.loads(report.read_text()) if report.exists() else {}
    return result.returncode, result.stdout[-8000:] + result.stderr[-2000:], summary


def _cases(summary: dict[str, Any], output: str) -> str:
    """What the report says was run, for the log (the report's shape is the tool's)."""
    for name in ("test_cases", "cases", "total"):
        if name in summary:
            return f"{name}={summary[name]}"
    tail = [line for line in output.splitlines() if "cases" in line.lower() or "passed" in line]
    return " | ".join(tail[-3:])


# The suite-wide 300 s bound fits make test's examples; make fuzz's thousands need the
# same bound the Schemathesis subprocess itself gets.
@pytest.mark.timeout(max(300, fuzz_examples() * 10 + 60))
async def test_the_ingest_openapi_document_holds_under_fuzzing(
    ingest: Service, tmp_path: Path
) -> None:
    key = await ingest.keys.make("fuzz", [Scope.EVENTS_WRITE], source=SOURCE)
    code, output, summary = await asyncio.to_thread(
        schemathesis, ingest.url, key, fuzz_examples(), tmp_path
    )
    print(f"ingest fuzz: {_cases(summary, output)}")
    assert code == 0, output
    assert await ingest.ready(), "ingest stopped serving after the fuzzing"

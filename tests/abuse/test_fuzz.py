"""Schemathesis against the real ingest process (the api's run is tests/api/test_fuzz.py),
with every check Schemathesis has and every phase, the stateful one included: no server
error other than ingest's documented 503, every response as the OpenAPI document says,
every schema-valid request accepted and every schema-violating one refused. `make test`
runs a bounded number of examples per operation; `make fuzz` sets FUZZ_EXAMPLES for
thousands of cases, for both services."""

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

# Every check (server errors, response schema, status codes, content types, headers,
# positive data accepted, negative data refused, missing headers, undeclared methods and
# their Allow header, auth ignored, use after free, resource availability...), and the
# default phases: examples, coverage, fuzzing and the stateful phase (links inferred).
CHECKS = "all"
PHASES = "examples,coverage,fuzzing,stateful"
# 503 is ingest's documented answer when Kafka does not acknowledge in time (a loaded
# machine can make that happen); any other 5xx is a bug. A schema-valid event is still
# refused for what no schema holds: the source and touchpoints the key is bound to (403
# for one event; a batch of none acceptable is a 422 whose items each say 403, as
# test_security_matrix pins) and the types the promise catalogue in effect declares (422).
INGEST_CONFIG = """
[checks.not_a_server_error]
expected-statuses = ["2XX", "3XX", "4XX", "503"]

[checks.positive_data_acceptance]
expected-statuses = ["2XX", "401", "403", "409", "422", "429", "503"]
"""


def schemathesis(
    url: str, key: str, examples: int, workdir: Path, config: str, *extra: str
) -> tuple[int, str, dict[str, Any]]:
    """Run the CLI; answers its exit code, its output and the JSON run report."""
    config_path = workdir / "schemathesis.toml"
    config_path.write_text(config)
    report = workdir / "report.json"
    result = subprocess.run(  # noqa: S603 - the project's own tool, fixed arguments
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "--config-file",
            str(config_path),
            "run",
            f"{url}/openapi.json",
            "--checks",
            CHECKS,
            "--phases",
            PHASES,
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
            "--generation-database",
            "none",
            "--report",
            "json",
            "--report-json-path",
            str(report),
            "--output-truncate",
            "true",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=fuzz_timeout_s(examples),
        check=False,
        cwd=workdir,
    )
    # The whole output stays beside the report (pytest keeps the latest tmp dirs).
    (workdir / "schemathesis.out").write_text(result.stdout + result.stderr)
    summary: dict[str, Any] = json.loads(report.read_text()) if report.exists() else {}
    return result.returncode, result.stdout[-12000:] + result.stderr[-2000:], summary


def fuzz_timeout_s(examples: int) -> int:
    """The bound on one Schemathesis run: generous for make test's handful of examples,
    and growing with make fuzz's thousands."""
    return max(600, examples * 6)


def _cases(summary: dict[str, Any], output: str) -> str:
    """What the report says was run, for the log (the report's shape is the tool's)."""
    for name in ("test_cases", "cases", "total"):
        if name in summary:
            return f"{name}={summary[name]}"
    tail = [line for line in output.splitlines() if "cases" in line.lower() or "passed" in line]
    return " | ".join(tail[-3:])


@pytest.mark.timeout(fuzz_timeout_s(fuzz_examples()) + 60)
async def test_the_ingest_openapi_document_holds_under_fuzzing(
    ingest: Service, tmp_path: Path
) -> None:
    key = await ingest.keys.make("fuzz", [Scope.EVENTS_WRITE], source=SOURCE)
    code, output, summary = await asyncio.to_thread(
        schemathesis, ingest.url, key, fuzz_examples(), tmp_path, INGEST_CONFIG
    )
    print(f"ingest fuzz: {_cases(summary, output)}")
    assert code == 0, output
    assert await ingest.ready(), "ingest stopped serving after the fuzzing"

"""LocalPrometheus: a real Prometheus scraping a real endpoint and loading our rules."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from touchpulse_shared.settings import Settings
from touchpulse_shared.stack.procs import wait_until
from touchpulse_shared.stack.prometheus import LocalPrometheus, PrometheusTools, prometheus_tools

ROOT = Path(__file__).resolve().parents[2]
RULE_FILES = sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"))
# A scrape and a rule evaluation every second; a few seconds each on a busy machine.
WAIT_S = 30.0

EXPOSITION = b"""\
# HELP touchpulse_test_total A counter for the test.
# TYPE touchpulse_test_total counter
touchpulse_test_total 42.0
"""


class _Metrics(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/metrics" else 404)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(EXPOSITION)))
        self.end_headers()
        self.wfile.write(EXPOSITION)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a line per scrape would bury the test's own output


@pytest.fixture
def metrics_target() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"{host!s}:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def tools(base_settings: Settings) -> PrometheusTools:
    return prometheus_tools(base_settings.cache_dir)


def test_fetched_tools_run(tools: PrometheusTools) -> None:
    assert tools.prometheus.is_file()
    assert tools.promtool.is_file()
    assert tools.version.startswith("2.42.0")


def test_scrapes_the_target_and_loads_the_rules(
    tools: PrometheusTools, metrics_target: str, tmp_path: Path
) -> None:
    assert RULE_FILES
    with (
        LocalPrometheus(
            tools=tools,
            workdir=tmp_path / "prometheus",
            targets={"test": [metrics_target]},
            rule_files=RULE_FILES,
        ) as prometheus,
        httpx.Client(base_url=prometheus.url, timeout=5) as client,
    ):
        assert client.get("/-/ready").status_code == 200

        def scraped() -> list[dict[str, Any]]:
            answer = client.get("/api/v1/query", params={"query": "touchpulse_test_total"})
            answer.raise_for_status()
            result: list[dict[str, Any]] = answer.json()["data"]["result"]
            return result

        wait_until(lambda: bool(scraped()), timeout=WAIT_S, what="the test counter's scrape")
        (sample,) = scraped()
        assert sample["metric"]["job"] == "test"
        assert sample["metric"]["instance"] == metrics_target
        assert float(sample["value"][1]) == 42.0

        def rules() -> list[dict[str, Any]]:
            answer = client.get("/api/v1/rules")
            answer.raise_for_status()
            groups = answer.json()["data"]["groups"]
            return [rule for group in groups for rule in group["rules"]]

        # Health is "unknown" until a rule's first evaluation, one interval after loading.
        wait_until(
            lambda: bool(rules()) and all(r["health"] != "unknown" for r in rules()),
            timeout=WAIT_S,
            what="the first evaluation of every rule",
        )
        loaded = rules()
        expected = sum(
            len(group["rules"])
            for path in RULE_FILES
            for group in yaml.safe_load(path.read_text())["groups"]
        )
        assert len(loaded) == expected
        assert {r["health"] for r in loaded} == {"ok"}, [
            (r["name"], r.get("lastError")) for r in loaded if r["health"] != "ok"
        ]
        assert {r["type"] for r in loaded} == {"alerting", "recording"}
    # Stopped on exit: the port no longer answers.
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{prometheus.url}/-/ready", timeout=2)

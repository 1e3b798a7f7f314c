"""Both OpenAPI documents as a client generator reads them: readable, stable operation ids;
a description on every operation; each operation documents the problem statuses it can
answer (problem+json, with an example), and none it cannot."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from touchpulse_api.app import create_app as create_api
from touchpulse_api.metrics import ApiMetrics
from touchpulse_ingest.app import create_app as create_ingest
from touchpulse_ingest.metrics import IngestMetrics
from touchpulse_shared.http.app import problem_responses
from touchpulse_shared.settings import Settings

OPERATION_ID = re.compile(r"^[a-z][a-z0-9_]*$")
PROBLEM = "application/problem+json"
METHODS = {"get", "put", "post", "patch", "delete"}


def _documents() -> dict[str, dict[str, Any]]:
    return {
        "api": create_api(ApiMetrics(CollectorRegistry())).openapi(),
        "ingest": create_ingest(Settings(), IngestMetrics(CollectorRegistry())).openapi(),
    }


DOCUMENTS = _documents()


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if method in METHODS:
                yield method.upper(), path, operation


def _problems(operation: dict[str, Any]) -> set[int]:
    return {
        int(status)
        for status, response in operation["responses"].items()
        if PROBLEM in response.get("content", {})
    }


@pytest.mark.parametrize("service", sorted(DOCUMENTS))
def test_every_operation_has_a_readable_unique_id_and_a_description(service: str) -> None:
    document = DOCUMENTS[service]
    ids = [op.get("operationId", "") for _, _, op in _operations(document)]
    assert len(ids) >= 4
    for method, path, operation in _operations(document):
        assert OPERATION_ID.fullmatch(operation.get("operationId", "")), (method, path)
        # Not FastAPI's mangled default (customer_health_v1_customers__customer_id__health_get).
        assert not operation["operationId"].endswith(f"_{method.lower()}"), (method, path)
        assert "__" not in operation["operationId"], (method, path)
        assert operation.get("description", "").strip(), (method, path)
        assert operation.get("summary", "").strip(), (method, path)
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


@pytest.mark.parametrize("service", sorted(DOCUMENTS))
def test_every_problem_is_problem_json_with_an_example_of_its_status(service: str) -> None:
    document = DOCUMENTS[service]
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for method, path, operation in _operations(document):
        problems = _problems(operation)
        if not path.startswith("/v1/"):
            assert not problems, (method, path)  # probes: no key, no input
            continue
        assert operation["security"] == [{"apiKey": []}], (method, path)
        # Behind a key: no key, a key without the scope, over its limit, keys uncheckable.
        assert {401, 403, 429, 503} <= problems, (method, path, problems)
        for status, response in operation["responses"].items():
            content = response.get("content", {})
            if status.startswith(("4", "5")):
                # FastAPI's own 422 (application/json) answers nothing this app sends.
                assert set(content) == {PROBLEM}, (method, path, status)
                example = content[PROBLEM]["example"]
                assert example["status"] == int(status), (method, path, status)
                assert example["type"].startswith("https://touchpulse.dev/problems/")
                assert response["description"].strip()


@pytest.mark.parametrize("service", sorted(DOCUMENTS))
def test_422_only_where_there_is_input_to_refuse(service: str) -> None:
    for method, path, operation in _operations(DOCUMENTS[service]):
        query = [p for p in operation.get("parameters", []) if p["in"] == "query"]
        if "requestBody" not in operation and not query:
            assert 422 not in _problems(operation), (method, path)
        if "requestBody" in operation:
            assert 422 in _problems(operation), (method, path)


def test_operations_do_not_list_problems_they_cannot_answer() -> None:
    api = {(m, p): op for m, p, op in _operations(DOCUMENTS["api"])}
    problems = {key: _problems(op) for key, op in api.items()}
    # Nothing to find, nothing to conflict with, no input, no cursor.
    assert problems["GET", "/v1/keys"] == {401, 403, 429, 503}
    assert 400 in problems["POST", "/v1/keys"]  # a body that is not JSON
    assert problems["DELETE", "/v1/customers/{customer_id}"] == {400, 401, 403, 429, 503}
    assert problems["GET", "/v1/interventions/{intervention_id}"] == {
        400,
        401,
        403,
        404,
        429,
        503,
    }
    # A move on a case: the case may be missing, moved by someone else, or refuse the body.
    assert {404, 409, 422} <= problems["POST", "/v1/interventions/{intervention_id}/resolve"]
    assert 409 not in problems["GET", "/v1/interventions"]
    assert 404 not in problems["GET", "/v1/interventions"]
    assert 409 not in problems["GET", "/v1/customers/{customer_id}/health"]
    # Ingest can answer each of its statuses on both routes (body size, type, contract).
    for path in ("/v1/events", "/v1/events/batch"):
        ingest = next(op for m, p, op in _operations(DOCUMENTS["ingest"]) if p == path)
        assert _problems(ingest) == {400, 401, 403, 413, 415, 422, 429, 503}


def test_problem_responses_refuses_a_status_it_cannot_describe() -> None:
    with pytest.raises(ValueError, match="418"):
        problem_responses(401, 418)
    described = problem_responses(404, descriptions={404: "No such customer"})
    assert described[404]["description"] == "No such customer"

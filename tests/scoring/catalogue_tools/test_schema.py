"""The promise catalogue's JSON Schema: committed, current, named by the shipped file, and in
agreement with the services on what a field may hold."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no types-jsonschema in the lock
import orjson
import pytest
import yaml

from tests.scoring.catalogue_tools.support import BASE, ROOT, SHIPPED, mutate, touchpulse
from tests.scoring.domain.support import document
from touchpulse_scoring.catalogue_tools.schema import SCHEMA_FILE, catalogue_json_schema
from touchpulse_scoring.domain import CatalogueError, catalogue_from_mapping, parse_catalogue
from touchpulse_shared.contract import render_schema

COMMITTED = ROOT / "docs" / "schema" / SCHEMA_FILE
FIX = "Run `make schema` (touchpulse schema export docs/schema) and commit the result."


def _validator() -> jsonschema.Draft202012Validator:
    schema = orjson.loads(COMMITTED.read_bytes())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_committed_schema_is_the_generated_one() -> None:
    assert COMMITTED.read_bytes() == render_schema(catalogue_json_schema()), FIX


def test_make_schema_writes_it_through_the_touchpulse_command(tmp_path: Path) -> None:
    done = touchpulse("schema", "export", tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / SCHEMA_FILE).read_bytes() == COMMITTED.read_bytes()
    # ... beside the event contract's, exactly the set committed.
    assert {p.name for p in tmp_path.iterdir()} == {p.name for p in COMMITTED.parent.glob("*.json")}


def test_the_shipped_catalogue_names_the_schema_for_editors() -> None:
    first = SHIPPED.read_text(encoding="utf-8").splitlines()[0]
    found = re.fullmatch(r"# yaml-language-server: \$schema=(\S+)", first)
    assert found is not None, first
    assert (SHIPPED.parent / found.group(1)).resolve() == COMMITTED.resolve()


@pytest.mark.parametrize("name", ["deploy/promises.yaml", "the tests' catalogues"])
def test_every_catalogue_the_services_take_is_valid_against_the_schema(name: str) -> None:
    if name == "deploy/promises.yaml":
        documents = [yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))]
    else:
        documents = [yaml.safe_load(BASE), document()]
    validator = _validator()
    for doc in documents:
        catalogue_from_mapping(doc)  # the services take it...
        assert [e.message for e in validator.iter_errors(doc)] == []  # ...and so does the schema


FIELD_PROBLEMS = {
    "unknown promise field": ("    weight: 1.0\n", "    weight: 1.0\n    colour: blue\n"),
    "unknown section": ("policy:\n", "polisy:\n"),
    "bad op": ('{op: "<=", target: 60}', '{op: "<", target: 60}'),
    "target as text": ('{op: "<=", target: 60}', '{op: "<=", target: "60"}'),
    "touchpoint name": ("  survey: 0.5\n", "  Survey Desk: 0.5\n"),
    "promise id": ("id: survey-csat", "id: Survey CSAT"),
    "segment name": ("premium: {within_hours: 24}", "Premium: {within_hours: 24}"),
    "weight out of range": ("    weight: 1.5\n", "    weight: 0\n"),
    "policy out of range": ("    threshold: 50\n", "    threshold: 101\n"),
    "missing measure": ("    measure: wait_seconds\n", ""),
    "version as a number": ('version: "2026.01.1"', "version: 2026.01"),
    "bad event type": ("opened_by: order.placed", "opened_by: placed"),
}


@pytest.mark.parametrize("name", list(FIELD_PROBLEMS))
def test_the_schema_refuses_what_the_services_refuse_field_by_field(name: str) -> None:
    text = mutate(BASE, *FIELD_PROBLEMS[name])
    with pytest.raises(CatalogueError):
        parse_catalogue(text)
    doc: Any = yaml.safe_load(text)
    assert list(_validator().iter_errors(doc)), f"the schema accepts: {name}"

"""The committed JSON Schemas and the examples in docs/event-contract.md match the code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from touchpulse_scoring.catalogue_tools.schema import json_schemas as catalogue_json_schemas
from touchpulse_shared.contract import (
    DATASCHEMA,
    CloudEventDataV1,
    ExperienceEventV1,
    InvalidBatch,
    ItemError,
    export_json_schemas,
    from_batch,
    from_structured,
    json_schemas,
    parse_native_batch,
    render_schema,
)

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / "docs" / "schema"
CONTRACT_DOC = ROOT / "docs" / "event-contract.md"
FIX = "Run `make schema` (touchpulse schema export docs/schema) and commit the result."


def test_committed_schema_files_are_exactly_the_generated_ones() -> None:
    committed = {path.name for path in SCHEMA_DIR.glob("*.json")}
    # The promise catalogue's schema comes from scoring (tests/scoring/catalogue_tools).
    generated = set(json_schemas()) | set(catalogue_json_schemas())
    assert committed == generated, (
        f"docs/schema differs from the contract: missing {sorted(generated - committed)},"
        f" stale {sorted(committed - generated)}. {FIX} Delete stale files by hand."
    )


@pytest.mark.parametrize("name", sorted(json_schemas()))
def test_committed_schema_is_up_to_date(name: str) -> None:
    path = SCHEMA_DIR / name
    assert path.exists(), f"docs/schema/{name} is missing. {FIX}"
    assert path.read_bytes() == render_schema(json_schemas()[name]), (
        f"docs/schema/{name} no longer matches the models. {FIX}"
    )


def test_export_is_deterministic_and_writes_what_json_schemas_says(tmp_path: Path) -> None:
    first = export_json_schemas(tmp_path / "a")
    second = export_json_schemas(tmp_path / "b")
    assert [path.name for path in first] == sorted(json_schemas())
    for one, other in zip(first, second, strict=True):
        assert one.read_bytes() == other.read_bytes()
        assert one.read_bytes().endswith(b"}\n")
        assert orjson.loads(one.read_bytes()) == json_schemas()[one.name]


def test_schemas_identify_themselves() -> None:
    schemas = json_schemas()
    ids = [schema["$id"] for schema in schemas.values()]
    assert len(set(ids)) == len(ids)
    assert all(schema["$schema"].endswith("/2020-12/schema") for schema in schemas.values())
    assert schemas["experience-event-data.v1.schema.json"]["$id"] == DATASCHEMA


def test_schema_examples_are_valid() -> None:
    schemas = json_schemas()
    for example in schemas["experience-event.v1.schema.json"]["examples"]:
        ExperienceEventV1.model_validate(example)
    for example in schemas["cloudevent.v1.schema.json"]["examples"]:
        from_structured(example)


def _json_blocks(markdown: str) -> list[str]:
    return re.findall(r"```json\n(.*?)\n```", markdown, flags=re.DOTALL)


def _check_example(example: Any) -> None:
    if isinstance(example, list):
        results = from_batch(orjson.dumps(example))
        assert not [r for r in results if isinstance(r, ItemError)], results
    elif "events" in example:
        results = parse_native_batch(orjson.dumps(example))
        assert not [r for r in results if isinstance(r, ItemError)], results
    elif "specversion" in example:
        from_structured(example)
    elif "event_id" in example:
        ExperienceEventV1.model_validate(example)
    else:
        CloudEventDataV1.model_validate(example)


def test_every_json_example_in_the_contract_document_is_valid() -> None:
    blocks = _json_blocks(CONTRACT_DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 4
    for block in blocks:
        try:
            _check_example(orjson.loads(block))
        except (orjson.JSONDecodeError, ValueError, InvalidBatch) as exc:
            pytest.fail(f"docs/event-contract.md has an invalid example ({exc}):\n{block}")

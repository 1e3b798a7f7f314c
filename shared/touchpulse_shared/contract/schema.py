"""JSON Schemas of the contract, generated from the models so they cannot disagree with them.

They are committed under ``docs/schema`` (``make schema``) for integrators who do not read
Python; a test fails when the committed files and the models drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import orjson
from pydantic import TypeAdapter

from touchpulse_shared.contract.cloudevents import DATASCHEMA, CloudEventDataV1, CloudEventV1
from touchpulse_shared.contract.events import ExperienceEventBatchV1, ExperienceEventV1

JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"

EVENT_SCHEMA_URN: Final = "urn:touchpulse:schema:experience-event:v1"
EVENT_BATCH_SCHEMA_URN: Final = "urn:touchpulse:schema:experience-event-batch:v1"
CLOUDEVENT_SCHEMA_URN: Final = "urn:touchpulse:schema:cloudevent:v1"
CLOUDEVENT_BATCH_SCHEMA_URN: Final = "urn:touchpulse:schema:cloudevent-batch:v1"


def _identified(schema: dict[str, Any], urn: str, **extra: Any) -> dict[str, Any]:
    return {"$schema": JSON_SCHEMA_DIALECT, "$id": urn, **schema, **extra}


def json_schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema, for every body Touchpulse accepts."""
    cloudevent_batch = TypeAdapter(list[CloudEventV1]).json_schema()
    return {
        "experience-event.v1.schema.json": _identified(
            ExperienceEventV1.model_json_schema(), EVENT_SCHEMA_URN
        ),
        "experience-event-batch.v1.schema.json": _identified(
            ExperienceEventBatchV1.model_json_schema(), EVENT_BATCH_SCHEMA_URN
        ),
        "experience-event-data.v1.schema.json": _identified(
            CloudEventDataV1.model_json_schema(), DATASCHEMA
        ),
        "cloudevent.v1.schema.json": _identified(
            CloudEventV1.model_json_schema(), CLOUDEVENT_SCHEMA_URN
        ),
        "cloudevent-batch.v1.schema.json": _identified(
            cloudevent_batch,
            CLOUDEVENT_BATCH_SCHEMA_URN,
            title="CloudEventBatchV1",
            description="A CloudEvents JSON batch (application/cloudevents-batch+json).",
        ),
    }


def render_schema(schema: Mapping[str, Any]) -> bytes:
    """Pretty, key-sorted, newline-terminated: stable diffs for committed files."""
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def export_json_schemas(
    directory: Path, schemas: Mapping[str, Mapping[str, Any]] | None = None
) -> list[Path]:
    """Write ``schemas`` (default: the contract's) into ``directory`` (created if needed);
    returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, schema in sorted((json_schemas() if schemas is None else schemas).items()):
        path = directory / name
        path.write_bytes(render_schema(schema))
        written.append(path)
    return written

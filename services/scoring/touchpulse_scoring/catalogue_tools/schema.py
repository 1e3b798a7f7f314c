"""The promise catalogue's JSON Schema, generated from the domain's models.

Editors use it (deploy/promises.yaml names it in a ``yaml-language-server`` comment) to
complete field names and flag wrong types as someone types. It states what each field may
hold; rules across fields and promises (a numeric promise needs a tolerance, ids are
unique, promises name known touchpoints) stay with ``touchpulse catalogue check``, which is
the services' own validation.

``touchpulse schema export`` writes it beside the event schemas through the
``touchpulse.schemas`` entry point (pyproject.toml): the shared CLI imports no service.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from pydantic import Field

from touchpulse_scoring.domain.catalogue import MAX_PROMISES, CatalogueDocument
from touchpulse_scoring.domain.promises import DeadlinePromise, MeasurePromise

SCHEMA_FILE: Final = "promise-catalogue.v1.schema.json"
CATALOGUE_SCHEMA_URN: Final = "urn:touchpulse:schema:promise-catalogue:v1"
_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"


class PromiseCatalogue(CatalogueDocument):
    """A Touchpulse promise catalogue (deploy/promises.yaml): the touchpoints, what is
    promised at each, and the policy turning outcomes into journey health and interventions.
    Check a file with `touchpulse catalogue check`: it also applies the rules across fields
    that a schema cannot state."""

    # The domain takes promises as raw values to validate each on its own (so an error
    # names its promise); the schema states what each one is. A promise with a `deadline`
    # block is a deadline promise; the two shapes forbid each other's fields.
    promises: Annotated[list[MeasurePromise | DeadlinePromise], Field(max_length=MAX_PROMISES)]


def _close_named_maps(node: Any) -> None:
    # pydantic states a constrained key (a touchpoint's, a segment's name) as
    # patternProperties and leaves other keys open; the models refuse them, so the schema
    # does too, and an editor marks "Call Centre:" as it is typed.
    if isinstance(node, dict):
        if "patternProperties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for value in node.values():
            _close_named_maps(value)
    elif isinstance(node, list):
        for value in node:
            _close_named_maps(value)


def catalogue_json_schema() -> dict[str, Any]:
    schema = PromiseCatalogue.model_json_schema()
    _close_named_maps(schema)
    return {"$schema": _DIALECT, "$id": CATALOGUE_SCHEMA_URN, **schema}


def json_schemas() -> dict[str, dict[str, Any]]:
    """File name -> schema: the ``touchpulse.schemas`` entry point's answer."""
    return {SCHEMA_FILE: catalogue_json_schema()}

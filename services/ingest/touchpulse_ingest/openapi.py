"""The ingest OpenAPI document: request bodies and problem responses the routes cannot infer.

The routes read raw bytes (the body limit is enforced before parsing, and the content type
picks the parser), so FastAPI sees no body model; the schemas are declared here instead,
from the same pydantic models that validate the requests.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from touchpulse_shared.contract import (
    CONTENT_TYPE_CLOUDEVENT,
    CONTENT_TYPE_CLOUDEVENT_BATCH,
    CONTENT_TYPE_JSON,
    CloudEventV1,
    ExperienceEventBatchV1,
    ExperienceEventV1,
)
from touchpulse_shared.http.app import problem_responses

_REF = "#/components/schemas/{model}"
_PROBLEM = {
    "type": "object",
    "description": "RFC 9457 problem details; `errors` names every bad field by JSON Pointer",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "pointer": {"type": "string", "examples": ["/measures/wait_seconds"]},
                    "detail": {"type": "string"},
                    "code": {"type": "string"},
                },
            },
        },
    },
}
_ERRORS = {
    "400": "Malformed JSON, or an empty batch",
    "401": "No API key, or an unknown, revoked or malformed one",
    "403": "The key lacks events:write, or may not write this source or touchpoint",
    "413": "The body or the number of events is over the limit (judged before parsing)",
    "415": "A content type this route does not take",
    "422": "Content that does not satisfy the event contract (see `errors`)",
    "429": "Over the key's rate limit; retry after `Retry-After` seconds",
    "503": "Kafka did not confirm storage in time; retry with the same event ids",
}


def _schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {"Problem": _PROBLEM}
    for model in (ExperienceEventV1, ExperienceEventBatchV1, CloudEventV1):
        schema = model.model_json_schema(ref_template=_REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    # An empty batch is refused (400): the document says a batch holds at least one event.
    schemas["ExperienceEventBatchV1"]["properties"]["events"]["minItems"] = 1
    return schemas


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _problems() -> dict[str, Any]:
    # Both routes can answer every one of these (a batch's items are judged one by one, but
    # a whole body can still be malformed, too large or of the wrong type).
    statuses = [int(code) for code in _ERRORS]
    described = {int(code): text for code, text in _ERRORS.items()}
    return {
        str(status): response
        for status, response in problem_responses(*statuses, descriptions=described).items()
    }


_ACCEPTED_ONE = {
    "description": "Kafka acknowledged the event",
    "content": {
        CONTENT_TYPE_JSON: {
            "example": {"status": "accepted", "source": "billing-prod", "event_id": "inv-2024-0001"}
        }
    },
}
_ACCEPTED_BATCH = {
    "description": "Kafka acknowledged every accepted event; each item says accepted or why not",
    "content": {
        CONTENT_TYPE_JSON: {
            "example": {
                "accepted": 1,
                "rejected": 1,
                "items": [
                    {"index": 0, "status": "accepted", "event_id": "e-1"},
                    {
                        "index": 1,
                        "status": "rejected",
                        "http_status": 422,
                        "errors": [
                            {
                                "pointer": "/events/1/customer_id",
                                "detail": "Field required",
                                "code": "missing",
                            }
                        ],
                    },
                ],
            }
        }
    },
}


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        document.setdefault("components", {}).setdefault("schemas", {}).update(_schemas())
        document["components"]["securitySchemes"] = {
            "apiKey": {"type": "http", "scheme": "bearer", "description": "tpk_… API key"}
        }
        cloudevents_batch = {"type": "array", "minItems": 1, "items": _ref("CloudEventV1")}
        one = document["paths"]["/v1/events"]["post"]
        one["requestBody"] = {
            "required": True,
            "content": {
                CONTENT_TYPE_JSON: {"schema": _ref("ExperienceEventV1")},
                CONTENT_TYPE_CLOUDEVENT: {"schema": _ref("CloudEventV1")},
                CONTENT_TYPE_CLOUDEVENT_BATCH: {"schema": cloudevents_batch},
            },
        }
        one["responses"] = {"202": _ACCEPTED_ONE, **_problems()}
        many = document["paths"]["/v1/events/batch"]["post"]
        many["requestBody"] = {
            "required": True,
            "content": {
                CONTENT_TYPE_JSON: {"schema": _ref("ExperienceEventBatchV1")},
                CONTENT_TYPE_CLOUDEVENT_BATCH: {"schema": cloudevents_batch},
            },
        }
        many["responses"] = {"202": _ACCEPTED_BATCH, **_problems()}
        for operation in (one, many):
            operation["security"] = [{"apiKey": []}]
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]

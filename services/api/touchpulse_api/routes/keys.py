"""API key management for admins: create (the key is shown once), list, revoke."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from touchpulse_api.context import Admin, ContextDep
from touchpulse_api.models import StorableText
from touchpulse_shared.auth import (
    InvalidKeySpec,
    KeyRecord,
    Scope,
    create_key,
    list_keys,
    revoke_key,
)
from touchpulse_shared.contract.events import (
    IDENTIFIER_PATTERN,
    MAX_SOURCE_LENGTH,
    SLUG_PATTERN,
)
from touchpulse_shared.http.app import AUTHENTICATED, problem_responses
from touchpulse_shared.http.problems import Problem

router = APIRouter(prefix="/v1/keys", tags=["keys"])


# Not blank, no control characters (C0, DEL, C1), storable: what create_key checks.
_NAME_CHAR = r"\x00-\x1F\x7F-\x9F"
_NAME_PATTERN = rf"^[^{_NAME_CHAR}]*[^\s{_NAME_CHAR}][^{_NAME_CHAR}]*$"
_NAME: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 128,
    "pattern": _NAME_PATTERN,
    "examples": ["billing system"],
}
_OTHER_SCOPES = [s.value for s in Scope if s is not Scope.EVENTS_WRITE]


def _key_schema(schema: dict[str, Any]) -> None:
    """The two kinds of key the api makes, as the document's request schema: a key with
    events:write is bound to a source (and optionally to touchpoints); any other key is
    bound to neither. The model validates the fields; create_key checks the rule."""
    writer = {
        "type": "object",
        "title": "EventsKeyIn",
        "additionalProperties": False,
        "required": ["name", "scopes", "source"],
        "properties": {
            "name": _NAME,
            "scopes": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "string", "enum": [s.value for s in Scope]},
                "contains": {"const": Scope.EVENTS_WRITE.value},
            },
            "source": {
                "type": "string",
                "maxLength": MAX_SOURCE_LENGTH,
                "pattern": IDENTIFIER_PATTERN,
                "examples": ["billing-prod"],
            },
            "touchpoints": {
                "anyOf": [
                    {
                        "type": "array",
                        "minItems": 1,
                        "items": {"type": "string", "pattern": SLUG_PATTERN},
                    },
                    {"type": "null"},
                ],
                "examples": [["billing"]],
            },
        },
    }
    other = {
        "type": "object",
        "title": "ServiceKeyIn",
        "additionalProperties": False,
        "required": ["name", "scopes"],
        "properties": {
            "name": _NAME,
            "scopes": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "string", "enum": _OTHER_SCOPES},
                "examples": [["health:read"]],
            },
            "source": {"type": "null"},
            "touchpoints": {"type": "null"},
        },
    }
    title = schema.get("title")
    schema.clear()
    schema.update({"title": title, "oneOf": [writer, other]})


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_key_schema)

    name: StorableText = Field(min_length=1, max_length=128, examples=["billing system"])
    scopes: list[Scope] = Field(min_length=1, examples=[["events:write"]])
    source: StorableText | None = Field(None, examples=["billing-prod"])
    touchpoints: list[StorableText] | None = Field(None, examples=[["billing"]])


class KeyOut(BaseModel):
    key_id: str
    name: str
    scopes: list[str]
    source: str | None
    touchpoints: list[str] | None
    created_at: datetime
    revoked_at: datetime | None


class CreatedKey(KeyOut):
    key: str = Field(description="the API key itself: shown this once, stored only as a hash")


def _out(record: KeyRecord) -> KeyOut:
    return KeyOut(
        key_id=record.key_id,
        name=record.name,
        scopes=sorted(s.value for s in record.scopes),
        source=record.source,
        touchpoints=None if record.touchpoints is None else sorted(record.touchpoints),
        created_at=record.created_at,
        revoked_at=record.revoked_at,
    )


@router.post(
    "",
    response_model=CreatedKey,
    status_code=201,
    operation_id="create_key",
    responses=problem_responses(*AUTHENTICATED, 422),
)
async def create(body: KeyIn, context: ContextDep, _: Admin) -> CreatedKey:
    """A new API key with its scopes (for events:write, the source and touchpoints it may
    write too); the plaintext key is in this answer only."""
    try:
        plaintext, record = await create_key(
            context.pool,
            name=body.name,
            scopes=[s.value for s in body.scopes],
            source=body.source,
            touchpoints=body.touchpoints,
            now=context.clock(),
        )
    except InvalidKeySpec as exc:
        raise Problem(
            422,
            "invalid-request",
            "Invalid Request",
            exc.message,
            errors=[{"pointer": f"/{exc.field}", "detail": exc.message, "code": "invalid"}],
        ) from None
    return CreatedKey(**_out(record).model_dump(), key=plaintext)


@router.get(
    "",
    response_model=list[KeyOut],
    operation_id="list_keys",
    responses=problem_responses(*AUTHENTICATED),
)
async def list_all(context: ContextDep, _: Admin) -> list[KeyOut]:
    """Every API key, revoked ones included (never a secret)."""
    return [_out(r) for r in await list_keys(context.pool)]


@router.delete(
    "/{key_id}",
    status_code=204,
    operation_id="revoke_key",
    responses=problem_responses(
        *AUTHENTICATED,
        404,
        409,
        descriptions={
            404: "No active key with this id",
            409: "The key making the request cannot revoke itself",
        },
    ),
)
async def revoke(key_id: str, context: ContextDep, admin: Admin) -> Response:
    """Revoke a key at once. Not the key making the request (409): an admin would lock
    themselves out mid-session; another admin key or ``touchpulse keys revoke`` does it."""
    if key_id == admin.key_id:
        raise Problem(
            409,
            "conflict",
            "Conflict",
            "A key cannot revoke itself; use another admin key or `touchpulse keys revoke`",
        )
    if not await revoke_key(context.pool, key_id, now=context.clock()):
        raise Problem(404, "not-found", "Not Found", f"No active key {key_id!r}")
    return Response(status_code=204)

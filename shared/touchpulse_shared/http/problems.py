"""RFC 9457 problem details, and the JSON Pointers (RFC 6901) that name bad fields."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
from pydantic_core import ErrorDetails
from starlette.responses import Response

PROBLEM_JSON = "application/problem+json"
_TYPE_BASE = "https://touchpulse.dev/problems/"


class Problem(Exception):
    """A request the service refuses; raised anywhere, rendered by one handler."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str,
        *,
        errors: Sequence[Mapping[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.errors = list(errors) if errors is not None else None
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def body(self, instance: str) -> dict[str, Any]:
        document: dict[str, Any] = {
            "type": _TYPE_BASE + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "instance": instance,
        }
        if self.errors is not None:
            document["errors"] = self.errors
        document.update(self.extra)
        return document

    def response(self, instance: str) -> Response:
        return Response(
            orjson.dumps(self.body(instance)),
            status_code=self.status,
            media_type=PROBLEM_JSON,
            headers=self.headers,
        )


def pointer(parts: Iterable[str | int]) -> str:
    """A JSON Pointer: ``("events", 3, "measures", "a/b")`` → ``/events/3/measures/a~1b``."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def field_errors(
    errors: Iterable[ErrorDetails], prefix: Sequence[str | int] = ()
) -> list[dict[str, Any]]:
    """pydantic errors as problem ``errors`` members, each with the pointer of its field.

    The offending input is not echoed back: it may be huge, not JSON-encodable (NaN), or
    something the client should not see mirrored in logs downstream.
    """
    return [
        {
            "pointer": pointer((*prefix, *error["loc"])),
            "detail": error["msg"],
            "code": error["type"],
        }
        for error in errors
    ]

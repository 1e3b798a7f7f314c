"""The live catalogue, or a stored version of it, by the version string outcomes carry."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from touchpulse_api.catalogue import current_catalogue
from touchpulse_api.context import ApiContext
from touchpulse_api.promises import store
from touchpulse_scoring.domain import Catalogue, CatalogueError, parse_catalogue
from touchpulse_shared.http.problems import Problem


@dataclass(frozen=True, slots=True)
class Named:
    catalogue: Catalogue
    content_hash: str
    #: The catalogue this api process runs (its file), not one read back from storage.
    live: bool


@lru_cache(maxsize=16)
def parse_stored(content_hash: str, content: str) -> Catalogue:
    # Keyed by the hash too: a stored version is parsed once per process, not per request
    # (parsing and validating a catalogue costs milliseconds). Pure, so a kept result is
    # always the right one.
    del content_hash
    return parse_catalogue(content)


def unknown_version(version: str, pointer: str, status: int) -> Problem:
    return Problem(
        status,
        "unknown-catalogue-version",
        "Unknown Catalogue Version",
        f"No promise catalogue with version {version!r} was ever in effect",
        errors=[
            {
                "pointer": pointer,
                "detail": "no stored catalogue has this version (GET /v1/promises/versions"
                " lists them)",
                "code": "unknown_version",
            }
        ],
    )


async def catalogue_named(
    context: ApiContext, version: str | None, *, pointer: str, status: int
) -> Named:
    """The catalogue ``version`` names: the live one when it is None or the live version,
    else the stored one (``status`` with ``pointer`` when none is stored)."""
    live = current_catalogue(context)
    if version is None or version == live.version:
        return Named(live, context.catalogue.content_hash, live=True)
    async with context.read_pool.acquire() as conn:
        row = await store.read_version(conn, version)
    if row is None:
        raise unknown_version(version, pointer, status)
    try:
        catalogue = parse_stored(row["content_hash"], row["content"])
    except CatalogueError as exc:
        # Stored by an earlier release whose rules were looser: it cannot be judged by now.
        raise Problem(
            409,
            "catalogue-no-longer-valid",
            "Catalogue No Longer Valid",
            f"Catalogue version {version!r} is stored, but this release no longer accepts it:"
            f" {'; '.join(str(exc).splitlines()[:5])}",
        ) from None
    return Named(catalogue, row["content_hash"], live=False)

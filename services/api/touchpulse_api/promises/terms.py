"""The terms an outcome was judged by, when its catalogue version is no longer in effect.

An outcome stores what it expected (op, target, unit) but not the rest of its promise's
terms (tolerance, segment overrides, weight); those are in the stored catalogue it names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from touchpulse_api.context import ApiContext
from touchpulse_api.models import JudgedTerms
from touchpulse_api.promises import store
from touchpulse_api.promises.catalogues import parse_stored
from touchpulse_scoring.domain import Catalogue, CatalogueError, Outcome

# The parts of a promise that decide a judgement (not its action or description).
_TERMS = {"id", "expect", "deadline", "tolerance", "critical_at", "segments", "weight", "severity"}


async def older_catalogues(
    context: ApiContext, outcomes: Iterable[Outcome], live: Catalogue
) -> dict[str, Catalogue]:
    """The stored catalogues the outcomes name, other than the live one (one query, none
    when every outcome was judged under the live version)."""
    versions = sorted({o.catalogue_version for o in outcomes} - {live.version})
    if not versions:
        return {}
    async with context.read_pool.acquire() as conn:
        rows = await store.read_versions(conn, versions)
    found = {}
    for row in rows:
        try:
            found[row["version"]] = parse_stored(row["content_hash"], row["content"])
        except CatalogueError:
            continue  # stored by a release with looser rules: its terms cannot be shown
    return found


def judged_by(
    outcome: Outcome, live: Catalogue, older: Mapping[str, Catalogue]
) -> JudgedTerms | None:
    """The terms of ``outcome``'s promise in its own version, when that is not ``live``."""
    if outcome.catalogue_version == live.version:
        return None
    catalogue = older.get(outcome.catalogue_version)
    promise = None if catalogue is None else catalogue.promise(outcome.promise_id)
    if promise is None:
        return None
    return JudgedTerms(
        catalogue_version=outcome.catalogue_version,
        promise=promise.model_dump(mode="json", include=_TERMS, exclude_none=True),
    )

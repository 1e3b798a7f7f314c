"""The catalogue the api explains with: the same file scoring judges by."""

from __future__ import annotations

from touchpulse_api.context import ApiContext
from touchpulse_scoring.domain import Catalogue


def current_catalogue(context: ApiContext) -> Catalogue:
    context.catalogue.refresh()  # cheap: one stat() unless the file changed
    return context.catalogue()

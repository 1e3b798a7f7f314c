"""The promise catalogue in effect for a process, re-read when its file changes."""

from __future__ import annotations

from pathlib import Path

import structlog

from touchpulse_scoring.domain import Catalogue, CatalogueError, load_catalogue_file

log = structlog.get_logger(__name__)


class CatalogueSource:
    """The catalogue in effect, re-read when its file changes.

    An edited file that does not validate is logged and ignored: the last good catalogue
    stays in effect, so a typo never stops scoring.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime = path.stat().st_mtime_ns
        self._current = load_catalogue_file(path)

    def __call__(self) -> Catalogue:
        return self._current

    def refresh(self) -> bool:
        try:
            mtime = self.path.stat().st_mtime_ns
        except OSError as exc:
            log.error("scoring.catalogue.unreadable", path=str(self.path), error=str(exc))  # noqa: TRY400 - the reason is the message; a traceback adds nothing
            return False
        if mtime == self._mtime:
            return False
        self._mtime = mtime
        try:
            catalogue = load_catalogue_file(self.path)
        except CatalogueError as exc:
            log.error("scoring.catalogue.invalid", path=str(self.path), error=str(exc))  # noqa: TRY400 - the reason is the message
            return False
        log.info(
            "scoring.catalogue.reloaded", version=catalogue.version, previous=self._current.version
        )
        self._current = catalogue
        return True

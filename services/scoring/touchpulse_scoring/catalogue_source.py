"""The promise catalogue in effect for a process, re-read when its file changes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import structlog

from touchpulse_scoring.domain import Catalogue, CatalogueError, parse_catalogue

log = structlog.get_logger(__name__)


def content_hash(text: str) -> str:
    """The sha256 (hex) of a catalogue's text: what tells two catalogues apart, whatever
    version string they carry."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _read(path: Path) -> tuple[Catalogue, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogueError([f"{path}: cannot be read: {exc}"]) from None
    return parse_catalogue(text), text


class CatalogueSource:
    """The catalogue in effect, re-read when its file changes, with the text it was parsed
    from (``text``, ``content_hash``): what scoring keeps in ``catalogue_version`` and every
    service reports as the catalogue it runs.

    An edited file that does not validate is logged and ignored: the last good catalogue
    stays in effect, so a typo never stops scoring.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime = path.stat().st_mtime_ns
        self._current, self.text = _read(path)
        self.content_hash = content_hash(self.text)

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
            catalogue, text = _read(self.path)
        except CatalogueError as exc:
            log.error("scoring.catalogue.invalid", path=str(self.path), error=str(exc))  # noqa: TRY400 - the reason is the message
            return False
        log.info(
            "scoring.catalogue.reloaded", version=catalogue.version, previous=self._current.version
        )
        # The catalogue and its text change together: a reader never pairs one file's
        # catalogue with another's hash (one thread; no await in between).
        self._current, self.text, self.content_hash = catalogue, text, content_hash(text)
        return True

"""``touchpulse catalogue check``: the services' own validation, run on a file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import orjson

from touchpulse_scoring.domain import Catalogue, CatalogueError, load_catalogue_file


@dataclass(frozen=True)
class CheckReport:
    path: Path
    catalogue: Catalogue | None
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.catalogue is not None

    def render_text(self) -> str:
        if self.catalogue is None:
            return "\n".join(self.problems)
        return f"{self.path}: valid, version {self.catalogue.version}"

    def render_json(self) -> str:
        return orjson.dumps({"valid": self.ok, "problems": list(self.problems)}).decode()


def check_file(path: Path) -> CheckReport:
    try:
        catalogue = load_catalogue_file(path)
    except CatalogueError as exc:
        return CheckReport(path, None, exc.problems)
    return CheckReport(path, catalogue, ())

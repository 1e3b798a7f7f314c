"""``touchpulse catalogue diff``: what a new catalogue changes, in the catalogue's own terms.

Both files are validated first and compared as the services see them, not as text: a
reordered, recommented or reformatted file promises the same, and a policy field stated at
its default equals one left out. Promises are matched by id; within one, every field that
differs is named by its path (``expect.target``, ``segments.premium.tolerance``,
``deadline.within_hours``), as in the catalogue file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from touchpulse_scoring.catalogue_tools.check import Loaded, printable, terms
from touchpulse_scoring.domain import Catalogue, Promise


@dataclass(frozen=True, slots=True)
class Change:
    """One field's value before and after; None on the side where it is not set."""

    field: str
    old: Any
    new: Any

    def as_json(self) -> dict[str, Any]:
        return {"field": self.field, "old": self.old, "new": self.new}


@dataclass(frozen=True, slots=True)
class CatalogueDiff:
    old_version: str
    new_version: str
    touchpoints: tuple[Change, ...] = ()
    added: tuple[Promise, ...] = ()
    removed: tuple[Promise, ...] = ()
    #: Promise id -> its changed fields, in the new catalogue's order.
    changed: Mapping[str, tuple[Change, ...]] = field(default_factory=dict)
    policy: tuple[Change, ...] = ()
    events: tuple[Change, ...] = ()

    @property
    def version_changed(self) -> bool:
        return self.old_version != self.new_version

    @property
    def identical(self) -> bool:
        return not (
            self.version_changed
            or self.touchpoints
            or self.added
            or self.removed
            or self.changed
            or self.policy
            or self.events
        )


def _key(name: str) -> str:
    # Event types hold dots: events.call_centre['call.answered'], as check names them.
    return f"['{name}']" if "." in name else f".{name}"


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Leaf path -> value; lists are leaves (resolution_categories is one setting)."""
    if isinstance(value, Mapping):
        flat: dict[str, Any] = {}
        for name, inner in value.items():
            path = f"{prefix}{_key(str(name))}" if prefix else str(name)
            flat.update(_flatten(inner, path))
        return flat
    return {prefix: value}


def _changes(old: Any, new: Any, prefix: str = "") -> tuple[Change, ...]:
    before, after = _flatten(old, prefix), _flatten(new, prefix)
    # Paths in the new file's order, then the ones only the old one has.
    paths = list(after) + [p for p in before if p not in after]
    return tuple(
        Change(path, before.get(path), after.get(path))
        for path in paths
        if before.get(path) != after.get(path)
    )


def _dump(promise: Promise) -> dict[str, Any]:
    # A field left unset and one set to nothing are the same promise.
    return promise.model_dump(mode="json", exclude_none=True)


def _events(catalogue: Catalogue) -> dict[str, Any]:
    return {
        touchpoint: {
            event_type: declaration.model_dump(mode="json", exclude_none=True)
            for event_type, declaration in declared.items()
        }
        for touchpoint, declared in catalogue.events.items()
    }


def diff_catalogues(old: Catalogue, new: Catalogue) -> CatalogueDiff:
    before = {p.id: p for p in old.promises}
    after = {p.id: p for p in new.promises}
    changed = {
        promise_id: found
        for promise_id, promise in after.items()
        if promise_id in before and (found := _changes(_dump(before[promise_id]), _dump(promise)))
    }
    return CatalogueDiff(
        old_version=old.version,
        new_version=new.version,
        touchpoints=_changes(dict(old.touchpoints), dict(new.touchpoints), "touchpoints"),
        added=tuple(p for p in new.promises if p.id not in before),
        removed=tuple(p for p in old.promises if p.id not in after),
        changed=changed,
        policy=_changes(
            old.policy.model_dump(mode="json"), new.policy.model_dump(mode="json"), "policy"
        ),
        events=_changes(_events(old), _events(new), "events"),
    )


# --- reports ----------------------------------------------------------------------------------


def show(value: Any) -> str:
    """A value as the catalogue file would state it."""
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {show(v)}" for k, v in value.items()) + "}"
    return str(value)


def _table(changes: Iterable[Change], indent: str) -> list[str]:
    rows = list(changes)
    width = max((len(c.field) for c in rows), default=0)
    return [f"{indent}{c.field:<{width}}  {show(c.old)} → {show(c.new)}" for c in rows]


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'s' if n != 1 else ''}"


def _headline(result: CatalogueDiff) -> str:
    parts = [
        f"{len(result.added)} added",
        f"{len(result.removed)} removed",
        f"{len(result.changed)} changed",
    ]
    return (
        f"promises: {', '.join(parts)}; {_count(len(result.policy), 'policy change')};"
        f" {_count(len(result.touchpoints), 'touchpoint change')};"
        f" {_count(len(result.events), 'tracking-plan change')}"
    )


def render_text(result: CatalogueDiff, old: Loaded, new: Loaded) -> str:
    """Nothing when identical, as diff(1); otherwise a headline and a section per part."""
    if result.identical:
        return ""
    lines = [
        f"--- {old.path} (version {result.old_version})",
        f"+++ {new.path} (version {result.new_version})",
        _headline(result),
    ]
    if result.version_changed:
        lines.append(f"version  {result.old_version} → {result.new_version}")
    else:
        lines.append(f"version  {result.old_version}, unchanged: bump it for this change")
    width = max((len(p.id) for p in (*result.added, *result.removed)), default=0)
    if result.added:
        lines.append("promises added:")
        lines += [f"  + {p.id:<{width}}  {p.touchpoint}: {terms(p)}" for p in result.added]
    if result.removed:
        lines.append("promises removed:")
        lines += [f"  - {p.id:<{width}}  {p.touchpoint}: {terms(p)}" for p in result.removed]
    if result.changed:
        lines.append("promises changed:")
        for promise_id, changes in result.changed.items():
            lines.append(f"  ~ {promise_id}")
            lines += _table(changes, "      ")
    for title, changes in (
        ("policy", result.policy),
        ("touchpoints", result.touchpoints),
        ("tracking plan (events)", result.events),
    ):
        if changes:
            lines.append(f"{title}:")
            lines += _table(changes, "    ")
    return printable("\n".join(lines))


def render_json(result: CatalogueDiff, old: Loaded, new: Loaded) -> str:
    body = {
        "identical": result.identical,
        "old": {"file": str(old.path), "version": result.old_version, "sha256": old.sha256},
        "new": {"file": str(new.path), "version": result.new_version, "sha256": new.sha256},
        "version": (
            {"old": result.old_version, "new": result.new_version}
            if result.version_changed
            else None
        ),
        "promises": {
            "added": [_dump(p) for p in result.added],
            "removed": [_dump(p) for p in result.removed],
            "changed": {
                promise_id: [c.as_json() for c in changes]
                for promise_id, changes in result.changed.items()
            },
        },
        "policy": [c.as_json() for c in result.policy],
        "touchpoints": [c.as_json() for c in result.touchpoints],
        "events": [c.as_json() for c in result.events],
    }
    return orjson.dumps(body, option=orjson.OPT_INDENT_2).decode()

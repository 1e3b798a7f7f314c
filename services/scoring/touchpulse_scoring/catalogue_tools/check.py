"""``touchpulse catalogue check``: the services' own validation, run on a file before it ships.

There is no second validator here: the verdict is :func:`parse_catalogue`'s, on the text
read as the services read it (UTF-8, as :class:`CatalogueSource` does). What this module adds
is for people: each problem placed on its line, and a summary of a catalogue that passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from touchpulse_scoring.catalogue_source import content_hash
from touchpulse_scoring.domain import (
    Catalogue,
    CatalogueError,
    CatalogueProblem,
    DeadlinePromise,
    MeasurePromise,
    parse_catalogue,
)


@dataclass(frozen=True, slots=True)
class Located:
    """A problem and the line it is on (None when the file as a whole is the problem)."""

    problem: CatalogueProblem
    line: int | None

    def as_json(self) -> dict[str, Any]:
        p = self.problem
        return {
            "line": self.line,
            "promise": p.promise_id,
            "subject": p.subject or None,
            "field": p.field or None,
            "message": p.message,
            "text": str(p),
        }

    def __str__(self) -> str:
        return f"line {self.line}: {self.problem}" if self.line is not None else str(self.problem)


@dataclass(frozen=True, slots=True)
class Loaded:
    """A catalogue file as the services would take it, or every reason they would not."""

    path: Path
    catalogue: Catalogue | None
    #: The services' hash of the text (:func:`content_hash`); None when it cannot be read.
    sha256: str | None
    problems: tuple[Located, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.catalogue is not None

    def problems_text(self) -> str:
        count = len(self.problems)
        head = (
            f"{self.path}: invalid: {count} problem{'s' if count != 1 else ''};"
            " ingest and scoring would refuse this file"
        )
        return printable("\n".join([head, *(f"  {p}" for p in self.problems)]))


def load(path: Path) -> Loaded:
    """Read and validate ``path`` exactly as the services do; never raises for its content."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return Loaded(
            path, None, None, (Located(CatalogueProblem(f"cannot be read: {exc}"), None),)
        )
    # The hash the services report for this file (/readyz, *_catalogue_info, the versions).
    digest = content_hash(text)
    try:
        catalogue = parse_catalogue(text)
    except CatalogueError as exc:
        root = _compose(text)
        located = tuple(
            Located(p, p.line if p.line is not None else _line(root, p.loc)) for p in exc.details
        )
        return Loaded(path, None, digest, located)
    return Loaded(path, catalogue, digest)


def _compose(text: str) -> yaml.Node | None:
    # The node tree keeps where everything is; only for placing problems, so a file the
    # parser refused (its problem carries its own line) simply has no tree.
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None


def _line(root: yaml.Node | None, loc: tuple[str | int, ...]) -> int | None:
    """The line of the deepest part of ``loc`` present in the file: a missing field is placed
    on its parent's key, an unknown one on its own key."""
    if root is None or not loc:
        return None
    node: yaml.Node = root
    line = root.start_mark.line + 1
    for part in loc:
        if part == "[key]":
            break  # the key just walked through is the one meant, and its line is kept
        if isinstance(node, yaml.MappingNode):
            pair = next(
                (
                    (key, value)
                    for key, value in node.value
                    if isinstance(key, yaml.ScalarNode) and key.value == str(part)
                ),
                None,
            )
            if pair is None:
                break
            line = pair[0].start_mark.line + 1
            node = pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


# --- the summary of a valid catalogue ---------------------------------------------------------


def terms(promise: MeasurePromise | DeadlinePromise) -> str:
    if isinstance(promise, MeasurePromise):
        target = (
            str(promise.expect.target).lower()
            if promise.is_boolean
            else f"{promise.expect.target:g}"
        )
        within = f" ± {promise.tolerance:g}" if promise.tolerance is not None else ""
        return f"{promise.event_type} {promise.measure} {promise.expect.op} {target}{within}"
    spec = promise.deadline
    due = (
        f"within {spec.within_hours:g} h"
        if spec.within_hours is not None
        else f"by {spec.due_at_attribute}"
    )
    return f"{spec.opened_by} → {spec.fulfilled_by} {due} ± {promise.tolerance:g} h"


def summary(catalogue: Catalogue) -> dict[str, Any]:
    """What a catalogue promises, in numbers a reviewer checks against their intent."""
    by_touchpoint: dict[str, list[dict[str, Any]]] = {t: [] for t in catalogue.touchpoints}
    segments: dict[str, list[str]] = {}
    critical: list[dict[str, Any]] = []
    for promise in catalogue.promises:
        by_touchpoint.setdefault(promise.touchpoint, []).append(
            {
                "id": promise.id,
                "kind": "deadline" if isinstance(promise, DeadlinePromise) else "measure",
                "terms": terms(promise),
                "weight": promise.weight,
                "severity": promise.severity,
            }
        )
        for segment in promise.segments:
            segments.setdefault(segment, []).append(promise.id)
        if promise.severity == "critical":
            critical_at = promise.critical_at if isinstance(promise, MeasurePromise) else None
            critical.append(
                {"id": promise.id, "touchpoint": promise.touchpoint, "critical_at": critical_at}
            )
    policy = catalogue.policy
    interventions = policy.interventions
    return {
        "touchpoints": [
            {"name": name, "importance": importance, "promises": by_touchpoint[name]}
            for name, importance in catalogue.touchpoints.items()
        ],
        "promises": len(catalogue.promises),
        "segments": dict(sorted(segments.items())),
        "critical": critical,
        "events_declared": {t: sorted(d) for t, d in catalogue.events.items()},
        "policy": {
            "half_life_days": policy.half_life_days,
            "weakest_link_lambda": policy.weakest_link_lambda,
            "bands": policy.bands.model_dump(),
            "new_customer_days": policy.new_customer_days,
            "intervention_threshold": interventions.threshold,
            "new_customer_threshold": interventions.new_customer_threshold,
            "min_evidence": interventions.min_evidence,
            "min_breaches": interventions.min_breaches,
            "repeat_breaches": interventions.repeat_breaches.model_dump(),
            "spread_breaches": interventions.spread_breaches.model_dump(),
            "cooldown_days": interventions.cooldown_days,
            "acknowledge_within_hours": interventions.acknowledge_within_hours,
            "resolution_categories": list(interventions.resolution_categories),
        },
    }


def _summary_text(loaded: Loaded, catalogue: Catalogue) -> str:
    facts = summary(catalogue)
    lines = [
        f"{loaded.path}: valid promise catalogue, version {catalogue.version}",
        f"  sha256 {loaded.sha256}",
        f"touchpoints ({len(catalogue.touchpoints)}), {facts['promises']} promises:",
    ]
    width = max((len(t["name"]) for t in facts["touchpoints"]), default=0)
    for touchpoint in facts["touchpoints"]:
        count = len(touchpoint["promises"])
        declared = facts["events_declared"].get(touchpoint["name"])
        plan = (
            f", declares {len(declared)} event type{'s' if len(declared) != 1 else ''}"
            if declared is not None
            else ""
        )
        lines.append(
            f"  {touchpoint['name']:<{width}}  importance {touchpoint['importance']:g},"
            f" {count} promise{'s' if count != 1 else ''}{plan}"
        )
        lines.extend(
            f"      {p['id']}: {p['terms']}"
            + (f", weight {p['weight']:g}" if p["weight"] != 1 else "")
            + (" [critical]" if p["severity"] == "critical" else "")
            for p in touchpoint["promises"]
        )
    if facts["segments"]:
        lines.append("segments with their own terms:")
        lines.extend(f"  {segment}: {', '.join(ids)}" for segment, ids in facts["segments"].items())
    else:
        lines.append("segments with their own terms: none")
    lines.append(f"critical promises ({len(facts['critical'])}):")
    for item in facts["critical"]:
        at = f", critical at {item['critical_at']:g}" if item["critical_at"] is not None else ""
        lines.append(f"  {item['id']} ({item['touchpoint']}{at})")
    p = facts["policy"]
    lines += [
        "policy:",
        f"  half-life {p['half_life_days']:g} d, weakest-link lambda"
        f" {p['weakest_link_lambda']:g}, bands red < {p['bands']['amber_from']:g}"
        f" <= amber < {p['bands']['green_from']:g} <= green",
        f"  interventions below {p['intervention_threshold']:g}"
        f" (new customers, first {p['new_customer_days']} d: {p['new_customer_threshold']:g}),"
        f" evidence >= {p['min_evidence']:g}, breaches >= {p['min_breaches']},"
        f" cooldown {p['cooldown_days']:g} d",
        f"  repeat: {p['repeat_breaches']['count']} breaches in"
        f" {p['repeat_breaches']['within_days']:g} d; spread:"
        f" {p['spread_breaches']['touchpoints']} touchpoints in"
        f" {p['spread_breaches']['within_days']:g} d; acknowledge within"
        f" {p['acknowledge_within_hours']:g} h",
        f"  resolution categories: {', '.join(p['resolution_categories'])}",
    ]
    return "\n".join(lines)


def printable(text: str) -> str:
    """Text for a terminal: a file's own keys and values may hold control characters (an
    escape sequence in a field name would recolour or rewrite the screen), shown escaped."""
    return "".join(c if c.isprintable() or c == "\n" else repr(c)[1:-1] for c in text)


def render_text(loaded: Loaded) -> str:
    if loaded.catalogue is None:
        return printable(loaded.problems_text())
    return printable(_summary_text(loaded, loaded.catalogue))


def render_json(loaded: Loaded) -> str:
    catalogue = loaded.catalogue
    body: dict[str, Any] = {
        "file": str(loaded.path),
        "valid": loaded.ok,
        "version": catalogue.version if catalogue is not None else None,
        "sha256": loaded.sha256,
        "problems": [p.as_json() for p in loaded.problems],
        "summary": summary(catalogue) if catalogue is not None else None,
    }
    return orjson.dumps(body, option=orjson.OPT_INDENT_2).decode()

"""The promise catalogue: parsed from versioned YAML, validated whole, indexed for the consumer.

:func:`parse_catalogue` is pure and deterministic, so a reload is "parse the new text; if it
raises, keep the old catalogue". Every problem found is reported at once, one line each,
naming the promise (or section) and the field path, e.g.
``promise 'call-answer-time': expect.op: Input should be '<=', '>=' or '=='``.

The catalogue is also the tracking plan: :func:`event_problems` says what in one event the
catalogue refuses (an unknown touchpoint, an event type its touchpoint does not declare, a
measure of the wrong kind, a required measure missing). Ingest answers those with a 422 and
scoring dead-letters them (:func:`check_event`), so the two never disagree.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated, Any, Literal, NamedTuple

import yaml
from pydantic import AfterValidator, BaseModel, Field, ValidationError, WithJsonSchema
from pydantic_core import ErrorDetails, PydanticCustomError

from touchpulse_scoring.domain.errors import (
    CatalogueError,
    CatalogueProblem,
    UnscorableEvent,
    UnscorableReason,
)
from touchpulse_scoring.domain.health import Prior
from touchpulse_scoring.domain.policy import Policy
from touchpulse_scoring.domain.promises import (
    MODEL_CONFIG,
    DeadlinePromise,
    MeasurePromise,
    MeasureRule,
    Promise,
    Slug,
    Text,
)
from touchpulse_shared.contract.events import MAX_MEASURES, EventType, ExperienceEventV1

#: Far more than any real catalogue; a bound so a runaway generator cannot stall a reload.
MAX_PROMISES = 2000
MAX_TOUCHPOINTS = 200
MAX_EVENT_TYPES_PER_TOUCHPOINT = 200
#: A problem message lists the known touchpoints or types only up to this many.
_LIST_AT_MOST = 20

#: What a measure promise needs of its measure: a JSON boolean, or a finite number.
MeasureKind = Literal["boolean", "number"]


def _version(value: str) -> str:
    if not value.strip() or len(value) > 64 or any(c.isspace() for c in value):
        raise PydanticCustomError(
            "catalogue_version", "Input should be 1 to 64 characters without whitespace"
        )
    return value


class EventDeclaration(BaseModel):
    """One event type of one touchpoint as the catalogue's ``events`` section declares it.

    A touchpoint listed in ``events`` has exactly the event types listed under it; a
    touchpoint left out accepts any type (what every catalogue did before the section).
    """

    model_config = MODEL_CONFIG

    description: Text | None = None
    #: Measures every event of this type must carry (ingest refuses it without them).
    required: Annotated[list[Slug], Field(max_length=MAX_MEASURES)] = Field(default_factory=list)


_TouchpointEvents = Annotated[
    dict[EventType, EventDeclaration],
    Field(min_length=1, max_length=MAX_EVENT_TYPES_PER_TOUCHPOINT),
]


class CatalogueDocument(BaseModel):
    """The catalogue file's top level; its promises are validated one by one after it, so that
    each error can name its promise (the catalogue's JSON Schema types them in
    ``touchpulse_scoring.catalogue_tools.schema``)."""

    model_config = MODEL_CONFIG

    # A string, so that YAML cannot read 2026.10 as the float 2026.1.
    version: Annotated[
        str,
        AfterValidator(_version),
        WithJsonSchema({"type": "string", "pattern": r"^\S{1,64}$", "title": "Version"}),
    ]
    touchpoints: Annotated[
        dict[Slug, Annotated[float, Field(ge=0, le=1000)]],
        Field(min_length=1, max_length=MAX_TOUCHPOINTS),
    ]
    policy: Policy = Field(default_factory=Policy)
    #: The tracking plan: touchpoint -> event type -> declaration (optional, per touchpoint).
    events: Annotated[dict[Slug, _TouchpointEvents], Field(max_length=MAX_TOUCHPOINTS)] = Field(
        default_factory=dict
    )
    # Validated one by one below, so that each error can name its promise.
    promises: Annotated[list[Any], Field(max_length=MAX_PROMISES)]


class EventProblem(NamedTuple):
    """One thing the catalogue refuses in an event, located in the native event's fields."""

    #: The field in the native event: ``("touchpoint",)``, ``("type",)`` or
    #: ``("measures", name)``; a CloudEvent names the same fields ``touchpoint``, ``type`` and
    #: ``data/measures/<name>``.
    field: tuple[str, ...]
    message: str
    reason: UnscorableReason

    @property
    def pointer(self) -> str:
        """The JSON Pointer of :attr:`field` in a native event, e.g. ``/measures/csat``."""
        return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in self.field)


@dataclass(frozen=True, slots=True, eq=False)
class Catalogue:
    """A validated catalogue with the O(1) lookups the consumer needs per event."""

    version: str
    #: Touchpoint name -> importance ``a_t`` (>= 0) in journey health.
    touchpoints: Mapping[str, float]
    policy: Policy
    promises: tuple[Promise, ...]
    #: Touchpoint -> event type -> declaration, for the touchpoints that declare their types.
    events: Mapping[str, Mapping[str, EventDeclaration]] = field(default_factory=dict)
    _by_event: Mapping[tuple[str, str], tuple[MeasurePromise, ...]] = field(init=False, repr=False)
    #: (touchpoint, type) -> measure -> (kind, the first promise that sets it).
    _kinds: Mapping[tuple[str, str], Mapping[str, tuple[MeasureKind, str]]] = field(
        init=False, repr=False
    )
    _opened_by: Mapping[str, tuple[DeadlinePromise, ...]] = field(init=False, repr=False)
    _fulfilled_by: Mapping[str, tuple[DeadlinePromise, ...]] = field(init=False, repr=False)
    _by_id: Mapping[str, Promise] = field(init=False, repr=False)
    #: The policy's prior per catalogue touchpoint: asked for on every health read, and the
    #: policy is a pydantic model whose lookups cost far more than this dict's.
    _priors: dict[str, Prior] = field(init=False, repr=False)
    #: (touchpoint, type) of an acceptable kind -> (measure kinds promised, measures
    #: required): what :func:`event_problems` checks when it finds nothing (nearly always).
    _checks: Mapping[
        tuple[str, str], tuple[Mapping[str, tuple[MeasureKind, str]], tuple[str, ...]]
    ] = field(init=False, repr=False)
    #: (touchpoint, type) -> (the rules for any segment without overrides, segment -> its
    #: rules): every event's judging reads these instead of resolving terms per promise.
    _rules: Mapping[
        tuple[str, str], tuple[tuple[MeasureRule, ...], Mapping[str, tuple[MeasureRule, ...]]]
    ] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        by_event: dict[tuple[str, str], tuple[MeasurePromise, ...]] = {}
        opened_by: dict[str, tuple[DeadlinePromise, ...]] = {}
        fulfilled_by: dict[str, tuple[DeadlinePromise, ...]] = {}
        for promise in self.promises:
            if isinstance(promise, MeasurePromise):
                key = (promise.touchpoint, promise.event_type)
                by_event[key] = (*by_event.get(key, ()), promise)
            else:
                spec = promise.deadline
                opened_by[spec.opened_by] = (*opened_by.get(spec.opened_by, ()), promise)
                fulfilled_by[spec.fulfilled_by] = (
                    *fulfilled_by.get(spec.fulfilled_by, ()),
                    promise,
                )
        kinds: dict[tuple[str, str], dict[str, tuple[MeasureKind, str]]] = {}
        for key, measured in by_event.items():
            for promise in measured:
                kinds.setdefault(key, {}).setdefault(promise.measure, (_kind(promise), promise.id))
        set_ = object.__setattr__  # frozen: the indexes are derived once, here
        set_(self, "touchpoints", MappingProxyType(dict(self.touchpoints)))
        set_(
            self,
            "events",
            MappingProxyType({t: MappingProxyType(dict(d)) for t, d in self.events.items()}),
        )
        set_(self, "_by_event", MappingProxyType(by_event))
        set_(self, "_kinds", MappingProxyType({k: MappingProxyType(v) for k, v in kinds.items()}))
        set_(self, "_opened_by", MappingProxyType(opened_by))
        set_(self, "_fulfilled_by", MappingProxyType(fulfilled_by))
        set_(self, "_by_id", MappingProxyType({p.id: p for p in self.promises}))
        set_(self, "_priors", {t: self.policy.prior.for_touchpoint(t) for t in self.touchpoints})
        set_(self, "_rules", MappingProxyType({k: _rules(m) for k, m in by_event.items()}))
        checks: dict[tuple[str, str], tuple[Mapping[str, tuple[MeasureKind, str]], tuple[str, ...]]]
        checks = {}
        for touchpoint, event_type in {
            *by_event,
            *((t, e) for t, d in self.events.items() for e in d),
        }:
            declared = self.events.get(touchpoint)
            if touchpoint not in self.touchpoints or (
                declared is not None and event_type not in declared
            ):
                continue  # refused: the full check names why
            required = tuple(declared[event_type].required) if declared is not None else ()
            checks[(touchpoint, event_type)] = (
                self._kinds.get((touchpoint, event_type), MappingProxyType({})),
                required,
            )
        set_(self, "_checks", MappingProxyType(checks))

    def prior(self, touchpoint: str) -> Prior:
        """The policy's prior for ``touchpoint`` (``policy.prior.for_touchpoint``)."""
        known = self._priors.get(touchpoint)
        return known if known is not None else self.policy.prior.for_touchpoint(touchpoint)

    def knows_touchpoint(self, touchpoint: str) -> bool:
        return touchpoint in self.touchpoints

    def measure_promises(self, touchpoint: str, event_type: str) -> tuple[MeasurePromise, ...]:
        """The measure promises an event of this touchpoint and type is judged against."""
        return self._by_event.get((touchpoint, event_type), ())

    def measure_rules(
        self, touchpoint: str, event_type: str, segment: str
    ) -> tuple[MeasureRule, ...]:
        """:meth:`measure_promises` as they judge a customer of ``segment``, in order."""
        found = self._rules.get((touchpoint, event_type))
        if found is None:
            return ()
        default, by_segment = found
        return by_segment.get(segment, default) if by_segment else default

    def deadlines_opened_by(self, event_type: str) -> tuple[DeadlinePromise, ...]:
        return self._opened_by.get(event_type, ())

    def deadlines_fulfilled_by(self, event_type: str) -> tuple[DeadlinePromise, ...]:
        return self._fulfilled_by.get(event_type, ())

    def promise(self, promise_id: str) -> Promise | None:
        return self._by_id.get(promise_id)

    def declared_types(self, touchpoint: str) -> Mapping[str, EventDeclaration] | None:
        """The event types a touchpoint declares, or None when it accepts any type."""
        return self.events.get(touchpoint)

    def measure_kind(
        self, touchpoint: str, event_type: str, measure: str
    ) -> tuple[MeasureKind, str] | None:
        """The kind a measure promise needs of this measure, and that promise's id."""
        kinds = self._kinds.get((touchpoint, event_type))
        return kinds.get(measure) if kinds is not None else None

    def matches_a_promise(self, touchpoint: str, event_type: str) -> bool:
        """Whether any promise judges, opens or fulfils on an event of this kind."""
        return (
            (touchpoint, event_type) in self._by_event
            or event_type in self._opened_by
            or event_type in self._fulfilled_by
        )


def _rules(
    promises: tuple[MeasurePromise, ...],
) -> tuple[tuple[MeasureRule, ...], Mapping[str, tuple[MeasureRule, ...]]]:
    """The rules of one (touchpoint, type): for segments without overrides (the promises'
    own terms; ``DEFAULT_SEGMENT`` has no special terms unless one names it), and for each
    segment some promise overrides. Bounded by the catalogue, whatever segments profiles
    carry."""
    default = tuple(p.rule_for("") for p in promises)
    named = {name for p in promises for name in p.segments}
    return default, MappingProxyType(
        {name: tuple(p.rule_for(name) for p in promises) for name in sorted(named)}
    )


def _kind(promise: MeasurePromise) -> MeasureKind:
    return "boolean" if promise.is_boolean else "number"


def _listed(names: Iterable[str]) -> str:
    ordered = sorted(names)
    if len(ordered) > _LIST_AT_MOST:
        return ", ".join(ordered[:_LIST_AT_MOST]) + f", … ({len(ordered)} in all)"
    return ", ".join(ordered)


def event_problems(event: ExperienceEventV1, catalogue: Catalogue) -> list[EventProblem]:
    """What the catalogue refuses in this event; empty when it can be judged.

    Pure, and the one rule both sides apply: ingest answers each problem with a 422 naming
    the field, scoring dead-letters a record with any (:func:`check_event`), so a record from
    another producer or from before a catalogue change is never judged on what ingest would
    refuse today. Measures no promise names are not refused: sources may send more than is
    promised. Values beyond kinds (a negative wait) are not refused either: a promise judges
    them.
    """
    if _passes(event, catalogue._checks.get((event.touchpoint, event.type))):
        return []
    return _problems(event, catalogue)


def _problems(event: ExperienceEventV1, catalogue: Catalogue) -> list[EventProblem]:
    """:func:`event_problems` in full, each problem with its message."""
    touchpoint, event_type = event.touchpoint, event.type
    if not catalogue.knows_touchpoint(touchpoint):
        return [
            EventProblem(
                ("touchpoint",),
                f"touchpoint {touchpoint!r} is not in promise catalogue {catalogue.version};"
                f" it has {_listed(catalogue.touchpoints)}",
                UnscorableReason.UNKNOWN_TOUCHPOINT,
            )
        ]
    declared = catalogue.declared_types(touchpoint)
    declaration = declared.get(event_type) if declared is not None else None
    if declared is not None and declaration is None:
        return [
            EventProblem(
                ("type",),
                f"touchpoint {touchpoint!r} has no event type {event_type!r} in promise"
                f" catalogue {catalogue.version}; it has {_listed(declared)}",
                UnscorableReason.UNKNOWN_EVENT_TYPE,
            )
        ]
    problems: list[EventProblem] = []
    for name, value in event.measures.items():
        wanted = catalogue.measure_kind(touchpoint, event_type, name)
        if wanted is None:
            continue
        kind, promise_id = wanted
        if (kind == "boolean") != isinstance(value, bool):
            problems.append(
                EventProblem(
                    ("measures", name),
                    f"measure {name!r} should be {'a boolean' if kind == 'boolean' else 'a number'}"
                    f" (promise {promise_id!r} judges it), not"
                    f" {'a boolean' if isinstance(value, bool) else 'a number'}",
                    UnscorableReason.WRONG_MEASURE_KIND,
                )
            )
    if declaration is not None:
        problems.extend(
            EventProblem(
                ("measures", name),
                f"measure {name!r} is required for {event_type} at {touchpoint} by promise"
                f" catalogue {catalogue.version}",
                UnscorableReason.MISSING_MEASURE,
            )
            for name in declaration.required
            if name not in event.measures
        )
    return problems


def _passes(
    event: ExperienceEventV1,
    check: tuple[Mapping[str, tuple[MeasureKind, str]], tuple[str, ...]] | None,
) -> bool:
    """Whether an event of a kind the catalogue accepts has every measure it must and each
    promised one of the right kind: the answer of the full check below when it finds no
    problem, without building anything (any doubt goes to the full check)."""
    if check is None:
        return False
    kinds, required = check
    measures = event.measures
    for name in required:
        if name not in measures:
            return False
    if kinds:
        for name, value in measures.items():
            wanted = kinds.get(name)
            if wanted is not None and (wanted[0] == "boolean") != isinstance(value, bool):
                return False
    return True


def check_event(event: ExperienceEventV1, catalogue: Catalogue) -> None:
    """Raise :class:`UnscorableEvent` when the catalogue refuses this event.

    The reason is the first problem's (:func:`event_problems`); the detail names every one by
    its field. A touchpoint missing from the catalogue is a dead letter rather than a silent
    no-op: it usually means a source was wired before its touchpoint was configured, and the
    events can be replayed from the dead-letter topic once it is.
    """
    problems = event_problems(event, catalogue)
    if problems:
        raise UnscorableEvent(
            problems[0].reason, "; ".join(f"{p.pointer}: {p.message}" for p in problems)
        )


def parse_catalogue(text: str) -> Catalogue:
    """Parse and validate catalogue YAML; raises :class:`CatalogueError` listing every problem."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise CatalogueError([CatalogueProblem(f"not valid YAML: {exc}", line=line)]) from None
    return catalogue_from_mapping(data)


def load_catalogue_file(path: str | os.PathLike[str]) -> Catalogue:
    """Read and parse a catalogue file: the domain's one piece of I/O.

    An unreadable file raises :class:`CatalogueError` too, because the caller reacts the same
    way: refuse to start, or keep the catalogue it already has.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogueError([f"{os.fspath(path)}: cannot be read: {exc}"]) from None
    return parse_catalogue(text)


def catalogue_from_mapping(data: object) -> Catalogue:
    """Validate an already-decoded catalogue document (what the YAML holds)."""
    if not isinstance(data, Mapping):
        raise CatalogueError(
            ["the catalogue should be a mapping with version, touchpoints, policy and promises"]
        )
    try:
        document = CatalogueDocument.model_validate(data)
    except ValidationError as exc:
        problems = [_describe_document_error(error) for error in exc.errors()]
        raw_promises = data.get("promises")
        if isinstance(raw_promises, list):
            # The promises' own problems too, and what they break between them, so that one
            # check shows everything to fix rather than one section per attempt.
            indexed, found = _validate_promises(raw_promises)
            raw_touchpoints = data.get("touchpoints")
            known = raw_touchpoints if isinstance(raw_touchpoints, Mapping) else None
            problems += found + _cross_check(indexed, known) + _check_kinds(indexed)
        raise CatalogueError(problems) from None
    indexed, problems = _validate_promises(document.promises)
    problems += _cross_check(indexed, document.touchpoints)
    problems += _check_kinds(indexed)
    problems += _check_events(document.events, indexed, document.touchpoints)
    problems += [
        CatalogueProblem(
            f"{name!r} is not one of the catalogue's touchpoints",
            subject="policy",
            field=f"prior.touchpoints.{name}",
            loc=("policy", "prior", "touchpoints", name),
        )
        for name in document.policy.prior.touchpoints
        if name not in document.touchpoints
    ]
    if problems:
        raise CatalogueError(problems)
    return Catalogue(
        version=document.version,
        touchpoints=document.touchpoints,
        policy=document.policy,
        promises=tuple(promise for _, promise in indexed),
        events=document.events,
    )


#: A validated promise with its place in the file's ``promises`` list.
_Indexed = tuple[int, Promise]


def _promise_problem(
    index: int, promise_id: str | None, field: str, message: str, loc: tuple[str | int, ...]
) -> CatalogueProblem:
    subject = f"promise {promise_id!r}" if promise_id else f"promise #{index + 1} (no id)"
    return CatalogueProblem(
        message,
        subject=subject,
        field=field,
        promise_id=promise_id or None,
        loc=("promises", index, *loc),
    )


def _validate_promises(raw: Sequence[Any]) -> tuple[list[_Indexed], list[CatalogueProblem]]:
    promises: list[_Indexed] = []
    problems: list[CatalogueProblem] = []
    for index, item in enumerate(raw):
        promise_id = _promise_id_of(item)
        if not isinstance(item, Mapping):
            problems.append(
                _promise_problem(index, None, "", "a promise should be a mapping of fields", ())
            )
            continue
        # A deadline block is what makes a promise a deadline promise.
        model: type[MeasurePromise | DeadlinePromise] = (
            DeadlinePromise if "deadline" in item else MeasurePromise
        )
        try:
            promise = model.model_validate(item)
        except ValidationError as exc:
            problems += [
                _promise_problem(index, promise_id, _path(e["loc"]), e["msg"], e["loc"])
                for e in exc.errors()
            ]
            continue
        promises.append((index, promise))
        problems += [
            _promise_problem(index, promise.id, path, message, tuple(path.split(".")))
            for path, message in promise.problems()
        ]
    return promises, problems


def _cross_check(
    promises: Sequence[_Indexed], touchpoints: Mapping[str, Any] | None
) -> list[CatalogueProblem]:
    """Unique ids, and known touchpoints (unless the touchpoints section is no mapping)."""
    problems: list[CatalogueProblem] = []
    known = ", ".join(sorted(map(str, touchpoints or {})))
    seen: set[str] = set()
    for index, promise in promises:
        if promise.id in seen:
            problems.append(
                _promise_problem(
                    index, promise.id, "id", "duplicate id; each promise id must be unique", ("id",)
                )
            )
        seen.add(promise.id)
        if touchpoints is not None and promise.touchpoint not in touchpoints:
            problems.append(
                _promise_problem(
                    index,
                    promise.id,
                    "touchpoint",
                    f"{promise.touchpoint!r} is not one of the catalogue's touchpoints ({known})",
                    ("touchpoint",),
                )
            )
    return problems


def _check_kinds(promises: Sequence[_Indexed]) -> list[CatalogueProblem]:
    """Two promises judging one measure of one event as a boolean and as a number: no event
    could satisfy both, and ingest would refuse every event carrying it."""
    problems: list[CatalogueProblem] = []
    first: dict[tuple[str, str, str], MeasurePromise] = {}
    for index, promise in promises:
        if not isinstance(promise, MeasurePromise):
            continue
        other = first.setdefault((promise.touchpoint, promise.event_type, promise.measure), promise)
        if _kind(other) != _kind(promise):
            problems.append(
                _promise_problem(
                    index,
                    promise.id,
                    "expect.target",
                    f"judges measure {promise.measure!r} of {promise.event_type} at"
                    f" {promise.touchpoint} as a {_kind(promise)}, but promise {other.id!r}"
                    f" judges it as a {_kind(other)}; an event cannot be both",
                    ("expect", "target"),
                )
            )
    return problems


def _event_path(touchpoint: str, event_type: str | None = None) -> str:
    return f"events.{touchpoint}" + (f"[{event_type!r}]" if event_type is not None else "")


def _check_events(
    events: Mapping[str, Mapping[str, EventDeclaration]],
    promises: Sequence[_Indexed],
    touchpoints: Mapping[str, float],
) -> list[CatalogueProblem]:
    """The tracking plan agrees with the touchpoints and with the promises."""
    problems: list[CatalogueProblem] = []
    for touchpoint, declared in events.items():
        if touchpoint not in touchpoints:
            problems.append(
                CatalogueProblem(
                    f"{touchpoint!r} is not one of the catalogue's touchpoints"
                    f" ({_listed(touchpoints)})",
                    field=_event_path(touchpoint),
                    loc=("events", touchpoint, "[key]"),
                )
            )
        for event_type, declaration in declared.items():
            seen: set[str] = set()
            for index, name in enumerate(declaration.required):
                if name in seen:
                    problems.append(
                        CatalogueProblem(
                            f"{name!r} is listed twice",
                            field=f"{_event_path(touchpoint, event_type)}.required[{index}]",
                            loc=("events", touchpoint, event_type, "required", index),
                        )
                    )
                seen.add(name)
    for index, promise in promises:
        if isinstance(promise, MeasurePromise):
            types = events.get(promise.touchpoint)
            if types is not None and promise.event_type not in types:
                problems.append(
                    _promise_problem(
                        index,
                        promise.id,
                        "event_type",
                        f"{promise.event_type!r} is not among the event types"
                        f" {_event_path(promise.touchpoint)} declares ({_listed(types)});"
                        " no event could ever be judged by this promise",
                        ("event_type",),
                    )
                )
            continue
        if not set(touchpoints) <= set(events):
            continue  # some touchpoint accepts any type, so any event type can arrive
        anywhere = {t for types in events.values() for t in types}
        for role in ("opened_by", "fulfilled_by"):
            event_type = getattr(promise.deadline, role)
            if event_type not in anywhere:
                problems.append(
                    _promise_problem(
                        index,
                        promise.id,
                        f"deadline.{role}",
                        f"{event_type!r} is declared at no touchpoint in events, and every"
                        " touchpoint declares its event types; no such event could ever arrive",
                        ("deadline", role),
                    )
                )
    return problems


def _promise_id_of(item: object) -> str | None:
    if isinstance(item, Mapping):
        promise_id = item.get("id")
        if isinstance(promise_id, str) and promise_id:
            return promise_id
    return None


def _describe_document_error(error: ErrorDetails) -> CatalogueProblem:
    loc = error["loc"]
    if loc and loc[0] == "policy" and len(loc) > 1:
        return CatalogueProblem(error["msg"], subject="policy", field=_path(loc[1:]), loc=loc)
    if loc and loc[0] == "events" and len(loc) > 2 and loc[2] != "[key]":
        # Event types hold dots: events.call_centre['call.answered'].required[0], not a path
        # that reads as five keys.
        where = _event_path(str(loc[1]), str(loc[2]))
        rest = _path(loc[3:])
        if rest:
            where += rest if rest[0] in "[ " else f".{rest}"
        return CatalogueProblem(error["msg"], field=where, loc=loc)
    return CatalogueProblem(error["msg"], field=_path(loc), loc=loc)


def _path(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part == "[key]":
            text += " (the name)"
        else:
            text += f".{part}" if text else part
    return text


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Any:
    # PyYAML keeps the last of two equal keys without a word; in a catalogue that silently
    # drops half of someone's edit, so it is an error here.
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
        except TypeError:  # an unhashable key; construct_mapping reports it properly
            break
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r}",
                key_node.start_mark,
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


class _UniqueKeyLoader(yaml.SafeLoader):
    pass


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_unique_mapping,
)

"""The promise catalogue: parsed from versioned YAML, validated whole, indexed for the consumer.

:func:`parse_catalogue` is pure and deterministic, so a reload is "parse the new text; if it
raises, keep the old catalogue". Every problem found is reported at once, one line each,
naming the promise (or section) and the field path, e.g.
``promise 'call-answer-time': expect.op: Input should be '<=', '>=' or '=='``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, Field, ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError

from touchpulse_scoring.domain.errors import CatalogueError, UnscorableEvent, UnscorableReason
from touchpulse_scoring.domain.policy import Policy
from touchpulse_scoring.domain.promises import (
    MODEL_CONFIG,
    DeadlinePromise,
    MeasurePromise,
    Promise,
    Slug,
)
from touchpulse_shared.contract.events import ExperienceEventV1

#: Far more than any real catalogue; a bound so a runaway generator cannot stall a reload.
MAX_PROMISES = 2000
MAX_TOUCHPOINTS = 200


def _version(value: str) -> str:
    if not value.strip() or len(value) > 64 or any(c.isspace() for c in value):
        raise PydanticCustomError(
            "catalogue_version", "Input should be 1 to 64 characters without whitespace"
        )
    return value


class _Document(BaseModel):
    model_config = MODEL_CONFIG

    # A string, so that YAML cannot read 2026.10 as the float 2026.1.
    version: Annotated[str, AfterValidator(_version)]
    touchpoints: Annotated[
        dict[Slug, Annotated[float, Field(ge=0, le=1000)]],
        Field(min_length=1, max_length=MAX_TOUCHPOINTS),
    ]
    policy: Policy = Field(default_factory=Policy)
    # Validated one by one below, so that each error can name its promise.
    promises: Annotated[list[Any], Field(max_length=MAX_PROMISES)]


@dataclass(frozen=True, slots=True, eq=False)
class Catalogue:
    """A validated catalogue with the O(1) lookups the consumer needs per event."""

    version: str
    #: Touchpoint name -> importance ``a_t`` (>= 0) in journey health.
    touchpoints: Mapping[str, float]
    policy: Policy
    promises: tuple[Promise, ...]
    _by_event: Mapping[tuple[str, str], tuple[MeasurePromise, ...]] = field(init=False, repr=False)
    _opened_by: Mapping[str, tuple[DeadlinePromise, ...]] = field(init=False, repr=False)
    _fulfilled_by: Mapping[str, tuple[DeadlinePromise, ...]] = field(init=False, repr=False)
    _by_id: Mapping[str, Promise] = field(init=False, repr=False)

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
        set_ = object.__setattr__  # frozen: the indexes are derived once, here
        set_(self, "touchpoints", MappingProxyType(dict(self.touchpoints)))
        set_(self, "_by_event", MappingProxyType(by_event))
        set_(self, "_opened_by", MappingProxyType(opened_by))
        set_(self, "_fulfilled_by", MappingProxyType(fulfilled_by))
        set_(self, "_by_id", MappingProxyType({p.id: p for p in self.promises}))

    def knows_touchpoint(self, touchpoint: str) -> bool:
        return touchpoint in self.touchpoints

    def measure_promises(self, touchpoint: str, event_type: str) -> tuple[MeasurePromise, ...]:
        """The measure promises an event of this touchpoint and type is judged against."""
        return self._by_event.get((touchpoint, event_type), ())

    def deadlines_opened_by(self, event_type: str) -> tuple[DeadlinePromise, ...]:
        return self._opened_by.get(event_type, ())

    def deadlines_fulfilled_by(self, event_type: str) -> tuple[DeadlinePromise, ...]:
        return self._fulfilled_by.get(event_type, ())

    def promise(self, promise_id: str) -> Promise | None:
        return self._by_id.get(promise_id)


def check_event(event: ExperienceEventV1, catalogue: Catalogue) -> None:
    """Raise :class:`UnscorableEvent` when the catalogue cannot judge this event at all.

    A touchpoint missing from the catalogue is a dead letter rather than a silent no-op: it
    usually means a source was wired before its touchpoint was configured, and the events
    can be replayed from the dead-letter topic once it is.
    """
    if not catalogue.knows_touchpoint(event.touchpoint):
        raise UnscorableEvent(
            UnscorableReason.UNKNOWN_TOUCHPOINT,
            f"touchpoint {event.touchpoint!r} is not in promise catalogue {catalogue.version}",
        )


def parse_catalogue(text: str) -> Catalogue:
    """Parse and validate catalogue YAML; raises :class:`CatalogueError` listing every problem."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise CatalogueError([f"not valid YAML: {exc}"]) from None
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
        document = _Document.model_validate(data)
    except ValidationError as exc:
        problems = [_describe_document_error(error) for error in exc.errors()]
        raw_promises = data.get("promises")
        if isinstance(raw_promises, list):
            problems += _validate_promises(raw_promises)[1]
        raise CatalogueError(problems) from None
    promises, problems = _validate_promises(document.promises)
    problems += _cross_check(promises, document.touchpoints)
    if problems:
        raise CatalogueError(problems)
    return Catalogue(
        version=document.version,
        touchpoints=document.touchpoints,
        policy=document.policy,
        promises=tuple(promises),
    )


def _validate_promises(raw: Sequence[Any]) -> tuple[list[Promise], list[str]]:
    promises: list[Promise] = []
    problems: list[str] = []
    for index, item in enumerate(raw):
        name = _promise_name(index, item)
        if not isinstance(item, Mapping):
            problems.append(f"{name}: a promise should be a mapping of fields")
            continue
        # A deadline block is what makes a promise a deadline promise.
        model: type[MeasurePromise | DeadlinePromise] = (
            DeadlinePromise if "deadline" in item else MeasurePromise
        )
        try:
            promise = model.model_validate(item)
        except ValidationError as exc:
            problems += [f"{name}: {_describe(error)}" for error in exc.errors()]
            continue
        promises.append(promise)
        problems += [f"{name}: {path}: {message}" for path, message in promise.problems()]
    return promises, problems


def _cross_check(promises: Sequence[Promise], touchpoints: Mapping[str, float]) -> list[str]:
    problems: list[str] = []
    known = ", ".join(sorted(touchpoints))
    seen: set[str] = set()
    for promise in promises:
        name = f"promise {promise.id!r}"
        if promise.id in seen:
            problems.append(f"{name}: id: duplicate id; each promise id must be unique")
        seen.add(promise.id)
        if promise.touchpoint not in touchpoints:
            problems.append(
                f"{name}: touchpoint: {promise.touchpoint!r} is not one of the catalogue's"
                f" touchpoints ({known})"
            )
    return problems


def _promise_name(index: int, item: object) -> str:
    if isinstance(item, Mapping):
        promise_id = item.get("id")
        if isinstance(promise_id, str) and promise_id:
            return f"promise {promise_id!r}"
    return f"promise #{index + 1} (no id)"


def _describe_document_error(error: ErrorDetails) -> str:
    loc = error["loc"]
    if loc and loc[0] == "policy" and len(loc) > 1:
        return f"policy: {_describe({**error, 'loc': loc[1:]})}"
    return _describe(error)


def _describe(error: ErrorDetails) -> str:
    path = _path(error["loc"])
    return f"{path}: {error['msg']}" if path else error["msg"]


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

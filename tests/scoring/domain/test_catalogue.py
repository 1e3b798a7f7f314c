"""The catalogue: every kind of error names its promise and field; lookups for the consumer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.scoring.domain.support import document, event, promise_doc
from touchpulse_scoring.domain import (
    CatalogueError,
    DeadlinePromise,
    MeasurePromise,
    UnscorableEvent,
    UnscorableReason,
    catalogue_from_mapping,
    check_event,
    load_catalogue_file,
    parse_catalogue,
)

Mutation = Callable[[dict[str, Any]], None]


def _set(promise_id: str, path: str, value: Any) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        target = promise_doc(doc, promise_id)
        *parents, last = path.split(".")
        for part in parents:
            target = target[part]
        target[last] = value

    return mutate


def _drop(promise_id: str, path: str) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        target = promise_doc(doc, promise_id)
        *parents, last = path.split(".")
        for part in parents:
            target = target[part]
        del target[last]

    return mutate


def _duplicate_id(doc: dict[str, Any]) -> None:
    doc["promises"].append(dict(promise_doc(doc, "call-answer-time")))


def _set_policy(path: str, value: Any) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        target = doc["policy"]
        *parents, last = path.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = value

    return mutate


CASES: list[tuple[str, Mutation, str]] = [
    (
        "bad op",
        _set("call-answer-time", "expect.op", "<"),
        "promise 'call-answer-time': expect.op: Input should be '<=', '>=' or '=='",
    ),
    (
        "unknown touchpoint",
        _set("call-answer-time", "touchpoint", "telepathy"),
        "promise 'call-answer-time': touchpoint: 'telepathy' is not one of the catalogue's",
    ),
    (
        "duplicate id",
        _duplicate_id,
        "promise 'call-answer-time': id: duplicate id",
    ),
    (
        "zero tolerance",
        _set("call-answer-time", "tolerance", 0),
        "promise 'call-answer-time': tolerance: a numeric promise needs a tolerance greater than 0",
    ),
    (
        "negative tolerance",
        _set("call-answer-time", "tolerance", -5),
        "promise 'call-answer-time': tolerance: a numeric promise needs a tolerance greater than 0",
    ),
    (
        "missing tolerance",
        _drop("call-answer-time", "tolerance"),
        "promise 'call-answer-time': tolerance: a numeric promise needs a tolerance",
    ),
    (
        "boolean with <=",
        _set("invoice-correct", "expect.op", "<="),
        "promise 'invoice-correct': expect.op: a boolean target needs '=='",
    ),
    (
        "boolean with a tolerance",
        _set("invoice-correct", "tolerance", 1),
        "promise 'invoice-correct': tolerance: a boolean promise has no tolerance",
    ),
    (
        "boolean with a segment",
        _set("invoice-correct", "segments", {"premium": {"tolerance": 1}}),
        "promise 'invoice-correct': segments.premium: a boolean promise has no segment overrides",
    ),
    (
        "deadline without opened_by",
        _drop("delivery-within-48h", "deadline.opened_by"),
        "promise 'delivery-within-48h': deadline.opened_by: Field required",
    ),
    (
        "deadline without fulfilled_by",
        _drop("delivery-within-48h", "deadline.fulfilled_by"),
        "promise 'delivery-within-48h': deadline.fulfilled_by: Field required",
    ),
    (
        "deadline without a due time",
        _drop("delivery-within-48h", "deadline.within_hours"),
        "promise 'delivery-within-48h': deadline: give exactly one of within_hours and"
        " due_at_attribute",
    ),
    (
        "deadline with two due times",
        _set("delivery-within-48h", "deadline.due_at_attribute", "due_at"),
        "promise 'delivery-within-48h': deadline: give exactly one of",
    ),
    (
        "deadline fulfilled by its own opener",
        _set("delivery-within-48h", "deadline.fulfilled_by", "order.placed"),
        "promise 'delivery-within-48h': deadline.fulfilled_by: must differ",
    ),
    (
        "due_at deadline with a segment within_hours",
        _set("delivery-as-promised", "segments", {"premium": {"within_hours": 4}}),
        "promise 'delivery-as-promised': segments.premium.within_hours: the deadline comes from",
    ),
    (
        "deadline with zero tolerance",
        _set("delivery-within-48h", "tolerance", 0),
        "promise 'delivery-within-48h': tolerance: Input should be greater than 0",
    ),
    (
        "unknown field",
        _set("call-answer-time", "colour", "red"),
        "promise 'call-answer-time': colour: Extra inputs are not permitted",
    ),
    (
        "target not a number",
        _set("call-answer-time", "expect.target", "sixty"),
        "promise 'call-answer-time': expect.target: Input should be a finite number or a boolean",
    ),
    (
        "tolerance as a string",
        _set("call-answer-time", "tolerance", "540"),
        "promise 'call-answer-time': tolerance: Input should be a valid number",
    ),
    (
        "zero weight",
        _set("call-answer-time", "weight", 0),
        "promise 'call-answer-time': weight: Input should be greater than 0",
    ),
    (
        "bad severity",
        _set("call-answer-time", "severity", "urgent"),
        "promise 'call-answer-time': severity: Input should be 'normal' or 'critical'",
    ),
    (
        "bad event type",
        _set("call-answer-time", "event_type", "answered"),
        "promise 'call-answer-time': event_type: Input should be a dotted lowercase event type",
    ),
    (
        "empty segment override",
        _set("call-answer-time", "segments", {"premium": {}}),
        "promise 'call-answer-time': segments.premium: give target, tolerance or both",
    ),
    (
        "segment tolerance not positive",
        _set("call-answer-time", "segments.premium.tolerance", 0),
        "promise 'call-answer-time': segments.premium.tolerance: Input should be greater than 0",
    ),
    (
        "critical_at on a normal promise",
        _set("call-answer-time", "critical_at", 600),
        "promise 'call-answer-time': critical_at: only a promise with severity critical",
    ),
    (
        "critical_at inside the kept region",
        _set("survey-csat", "critical_at", 4),
        "promise 'survey-csat': critical_at: must be below expect.target (4.0)",
    ),
    (
        "missing action",
        _drop("call-answer-time", "action"),
        "promise 'call-answer-time': action: Field required",
    ),
    (
        "bad promise id",
        _set("call-answer-time", "id", "Call Answer"),
        "promise 'Call Answer': id: Input should be 1 to 128 lowercase letters",
    ),
    (
        "policy lambda out of range",
        _set_policy("weakest_link_lambda", 1.5),
        "policy: weakest_link_lambda: Input should be less than or equal to 1",
    ),
    (
        "policy bands out of order",
        _set_policy("bands", {"amber_from": 80, "green_from": 75}),
        "policy: bands: amber_from must not exceed green_from",
    ),
    (
        "policy repeat count",
        _set_policy("interventions.repeat_breaches.count", 1),
        "policy: interventions.repeat_breaches.count: Input should be greater than or equal to 2",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "message"), [(m, msg) for _, m, msg in CASES], ids=[name for name, _, _ in CASES]
)
def test_an_invalid_promise_is_named_with_its_field(mutate: Mutation, message: str) -> None:
    doc = document()
    mutate(doc)
    with pytest.raises(CatalogueError) as caught:
        parse_catalogue(yaml.safe_dump(doc))
    assert message in str(caught.value)


def test_a_promise_without_an_id_is_named_by_position() -> None:
    doc = document()
    del doc["promises"][0]["id"]
    with pytest.raises(CatalogueError, match=r"promise #1 \(no id\): id: Field required"):
        catalogue_from_mapping(doc)


def test_every_problem_is_reported_at_once() -> None:
    doc = document()
    promise_doc(doc, "call-answer-time")["expect"]["op"] = "<"
    promise_doc(doc, "invoice-correct")["touchpoint"] = "nowhere"
    doc["policy"] = {"half_life_days": 0}
    with pytest.raises(CatalogueError) as caught:
        catalogue_from_mapping(doc)
    problems = caught.value.problems
    assert any(p.startswith("policy: half_life_days:") for p in problems)
    assert any(p.startswith("promise 'call-answer-time': expect.op:") for p in problems)
    # The document-level error did not hide the promise-level ones.
    assert len(problems) >= 2


def test_a_version_must_be_a_string_so_yaml_cannot_mangle_it() -> None:
    text = yaml.safe_dump(document()).replace("version: test.1", "version: 2026.10")
    with pytest.raises(CatalogueError, match="version: Input should be a valid string"):
        parse_catalogue(text)


def test_an_unknown_top_level_section_is_an_error() -> None:
    doc = document()
    doc["promisses"] = []
    with pytest.raises(CatalogueError, match="promisses: Extra inputs are not permitted"):
        catalogue_from_mapping(doc)


def test_a_touchpoint_name_must_be_a_slug() -> None:
    doc = document()
    doc["touchpoints"]["Call Centre"] = 1.0
    with pytest.raises(CatalogueError, match=r"touchpoints\.Call Centre \(the name\)"):
        catalogue_from_mapping(doc)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: [unclosed", "not valid YAML"),
        ("- just\n- a list\n", "the catalogue should be a mapping"),
        ("version: a\nversion: b\n", "found duplicate key 'version'"),
    ],
)
def test_text_that_is_not_a_catalogue_document(text: str, message: str) -> None:
    with pytest.raises(CatalogueError, match=message):
        parse_catalogue(text)


def test_a_duplicate_key_inside_a_promise_is_not_silently_dropped() -> None:
    text = yaml.safe_dump(document()).replace("tolerance: 540", "tolerance: 540\n  tolerance: 5", 1)
    with pytest.raises(CatalogueError, match="found duplicate key 'tolerance'"):
        parse_catalogue(text)


def test_lookups_the_consumer_needs() -> None:
    cat = parse_catalogue(yaml.safe_dump(document()))
    assert cat.version == "test.1"
    assert cat.knows_touchpoint("billing")
    assert not cat.knows_touchpoint("web")
    assert [p.id for p in cat.measure_promises("call_centre", "call.answered")] == [
        "call-answer-time"
    ]
    assert cat.measure_promises("billing", "call.answered") == ()
    assert [p.id for p in cat.deadlines_opened_by("order.placed")] == ["delivery-within-48h"]
    assert sorted(p.id for p in cat.deadlines_fulfilled_by("delivery.completed")) == [
        "delivery-as-promised",
        "delivery-within-48h",
    ]
    assert isinstance(cat.promise("delivery-within-48h"), DeadlinePromise)
    assert isinstance(cat.promise("invoice-correct"), MeasurePromise)
    assert cat.promise("nope") is None


def test_parsing_is_deterministic() -> None:
    text = yaml.safe_dump(document())
    first, second = parse_catalogue(text), parse_catalogue(text)
    assert first.promises == second.promises
    assert first.policy == second.policy
    assert dict(first.touchpoints) == dict(second.touchpoints)


def test_policy_defaults_are_the_briefs() -> None:
    policy = catalogue_from_mapping(document()).policy
    assert policy.half_life_days == 30
    assert policy.weakest_link_lambda == 0.5
    assert (policy.bands.amber_from, policy.bands.green_from) == (50, 75)
    assert policy.new_customer_days == 90
    assert policy.new_customer_breach_weight == 1.5
    assert policy.interventions.threshold == 50
    assert policy.interventions.new_customer_threshold == 60
    assert policy.interventions.repeat_breaches.count == 3
    assert policy.interventions.repeat_breaches.within_days == 7
    assert [policy.bands.of(s) for s in (0, 49.9, 50, 74.9, 75, 100)] == [
        "red",
        "red",
        "amber",
        "amber",
        "green",
        "green",
    ]


def test_an_event_at_an_unknown_touchpoint_is_a_dead_letter() -> None:
    cat = catalogue_from_mapping(document())
    check_event(event("call.answered", "call_centre"), cat)
    with pytest.raises(UnscorableEvent) as caught:
        check_event(event("page.viewed", "web"), cat)
    assert caught.value.reason is UnscorableReason.UNKNOWN_TOUCHPOINT
    assert "'web'" in caught.value.detail
    assert "test.1" in caught.value.detail


def test_an_unreadable_file_is_a_catalogue_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogueError, match="cannot be read"):
        load_catalogue_file(tmp_path / "missing.yaml")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(CatalogueError, match="cannot be read"):
        load_catalogue_file(binary)

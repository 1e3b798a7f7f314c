"""The catalogue: every kind of error names its promise and field; lookups for the consumer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

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
from touchpulse_scoring.domain.catalogue import EventProblem, event_problems
from touchpulse_scoring.domain.catalogue import _problems as full_problems

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


# --- the tracking plan: the events section and the checks ingest and scoring share ----------


def _with_events(events: Any, doc: dict[str, Any] | None = None) -> dict[str, Any]:
    doc = doc if doc is not None else document()
    doc["events"] = events
    return doc


def _planned() -> dict[str, Any]:
    """The small catalogue with call_centre and billing declaring their event types."""
    return _with_events(
        {
            "call_centre": {
                "call.answered": {"description": "Answered", "required": ["wait_seconds"]},
                "call.missed": {},
            },
            "billing": {"invoice.issued": {"required": ["invoice_correct"]}},
        }
    )


EVENT_CASES: list[tuple[str, Any, str]] = [
    (
        "a touchpoint the catalogue does not have",
        {"teleporter": {"beam.up": {}}},
        "events.teleporter: 'teleporter' is not one of the catalogue's touchpoints",
    ),
    (
        "a touchpoint that declares no type",
        {"billing": {}},
        "events.billing: Dictionary should have at least 1 item",
    ),
    (
        "an event type that is not dotted",
        {"billing": {"Invoice": {}}},
        "events.billing['Invoice'] (the name): Input should be a dotted lowercase event type",
    ),
    (
        "a required measure that is not a measure name",
        {"billing": {"invoice.issued": {"required": ["Invoice Correct"]}}},
        "events.billing['invoice.issued'].required[0]: Input should be a lowercase letter",
    ),
    (
        "a required measure listed twice",
        {"billing": {"invoice.issued": {"required": ["invoice_correct", "invoice_correct"]}}},
        "events.billing['invoice.issued'].required[1]: 'invoice_correct' is listed twice",
    ),
    (
        "an unknown field in a declaration",
        {"billing": {"invoice.issued": {"requires": ["invoice_correct"]}}},
        "events.billing['invoice.issued'].requires: Extra inputs are not permitted",
    ),
    (
        "a promise judging a type its touchpoint does not declare",
        {"billing": {"invoice.paid": {}}},
        "promise 'invoice-correct': event_type: 'invoice.issued' is not among the event types"
        " events.billing declares (invoice.paid)",
    ),
]


@pytest.mark.parametrize(
    ("events", "message"), [c[1:] for c in EVENT_CASES], ids=[c[0] for c in EVENT_CASES]
)
def test_an_invalid_events_section_is_named_by_its_path(events: Any, message: str) -> None:
    with pytest.raises(CatalogueError) as caught:
        catalogue_from_mapping(_with_events(events))
    assert any(p.startswith(message) for p in caught.value.problems), caught.value.problems


def test_two_promises_judging_one_measure_as_a_boolean_and_a_number_conflict() -> None:
    doc = document()
    doc["promises"].append(
        {
            **promise_doc(doc, "call-answer-time"),
            "id": "call-answered-at-all",
            "expect": {"op": "==", "target": True},
            "tolerance": None,
            "segments": {},
        }
    )
    del doc["promises"][-1]["tolerance"]
    with pytest.raises(CatalogueError) as caught:
        catalogue_from_mapping(doc)
    assert caught.value.problems == (
        "promise 'call-answered-at-all': expect.target: judges measure 'wait_seconds' of"
        " call.answered at call_centre as a boolean, but promise 'call-answer-time' judges it"
        " as a number; an event cannot be both",
    )


def test_a_deadline_no_declared_event_could_open_is_an_error() -> None:
    every_touchpoint: dict[str, dict[str, dict[str, Any]]] = {
        t: {"x.y": {}} for t in ("call_centre", "billing", "survey", "sales", "delivery")
    }
    every_touchpoint["call_centre"] = {"call.answered": {}}
    every_touchpoint["billing"] = {"invoice.issued": {}}
    every_touchpoint["survey"] = {"survey.answered": {}}
    every_touchpoint["delivery"] = {"delivery.completed": {}, "delivery.promised": {}}
    with pytest.raises(CatalogueError) as caught:
        catalogue_from_mapping(_with_events(every_touchpoint))
    assert caught.value.problems == (
        "promise 'delivery-within-48h': deadline.opened_by: 'order.placed' is declared at no"
        " touchpoint in events, and every touchpoint declares its event types; no such event"
        " could ever arrive",
    )
    # Declared at any touchpoint (an order placed in sales) is enough: deadlines are judged
    # by type, wherever the event comes from.
    every_touchpoint["sales"] = {"order.placed": {}}
    catalogue_from_mapping(_with_events(every_touchpoint))


def test_the_events_section_is_optional_and_parsed_from_yaml() -> None:
    assert dict(catalogue_from_mapping(document()).events) == {}
    text = yaml.safe_dump(_planned(), sort_keys=False)
    cat = parse_catalogue(text)
    declared = cat.declared_types("call_centre")
    assert declared is not None
    assert list(declared) == ["call.answered", "call.missed"]
    assert declared["call.answered"].required == ["wait_seconds"]
    assert declared["call.answered"].description == "Answered"
    assert cat.declared_types("survey") is None  # not listed: any type


def _problems(ev: Any, doc: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    cat = catalogue_from_mapping(doc if doc is not None else _planned())
    return [(p.pointer, p.reason.value) for p in event_problems(ev, cat)]


def test_an_event_the_plan_accepts_has_no_problems() -> None:
    assert _problems(event("call.answered", "call_centre", {"wait_seconds": 30})) == []
    # Measures no promise names are the source's business; kinds are only the promises'.
    ok = event("call.answered", "call_centre", {"wait_seconds": 3, "note_taken": True})
    assert _problems(ok) == []
    # A touchpoint that declares nothing accepts any type, and a declared type any extras.
    assert _problems(event("survey.reminded", "survey")) == []
    assert _problems(event("call.missed", "call_centre")) == []


@pytest.mark.parametrize(
    ("ev", "expected"),
    [
        pytest.param(
            event("beam.up", "teleporter", {"wait_seconds": True}),
            [("/touchpoint", "unknown_touchpoint")],
            id="unknown touchpoint (nothing else is judged)",
        ),
        pytest.param(
            event("call.dropped", "call_centre", {"wait_seconds": 3}),
            [("/type", "unknown_event_type")],
            id="a type the touchpoint does not declare",
        ),
        pytest.param(
            event("call.answered", "call_centre", {"wait_seconds": True}),
            [("/measures/wait_seconds", "wrong_measure_kind")],
            id="a boolean where a number is promised",
        ),
        pytest.param(
            event("invoice.issued", "billing", {"invoice_correct": 1}),
            [("/measures/invoice_correct", "wrong_measure_kind")],
            id="a number where a boolean is promised",
        ),
        pytest.param(
            event("call.answered", "call_centre", {"first_contact_resolution": True}),
            [("/measures/wait_seconds", "missing_measure")],
            id="a required measure missing",
        ),
        pytest.param(
            event("survey.answered", "survey", {"csat": False}),
            [("/measures/csat", "wrong_measure_kind")],
            id="kinds are checked where the touchpoint declares no types",
        ),
    ],
)
def test_each_refusal_names_its_field_and_reason(ev: Any, expected: list[tuple[str, str]]) -> None:
    assert _problems(ev) == expected


def test_every_problem_of_an_event_is_reported_and_check_event_dead_letters_it() -> None:
    doc = _planned()
    doc["events"]["call_centre"]["call.answered"]["required"] = ["wait_seconds", "queue_size"]
    bad = event("call.answered", "call_centre", {"wait_seconds": False})
    assert _problems(bad, doc) == [
        ("/measures/wait_seconds", "wrong_measure_kind"),
        ("/measures/queue_size", "missing_measure"),
    ]
    with pytest.raises(UnscorableEvent) as caught:
        check_event(bad, catalogue_from_mapping(doc))
    # The first problem is the dead letter's reason; the detail names them all.
    assert caught.value.reason is UnscorableReason.WRONG_MEASURE_KIND
    assert "/measures/wait_seconds: measure 'wait_seconds' should be a number" in str(caught.value)
    assert "/measures/queue_size: measure 'queue_size' is required" in str(caught.value)


def test_a_missing_required_measure_is_a_dead_letter_in_scoring() -> None:
    with pytest.raises(UnscorableEvent) as caught:
        check_event(event("invoice.issued", "billing"), catalogue_from_mapping(_planned()))
    assert caught.value.reason is UnscorableReason.MISSING_MEASURE


def test_a_pointer_escapes_a_measure_name_as_rfc_6901_says() -> None:
    problem = EventProblem(("measures", "a/b~c"), "m", UnscorableReason.MISSING_MEASURE)
    assert problem.pointer == "/measures/a~1b~0c"


def test_matching_a_promise_covers_measures_and_both_ends_of_deadlines() -> None:
    cat = catalogue_from_mapping(_planned())
    assert cat.matches_a_promise("call_centre", "call.answered")
    assert cat.matches_a_promise("sales", "order.placed")  # opens a deadline
    assert cat.matches_a_promise("delivery", "delivery.completed")  # fulfils one (and measures)
    assert not cat.matches_a_promise("call_centre", "call.missed")
    assert not cat.matches_a_promise("billing", "call.answered")  # judged at call_centre only


def test_the_prior_is_policy_with_per_touchpoint_overrides() -> None:
    doc = document()
    doc["policy"] = {"prior": {"score": 0.7, "weight": 3, "touchpoints": {"survey": {"weight": 0}}}}
    prior = catalogue_from_mapping(doc).policy.prior
    assert (prior.for_touchpoint("billing").score, prior.for_touchpoint("billing").weight) == (
        0.7,
        3.0,
    )
    assert (prior.for_touchpoint("survey").score, prior.for_touchpoint("survey").weight) == (
        0.7,
        0.0,
    )
    for policy, named in [
        ({"prior": {"score": 1.5}}, "policy: prior.score"),
        ({"prior": {"touchpoints": {"fax": {"weight": 1}}}}, "policy: prior.touchpoints.fax"),
    ]:
        doc["policy"] = policy
        with pytest.raises(CatalogueError) as caught:
            catalogue_from_mapping(doc)
        assert any(p.startswith(named) for p in caught.value.problems), caught.value.problems


_MEASURE_VALUES = st.one_of(st.booleans(), st.floats(-5, 5), st.integers(-3, 3))


@given(
    touchpoint=st.sampled_from(["call_centre", "billing", "survey", "delivery", "teleporter"]),
    event_type=st.sampled_from(
        ["call.answered", "call.missed", "call.dropped", "invoice.issued", "survey.answered"]
    ),
    measures=st.dictionaries(
        st.sampled_from(["wait_seconds", "invoice_correct", "csat", "queue_size", "other"]),
        _MEASURE_VALUES,
        max_size=4,
    ),
)
def test_the_quick_acceptance_agrees_with_the_full_check(
    touchpoint: str, event_type: str, measures: dict[str, float | bool]
) -> None:
    """event_problems first asks a per-kind plan whether the event passes; it must answer
    exactly what the full check answers, problems and messages included."""
    cat = catalogue_from_mapping(_planned())
    ev = event(event_type, touchpoint, measures)
    assert event_problems(ev, cat) == full_problems(ev, cat)

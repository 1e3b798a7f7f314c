"""The people's moves on an intervention: notes, snoozes, reassignment, resolution with a
category, and the version that tells a stale caller someone else moved the case."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from tests.scoring.domain.support import T0, catalogue
from tests.scoring.domain.test_interventions import DAY, LOW, _gap, _in
from touchpulse_scoring.domain import (
    Actor,
    ActorKind,
    IllegalTransition,
    Intervention,
    InterventionState,
    InvalidCommand,
    StaleVersion,
    acknowledge,
    add_note,
    attach,
    check_version,
    expire_intervention,
    is_snoozed,
    reassign,
    record_follow_up,
    resolve,
    snooze,
)
from touchpulse_scoring.domain.policy import InterventionPolicy

LATER = T0 + 3 * DAY
CATEGORIES = catalogue().policy.interventions.resolution_categories

#: Each move a person makes that keeps the case's state, and the states it is legal in.
KEEPING: dict[str, tuple[Callable[[Intervention], Intervention], set[InterventionState]]] = {
    "note": (
        lambda i: add_note(i, now=LATER, text="left a voicemail"),
        {InterventionState.OPEN, InterventionState.ACKNOWLEDGED},
    ),
    "snooze": (
        lambda i: snooze(i, now=LATER, until=LATER + DAY),
        {InterventionState.OPEN, InterventionState.ACKNOWLEDGED},
    ),
    "reassign": (
        lambda i: reassign(i, now=LATER, assignee="ops-2"),
        {InterventionState.ACKNOWLEDGED},
    ),
}


@pytest.mark.parametrize("state", list(InterventionState))
@pytest.mark.parametrize("move", list(KEEPING))
def test_keeping_moves_are_legal_only_where_the_machine_says(
    state: InterventionState, move: str
) -> None:
    apply, legal = KEEPING[move]
    before = _in(state)
    if state in legal:
        after = apply(before)
        assert after.state is state
        assert after.version == before.version + 1
        assert after.updated_at == LATER
    else:
        with pytest.raises(IllegalTransition):
            apply(before)


def test_the_default_categories_are_the_promised_ones() -> None:
    assert InterventionPolicy().resolution_categories == (
        "reached_and_fixed",
        "compensated",
        "could_not_reach",
        "no_action_needed",
    )
    assert set(CATEGORIES) == set(InterventionPolicy().resolution_categories)


def test_resolve_takes_a_category_from_the_policy_and_a_note() -> None:
    taken = _in(InterventionState.ACKNOWLEDGED)
    done = resolve(
        taken,
        now=LATER,
        note=" called back ",
        health=61.0,
        category="reached_and_fixed",
        categories=CATEGORIES,
    )
    assert (done.state, done.outcome_category, done.outcome_note) == (
        InterventionState.RESOLVED,
        "reached_and_fixed",
        "called back",
    )
    assert done.version == taken.version + 1
    with pytest.raises(InvalidCommand) as unknown:
        resolve(taken, now=LATER, note="x", health=None, category="bribed", categories=CATEGORIES)
    assert unknown.value.field == "category"
    with pytest.raises(InvalidCommand) as blank:
        resolve(
            taken,
            now=LATER,
            note="  \n",
            health=None,
            category="compensated",
            categories=CATEGORIES,
        )
    assert blank.value.field == "note"
    # A client of the v1 API that sends no category still resolves (uncategorised).
    assert resolve(taken, now=LATER, note="ok", health=None).outcome_category is None


def test_a_note_needs_text() -> None:
    with pytest.raises(InvalidCommand) as empty:
        add_note(_in(InterventionState.OPEN), now=LATER, text=" ")
    assert empty.value.field == "text"
    with pytest.raises(InvalidCommand):
        add_note(_in(InterventionState.OPEN), now=LATER, text="x" * 4001)


def test_a_snooze_ends_in_the_future_and_can_be_woken() -> None:
    case = _in(InterventionState.OPEN)
    for until in (LATER, LATER - timedelta(seconds=1)):
        with pytest.raises(InvalidCommand) as past:
            snooze(case, now=LATER, until=until)
        assert past.value.field == "until"
    asleep = snooze(case, now=LATER, until=LATER + DAY)
    assert is_snoozed(asleep, LATER + DAY - timedelta(seconds=1))
    assert not is_snoozed(asleep, LATER + DAY)
    awake = snooze(asleep, now=LATER + timedelta(hours=1), until=None)
    assert awake.snoozed_until is None
    assert not is_snoozed(awake, LATER + timedelta(hours=1))


def test_reassign_moves_the_case_to_someone_else() -> None:
    taken = _in(InterventionState.ACKNOWLEDGED)
    moved = reassign(taken, now=LATER, assignee=" ops-2 ")
    assert (moved.assignee, moved.acknowledged_at) == ("ops-2", taken.acknowledged_at)
    with pytest.raises(InvalidCommand) as same:
        reassign(moved, now=LATER, assignee="ops-2")
    assert same.value.field == "assignee"
    with pytest.raises(InvalidCommand):
        reassign(taken, now=LATER, assignee="  ")


def test_only_people_move_the_version() -> None:
    opened = _in(InterventionState.OPEN)
    assert opened.version == 0
    grown = attach(
        opened, now=LATER, triggers=[LOW], gaps=[_gap("b", score=0.1, gap=9)], priority=50.0
    )
    assert grown.version == 0
    assert expire_intervention(opened, now=LATER).version == 0
    taken = acknowledge(opened, now=T0 + DAY, assignee="ops-1")
    done = resolve(taken, now=LATER, note="done", health=70.0)
    assert (taken.version, done.version) == (1, 2)
    assert record_follow_up(done, now=LATER + 14 * DAY, health=80.0).version == 2


def test_a_move_meant_for_an_older_version_is_refused() -> None:
    taken = _in(InterventionState.ACKNOWLEDGED)
    check_version(taken, None)
    check_version(taken, taken.version)
    with pytest.raises(StaleVersion) as stale:
        check_version(taken, taken.version - 1)
    assert (stale.value.expected, stale.value.current) == (taken.version - 1, taken.version)
    # A stale move is a conflict like an illegal one: the API answers 409 for both.
    assert isinstance(stale.value, IllegalTransition)


def test_an_actor_is_named() -> None:
    assert Actor.api_key("k1", "crm").kind is ActorKind.API_KEY
    assert Actor.person("u-1", "Kari").kind is ActorKind.PERSON
    for bad in (("", "Kari"), ("u-1", ""), ("u-1", "x" * 257)):
        with pytest.raises(ValueError, match="1 to 256"):
            Actor.person(*bad)

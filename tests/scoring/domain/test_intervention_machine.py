"""Random sequences of triggers and commands only ever make legal moves.

A Hypothesis state machine drives two customers through outcome batches (with random health,
breaches, critical breaches and elapsed time) and through every command an operator or the
expiry sweep can issue, on any of their interventions, legal or not. Invariants: never two
open interventions for one customer, every state change is an edge of ``LEGAL_MOVES``, an
illegal command raises ``IllegalTransition``, and ids are never reused.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from tests.scoring.domain.support import T0, catalogue, outcome
from touchpulse_scoring.domain import (
    LEGAL_MOVES,
    NO_GUARD,
    NO_PROFILE,
    IllegalTransition,
    Intervention,
    InterventionState,
    InvalidCommand,
    Outcome,
    ReopenGuard,
    acknowledge,
    attach,
    decide,
    expire_intervention,
    expire_overdue,
    record_follow_up,
    resolve,
)

CUSTOMERS = ("C-1", "C-2")
PROMISES = ("call-answer-time", "invoice-correct", "survey-csat")
COMMANDS = ("acknowledge", "resolve", "expire", "expire_overdue", "follow_up", "attach")
TEXTS = st.sampled_from(["", "  ", "ops-7", "Called, refunded", "Refunded"])
CAT = catalogue()
POLICY = CAT.policy.interventions
#: Which states each command may start from; the machine checks the domain agrees.
ALLOWED_FROM = {
    "acknowledge": {InterventionState.OPEN},
    "resolve": {InterventionState.ACKNOWLEDGED},
    "expire": {InterventionState.OPEN, InterventionState.ACKNOWLEDGED},
    "attach": {InterventionState.OPEN, InterventionState.ACKNOWLEDGED},
    "follow_up": {InterventionState.RESOLVED},
}


class InterventionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.cases: dict[str, list[Intervention]] = {c: [] for c in CUSTOMERS}
        self.guards = dict.fromkeys(CUSTOMERS, NO_GUARD)
        self.health: dict[str, float | None] = dict.fromkeys(CUSTOMERS)
        self.breaches: dict[str, dict[str, list[Outcome]]] = {c: {} for c in CUSTOMERS}
        self.ids: set[str] = set()
        self.serial = 0

    def _open(self, customer: str) -> Intervention | None:
        found = [iv for iv in self.cases[customer] if iv.is_open]
        return found[0] if found else None

    def _store(self, customer: str, before: Intervention, after: Intervention) -> None:
        assert after.intervention_id == before.intervention_id
        if after.state != before.state:
            assert after.state in LEGAL_MOVES[before.state], (before.state, after.state)
        index = self.cases[customer].index(before)
        self.cases[customer][index] = after
        if before.is_open and not after.is_open:
            self.guards[customer] = ReopenGuard.after_close(after)

    @rule(
        customer=st.sampled_from(CUSTOMERS),
        health=st.one_of(st.none(), st.floats(min_value=0, max_value=100)),
        results=st.lists(
            st.tuples(st.sampled_from(PROMISES), st.booleans(), st.booleans()), max_size=3
        ),
        is_new=st.booleans(),
        hours=st.integers(min_value=0, max_value=24 * 10),
    )
    def outcomes_arrive(
        self,
        customer: str,
        health: float | None,
        results: list[tuple[str, bool, bool]],
        is_new: bool,
        hours: int,
    ) -> None:
        self.now += timedelta(hours=hours)
        outcomes = []
        for promise_id, broken, critical in results:
            self.serial += 1
            item = outcome(
                score=0.0 if broken else 1.0,
                at=self.now,
                key=str(self.serial),
                promise_id=promise_id,
            )
            if broken:
                item = replace(item, severity="critical" if critical else "normal")
            outcomes.append(item)
        current = self._open(customer)
        history = {p: [o.occurred_at for o in b] for p, b in self.breaches[customer].items()}
        decision = decide(
            catalogue=CAT,
            customer_id=customer,
            now=self.now,
            health=health,
            previous_health=self.health[customer],
            is_new=is_new,
            profile=NO_PROFILE,
            outcomes=outcomes,
            breaches=history,
            current=current,
            guard=self.guards[customer],
        )
        self.health[customer] = health
        self.guards[customer] = decision.guard
        for item in outcomes:
            if not item.met:
                self.breaches[customer].setdefault(item.promise_id, []).append(item)
        if decision.kind == "opened":
            assert current is None
            assert decision.intervention is not None
            assert decision.intervention.state is InterventionState.OPEN
            assert decision.intervention.intervention_id not in self.ids
            self.ids.add(decision.intervention.intervention_id)
            self.cases[customer].append(decision.intervention)
        elif decision.kind == "attached":
            assert current is not None
            assert decision.intervention is not None
            assert decision.intervention.state is current.state
            assert decision.intervention.priority >= current.priority
            self._store(customer, current, decision.intervention)
        else:
            assert decision.intervention is current
        if decision.kind != "none":
            assert decision.triggers
            assert any(not o.met for o in outcomes)

    @rule(
        customer=st.sampled_from(CUSTOMERS),
        command=st.sampled_from(("acknowledge", "resolve", "attach")),
        text=TEXTS,
        hours=st.integers(min_value=0, max_value=72),
    )
    def someone_works_the_open_case(
        self, customer: str, command: str, text: str, hours: int
    ) -> None:
        current = self._open(customer)
        if current is not None:
            self._act(customer, current, command, text, hours)

    @rule(
        customer=st.sampled_from(CUSTOMERS),
        pick=st.integers(min_value=0, max_value=50),
        command=st.sampled_from(COMMANDS),
        text=TEXTS,
        hours=st.integers(min_value=0, max_value=24 * 20),
    )
    def anything_happens_to_any_case(
        self, customer: str, pick: int, command: str, text: str, hours: int
    ) -> None:
        cases = self.cases[customer]
        if cases:
            self._act(customer, cases[pick % len(cases)], command, text, hours)

    def _act(
        self, customer: str, before: Intervention, command: str, text: str, hours: int
    ) -> None:
        self.now += timedelta(hours=hours)
        if command == "expire_overdue":
            after = expire_overdue(before, now=self.now, policy=POLICY)
            if after is None:
                assert before.state is not InterventionState.OPEN or (
                    self.now - before.opened_at < timedelta(days=POLICY.expire_unacknowledged_days)
                )
            else:
                assert before.state is InterventionState.OPEN
                self._store(customer, before, after)
            return
        try:
            after = self._command(before, command, text)
        except IllegalTransition:
            legal = before.state in ALLOWED_FROM[command]
            assert not legal or (command == "follow_up" and before.follow_up_at is not None)
            return
        except InvalidCommand:
            assert before.state in ALLOWED_FROM[command]
            assert not text.strip()
            return
        assert before.state in ALLOWED_FROM[command]
        self._store(customer, before, after)

    def _command(self, before: Intervention, command: str, text: str) -> Intervention:
        if command == "acknowledge":
            return acknowledge(before, now=self.now, assignee=text)
        if command == "resolve":
            return resolve(before, now=self.now, note=text, health=50.0)
        if command == "expire":
            return expire_intervention(before, now=self.now)
        if command == "follow_up":
            return record_follow_up(before, now=self.now, health=60.0)
        return attach(before, now=self.now, triggers=[], gaps=[], priority=1.0)

    @invariant()
    def at_most_one_open_intervention_per_customer(self) -> None:
        for cases in self.cases.values():
            assert sum(1 for iv in cases if iv.is_open) <= 1

    @invariant()
    def closed_interventions_say_when(self) -> None:
        for cases in self.cases.values():
            for iv in cases:
                assert (iv.closed_at is None) == iv.is_open
                if iv.state is InterventionState.RESOLVED:
                    assert iv.outcome_note
                    assert iv.acknowledged_at is not None
                assert iv.priority >= 0


InterventionMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40)
TestInterventionMachine = InterventionMachine.TestCase

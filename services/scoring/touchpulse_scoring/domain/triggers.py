"""When a customer needs action: triggers, hysteresis and the open-or-attach decision.

Triggers are judged only when outcomes were just applied and at least one of them is broken:
nothing new happened otherwise, and a case needs a fresh gap to show. Among the broken ones:

- **critical breach**: an outcome with severity ``critical`` (a survey score of 2 or less);
- **repeated breach**: the same promise broken ``repeat_breaches.count`` times within
  ``repeat_breaches.within_days`` (by event time), counting only breaches after the last
  intervention closed: those before were that intervention's business;
- **spread breach**: promises broken at ``spread_breaches.touchpoints`` (2) different
  touchpoints within ``spread_breaches.within_days`` (14) of each other (by event time, in
  either direction, so arrival order does not matter): the customer is being let down
  across the journey, which is what customers remember even when each failure alone is
  moderate and health stays above the line;
- **low health**: journey health under the threshold (``new_customer_threshold`` for new
  customers), resting on at least ``min_evidence`` of decayed outcome weight and on at
  least ``min_breaches`` (2) standing breaches: one slow page load on a customer we know
  nothing else about is not worth a call, and one broken promise calls for its own fix
  (a critical one opens a case at once).

The case carries the breaches of the health explanation at that moment (``explained``,
ranked by :func:`~.explain.explain`), not only the batch's own: the same gaps however the
events were batched. A triggering critical breach is always among them.

Hysteresis: a customer has at most one open (open or acknowledged) intervention, and every
later trigger attaches to it (its gaps and reasons added, priority raised if higher). After
an intervention is **resolved**, a new one opens only once health has recovered to threshold
+ margin since, or once the cooldown has passed. Two deliberate exceptions:

- a **critical breach** opens a new intervention regardless: the brief's CEO calls every
  customer below the line, however recently they were called;
- after an intervention **expired** unworked there is nothing to damp: nobody acted, the
  customer still needs someone, so the next trigger opens a new one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from touchpulse_scoring.domain.catalogue import Catalogue
from touchpulse_scoring.domain.interventions import (
    Gap,
    Intervention,
    InterventionState,
    Trigger,
    TriggerKind,
    attach,
    intervention_priority,
    open_intervention,
)
from touchpulse_scoring.domain.outcomes import Outcome
from touchpulse_scoring.domain.policy import InterventionPolicy
from touchpulse_scoring.domain.profile import CustomerProfile

#: Per promise id, the event times of the customer's breaches recorded *before* the outcomes
#: being decided on (the consumer queries the last ``within_days``; older ones are ignored).
BreachHistory = Mapping[str, Sequence[datetime]]


def with_breaches(
    history: BreachHistory, recorded: Iterable[Outcome], superseded: Iterable[Outcome]
) -> dict[str, list[datetime]]:
    """The breach history once these outcomes are applied: the breaches they supersede
    gone (those the history holds), their own breaches added. What the next decision of
    the same customer reads, as if the state had been stored and read again."""
    found = {promise: list(times) for promise, times in history.items()}
    record_breaches(found, recorded, superseded)
    return found


def record_breaches(
    history: dict[str, list[datetime]], recorded: Iterable[Outcome], superseded: Iterable[Outcome]
) -> None:
    """:func:`with_breaches` in place, for a caller that owns ``history`` (the back-test
    folds a customer's whole window through one)."""
    for old in superseded:
        if not old.met:
            times = history.get(old.promise_id)
            if times is not None and old.occurred_at in times:
                times.remove(old.occurred_at)
    for new in recorded:
        if not new.met:
            history.setdefault(new.promise_id, []).append(new.occurred_at)


@dataclass(frozen=True, slots=True)
class ReopenGuard:
    """What hysteresis remembers of the customer's last closed intervention."""

    closed_at: datetime | None = None
    health_at_close: float | None = None
    #: Health has reached threshold + margin since ``closed_at``.
    recovered: bool = True

    @classmethod
    def after_close(cls, intervention: Intervention) -> ReopenGuard:
        """The guard once ``intervention`` has closed (see the module doc for expiry)."""
        if intervention.closed_at is None:
            raise ValueError(f"intervention {intervention.intervention_id} is not closed")
        if intervention.state is InterventionState.EXPIRED:
            return cls(closed_at=intervention.closed_at, recovered=True)
        return cls(
            closed_at=intervention.closed_at,
            health_at_close=intervention.health_at_resolve,
            recovered=False,
        )

    def observe(
        self, health: float | None, policy: InterventionPolicy, *, is_new: bool
    ) -> ReopenGuard:
        """Note a health reading taken after the close."""
        if self.recovered or health is None:
            return self
        if health >= policy.threshold_for(is_new=is_new) + policy.recovery_margin:
            return replace(self, recovered=True)
        return self

    def allows_new(self, now: datetime, policy: InterventionPolicy) -> bool:
        """Whether a non-critical trigger may open a new intervention at ``now``."""
        if self.recovered or self.closed_at is None:
            return True
        return now >= self.closed_at + timedelta(days=policy.cooldown_days)


#: No intervention has closed yet: nothing to damp.
NO_GUARD = ReopenGuard()


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do: nothing, open a new intervention, or attach to the open one."""

    #: ``updated``: only the open case's gaps were re-ranked (kept outcomes moved the
    #: explanation); nothing calls for anyone's attention.
    kind: Literal["none", "opened", "attached", "updated"]
    #: The new or updated intervention; the open one unchanged (or None) for ``none``.
    intervention: Intervention | None
    #: Every trigger found, including those hysteresis held back.
    triggers: tuple[Trigger, ...]
    #: The guard to keep for the next decision.
    guard: ReopenGuard


def decide(
    *,
    catalogue: Catalogue,
    customer_id: str,
    now: datetime,
    health: float | None,
    previous_health: float | None,
    is_new: bool,
    profile: CustomerProfile,
    outcomes: Sequence[Outcome],
    breaches: BreachHistory,
    current: Intervention | None,
    guard: ReopenGuard,
    explained: Sequence[Outcome] | None = None,
    evidence: float = float("inf"),
) -> Decision:
    """Judge the outcomes just applied for one customer (health is already updated).

    ``current`` is the customer's open or acknowledged intervention, if any; ``guard`` what
    is remembered of the last closed one; ``outcomes`` only those that changed the state
    (:attr:`~.ledger.Applied.recorded`), so a replayed duplicate triggers nothing.
    ``explained`` is the health explanation's breaches, ranked (``None``: the batch's own
    breaches, for callers without the customer's history); ``evidence`` the decayed outcome
    weight behind ``health``.
    """
    if current is not None and not current.is_open:
        raise ValueError(f"intervention {current.intervention_id} is {current.state}, not open")
    policy = catalogue.policy.interventions
    threshold = policy.threshold_for(is_new=is_new)
    guard = guard.observe(guard.health_at_close, policy, is_new=is_new)
    guard = guard.observe(previous_health, policy, is_new=is_new)
    guard = guard.observe(health, policy, is_new=is_new)

    broken = [o for o in outcomes if not o.met]
    standing = len(broken if explained is None else explained)
    enough = evidence >= policy.min_evidence and standing >= policy.min_breaches
    triggers = _triggers(
        broken,
        breaches,
        guard=guard,
        policy=policy,
        health=health if enough else None,
        threshold=threshold,
        catalogue=catalogue,
    )
    if not triggers and (current is None or not outcomes or explained is None):
        return Decision(kind="none", intervention=current, triggers=(), guard=guard)

    critical = any(t.kind is TriggerKind.CRITICAL_BREACH for t in triggers)
    behind = list(broken if explained is None else explained)
    listed = {o.outcome_key for o in behind}
    # A critical or repeated breach is why the case exists: it is listed even when it costs
    # no health (a touchpoint of importance 0 that is not the weakest).
    named = {t.promise_id for t in triggers if t.promise_id is not None}
    behind += [o for o in broken if o.promise_id in named and o.outcome_key not in listed]
    gaps = [Gap.of(o, _action(catalogue, o.promise_id)) for o in behind]
    rank = intervention_priority(
        threshold=threshold,
        health=health,
        value=profile.value,
        reach=profile.reach,
        critical=critical,
        critical_floor=policy.critical_priority_floor,
    )
    if current is not None:
        # While a case is open it follows the explanation: every later breach attaches
        # (with or without a trigger of its own), and kept outcomes re-rank its gaps, so
        # the case ends up with the same gaps however the events were batched or ordered.
        updated = attach(
            current,
            now=now,
            triggers=triggers,
            gaps=gaps,
            priority=rank if triggers else current.priority,
        )
        if broken:
            return Decision(kind="attached", intervention=updated, triggers=triggers, guard=guard)
        if updated.gaps == current.gaps:
            return Decision(kind="none", intervention=current, triggers=(), guard=guard)
        return Decision(kind="updated", intervention=updated, triggers=(), guard=guard)
    if not critical and not guard.allows_new(now, policy):
        return Decision(kind="none", intervention=None, triggers=triggers, guard=guard)
    opened = open_intervention(
        customer_id=customer_id,
        now=now,
        triggers=triggers,
        gaps=gaps,
        priority=rank,
        threshold=threshold,
        health=health,
    )
    return Decision(kind="opened", intervention=opened, triggers=triggers, guard=guard)


def explanation_needed(
    *,
    catalogue: Catalogue,
    health: float | None,
    previous_health: float | None,
    is_new: bool,
    outcomes: Sequence[Outcome],
    breaches: BreachHistory,
    current: Intervention | None,
    guard: ReopenGuard,
    evidence: float = float("inf"),
) -> bool:
    """Whether :func:`decide`, given these arguments, can depend on ``explained``.

    The explanation costs the customer's newest outcomes read and every breach among them
    re-scored; a customer with no open case and no trigger in reach (only breaches that
    neither repeat, nor spread, nor are critical, and health at or above the line) decides
    ``none`` whatever it says. Exact, not a heuristic: when this is False, ``decide`` returns
    ``none`` for every ``explained`` (a property test holds it to that).
    """
    if current is not None:
        return True  # an open case follows the explanation
    broken = [o for o in outcomes if not o.met]
    if not broken:
        return False
    policy = catalogue.policy.interventions
    threshold = policy.threshold_for(is_new=is_new)
    guard = guard.observe(guard.health_at_close, policy, is_new=is_new)
    guard = guard.observe(previous_health, policy, is_new=is_new)
    guard = guard.observe(health, policy, is_new=is_new)
    if _triggers(
        broken,
        breaches,
        guard=guard,
        policy=policy,
        health=None,
        threshold=threshold,
        catalogue=catalogue,
    ):
        return True
    # Only the low-health trigger is left, and ``explained`` only decides whether it has
    # enough standing breaches behind it.
    return health is not None and health < threshold and evidence >= policy.min_evidence


def _triggers(
    broken: Sequence[Outcome],
    breaches: BreachHistory,
    *,
    guard: ReopenGuard,
    policy: InterventionPolicy,
    health: float | None,
    threshold: float,
    catalogue: Catalogue,
) -> tuple[Trigger, ...]:
    if not broken:
        return ()
    found: list[Trigger] = []
    # Critical first: the first trigger names the intervention and leads its reasons.
    for outcome in broken:
        if outcome.severity == "critical":
            found.append(
                Trigger(
                    kind=TriggerKind.CRITICAL_BREACH,
                    detail=_describe_breach(outcome),
                    promise_id=outcome.promise_id,
                )
            )
    found.extend(_repeated(broken, breaches, guard, policy))
    found.extend(_spread(broken, breaches, guard, policy, catalogue))
    if health is not None and health < threshold:
        found.append(
            Trigger(
                kind=TriggerKind.LOW_HEALTH,
                detail=f"journey health {health:.1f} is under the threshold {threshold:g}",
            )
        )
    return tuple(found)


def _repeated(
    broken: Sequence[Outcome],
    breaches: BreachHistory,
    guard: ReopenGuard,
    policy: InterventionPolicy,
) -> list[Trigger]:
    rule = policy.repeat_breaches
    window = timedelta(days=rule.within_days)
    new_times: dict[str, list[datetime]] = {}
    for outcome in broken:
        new_times.setdefault(outcome.promise_id, []).append(outcome.occurred_at)
    found: list[Trigger] = []
    for promise_id, times in new_times.items():
        every = [*breaches.get(promise_id, ()), *times]
        if guard.closed_at is not None:
            every = [t for t in every if t > guard.closed_at]
        latest = max(times)
        count = sum(1 for t in every if latest - window < t <= latest)
        if count >= rule.count:
            found.append(
                Trigger(
                    kind=TriggerKind.REPEATED_BREACH,
                    detail=f"promise {promise_id!r} broken {count} times within"
                    f" {rule.within_days:g} days",
                    promise_id=promise_id,
                )
            )
    return found


def _spread(
    broken: Sequence[Outcome],
    breaches: BreachHistory,
    guard: ReopenGuard,
    policy: InterventionPolicy,
    catalogue: Catalogue,
) -> list[Trigger]:
    rule = policy.spread_breaches
    window = timedelta(days=rule.within_days)
    every: list[tuple[datetime, str]] = []
    for promise_id, times in breaches.items():
        promise = catalogue.promise(promise_id)
        if promise is not None:  # a promise that left the catalogue names no touchpoint
            every.extend((t, promise.touchpoint) for t in times)
    every.extend((o.occurred_at, o.touchpoint) for o in broken)
    if guard.closed_at is not None:
        every = [(t, tp) for t, tp in every if t > guard.closed_at]
    for outcome in broken:
        # Symmetric in time: whichever of two breaches arrives second sees the other.
        near = {tp for t, tp in every if abs(t - outcome.occurred_at) <= window}
        if len(near) >= rule.touchpoints:
            return [
                Trigger(
                    kind=TriggerKind.SPREAD_BREACH,
                    detail=f"promises broken at {len(near)} touchpoints within"
                    f" {rule.within_days:g} days: {', '.join(sorted(near))}",
                )
            ]
    return []


def _describe_breach(outcome: Outcome) -> str:
    expected = outcome.expected
    actual = "nothing" if outcome.actual is None else f"{outcome.actual}"
    return (
        f"promise {outcome.promise_id!r} broken: expected {expected.unit} {expected.op}"
        f" {expected.target}, got {actual}"
    )


def _action(catalogue: Catalogue, promise_id: str) -> str | None:
    promise = catalogue.promise(promise_id)
    return None if promise is None else promise.action

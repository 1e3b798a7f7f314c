"""The intervention workflow: every move a person (at the desk) or an API key makes on a case.

One implementation, two callers: the REST routes (``routes/interventions.py``, the actor
being the authenticated key) and the action desk (the actor being the signed-in person).
Each move is an ``async`` function taking the process's :class:`ApiContext` (its pool,
clock, catalogue, topic and metrics), the intervention's id and the :class:`Actor`:

``take(context, intervention_id, actor, *, assignee=None, expected_version=None)``
    acknowledge an open case; ``assignee`` defaults to ``actor.id`` ("mine").
``add_note(context, intervention_id, actor, text, *, expected_version=None)``
    a note on an open or acknowledged case (the text lives in the history).
``snooze(context, intervention_id, actor, until, *, expected_version=None)``
    put an open or acknowledged case aside until ``until`` (in the future); ``None`` wakes it.
``reassign(context, intervention_id, actor, assignee, *, expected_version=None)``
    give an acknowledged case to someone else. Who may reassign is the caller's rule (the
    desk: a lead; the API: a key with ``interventions:write``).
``resolve(context, intervention_id, actor, *, category, note, expected_version=None)``
    close an acknowledged case with a category from the catalogue policy's
    ``resolution_categories`` (``None`` allowed only for API v1 clients that send none)
    and a non-empty note; the health now is recorded with it.
``read(context, intervention_id)``
    the case, its customer's health now and its history (no lock), or :class:`NotFound`.

Each move returns a :class:`Moved` (the intervention after the move, the customer's health
now, the history entry it wrote) or raises one of:

- :class:`NotFound` — no such intervention (404);
- :class:`Stale` — ``expected_version`` was given and someone moved the case since; it
  names who and how (:attr:`Stale.by`), so the desk can say "Kari took this case a moment
  ago" (409);
- :class:`Conflict` — the move is illegal in the case's state, e.g. taking a case already
  taken or resolving an open one (409);
- :class:`Invalid` — the move's input is unusable: :attr:`Invalid.field` is the parameter
  name (``assignee``, ``text``, ``until``, ``category``, ``note``) (422).

Order of effects, in one transaction per move: lock the customer (the lock scoring's batch
takes, so a batch never writes a copy from before this move, and two people acting at once
are serialised: the second sees the first's move and gets a :class:`Conflict` or
:class:`Stale`, never a lost update); read the case; check ``expected_version``; apply the
pure transition; write the row, its history entry, its webhook event and its
``interventions.v1`` record (through the outbox). Metrics are counted after the commit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import Counter

from touchpulse_api import queries
from touchpulse_api.context import ApiContext
from touchpulse_scoring import domain
from touchpulse_scoring.domain import (
    Action,
    Actor,
    IllegalTransition,
    Intervention,
    InvalidCommand,
    StaleVersion,
    check_version,
)
from touchpulse_scoring.domain.interventions import DetailValue

# The history is the intervention table's, like its writes: read through its module.
from touchpulse_scoring.intervention_table import (
    first_action_after,
    intervention_from_row,
    read_history,
)


class WorkflowError(Exception):
    """Root of the workflow's refusals; each subclass is one way the caller reacts."""


class NotFound(WorkflowError):
    def __init__(self, intervention_id: str) -> None:
        super().__init__(f"No intervention {intervention_id!r}")
        self.intervention_id = intervention_id


class Conflict(WorkflowError):
    """The move has no edge from the case's current state (e.g. taking a taken case)."""

    def __init__(
        self, intervention_id: str, state: str, message: str, by: Action | None = None
    ) -> None:
        super().__init__(message)
        self.intervention_id = intervention_id
        self.state = state
        #: The person's or key's move that brought the case where it is (None: scoring's,
        #: or nobody's yet): "Kari took this case a moment ago".
        self.by = by


class Stale(Conflict):
    """The caller's copy is older than the case: someone else moved it in between."""

    def __init__(
        self, intervention_id: str, state: str, expected: int, current: int, by: Action | None
    ) -> None:
        who = (
            f"{by.actor.name} ({by.kind.removeprefix('intervention.')})"
            if by is not None
            else "someone else"
        )
        super().__init__(
            intervention_id,
            state,
            f"Changed by someone else: {who} moved intervention {intervention_id} to version "
            f"{current} after version {expected} you acted on",
            by,
        )
        self.expected = expected
        self.current = current


class Invalid(WorkflowError):
    """The move is legal but its input is not; ``field`` is the parameter at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Moved:
    """A move's result: the case after it, its customer's health now, the history entry."""

    intervention: Intervention
    health: float | None
    action: Action


@dataclass(frozen=True, slots=True)
class Case:
    """A case as read: itself, its customer's health now, and its history oldest first."""

    intervention: Intervention
    health: float | None
    history: tuple[Action, ...]


# A transition: the case and the health now in, the case after the move and its detail out.
_Transition = Callable[[Intervention, float | None], tuple[Intervention, Mapping[str, DetailValue]]]


async def _move(
    context: ApiContext,
    intervention_id: str,
    actor: Actor,
    *,
    kind: str,
    expected_version: int | None,
    transition: _Transition,
    counted: Counter,
) -> Moved:
    """Apply ``transition`` under the customer's lock with its history row; ``counted`` goes
    up once committed (a refused move is not counted)."""
    async with context.pool.acquire() as conn, conn.transaction():
        found = await queries.lock_intervention(conn, intervention_id)
        if found is None:
            raise NotFound(intervention_id)
        current, health = found
        try:
            check_version(current, expected_version)
            updated, detail = transition(current, health)
        except StaleVersion as exc:
            by = await first_action_after(conn, intervention_id, exc.expected)
            raise Stale(
                intervention_id, current.state.value, exc.expected, exc.current, by
            ) from None
        except IllegalTransition as exc:
            by = (
                await first_action_after(conn, intervention_id, current.version - 1)
                if current.version > 0
                else None
            )
            raise Conflict(intervention_id, current.state.value, str(exc), by) from None
        except InvalidCommand as exc:
            raise Invalid(exc.field, exc.message) from None
        action = Action(
            kind=kind, actor=actor, at=updated.updated_at, version=updated.version, detail=detail
        )
        await queries.write_intervention_action(
            conn, context.settings.interventions_topic, action, updated
        )
    counted.inc()
    return Moved(updated, health, action)


async def take(
    context: ApiContext,
    intervention_id: str,
    actor: Actor,
    *,
    assignee: str | None = None,
    expected_version: int | None = None,
) -> Moved:
    """Acknowledge an open case, assigned to ``assignee`` (default: the actor's id)."""
    now = context.clock()
    who = actor.id if assignee is None else assignee

    def transition(
        iv: Intervention, health: float | None
    ) -> tuple[Intervention, Mapping[str, DetailValue]]:
        moved = domain.acknowledge(iv, now=now, assignee=who)
        return moved, {"assignee": moved.assignee}

    moved = await _move(
        context,
        intervention_id,
        actor,
        kind="intervention.acknowledged",
        expected_version=expected_version,
        transition=transition,
        counted=context.metrics.interventions_acknowledged,
    )
    context.metrics.time_to_acknowledge.observe(
        max((now - moved.intervention.opened_at).total_seconds(), 0)
    )
    return moved


async def add_note(
    context: ApiContext,
    intervention_id: str,
    actor: Actor,
    text: str,
    *,
    expected_version: int | None = None,
) -> Moved:
    """Add a note to an open or acknowledged case."""
    now = context.clock()

    def transition(
        iv: Intervention, health: float | None
    ) -> tuple[Intervention, Mapping[str, DetailValue]]:
        return domain.add_note(iv, now=now, text=text), {"text": domain.note_text(text)}

    return await _move(
        context,
        intervention_id,
        actor,
        kind="intervention.noted",
        expected_version=expected_version,
        transition=transition,
        counted=context.metrics.interventions_noted,
    )


async def snooze(
    context: ApiContext,
    intervention_id: str,
    actor: Actor,
    until: datetime | None,
    *,
    expected_version: int | None = None,
) -> Moved:
    """Put an open or acknowledged case aside until ``until``; ``None`` wakes it now."""
    now = context.clock()

    def transition(
        iv: Intervention, health: float | None
    ) -> tuple[Intervention, Mapping[str, DetailValue]]:
        return domain.snooze(iv, now=now, until=until), {
            "until": None if until is None else until.isoformat()
        }

    return await _move(
        context,
        intervention_id,
        actor,
        kind="intervention.snoozed",
        expected_version=expected_version,
        transition=transition,
        counted=context.metrics.interventions_snoozed,
    )


async def reassign(
    context: ApiContext,
    intervention_id: str,
    actor: Actor,
    assignee: str,
    *,
    expected_version: int | None = None,
) -> Moved:
    """Give an acknowledged case to ``assignee`` (the history keeps who had it before)."""
    now = context.clock()

    def transition(
        iv: Intervention, health: float | None
    ) -> tuple[Intervention, Mapping[str, DetailValue]]:
        moved = domain.reassign(iv, now=now, assignee=assignee)
        return moved, {"from": iv.assignee, "to": moved.assignee}

    return await _move(
        context,
        intervention_id,
        actor,
        kind="intervention.reassigned",
        expected_version=expected_version,
        transition=transition,
        counted=context.metrics.interventions_reassigned,
    )


async def resolve(
    context: ApiContext,
    intervention_id: str,
    actor: Actor,
    *,
    category: str | None,
    note: str,
    expected_version: int | None = None,
) -> Moved:
    """Close an acknowledged case with an outcome category and a note; health is recorded
    now (and again after the policy's ``follow_up_days``, by scoring)."""
    now = context.clock()
    categories = context.catalogue().policy.interventions.resolution_categories

    def transition(
        iv: Intervention, health: float | None
    ) -> tuple[Intervention, Mapping[str, DetailValue]]:
        moved = domain.resolve(
            iv, now=now, note=note, health=health, category=category, categories=categories
        )
        return moved, {
            "category": moved.outcome_category,
            "note": moved.outcome_note,
            "health": moved.health_at_resolve,
        }

    return await _move(
        context,
        intervention_id,
        actor,
        kind="intervention.resolved",
        expected_version=expected_version,
        transition=transition,
        counted=context.metrics.interventions_resolved,
    )


async def read(context: ApiContext, intervention_id: str) -> Case:
    """The case with its customer's health now and its history (a consistent snapshot)."""
    async with context.pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        row = await queries.read_intervention(conn, intervention_id)
        if row is None:
            raise NotFound(intervention_id)
        history = await read_history(conn, intervention_id)
    return Case(intervention_from_row(row), row["health_now"], tuple(history))

"""The scoring service's pure domain: promises, outcomes, deadlines, health, interventions.

Nothing here does I/O (except :func:`load_catalogue_file`), reads a clock or imports a
client library: time is passed in, values are frozen, and so replays, retries and property
tests all see the same behaviour. A consumer's per-event path is::

    check_event -> evaluate + open_deadlines + fulfilment_refs/fulfil_deadline
      -> apply_outcomes -> assess -> decide
"""

from touchpulse_scoring.domain.catalogue import (
    Catalogue,
    catalogue_from_mapping,
    check_event,
    load_catalogue_file,
    parse_catalogue,
)
from touchpulse_scoring.domain.deadlines import (
    Deadline,
    DeadlineRef,
    DeadlineState,
    expire_deadline,
    fulfil_deadline,
    fulfilment_refs,
    keep_earliest,
    open_deadlines,
)
from touchpulse_scoring.domain.errors import (
    CatalogueError,
    IllegalTransition,
    InvalidCommand,
    ScoringDomainError,
    UnscorableEvent,
    UnscorableReason,
)
from touchpulse_scoring.domain.health import (
    EMPTY,
    TouchpointHealth,
    add_outcome,
    rebase,
    remove_outcome,
    replace_outcome,
)
from touchpulse_scoring.domain.interventions import (
    LEGAL_MOVES,
    OPEN_STATES,
    Gap,
    Intervention,
    InterventionState,
    Trigger,
    TriggerKind,
    acknowledge,
    attach,
    expire_intervention,
    expire_overdue,
    follow_up_due,
    intervention_id,
    intervention_priority,
    open_intervention,
    recommended_actions,
    record_follow_up,
    resolve,
)
from touchpulse_scoring.domain.journey import (
    Journey,
    assess,
    journey_health,
    weakest_touchpoint,
)
from touchpulse_scoring.domain.ledger import Applied, apply_outcomes, supersedes
from touchpulse_scoring.domain.outcomes import (
    Expected,
    Outcome,
    OutcomeKey,
    deadline_outcome_key,
    evaluate,
    event_outcome_key,
    judge,
)
from touchpulse_scoring.domain.policy import Band, Bands, InterventionPolicy, Policy
from touchpulse_scoring.domain.profile import NO_PROFILE, CustomerProfile, is_new
from touchpulse_scoring.domain.promises import (
    DeadlinePromise,
    MeasurePromise,
    Promise,
    Severity,
)
from touchpulse_scoring.domain.triggers import (
    NO_GUARD,
    BreachHistory,
    Decision,
    ReopenGuard,
    decide,
)

__all__ = [
    "EMPTY",
    "LEGAL_MOVES",
    "NO_GUARD",
    "NO_PROFILE",
    "OPEN_STATES",
    "Applied",
    "Band",
    "Bands",
    "BreachHistory",
    "Catalogue",
    "CatalogueError",
    "CustomerProfile",
    "Deadline",
    "DeadlinePromise",
    "DeadlineRef",
    "DeadlineState",
    "Decision",
    "Expected",
    "Gap",
    "IllegalTransition",
    "Intervention",
    "InterventionPolicy",
    "InterventionState",
    "InvalidCommand",
    "Journey",
    "MeasurePromise",
    "Outcome",
    "OutcomeKey",
    "Policy",
    "Promise",
    "ReopenGuard",
    "ScoringDomainError",
    "Severity",
    "TouchpointHealth",
    "Trigger",
    "TriggerKind",
    "UnscorableEvent",
    "UnscorableReason",
    "acknowledge",
    "add_outcome",
    "apply_outcomes",
    "assess",
    "attach",
    "catalogue_from_mapping",
    "check_event",
    "deadline_outcome_key",
    "decide",
    "evaluate",
    "event_outcome_key",
    "expire_deadline",
    "expire_intervention",
    "expire_overdue",
    "follow_up_due",
    "fulfil_deadline",
    "fulfilment_refs",
    "intervention_id",
    "intervention_priority",
    "is_new",
    "journey_health",
    "judge",
    "keep_earliest",
    "load_catalogue_file",
    "open_deadlines",
    "open_intervention",
    "parse_catalogue",
    "rebase",
    "recommended_actions",
    "record_follow_up",
    "remove_outcome",
    "replace_outcome",
    "resolve",
    "supersedes",
    "weakest_touchpoint",
]

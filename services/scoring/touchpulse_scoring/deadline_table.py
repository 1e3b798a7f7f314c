"""The deadline table's row codec, shared by its writer and a reader.

Scoring writes ``deadline`` (its batch storage, ``store.py``); the api reads it to preview an
event against the clocks scoring holds (``POST /v1/promises/evaluate``) and must not import
scoring's storage. One decoding of a row into the pure domain's :class:`Deadline`, beside
the domain, so the two cannot drift apart (as ``intervention_table`` does for the table
both services write).
"""

from __future__ import annotations

from typing import Any

from touchpulse_scoring.domain import Deadline

#: The columns :func:`deadline_from_row` reads, for a reader that names them.
DEADLINE_COLUMNS = (
    "customer_id, promise_id, journey_key, touchpoint, opened_at, due_at, opening_event_ids,"
    " catalogue_version, tolerance_hours, weight, breach_weight, severity, state, closed_at,"
    " fulfilled_by"
)


def deadline_from_row(row: Any) -> Deadline:
    return Deadline(
        customer_id=row["customer_id"],
        promise_id=row["promise_id"],
        journey_key=row["journey_key"],
        touchpoint=row["touchpoint"],
        opened_at=row["opened_at"],
        due_at=row["due_at"],
        opening_event_ids=tuple(row["opening_event_ids"]),
        catalogue_version=row["catalogue_version"],
        tolerance_hours=row["tolerance_hours"],
        weight=row["weight"],
        breach_weight=row["breach_weight"],
        severity=row["severity"],
        state=row["state"],
        closed_at=row["closed_at"],
        fulfilled_by=row["fulfilled_by"],
    )

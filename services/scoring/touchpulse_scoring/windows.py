"""Customers' explanation windows kept in memory between batches, checked before each use.

A customer with an open case has its health explanation re-ranked on every change, and that
needs its :data:`~.domain.EXPLAIN_WINDOW` newest outcomes: read and decoded from PostgreSQL
that was the largest single cost of a batch. Kafka gives each customer's partition to one
member, so the member that wrote a customer's outcomes usually judges its next events too,
and can keep the window it computed.

Kept, not trusted: an entry carries the revision of the customer's ``journey_health`` row it
describes (the row's ``xmin``, the id of the transaction that last wrote it). Every writer of
a customer's outcomes writes that row in the same transaction (scoring's batch and deadline
sweep, in any instance; erasure deletes both), so an entry whose revision differs from the
row read under the customer's lock in this batch is stale and the window is read again.
Transaction ids are never reused for another write of the row short of wraparound, and an
entry stored by a transaction that then rolled back names a revision the row never gets.
Pruning removes only outcomes outside every window, so it changes none.

The entries hold at most ``capacity`` outcomes in all (least recently used go first):
memory is bounded by a setting, whatever the number of customers.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from touchpulse_scoring.domain import Intervention, Outcome, window


@dataclass(frozen=True, slots=True)
class _Entry:
    revision: str
    outcomes: tuple[Outcome, ...]


class Windows:
    """customer id -> (revision, newest outcomes), least recently used evicted first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._held = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def outcomes(self) -> int:
        """Outcomes held in all."""
        return self._held

    def get(self, customer: str, revision: str | None) -> Sequence[Outcome] | None:
        """The window stored for ``customer`` if it describes ``revision``; else None."""
        entry = self._entries.get(customer)
        if entry is None or revision is None or entry.revision != revision:
            self.misses += 1
            return None
        self._entries.move_to_end(customer)
        self.hits += 1
        return entry.outcomes

    def put(self, customer: str, revision: str, outcomes: Iterable[Outcome]) -> None:
        """Keep the window of ``outcomes`` (the customer's standing outcomes, or a superset
        of its newest) as of the journey row's ``revision``."""
        if self.capacity <= 0:
            return
        self.drop(customer)
        kept = tuple(window(outcomes))
        self._entries[customer] = _Entry(revision, kept)
        self._held += len(kept)
        while self._held > self.capacity and self._entries:
            _, evicted = self._entries.popitem(last=False)
            self._held -= len(evicted.outcomes)

    def drop(self, customer: str) -> None:
        entry = self._entries.pop(customer, None)
        if entry is not None:
            self._held -= len(entry.outcomes)

    def clear(self) -> None:
        self._entries.clear()
        self._held = 0


class KeptInterventions:
    """Interventions decoded from their rows, kept between batches by row version.

    A customer with an open case has it read with every batch that touches the customer, and
    decoding its gaps (up to 20, each with times and expected values) was a tenth of a batch's
    time. The row is still read every time, under the customer's lock, with its ``xmin``: an
    entry is used only when the row's ``xmin`` equals the one it was decoded from, so a change
    by anyone (the api's take, note or resolve, the sweep, another member) is always seen.
    Bounded like the windows: at most ``capacity`` gaps held in all, least recently used
    dropped first.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, tuple[str, Intervention]] = OrderedDict()
        self._held = 0
        self.hits = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, intervention_id: object) -> bool:
        return intervention_id in self._entries

    def decode(self, row: Mapping[str, Any], decode: Callable[[Any], Intervention]) -> Intervention:
        """``decode(row)``, or what was decoded before from the same row version (the row
        carries its ``xmin`` as ``revision``)."""
        key, revision = row["intervention_id"], row["revision"]
        kept = self._entries.get(key)
        if kept is not None and kept[0] == revision:
            self._entries.move_to_end(key)
            self.hits += 1
            return kept[1]
        value = decode(row)
        if self.capacity <= 0:
            return value
        self._forget(key)
        self._entries[key] = (revision, value)
        self._held += _size(value)
        while self._held > self.capacity and self._entries:
            _, (_, evicted) = self._entries.popitem(last=False)
            self._held -= _size(evicted)
        return value

    def _forget(self, key: str) -> None:
        kept = self._entries.pop(key, None)
        if kept is not None:
            self._held -= _size(kept[1])


def _size(intervention: Intervention) -> int:
    return 1 + len(intervention.gaps)

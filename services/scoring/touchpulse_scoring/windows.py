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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from touchpulse_scoring.domain import Outcome, window


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

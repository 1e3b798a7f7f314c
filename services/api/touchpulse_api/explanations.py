"""Customers' health explanations kept between reads in the api process, checked on each use.

Most of a health read's work is the explanation: decoding the window's breaches and ranking
them with the scoring domain's ``explain()``. That, and the rest of the answer computed from
the touchpoint states (their health, evidence and the confidence), depends only on the
customer's touchpoint states, the window's outcomes, the catalogue and the journey row's
``as_of`` — and all of those change only with a write of the customer's ``journey_health``
row or a catalogue reload. Every writer of a customer's outcomes or touchpoint health
writes that row in the same transaction (scoring's batch and deadline sweep, in any
instance; erasure deletes it with them), the row's ``xmin`` changing each time.

Kept, not trusted: an entry carries the revision (``xmin``) of the journey row it was
computed at, and the health read sends it to PostgreSQL, which sends the states and breaches
back only when the row is no longer at that revision (the same statement: a read stays one
round trip). An entry whose revision the row does not have is recomputed and replaced;
erasure and re-creation give the row a new revision; transaction ids are not reused for
another write of the row short of wraparound. Entries are kept for the catalogue object
they were computed with: a reload (a new version, or any edit of the file) drops them all.

At most ``capacity`` customers are kept (least recently used go first): memory is bounded by
a setting, whatever the number of customers. A customer without a journey row (known only
from a profile) is read at the api's clock and never kept.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from touchpulse_scoring.domain import Catalogue


@dataclass(frozen=True, slots=True)
class Derived:
    """The parts of a health answer computed from the states, the breaches, the catalogue
    and ``as_of``, kept as the answer's own JSON: validated and written once, when computed.

    Bytes rather than the answer's models: a hit builds and writes nothing again, the
    entry is a sixth of the models' memory (7.5 against 43 kB for a rich customer, under
    tracemalloc), and the garbage collector has nothing in it to walk."""

    #: ``,"evidence_weight":…,"confidence":…,"touchpoints":{…}``: the members that follow
    #: ``weakest_touchpoint`` in the answer.
    figures: bytes
    #: ``,"explanation":[…]``: the member that precedes ``open_intervention_id``.
    explanation: bytes


@dataclass(frozen=True, slots=True)
class Kept:
    revision: str
    derived: Derived


class ExplanationCache:
    """customer id -> (journey row revision, derived parts) for one catalogue, least recently
    used evicted first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, Kept] = OrderedDict()
        self._catalogue: Catalogue | None = None
        #: Reads answered from an entry, and reads that computed the parts.
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, customer: str, catalogue: Catalogue) -> Kept | None:
        """The entry kept for ``customer`` under ``catalogue``, to be checked against the
        journey row's revision by the read; None when there is none."""
        if catalogue is not self._catalogue:
            # Reloaded: nothing kept was computed with this catalogue.
            self._entries.clear()
            self._catalogue = catalogue
            return None
        return self._entries.get(customer)

    def hit(self, customer: str) -> None:
        """The read found the row still at the entry's revision and answered from it (the
        entry may have left meanwhile, evicted or dropped by a reload, while the read was
        waiting for PostgreSQL: what it holds is still the answer at that revision)."""
        if customer in self._entries:
            self._entries.move_to_end(customer)
        self.hits += 1

    def put(
        self, customer: str, revision: str | None, catalogue: Catalogue, derived: Derived
    ) -> None:
        """Keep ``derived``, computed from the journey row at ``revision`` with
        ``catalogue`` (not kept without a row, or when the catalogue was reloaded since)."""
        self.misses += 1
        if self.capacity <= 0 or revision is None or catalogue is not self._catalogue:
            return
        self._entries[customer] = Kept(revision, derived)
        self._entries.move_to_end(customer)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def drop(self, customer: str) -> None:
        self._entries.pop(customer, None)

    def clear(self) -> None:
        self._entries.clear()

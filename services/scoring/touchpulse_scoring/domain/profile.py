"""What the domain needs to know about a customer: segment, tenure, value and reach."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime

from touchpulse_scoring.domain.policy import Policy

DEFAULT_SEGMENT = "standard"


@dataclass(frozen=True, slots=True)
class CustomerProfile:
    """A customer's profile; :data:`NO_PROFILE` stands in for customers the CRM never sent."""

    segment: str = DEFAULT_SEGMENT
    customer_since: date | None = None
    #: Multiplies intervention priority: how much this customer matters to the business.
    value: float = 1.0
    #: How far a bad word travels; enters priority as ``1 + ln(1 + reach)``.
    reach: float = 0.0

    def __post_init__(self) -> None:
        for name in ("value", "reach"):
            number = getattr(self, name)
            if not (math.isfinite(number) and number >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {number}")


#: Standard segment, tenure unknown (so never "new"), value 1, reach 0.
NO_PROFILE = CustomerProfile()


def is_new(profile: CustomerProfile, at: datetime, policy: Policy) -> bool:
    """Whether the customer counts as new at ``at`` (an event's time, so replays agree).

    An event dated before ``customer_since`` (a pre-sale contact, say) counts as new too:
    the relationship is at its most fragile then.
    """
    if profile.customer_since is None:
        return False
    return (at.date() - profile.customer_since).days < policy.new_customer_days

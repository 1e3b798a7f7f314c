"""The health answer written in parts (the row's members, then the kept members' JSON put in
their places) is what pydantic writes for the whole :class:`CustomerHealth`, whatever the
members hold: no database needed, so odd customer ids and empty answers are cheap to cover.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from touchpulse_api.explanations import Derived
from touchpulse_api.models import (
    CustomerHealth,
    HealthExplanationPart,
    HealthFiguresPart,
    HealthRowPart,
)
from touchpulse_api.routes.customers import _members, write_answer

GOLDEN = Path(__file__).parent / "golden"
#: The members the route reads from the journey row: the model's own list, not a copy.
ROW = tuple(HealthRowPart.model_fields)


def _written_in_parts(whole: dict[str, Any]) -> bytes:
    figures = HealthFiguresPart.model_validate(
        {k: whole[k] for k in ("evidence_weight", "confidence", "touchpoints")}
    )
    explanation = HealthExplanationPart.model_validate({"explanation": whole["explanation"]})
    derived = Derived(figures=_members(figures), explanation=_members(explanation))
    return write_answer({k: whole[k] for k in ROW}, derived)


def _whole(name: str) -> dict[str, Any]:
    return CustomerHealth.model_validate_json((GOLDEN / f"{name}.json").read_bytes()).model_dump()


@pytest.mark.parametrize("name", ["rich-trend-365", "rich", "calm", "profile-only"])
def test_the_golden_answers_written_in_parts(name: str) -> None:
    assert _written_in_parts(_whole(name)) == (GOLDEN / f"{name}.json").read_bytes()


@pytest.mark.parametrize(
    "customer_id",
    [
        'x,"as_of":null,"open_intervention_id":"y',  # the members' keys inside the id
        '",\\"as_of\\":',
        "ünï\u2028cödé\x01",
        "",
    ],
)
def test_any_customer_id_written_in_parts(customer_id: str) -> None:
    whole = {**_whole("rich"), "customer_id": customer_id}
    expected = CustomerHealth.model_validate(whole).model_dump_json(by_alias=True).encode()
    assert _written_in_parts(whole) == expected
    assert CustomerHealth.model_validate_json(expected).customer_id == customer_id

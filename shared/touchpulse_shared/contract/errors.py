"""Errors raised by the event contract.

Field-level problems in an event are pydantic ``ValidationError``s (their ``loc`` names the
field), because ingest turns those into RFC 9457 problem details without knowing which
contract function produced them. The exceptions here cover what is not one event's field:
a whole request body that cannot be a batch, and a Kafka record that cannot be scored.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails


class ContractError(Exception):
    """Root of every error the contract raises itself."""


BatchProblem = Literal["not_json", "wrong_shape", "too_many_items"]


class InvalidBatch(ContractError):
    """The batch body as a whole is unusable, so no item in it can be judged on its own."""

    def __init__(self, reason: BatchProblem, message: str) -> None:
        super().__init__(message)
        self.reason: BatchProblem = reason
        self.message = message


class RejectReason(StrEnum):
    """Why a Kafka record on the events topic cannot be scored (the dead-letter reason)."""

    FOREIGN_PRODUCER = "foreign_producer"
    UNKNOWN_SCHEMA = "unknown_schema"
    BAD_HEADER = "bad_header"
    MISSING_VALUE = "missing_value"
    NOT_JSON = "not_json"
    INVALID_EVENT = "invalid_event"
    KEY_MISMATCH = "key_mismatch"


class RecordRejected(ContractError):
    """A record that the scoring service must send to the dead-letter topic."""

    def __init__(
        self,
        reason: RejectReason,
        detail: str,
        errors: list[ErrorDetails] | None = None,
    ) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
        #: The field-level errors when ``reason`` is ``invalid_event``, else ``None``.
        self.errors = errors

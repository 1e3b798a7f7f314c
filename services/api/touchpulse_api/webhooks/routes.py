"""``/v1/webhooks``: subscriptions and their delivery log, for admin keys only.

A subscription's secret is in the response that creates it (and in the one that rotates
it) and nowhere else: it is derived from a master key outside the database when needed,
never stored (see :mod:`touchpulse_api.webhooks.signing`).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import orjson
import structlog
from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from touchpulse_api import cursors
from touchpulse_api.context import Admin, ContextDep
from touchpulse_api.models import JsonBool, StorableText
from touchpulse_api.webhooks import store
from touchpulse_api.webhooks.dispatcher import GIVE_UP_AFTER
from touchpulse_api.webhooks.signing import derive_secret, master_key, new_nonce
from touchpulse_api.webhooks.targets import ForbiddenTarget, TargetError, resolve_target
from touchpulse_shared.http.app import AUTHENTICATED, problem_responses
from touchpulse_shared.http.problems import Problem

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

WebhookKind = Literal[
    "intervention.opened",
    "intervention.attached",
    "intervention.acknowledged",
    "intervention.noted",
    "intervention.snoozed",
    "intervention.reassigned",
    "intervention.resolved",
    "intervention.expired",
]
DeliveryState = Literal["pending", "delivered", "failed", "forbidden"]
# How long the old secret keeps signing (as a second signature) after a rotation.
ROTATION_OVERLAP = timedelta(hours=24)
ATTEMPTS_SHOWN = 100

_URL_DESCRIPTION = (
    "https:// (or http://) URL the webhooks are POSTed to. Refused when the host resolves "
    "to a loopback, link-local, private or otherwise non-public address, unless the "
    "deployment allows private targets. No credentials in the URL."
)
_EXAMPLE_ID = "wh_2bm5x4rrd6yqg3ehnaa7lqvfmq"
_EXAMPLE_CREATE: dict[str, Any] = {
    "url": "https://crm.example.com/hooks/touchpulse",
    "kinds": ["intervention.opened", "intervention.expired"],
    "description": "CRM call list",
}
_EXAMPLE_SUBSCRIPTION: dict[str, Any] = {
    "id": _EXAMPLE_ID,
    **_EXAMPLE_CREATE,
    "enabled": True,
    "disabled_reason": None,
    "created_at": "2025-03-01T09:30:00Z",
    "updated_at": "2025-03-01T09:30:00Z",
}
_EXAMPLE_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw4VeJkRLxcZU="  # noqa: S105 - docs example
_EXAMPLE_DELIVERY: dict[str, Any] = {
    "id": "msg_4c1f0e5b8d9a4f2e9a7b3c6d5e4f3a2b",
    "subscription_id": _EXAMPLE_ID,
    "kind": "intervention.opened",
    "intervention_id": "iv-7f3a",
    "customer_id": "c-1042",
    "state": "pending",
    "attempts": 2,
    "next_attempt_at": "2025-03-01T09:31:10Z",
    "give_up_at": "2025-03-02T09:30:00Z",
    "last_status": 503,
    "last_error": "HTTP 503: upstream unavailable",
    "created_at": "2025-03-01T09:30:00Z",
    "delivered_at": None,
}
_EXAMPLE_ATTEMPT: dict[str, Any] = {
    "attempt": 1,
    "attempted_at": "2025-03-01T09:30:01Z",
    "status": 503,
    "error": "HTTP 503: upstream unavailable",
    "duration_ms": 41.7,
}


_SUBSCRIPTION_ID = re.compile(r"wh_[a-z2-7]{26}")
_DELIVERY_ID = re.compile(r"msg_[0-9a-f]{32}")


# --- models ------------------------------------------------------------------------------


Text = StorableText


def _unique_kinds(kinds: list[WebhookKind]) -> list[WebhookKind]:
    return sorted(set(kinds))


class WebhookCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid", title="WebhookCreate", json_schema_extra={"examples": [_EXAMPLE_CREATE]}
    )

    url: str = Field(min_length=1, max_length=2048, description=_URL_DESCRIPTION)
    kinds: list[WebhookKind] = Field(
        min_length=1, max_length=20, description="the event kinds to receive"
    )
    description: Text | None = Field(None, max_length=256, description="for people, optional")

    @field_validator("kinds")
    @classmethod
    def _kinds(cls, kinds: list[WebhookKind]) -> list[WebhookKind]:
        return _unique_kinds(kinds)


class WebhookUpdate(BaseModel):
    """Only the fields present change; ``enabled: true`` re-enables after a ``410``."""

    model_config = ConfigDict(
        extra="forbid",
        title="WebhookUpdate",
        json_schema_extra={"examples": [{"enabled": True}, {"kinds": ["intervention.opened"]}]},
    )

    # url, kinds and enabled may be left out, not null: the document says so (no null in
    # their schemas), the validator below refuses it.
    url: str | SkipJsonSchema[None] = Field(
        None, min_length=1, max_length=2048, description=_URL_DESCRIPTION
    )
    kinds: list[WebhookKind] | SkipJsonSchema[None] = Field(None, min_length=1, max_length=20)
    enabled: JsonBool | SkipJsonSchema[None] = None
    description: Text | None = Field(None, max_length=256, description="null clears it")

    @field_validator("url", "kinds", "enabled", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("may be left out, but not null")
        return value

    @field_validator("kinds")
    @classmethod
    def _kinds(cls, kinds: list[WebhookKind] | None) -> list[WebhookKind] | None:
        return None if kinds is None else _unique_kinds(kinds)


class WebhookSubscription(BaseModel):
    model_config = ConfigDict(
        title="WebhookSubscription", json_schema_extra={"examples": [_EXAMPLE_SUBSCRIPTION]}
    )

    id: str
    url: str
    kinds: list[str]
    description: str | None
    enabled: bool
    disabled_reason: str | None = Field(description="why it is disabled (e.g. a 410)")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, subscription: store.Subscription) -> WebhookSubscription:
        return cls(
            id=subscription.id,
            url=subscription.url,
            kinds=list(subscription.kinds),
            description=subscription.description,
            enabled=subscription.enabled,
            disabled_reason=subscription.disabled_reason,
            created_at=subscription.created_at,
            updated_at=subscription.updated_at,
        )


class WebhookSubscriptionCreated(WebhookSubscription):
    model_config = ConfigDict(
        title="WebhookSubscriptionCreated",
        json_schema_extra={"examples": [{**_EXAMPLE_SUBSCRIPTION, "secret": _EXAMPLE_SECRET}]},
    )

    secret: str = Field(
        description="Standard Webhooks signing secret (whsec_…). Shown this once: store it."
    )


class WebhookSecretRotated(BaseModel):
    model_config = ConfigDict(
        title="WebhookSecretRotated",
        json_schema_extra={
            "examples": [
                {
                    "id": _EXAMPLE_ID,
                    "secret": _EXAMPLE_SECRET,
                    "previous_secret_valid_until": "2025-03-02T09:30:00Z",
                }
            ]
        },
    )

    id: str
    secret: str = Field(description="the new secret, shown this once")
    previous_secret_valid_until: datetime = Field(
        description="until then every webhook carries a signature with each secret"
    )


class WebhookSubscriptionPage(BaseModel):
    model_config = ConfigDict(title="WebhookSubscriptionPage")

    items: list[WebhookSubscription]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null: the end")


class WebhookAttempt(BaseModel):
    model_config = ConfigDict(
        title="WebhookAttempt", json_schema_extra={"examples": [_EXAMPLE_ATTEMPT]}
    )

    attempt: int
    attempted_at: datetime
    status: int | None = Field(description="the HTTP status; null when there was no answer")
    error: str | None
    duration_ms: float


class WebhookDelivery(BaseModel):
    model_config = ConfigDict(
        title="WebhookDelivery", json_schema_extra={"examples": [_EXAMPLE_DELIVERY]}
    )

    id: str = Field(description="the webhook-id header: the same on every attempt")
    subscription_id: str
    kind: str
    intervention_id: str
    customer_id: str
    state: DeliveryState
    attempts: int
    next_attempt_at: datetime | None
    give_up_at: datetime
    last_status: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None

    @classmethod
    def of(cls, delivery: store.Delivery) -> WebhookDelivery:
        return cls(**cls._fields(delivery))

    @classmethod
    def _fields(cls, delivery: store.Delivery) -> dict[str, Any]:
        return {name: getattr(delivery, name) for name in WebhookDelivery.model_fields}


class WebhookDeliveryDetail(WebhookDelivery):
    model_config = ConfigDict(
        title="WebhookDeliveryDetail",
        json_schema_extra={
            "examples": [
                {
                    **_EXAMPLE_DELIVERY,
                    "payload": {"intervention_id": "iv-7f3a", "customer_id": "c-1042"},
                    "attempt_log": [_EXAMPLE_ATTEMPT],
                }
            ]
        },
    )

    payload: dict[str, Any] = Field(description="the webhook's data: the intervention")
    attempt_log: list[WebhookAttempt] = Field(
        description=f"the latest {ATTEMPTS_SHOWN} attempts, newest first"
    )


class WebhookDeliveryPage(BaseModel):
    model_config = ConfigDict(title="WebhookDeliveryPage")

    items: list[WebhookDelivery]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null: the end")


# --- helpers -----------------------------------------------------------------------------


def _not_found(what: str, ident: str) -> Problem:
    return Problem(404, "not-found", "Not Found", f"No {what} {ident!r}")


def _subscription_id(value: str) -> str:
    # An id of the wrong form names nothing: 404 without asking the database.
    if not _SUBSCRIPTION_ID.fullmatch(value):
        raise _not_found("webhook subscription", value)
    return value


def _delivery_id(value: str) -> str:
    if not _DELIVERY_ID.fullmatch(value):
        raise _not_found("delivery", value)
    return value


def _invalid(pointer: str, detail: str, code: str) -> Problem:
    return Problem(
        422,
        "invalid-request",
        "Invalid Request",
        "The request is not valid",
        errors=[{"pointer": pointer, "detail": detail, "code": code}],
    )


async def _check_url(context: ContextDep, url: str) -> None:
    try:
        await resolve_target(url, allow_private=context.settings.webhook_allow_private_targets)
    except ForbiddenTarget as exc:
        raise _invalid("/body/url", str(exc), "forbidden_target") from None
    except TargetError as exc:
        raise _invalid("/body/url", str(exc), "invalid_url") from None


def _subscription_id_value(value: object) -> str:
    if not isinstance(value, str) or not _SUBSCRIPTION_ID.fullmatch(value):
        raise TypeError("not a subscription id")
    return value


def _subscription_cursor(context: ContextDep, cursor: str | None) -> str | None:
    values = cursors.decode_cursor(context.settings, "webhooks", cursor, (_subscription_id_value,))
    return None if values is None else str(values[0])


def _delivery_cursor(context: ContextDep, subscription_id: str, cursor: str | None) -> int | None:
    # A log's cursor belongs to its subscription's log only.
    values = cursors.decode_cursor(
        context.settings, f"deliveries:{subscription_id}", cursor, (cursors.bigint,)
    )
    return None if values is None else int(values[0])


def _page_size(context: ContextDep, limit: int) -> int:
    return min(limit, context.settings.api_max_page_size)


Limit = Annotated[int, Query(ge=1, description="page size; capped by the server's maximum")]


# --- routes (deliveries first: /webhooks/deliveries/… is not a subscription id) ---------


@router.get(
    "/deliveries/{delivery_id}",
    response_model=WebhookDeliveryDetail,
    summary="One delivery with its payload and attempt log",
    operation_id="get_webhook_delivery",
    responses=problem_responses(*AUTHENTICATED, 404),
)
async def get_delivery(
    delivery_id: str, context: ContextDep, _admin: Admin
) -> WebhookDeliveryDetail:
    """One delivery with its payload and the log of its attempts."""
    _delivery_id(delivery_id)
    delivery = await store.get_delivery(context.pool, delivery_id)
    if delivery is None:
        raise _not_found("delivery", delivery_id)
    attempts = await store.list_attempts(context.pool, delivery_id, limit=ATTEMPTS_SHOWN)
    return WebhookDeliveryDetail(
        **WebhookDelivery._fields(delivery),
        payload=orjson.loads(delivery.payload),
        attempt_log=[WebhookAttempt(**vars(a)) for a in attempts],
    )


@router.post(
    "/deliveries/{delivery_id}/resend",
    status_code=202,
    response_model=WebhookDelivery,
    summary="Send a finished delivery again now, with the same webhook-id",
    operation_id="resend_webhook_delivery",
    responses=problem_responses(
        *AUTHENTICATED,
        404,
        409,
        descriptions={409: "The delivery is still pending: it is resent when finished"},
    ),
)
async def resend_delivery(delivery_id: str, context: ContextDep, admin: Admin) -> WebhookDelivery:
    """Send a finished delivery again now, with the same webhook-id (409 while it is
    still pending)."""
    _delivery_id(delivery_id)
    now = context.clock()
    async with context.pool.acquire() as conn:
        try:
            delivery = await store.resend(
                conn, delivery_id, now=now, give_up_at=now + GIVE_UP_AFTER
            )
        except store.ResendConflict as exc:
            raise Problem(409, "conflict", "Conflict", str(exc)) from None
    if delivery is None:
        raise _not_found("delivery", delivery_id)
    log.info("webhooks.resend", delivery_id=delivery_id, key_id=admin.key_id)
    return WebhookDelivery.of(delivery)


@router.post(
    "",
    status_code=201,
    response_model=WebhookSubscriptionCreated,
    summary="Subscribe a URL to event kinds; the response holds the secret, once",
    operation_id="create_webhook_subscription",
    responses=problem_responses(
        *AUTHENTICATED,
        422,
        descriptions={422: "The body is not valid, or the URL is not a public https target"},
    ),
)
async def create_subscription(
    body: WebhookCreate, context: ContextDep, admin: Admin
) -> WebhookSubscriptionCreated:
    """Subscribe a URL to event kinds. The answer holds the subscription's signing secret, once."""
    await _check_url(context, body.url)
    nonce = new_nonce()
    subscription = await store.create_subscription(
        context.pool,
        url=body.url,
        kinds=body.kinds,
        description=body.description,
        nonce=nonce,
        now=context.clock(),
    )
    log.info("webhooks.subscription_created", subscription_id=subscription.id, key_id=admin.key_id)
    secret = derive_secret(master_key(context.settings), subscription.id, nonce)
    return WebhookSubscriptionCreated(
        **WebhookSubscription.of(subscription).model_dump(), secret=secret
    )


@router.get(
    "",
    response_model=WebhookSubscriptionPage,
    summary="Every subscription, oldest first (never a secret)",
    operation_id="list_webhook_subscriptions",
    responses=problem_responses(*AUTHENTICATED, 400, 422),
)
async def list_subscriptions(
    context: ContextDep, _admin: Admin, limit: Limit = 50, cursor: cursors.Cursor = None
) -> WebhookSubscriptionPage:
    """Every subscription, oldest first, a page at a time (never a secret)."""
    size = _page_size(context, limit)
    rows = await store.list_subscriptions(
        context.pool, after=_subscription_cursor(context, cursor), limit=size + 1
    )
    more = len(rows) > size
    rows = rows[:size]
    return WebhookSubscriptionPage(
        items=[WebhookSubscription.of(s) for s in rows],
        next_cursor=cursors.encode_cursor(context.settings, "webhooks", [rows[-1].id])
        if more
        else None,
    )


@router.get(
    "/{subscription_id}",
    response_model=WebhookSubscription,
    summary="One subscription (never its secret)",
    operation_id="get_webhook_subscription",
    responses=problem_responses(*AUTHENTICATED, 404),
)
async def get_subscription(
    subscription_id: str, context: ContextDep, _admin: Admin
) -> WebhookSubscription:
    """One subscription (never its secret)."""
    _subscription_id(subscription_id)
    subscription = await store.get_subscription(context.pool, subscription_id)
    if subscription is None:
        raise _not_found("webhook subscription", subscription_id)
    return WebhookSubscription.of(subscription)


@router.patch(
    "/{subscription_id}",
    response_model=WebhookSubscription,
    summary="Change the URL, kinds, description, or enable/disable",
    operation_id="update_webhook_subscription",
    responses=problem_responses(*AUTHENTICATED, 404, 422),
)
async def update_subscription(
    subscription_id: str, body: WebhookUpdate, context: ContextDep, admin: Admin
) -> WebhookSubscription:
    """Change the URL, kinds or description, or enable or disable the subscription."""
    _subscription_id(subscription_id)
    changes = body.model_dump(include=body.model_fields_set)
    if body.url is not None:
        await _check_url(context, body.url)
    subscription = await store.update_subscription(
        context.pool, subscription_id, changes, now=context.clock()
    )
    if subscription is None:
        raise _not_found("webhook subscription", subscription_id)
    log.info(
        "webhooks.subscription_updated",
        subscription_id=subscription_id,
        fields=sorted(changes),
        key_id=admin.key_id,
    )
    return WebhookSubscription.of(subscription)


@router.delete(
    "/{subscription_id}",
    status_code=204,
    response_class=Response,
    summary="Delete a subscription with its deliveries and their log",
    operation_id="delete_webhook_subscription",
    responses=problem_responses(*AUTHENTICATED, 404),
)
async def delete_subscription(subscription_id: str, context: ContextDep, admin: Admin) -> Response:
    """Delete a subscription with its deliveries and their log."""
    _subscription_id(subscription_id)
    if not await store.delete_subscription(context.pool, subscription_id):
        raise _not_found("webhook subscription", subscription_id)
    log.info("webhooks.subscription_deleted", subscription_id=subscription_id, key_id=admin.key_id)
    return Response(status_code=204)


@router.post(
    "/{subscription_id}/rotate-secret",
    response_model=WebhookSecretRotated,
    summary="A new secret, shown once; the old one keeps signing for 24 hours",
    operation_id="rotate_webhook_secret",
    responses=problem_responses(*AUTHENTICATED, 404),
)
async def rotate_secret(
    subscription_id: str, context: ContextDep, admin: Admin
) -> WebhookSecretRotated:
    """A new signing secret, shown once; the old one keeps signing for 24 hours."""
    _subscription_id(subscription_id)
    now = context.clock()
    nonce = new_nonce()
    until = now + ROTATION_OVERLAP
    subscription = await store.rotate_nonce(
        context.pool, subscription_id, nonce, now=now, previous_until=until
    )
    if subscription is None:
        raise _not_found("webhook subscription", subscription_id)
    log.info("webhooks.secret_rotated", subscription_id=subscription_id, key_id=admin.key_id)
    return WebhookSecretRotated(
        id=subscription_id,
        secret=derive_secret(master_key(context.settings), subscription_id, nonce),
        previous_secret_valid_until=until,
    )


@router.get(
    "/{subscription_id}/deliveries",
    response_model=WebhookDeliveryPage,
    summary="The delivery log, newest first",
    operation_id="list_webhook_deliveries",
    responses=problem_responses(*AUTHENTICATED, 400, 404, 422),
)
async def list_deliveries(
    subscription_id: str,
    context: ContextDep,
    _admin: Admin,
    limit: Limit = 50,
    cursor: cursors.Cursor = None,
    state: Annotated[
        DeliveryState | None, Query(description="only deliveries in this state")
    ] = None,
) -> WebhookDeliveryPage:
    """The subscription's delivery log, newest first, a page at a time."""
    _subscription_id(subscription_id)
    size = _page_size(context, limit)
    before = _delivery_cursor(context, subscription_id, cursor)
    if await store.get_subscription(context.pool, subscription_id) is None:
        raise _not_found("webhook subscription", subscription_id)
    rows = await store.list_deliveries(
        context.pool, subscription_id, before_seq=before, limit=size + 1, state=state
    )
    more = len(rows) > size
    rows = rows[:size]
    return WebhookDeliveryPage(
        items=[WebhookDelivery.of(d) for d in rows],
        next_cursor=cursors.encode_cursor(
            context.settings, f"deliveries:{subscription_id}", [rows[-1].seq]
        )
        if more
        else None,
    )

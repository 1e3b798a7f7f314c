"""The admin's pages beside people: API keys and webhook subscriptions.

Thin forms over the same functions the REST API and the CLI call (``create_key``,
``list_keys``, ``revoke_key`` from ``touchpulse_shared.auth``; the webhook store's
``list_subscriptions`` and ``update_subscription``): one definition of what a key or a
subscription is, no SQL of its own here. The guards are the desk's: an admin session, and
the session's CSRF token on every POST.

A new key's secret is in the answer to its POST only (a page with ``Cache-Control:
no-store``, like every desk page), never in a redirect's URL, a log line or the list.
"""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import APIRouter, Query, Request
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from touchpulse_api.context import ApiContext, ContextDep
from touchpulse_api.desk.render import page, secure
from touchpulse_api.desk.routes import AdminSession, base_values, form_text, posted
from touchpulse_api.desk.sessions import Session
from touchpulse_api.webhooks import store as webhook_store
from touchpulse_shared.auth import InvalidKeySpec, Scope, create_key, list_keys, revoke_key

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/desk", include_in_schema=False)

# Subscriptions per page: a company has a handful; the pager is there for the odd many.
WEBHOOK_PAGE = 50


# --- API keys -------------------------------------------------------------------------------


async def _keys_page(
    context: ApiContext,
    session: Session,
    *,
    created: tuple[str, str] | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    keys = await list_keys(context.pool)
    return page(
        "keys.html",
        base_values(
            session,
            keys=keys,
            scopes=[s.value for s in Scope],
            created=created,
            error=error,
        ),
        status=status,
    )


def _list(form: FormData, name: str) -> list[str] | None:
    """A comma-separated field as a list; None when empty (no binding)."""
    items = [part.strip() for part in form_text(form, name).split(",") if part.strip()]
    return items or None


@router.get("/keys")
async def keys_page(context: ContextDep, session: AdminSession) -> Response:
    return await _keys_page(context, session)


@router.post("/keys")
async def keys_create(request: Request, context: ContextDep, session: AdminSession) -> Response:
    form = await posted(request, session)
    scopes = [s for s in form.getlist("scopes") if isinstance(s, str)]
    try:
        plaintext, record = await create_key(
            context.pool,
            name=form_text(form, "name"),
            scopes=scopes,
            source=form_text(form, "source") or None,
            touchpoints=_list(form, "touchpoints"),
            now=context.clock(),
        )
    except InvalidKeySpec as exc:
        return await _keys_page(context, session, error=exc.message, status=422)
    log.info("desk.key.created", by=session.person.login, key_id=record.key_id)
    # The page itself, not a redirect: the secret must not travel in a URL, and this is the
    # only answer that holds it.
    return await _keys_page(context, session, created=(record.key_id, plaintext), status=201)


@router.post("/keys/{key_id}/revoke")
async def keys_revoke(
    key_id: str, request: Request, context: ContextDep, session: AdminSession
) -> Response:
    await posted(request, session)
    if not await revoke_key(context.pool, key_id, now=context.clock()):
        return page("not_found.html", base_values(session, what="No such active key."), status=404)
    log.info("desk.key.revoked", by=session.person.login, key_id=key_id)
    return secure(RedirectResponse("/desk/keys", status_code=303))


# --- webhook subscriptions ------------------------------------------------------------------


@router.get("/webhooks")
async def webhooks_page(
    context: ContextDep,
    session: AdminSession,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    found = await webhook_store.list_subscriptions(
        context.pool, after=after or None, limit=WEBHOOK_PAGE + 1
    )
    shown = found[:WEBHOOK_PAGE]
    return page(
        "webhooks.html",
        base_values(
            session,
            subscriptions=shown,
            next_after=shown[-1].id if len(found) > WEBHOOK_PAGE else None,
        ),
    )


@router.post("/webhooks/{subscription_id}/{action}")
async def webhooks_switch(
    subscription_id: str,
    action: str,
    request: Request,
    context: ContextDep,
    session: AdminSession,
) -> Response:
    """Disable (deliveries stop; the reason says an admin did it) or enable again."""
    await posted(request, session)
    if action not in {"disable", "enable"}:
        return page("not_found.html", base_values(session, what="No such action."), status=404)
    updated = await webhook_store.update_subscription(
        context.pool, subscription_id, {"enabled": action == "enable"}, now=context.clock()
    )
    if updated is None:
        return page(
            "not_found.html", base_values(session, what="No such subscription."), status=404
        )
    log.info(f"desk.webhook.{action}d", by=session.person.login, subscription_id=subscription_id)
    return secure(RedirectResponse("/desk/webhooks", status_code=303))

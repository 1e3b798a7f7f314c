"""Webhooks for CRM integrations: admin-managed subscriptions, signed deliveries from the
outbox scoring writes, retries, a delivery log (see docs in each module)."""

from touchpulse_api.webhooks.dispatcher import WebhookDispatcher
from touchpulse_api.webhooks.routes import router

__all__ = ["WebhookDispatcher", "router"]

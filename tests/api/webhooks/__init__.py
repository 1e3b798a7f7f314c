"""Webhooks: subscriptions, signed deliveries from the outbox, retries, SSRF guard."""

-- Webhooks for CRM integrations, run by the api's dispatcher (touchpulse_api.webhooks).
--
-- No secret is stored: a subscription's signing secret is HMAC(master key, id:nonce), the
-- master key lives outside the database (TOUCHPULSE_WEBHOOK_SIGNING_KEY), so a copy of
-- these tables lets nobody forge a webhook.
--
-- The dispatcher consumes webhook_outbox (written by scoring with the intervention change)
-- by moving each row into one delivery per matching subscription and deleting it, in one
-- statement. A cursor over the outbox's bigserial would skip rows of a transaction that
-- took a lower id but committed after a higher one; claiming committed rows with SKIP
-- LOCKED and deleting them has no such gap.

CREATE TABLE webhook_subscription (
    id              text PRIMARY KEY CHECK (id ~ '^wh_[a-z2-7]{26}$'),
    url             text NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    kinds           text[] NOT NULL CHECK (
        cardinality(kinds) >= 1
        -- An array holding a NULL is never contained, so NULL kinds are refused too.
        AND kinds <@ ARRAY['intervention.opened', 'intervention.attached',
                           'intervention.acknowledged', 'intervention.resolved',
                           'intervention.expired']
    ),
    description     text CHECK (description IS NULL OR length(description) <= 256),
    -- Not secret on its own: the secret needs the master key as well.
    nonce           bytea NOT NULL CHECK (length(nonce) = 16),
    -- After a rotation the old secret keeps signing (a second signature) until
    -- previous_until, so receivers can switch without dropping a webhook.
    previous_nonce  bytea CHECK (previous_nonce IS NULL OR length(previous_nonce) = 16),
    previous_until  timestamptz,
    enabled         boolean NOT NULL DEFAULT true,
    disabled_reason text,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    CONSTRAINT webhook_subscription_previous_pair
        CHECK ((previous_nonce IS NULL) = (previous_until IS NULL))
);

-- One event for one subscription. The id is the Standard Webhooks `webhook-id`: the same
-- on every attempt and on a manual re-send, so receivers can drop duplicates.
CREATE TABLE webhook_delivery (
    id              text PRIMARY KEY,
    -- Log order and the pagination cursor; ids are random.
    seq             bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    subscription_id text NOT NULL REFERENCES webhook_subscription (id) ON DELETE CASCADE,
    outbox_id       bigint NOT NULL,
    kind            text NOT NULL,
    intervention_id text NOT NULL,
    -- Kept so that erasing a customer can delete the payloads that name them.
    customer_id     text NOT NULL,
    payload         jsonb NOT NULL,
    event_at        timestamptz NOT NULL,     -- the outbox row's time: the body's timestamp
    state           text NOT NULL CHECK (state IN ('pending', 'delivered', 'failed', 'forbidden')),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),  -- claims, ever
    failures        integer NOT NULL DEFAULT 0 CHECK (failures >= 0),  -- since (re)scheduled
    -- Due time while pending; while an attempt is in flight, the end of its lease.
    next_attempt_at timestamptz,
    give_up_at      timestamptz NOT NULL,
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL,
    delivered_at    timestamptz,
    UNIQUE (subscription_id, outbox_id),
    CONSTRAINT webhook_delivery_due_iff_pending
        CHECK ((state = 'pending') = (next_attempt_at IS NOT NULL))
);
-- The dispatcher's claim: pending deliveries by due time.
CREATE INDEX webhook_delivery_due ON webhook_delivery (next_attempt_at) WHERE state = 'pending';
-- The delivery log of one subscription, newest first.
CREATE INDEX webhook_delivery_log ON webhook_delivery (subscription_id, seq DESC);
CREATE INDEX webhook_delivery_customer ON webhook_delivery (customer_id);
CREATE INDEX webhook_delivery_created ON webhook_delivery (created_at);

-- Every attempt: the delivery log. An attempt cut short by a crash has no row (its claim
-- still counts in webhook_delivery.attempts).
CREATE TABLE webhook_attempt (
    delivery_id  text NOT NULL REFERENCES webhook_delivery (id) ON DELETE CASCADE,
    attempt      integer NOT NULL CHECK (attempt >= 1),
    attempted_at timestamptz NOT NULL,
    status       integer,                 -- NULL: no HTTP answer (timeout, refused, forbidden)
    error        text,
    duration_ms  double precision NOT NULL CHECK (duration_ms >= 0),
    PRIMARY KEY (delivery_id, attempt)
);

-- API keys of touchpoint systems (writing events) and CRM integrations (reading health,
-- working interventions). A key is shown once at creation; only the SHA-256 of its secret
-- is kept, so a copy of this table lets nobody call Touchpulse.

CREATE TABLE api_key (
    -- Not secret: the first part of the key, naming it in lists, logs and the CLI.
    key_id      text PRIMARY KEY CHECK (key_id ~ '^[a-z2-7]{12}$'),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    -- SHA-256 of the secret part. A fast hash suffices: the secret is 256 random bits.
    secret_hash bytea NOT NULL CHECK (length(secret_hash) = 32),
    scopes      text[] NOT NULL CHECK (
        cardinality(scopes) >= 1
        -- An array holding a NULL is never contained, so NULL scopes are refused too.
        AND scopes <@ ARRAY['events:write', 'health:read', 'interventions:write', 'admin']
    ),
    -- The emitting system an events:write key is bound to: it may write for no other.
    source      text CHECK (source IS NULL OR length(source) BETWEEN 1 AND 256),
    -- NULL: every touchpoint. An empty list would be a key that can write nothing.
    touchpoints text[] CHECK (touchpoints IS NULL OR cardinality(touchpoints) >= 1),
    created_at  timestamptz NOT NULL,
    -- Revoked keys stay (never deleted) so an id is never reused and "who could write
    -- when" can still be answered. No ordering CHECK against created_at: the two come from
    -- different hosts' clocks, and a revocation must never fail on clock skew.
    revoked_at  timestamptz,
    CONSTRAINT api_key_events_write_has_source
        CHECK (source IS NOT NULL OR NOT scopes @> ARRAY['events:write'])
);

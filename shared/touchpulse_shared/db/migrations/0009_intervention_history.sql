-- The intervention workflow with actors (issue 15): who did what to a case, and the moves
-- people make besides acknowledging and resolving it.
--
-- intervention gains the fields of the new moves and a version: every move a person or an
-- API key makes adds one; scoring's moves never do. The api checks it for optimistic
-- concurrency (a move meant for version N is refused once the case is past N), and
-- scoring's upsert keeps the people's fields whenever its copy is older than the row's.

ALTER TABLE intervention
    ADD COLUMN outcome_category text
        CHECK (outcome_category IS NULL OR outcome_category ~ '^[a-z][a-z0-9_]{0,63}$'),
    ADD COLUMN snoozed_until timestamptz,
    ADD COLUMN version integer NOT NULL DEFAULT 0 CHECK (version >= 0);

-- The history: one row per move, written in the mover's transaction with the row, its
-- webhook event and its interventions.v1 record (touchpulse_scoring.intervention_table is
-- the one module that writes it). Rows leave with their intervention (erasure deletes the
-- interventions of a customer; the cascade takes their history along).
CREATE TABLE intervention_action (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    intervention_id text NOT NULL REFERENCES intervention (intervention_id) ON DELETE CASCADE,
    customer_id     text NOT NULL,
    kind            text NOT NULL CHECK (kind ~ '^intervention\.[a-z_]{1,32}$'),
    at              timestamptz NOT NULL,
    -- The intervention's version after the move (scoring's moves repeat the current one).
    version         integer NOT NULL CHECK (version >= 0),
    actor_kind      text NOT NULL CHECK (actor_kind IN ('person', 'api_key', 'system')),
    actor_id        text NOT NULL CHECK (length(actor_id) BETWEEN 1 AND 256),
    actor_name      text NOT NULL CHECK (length(actor_name) BETWEEN 1 AND 256),
    -- The move's own facts: a note's text, the assignee before and after, a snooze's end,
    -- a resolution's category and health. A flat object, bounded by the api's limits.
    detail          jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(detail) = 'object')
);
-- A case's history in order (the API's read), and "who moved it past version N" (a 409).
CREATE INDEX intervention_action_case ON intervention_action (intervention_id, id);

-- The new moves may be subscribed to like the others.
ALTER TABLE webhook_subscription DROP CONSTRAINT webhook_subscription_kinds_check;
ALTER TABLE webhook_subscription ADD CONSTRAINT webhook_subscription_kinds_check CHECK (
    cardinality(kinds) >= 1
    AND kinds <@ ARRAY['intervention.opened', 'intervention.attached',
                       'intervention.acknowledged', 'intervention.noted',
                       'intervention.snoozed', 'intervention.reassigned',
                       'intervention.resolved', 'intervention.expired']
);

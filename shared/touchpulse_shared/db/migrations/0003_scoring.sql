-- Scoring state. Everything here is written by the scoring service in one transaction per
-- batch (or per deadline sweep), together with processed_event and consumer_offset, so a
-- crash at any point leaves either all of a batch's effect or none of it.

-- One event (or one missed deadline) judged against one promise. outcome_key identifies
-- what a later outcome supersedes (a late delivery replaces the breach-by-absence).
CREATE TABLE outcome (
    customer_id       text NOT NULL,
    outcome_key       text NOT NULL,
    promise_id        text NOT NULL,
    catalogue_version text NOT NULL,
    touchpoint        text NOT NULL,
    occurred_at       timestamptz NOT NULL,
    expected          jsonb NOT NULL,            -- {"op", "target", "unit"}: the promise
    actual            jsonb NOT NULL,            -- number, boolean, or null: never came
    gap               double precision NOT NULL CHECK (gap >= 0),
    met               boolean NOT NULL,
    score             double precision NOT NULL CHECK (score BETWEEN 0 AND 1),
    weight            double precision NOT NULL CHECK (weight >= 0),
    severity          text NOT NULL,
    event_ids         text[] NOT NULL,
    recorded_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, outcome_key)
);
CREATE INDEX outcome_customer_time ON outcome (customer_id, occurred_at DESC);
-- Organisation-wide gap reports scan by time and promise.
CREATE INDEX outcome_time_promise ON outcome (occurred_at, promise_id);

-- Per customer and touchpoint, H = s / w with contributions scaled to t_ref (see the
-- domain's health module): O(1) to update, independent of the order events arrive in.
CREATE TABLE touchpoint_health (
    customer_id text NOT NULL,
    touchpoint  text NOT NULL,
    s           double precision NOT NULL,
    w           double precision NOT NULL,
    t_ref       timestamptz,             -- NULL only while no outcome counts
    outcomes    integer NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (customer_id, touchpoint)
) WITH (fillfactor = 70);  -- rewritten on every event: leave room for HOT updates

CREATE TABLE journey_health (
    customer_id        text PRIMARY KEY,
    score              double precision CHECK (score BETWEEN 0 AND 100),  -- NULL: no outcomes
    band               text,
    weakest_touchpoint text,
    as_of              timestamptz NOT NULL,   -- newest event time applied: the freshness
    updated_at         timestamptz NOT NULL
) WITH (fillfactor = 70);

-- Every change of a customer's journey health, for trends and "did the action help".
CREATE TABLE journey_health_history (
    customer_id text NOT NULL,
    at          timestamptz NOT NULL,
    score       double precision,
    band        text
);
CREATE INDEX journey_health_history_customer ON journey_health_history (customer_id, at DESC);

-- Promises kept by an event that must arrive: open until fulfilled or expired.
CREATE TABLE deadline (
    customer_id       text NOT NULL,
    promise_id        text NOT NULL,
    journey_key       text NOT NULL,
    opened_at         timestamptz NOT NULL,
    due_at            timestamptz NOT NULL,
    opening_event_ids text[] NOT NULL,
    catalogue_version text NOT NULL,
    -- The terms in force when the clock started: a catalogue reload does not move them.
    touchpoint        text NOT NULL,
    tolerance_hours   double precision NOT NULL,
    weight            double precision NOT NULL,
    breach_weight     double precision NOT NULL,
    severity          text NOT NULL,
    state             text NOT NULL CHECK (state IN ('open', 'expired', 'fulfilled')),
    closed_at         timestamptz,
    PRIMARY KEY (customer_id, promise_id, journey_key)
);
-- The timer's only query: open deadlines by due time.
CREATE INDEX deadline_due ON deadline (due_at) WHERE state = 'open';

CREATE TABLE intervention (
    intervention_id   text PRIMARY KEY,
    customer_id       text NOT NULL,
    state             text NOT NULL
                      CHECK (state IN ('open', 'acknowledged', 'resolved', 'expired')),
    triggers          jsonb NOT NULL,
    gaps              jsonb NOT NULL,
    actions           text[] NOT NULL,
    priority          double precision NOT NULL CHECK (priority >= 0),
    threshold         double precision NOT NULL,
    health_at_open    double precision,
    opened_at         timestamptz NOT NULL,
    acknowledged_at   timestamptz,
    assignee          text,
    resolved_at       timestamptz,
    outcome_note      text,
    health_at_resolve double precision,
    closed_at         timestamptz,
    follow_up_at      timestamptz,
    follow_up_health  double precision,
    updated_at        timestamptz NOT NULL
);
-- At most one open intervention per customer, whatever the application does.
CREATE UNIQUE INDEX intervention_one_open ON intervention (customer_id)
    WHERE state IN ('open', 'acknowledged');
CREATE INDEX intervention_customer ON intervention (customer_id, opened_at DESC);
CREATE INDEX intervention_queue ON intervention (state, priority DESC);

-- Records to publish to Kafka (health changes, intervention events, dead letters), written
-- with the state they describe and sent by a publisher after commit: a crash between the
-- commit and the send cannot lose them, only delay them.
CREATE TABLE kafka_outbox (
    id           bigserial PRIMARY KEY,
    topic        text NOT NULL,
    key          bytea,
    value        bytea,                -- NULL: a tombstone on a compacted topic
    headers      jsonb NOT NULL DEFAULT '[]',
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Intervention lifecycle events for the api's webhook dispatcher, in the same transaction.
CREATE TABLE webhook_outbox (
    id              bigserial PRIMARY KEY,
    kind            text NOT NULL,
    intervention_id text NOT NULL,
    customer_id     text NOT NULL,
    payload         jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

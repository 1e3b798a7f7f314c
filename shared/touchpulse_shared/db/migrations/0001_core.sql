-- The foundation every service builds on: customer profiles (written by CRMs through the
-- api), the dedupe ledger and the consumer offsets that make scoring's effect exactly once.

CREATE TABLE customer_profile (
    customer_id    text PRIMARY KEY CHECK (length(customer_id) BETWEEN 1 AND 128),
    segment        text NOT NULL DEFAULT 'standard',
    customer_since date,
    value          double precision NOT NULL DEFAULT 1.0 CHECK (value >= 0),
    reach          double precision NOT NULL DEFAULT 0.0 CHECK (reach >= 0),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- (source, event_id) identifies an event; a row here means its effect is in the state.
-- Written in the same transaction as that effect and the offsets below.
CREATE TABLE processed_event (
    source      text NOT NULL,
    event_id    text NOT NULL,
    customer_id text NOT NULL,
    topic       text NOT NULL,
    partition   integer NOT NULL,
    "offset"    bigint NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, event_id)
);
CREATE INDEX processed_event_customer ON processed_event (customer_id);

-- The next offset to read per group and partition, committed with the state it produced:
-- on assignment a consumer seeks here, so Kafka's own committed offset is only a hint.
CREATE TABLE consumer_offset (
    consumer_group text NOT NULL,
    topic          text NOT NULL,
    partition      integer NOT NULL CHECK (partition >= 0),
    next_offset    bigint NOT NULL CHECK (next_offset >= 0),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
) WITH (fillfactor = 70);  -- updated every batch: room for HOT updates

-- Customers erased on request. Their events already on the topic were received before
-- erased_at: scoring (live or replaying) skips those, so an erased customer stays erased;
-- events received afterwards are a new relationship and are scored as usual.
CREATE TABLE erased_customer (
    customer_id text PRIMARY KEY,
    erased_at   timestamptz NOT NULL
);

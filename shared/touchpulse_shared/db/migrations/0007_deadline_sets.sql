-- Deadline outcomes become a function of the set of events, not of their arrival order
-- (docs/scoring.md, "Deadlines in any order").

-- The earliest fulfilling event seen for a deadline, so that an earlier opening arriving
-- later can re-judge the same journey with it.
ALTER TABLE deadline ADD COLUMN fulfilled_by text;

-- A deadline outcome remembers the opening it was judged from: of two outcomes under one
-- key, the one from the earlier opening stands, whichever was judged first.
ALTER TABLE outcome ADD COLUMN opened_at timestamptz;

-- A fulfilling event that arrived before its opening event: remembered per customer,
-- promise and journey (the earliest one), and used the moment the opening arrives.
-- Lifecycle: deleted when the opening arrives, or by erasure.
CREATE TABLE early_fulfilment (
    customer_id text NOT NULL,
    promise_id  text NOT NULL,
    journey_key text NOT NULL,
    occurred_at timestamptz NOT NULL,
    event_ref   text NOT NULL,
    PRIMARY KEY (customer_id, promise_id, journey_key)
);

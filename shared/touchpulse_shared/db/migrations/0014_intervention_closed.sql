-- touchpulse: no-transaction
-- Scoring reads each batch customer's newest closed case (the reopen guard's memory) as the
-- first row of this index; before it, every closed case of the customer was read and
-- sorted. Built concurrently: scoring's and the api's writes go on meanwhile.
CREATE INDEX CONCURRENTLY IF NOT EXISTS intervention_closed
    ON intervention (customer_id, closed_at DESC, intervention_id DESC)
    WHERE state IN ('resolved', 'expired');

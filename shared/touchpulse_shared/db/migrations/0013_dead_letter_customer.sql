-- Erasure reaches the dead letters the api lists (docs/api.md, "Erasure"): each row keeps
-- the customer its record is about (the decoded event's, else the value's `customer_id`,
-- else the key; NULL when none is a valid customer id), and the customer erasure deletes
-- them by it. The detail never quotes that id (scoring replaces it), so the column is the
-- only place a dead letter names its customer.
ALTER TABLE dead_letter ADD COLUMN IF NOT EXISTS customer_id text;
-- Erasure's delete: a few rows per customer at most, most rows naming none.
CREATE INDEX IF NOT EXISTS dead_letter_customer
    ON dead_letter (customer_id) WHERE customer_id IS NOT NULL;

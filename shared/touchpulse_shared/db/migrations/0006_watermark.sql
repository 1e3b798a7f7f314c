-- How far in time each partition has been applied: the newest record timestamp applied,
-- or the time the consumer last found the partition at its end. The deadline sweep only
-- declares "the event never came" for a deadline once the customer's partition is applied
-- past its due time; otherwise a backlog would make on-time deliveries look missed.
ALTER TABLE consumer_offset ADD COLUMN watermark timestamptz;

-- touchpulse: no-transaction
-- Lifecycle: what scoring's pruning loop (touchpulse_scoring.lifecycle) needs to remove old
-- rows in short transactions instead of letting tables grow forever (docs/scoring.md,
-- "Lifecycle"). Outside a transaction, statement by statement, so that the indexes on the
-- big tables are built without blocking writes; every statement is safe to run again after
-- a crash midway (the DO blocks look before they change anything).

-- Where each resumable pruning task stands (a time or a key to go on from), so a restart
-- or another instance carries on instead of starting over.
CREATE TABLE IF NOT EXISTS lifecycle_mark (
    task             text PRIMARY KEY,
    at_position      timestamptz,
    key_position     text,
    pass_finished_at timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- The dedupe window is pruned oldest first along this index (a row per event: the
-- unique key (source, event_id) rules out partitions by time, see docs/scoring.md).
CREATE INDEX CONCURRENTLY IF NOT EXISTS processed_event_processed_at
    ON processed_event (processed_at);

-- journey_health_history becomes a table partitioned by month (range on `at`), so that the
-- oldest history leaves by dropping whole partitions. The rows already there stay where
-- they are: the existing table becomes the partition of everything before `legacy_until`
-- (two months from now, month-aligned, so rows written meanwhile still fit it), proved by
-- a CHECK constraint that is validated without blocking writes, so attaching it needs no
-- scan under a lock.
INSERT INTO lifecycle_mark (task, at_position)
VALUES ('journey_health_history.legacy_until',
        date_trunc('month', now(), 'UTC') + interval '2 months')
ON CONFLICT (task) DO NOTHING;

DO $$
DECLARE
    until timestamptz := (SELECT at_position FROM lifecycle_mark
                          WHERE task = 'journey_health_history.legacy_until');
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = 'journey_health_history'::regclass) = 'r'
       AND NOT EXISTS (SELECT FROM pg_constraint
                       WHERE conname = 'journey_health_history_legacy_bound') THEN
        -- NOT VALID: a brief lock and no scan; the next statement validates.
        EXECUTE format('ALTER TABLE journey_health_history'
                       ' ADD CONSTRAINT journey_health_history_legacy_bound'
                       ' CHECK (at < %L) NOT VALID', until);
    END IF;
END $$;

DO $$
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = 'journey_health_history'::regclass) = 'r'
       AND EXISTS (SELECT FROM pg_constraint
                   WHERE conname = 'journey_health_history_legacy_bound' AND NOT convalidated)
    THEN
        -- A scan under SHARE UPDATE EXCLUSIVE: scoring keeps writing meanwhile.
        ALTER TABLE journey_health_history
            VALIDATE CONSTRAINT journey_health_history_legacy_bound;
    END IF;
END $$;

DO $$
DECLARE
    until timestamptz := (SELECT at_position FROM lifecycle_mark
                          WHERE task = 'journey_health_history.legacy_until');
    month timestamptz;
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = 'journey_health_history'::regclass) <> 'r' THEN
        RETURN;  -- converted already
    END IF;
    ALTER TABLE journey_health_history RENAME TO journey_health_history_legacy;
    ALTER INDEX journey_health_history_customer RENAME TO journey_health_history_legacy_customer;
    CREATE TABLE journey_health_history (
        customer_id text NOT NULL,
        at          timestamptz NOT NULL,
        score       double precision,
        band        text
    ) PARTITION BY RANGE (at);
    -- The api's trend and scoring's reopen guard read by customer and time.
    CREATE INDEX journey_health_history_customer
        ON journey_health_history (customer_id, at DESC);
    -- Attached with its matching index (no build); the CHECK above proves the bound.
    EXECUTE format('ALTER TABLE journey_health_history ATTACH PARTITION'
                   ' journey_health_history_legacy FOR VALUES FROM (MINVALUE) TO (%L)', until);
    -- Downsampling walks history by time. ON ONLY: the old table's index is built
    -- concurrently below and attached then; new partitions get theirs when created.
    CREATE INDEX journey_health_history_at ON ONLY journey_health_history (at);
    FOR i IN 0..1 LOOP
        month := until + make_interval(months => i);
        EXECUTE format('CREATE TABLE %I PARTITION OF journey_health_history'
                       ' FOR VALUES FROM (%L) TO (%L)',
                       'journey_health_history_p' || to_char(month AT TIME ZONE 'UTC', 'YYYYMM'),
                       month, month + interval '1 month');
    END LOOP;
    -- A row no monthly partition takes (the pruning loop stopped for months, a clock far
    -- off) lands here rather than failing scoring's batch; the loop moves such rows into
    -- their month's partition when it creates it.
    CREATE TABLE journey_health_history_default PARTITION OF journey_health_history DEFAULT;
END $$;

CREATE INDEX CONCURRENTLY IF NOT EXISTS journey_health_history_legacy_at
    ON journey_health_history_legacy (at);

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_inherits
                   WHERE inhrelid = 'journey_health_history_legacy_at'::regclass) THEN
        ALTER INDEX journey_health_history_at
            ATTACH PARTITION journey_health_history_legacy_at;
    END IF;
END $$;

-- Feedback for touchpoint owners (docs/api.md, "Sources: quality and dead letters"): the dead
-- letters of the events topic kept for the api to list, and per-source counters by hour.
-- Both are written by scoring in its batch transaction (one statement per batch), edge
-- rejections by ingest every few seconds; the lifecycle loop removes what is past its
-- retention (TOUCHPULSE_SOURCE_DEAD_LETTER_KEEP_DAYS, TOUCHPULSE_SOURCE_QUALITY_KEEP_DAYS).

-- One row per dead-lettered record, keyed by where it was read: a batch applied twice (it
-- cannot be, the offsets are stored in the same transaction) would still store it once.
-- `source`, `event_id` and `event_type` are what the record names (the decoded event, else
-- ingest's ce_ headers, else the value's fields), NULL where it names nothing usable: such a
-- dead letter is listed to admin keys only.
CREATE TABLE IF NOT EXISTS dead_letter (
    topic            text        NOT NULL,
    partition        integer     NOT NULL,
    "offset"         bigint      NOT NULL,
    source           text,
    reason           text        NOT NULL,
    detail           text        NOT NULL,
    event_id         text,
    event_type       text,
    dead_lettered_at timestamptz NOT NULL,
    PRIMARY KEY (topic, partition, "offset")
);
-- Listing, newest first, by source or for all (the api's keyset order), and retention.
CREATE INDEX IF NOT EXISTS dead_letter_source_at
    ON dead_letter (source, dead_lettered_at, topic, partition, "offset");
CREATE INDEX IF NOT EXISTS dead_letter_at
    ON dead_letter (dead_lettered_at, topic, partition, "offset");

-- Counters per source and UTC hour (of the events' receipt by ingest). `kind`: accepted
-- (applied by scoring), duplicate (a retry of an event already applied), rejected (refused
-- at the edge, `reason` the problem code), dead_lettered (`reason` the dead-letter reason),
-- unmatched (accepted, but no promise judges, opens or fulfils its type: `reason` is the
-- event type). `shard` keeps writers off each other's rows: scoring writes under the Kafka
-- partition (one member owns a partition, so two batch transactions never wait on one
-- counter row), ingest under -1. Readers sum over shards.
CREATE TABLE IF NOT EXISTS source_quality (
    source        text        NOT NULL,
    hour          timestamptz NOT NULL CHECK (date_trunc('hour', hour, 'UTC') = hour),
    kind          text        NOT NULL
                  CHECK (kind IN ('accepted', 'duplicate', 'rejected', 'dead_lettered',
                                  'unmatched')),
    reason        text        NOT NULL DEFAULT '',
    shard         integer     NOT NULL,
    events        bigint      NOT NULL CHECK (events >= 0),
    -- accepted rows: the newest receipt time among their events ("last event seen")
    last_event_at timestamptz,
    PRIMARY KEY (source, hour, kind, reason, shard)
);
CREATE INDEX IF NOT EXISTS source_quality_hour ON source_quality (hour);

-- Every promise catalogue that was ever in effect, one row per period of effect: what it
-- said (the file's text), its sha256, and when scoring started and stopped judging by it.
-- Scoring records it when it loads or reloads a catalogue (touchpulse_scoring.store
-- record_catalogue); outcomes name the catalogue's version string, so the terms an outcome
-- was judged by can be read back here.
--
-- A period, not a hash, is the row's identity: a catalogue edited A -> B -> A (a rollback)
-- is three periods. The content hash tells versions apart when an edit forgot to change
-- the version string (recorded, flagged by scoring, never merged).
CREATE TABLE catalogue_version (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version             text NOT NULL,
    content_hash        text NOT NULL CHECK (content_hash ~ '^[0-9a-f]{64}$'),
    content             text NOT NULL,
    came_into_effect    timestamptz NOT NULL,
    went_out_of_effect  timestamptz,
    CHECK (went_out_of_effect IS NULL OR went_out_of_effect >= came_into_effect)
);

-- At most one catalogue in effect: two scoring members recording at once cannot both
-- leave a row open (they also serialise on an advisory lock; this is the guarantee).
CREATE UNIQUE INDEX catalogue_version_current ON catalogue_version ((true))
    WHERE went_out_of_effect IS NULL;

-- The list, newest first, and "the terms of version X" (newest period of that version).
CREATE INDEX catalogue_version_by_time ON catalogue_version (came_into_effect DESC, id DESC);
CREATE INDEX catalogue_version_by_version ON catalogue_version (version, came_into_effect DESC);

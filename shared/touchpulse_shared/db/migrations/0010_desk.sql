-- touchpulse: no-transaction
-- The desk (docs/desk.md): the people who sign in to act on customers, their server-side
-- sessions, the failed sign-ins that throttle guessing, and the indexes the queue filters
-- on. Outside a transaction so the intervention indexes build without blocking scoring's
-- writes; every statement is safe to run again after a crash midway.

-- People, apart from API keys. `login` is kept lower-case so one address cannot hold two
-- accounts differing in case. Only an Argon2id hash (PHC string, parameters included) is
-- stored; `disabled_at` set refuses sign-in and every session at once.
CREATE TABLE IF NOT EXISTS desk_person (
    person_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    login         text NOT NULL UNIQUE
                  CHECK (login = lower(login) AND length(login) BETWEEN 1 AND 254),
    display_name  text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
    role          text NOT NULL CHECK (role IN ('agent', 'lead', 'admin')),
    password_hash text NOT NULL,
    disabled_at   timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- A session is a random token the browser holds in a cookie; only its SHA-256 is stored,
-- so a copy of this table signs nobody in. The CSRF token is tied to the session
-- (synchronizer token). Refused once revoked, idle past the idle limit (last_seen_at) or
-- past expires_at (the absolute limit set at sign-in).
CREATE TABLE IF NOT EXISTS desk_session (
    token_hash   bytea PRIMARY KEY,
    person_id    bigint NOT NULL REFERENCES desk_person (person_id) ON DELETE CASCADE,
    csrf_token   text NOT NULL,
    created_at   timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz
);
CREATE INDEX CONCURRENTLY IF NOT EXISTS desk_session_person ON desk_session (person_id);

-- Failed sign-ins, one row each, keyed 'login:<login>' or 'address:<ip>': counted over a
-- window to throttle per account and per address. In the database rather than in the
-- process (touchpulse_shared.ratelimit) so every api replica and a restart see the same
-- count; a success clears the account's rows.
CREATE TABLE IF NOT EXISTS desk_signin_failure (
    throttle_key text NOT NULL,
    failed_at    timestamptz NOT NULL
);
CREATE INDEX CONCURRENTLY IF NOT EXISTS desk_signin_failure_key
    ON desk_signin_failure (throttle_key, failed_at);

-- The queue: active cases by priority (every filter walks this), by assignee (mine), by
-- touchpoint of their gaps (jsonb containment), and the newest change (the live feed's
-- cursor).
CREATE INDEX CONCURRENTLY IF NOT EXISTS desk_intervention_active
    ON intervention (priority DESC, intervention_id DESC)
    WHERE state IN ('open', 'acknowledged');
CREATE INDEX CONCURRENTLY IF NOT EXISTS desk_intervention_assignee
    ON intervention (assignee, priority DESC)
    WHERE state IN ('open', 'acknowledged');
CREATE INDEX CONCURRENTLY IF NOT EXISTS desk_intervention_gaps
    ON intervention USING gin (gaps jsonb_path_ops)
    WHERE state IN ('open', 'acknowledged');
CREATE INDEX CONCURRENTLY IF NOT EXISTS desk_intervention_updated
    ON intervention (updated_at);
CREATE INDEX CONCURRENTLY IF NOT EXISTS desk_customer_segment
    ON customer_profile (segment);

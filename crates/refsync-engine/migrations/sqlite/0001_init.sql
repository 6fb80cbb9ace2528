-- refsync-engine store schema v1 (SQLite). Times are UTC RFC 3339 text with microseconds
-- ('2026-01-31T12:00:00.000000Z'): fixed width, so text order is time order.

-- The inbox: every verified webhook delivery, raw, deduplicated per connector instance.
CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    instance TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    body BLOB NOT NULL,
    headers TEXT NOT NULL DEFAULT '{}',
    received_at TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('received', 'processed', 'dead')),
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    lease_owner TEXT,
    lease_until TEXT,
    last_error TEXT,
    updated_at TEXT NOT NULL,
    CONSTRAINT deliveries_dedup_unique UNIQUE (instance, dedup_key)
);
CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at);
CREATE INDEX deliveries_received ON deliveries (received_at);

-- The outbox: qualify calls and pushes; one job per idempotency key, forever.
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    payload TEXT NOT NULL DEFAULT 'null',
    state TEXT NOT NULL CHECK (state IN ('pending', 'leased', 'done', 'dead')),
    attempts BIGINT NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    -- Where the maximum age counts from: created_at, reset by a replay.
    age_base_at TEXT NOT NULL,
    next_attempt_at TEXT NOT NULL,
    lease_owner TEXT,
    lease_until TEXT,
    last_error TEXT,
    completed_at TEXT,
    CONSTRAINT jobs_idempotency_key_unique UNIQUE (idempotency_key)
);
CREATE INDEX jobs_due ON jobs (state, next_attempt_at);
CREATE INDEX jobs_lease ON jobs (state, lease_until);

-- Referral key <-> CRM object, per connector instance.
CREATE TABLE links (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    referral_key TEXT NOT NULL,
    instance TEXT NOT NULL,
    object_kind TEXT NOT NULL,
    object_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    CONSTRAINT links_object_unique UNIQUE (instance, object_kind, object_id)
);
CREATE INDEX links_referral ON links (referral_key);

-- The audit timeline of each referral.
CREATE TABLE timeline (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    referral_key TEXT NOT NULL,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT 'null'
);
CREATE INDEX timeline_referral ON timeline (referral_key, at, id);

-- OAuth tokens (opaque to the store).
CREATE TABLE oauth_tokens (
    token_key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- Quota-aware pacing (proxy/keys/pacing.py): limits learned per (scope, model) and the usage counted
-- against them. A scope is a key id ("k:k_…") or a project ("p:<provider>:<name>"); no secret here.

-- learned limits (configured ones live in the config file): the latest value wins
CREATE TABLE IF NOT EXISTS quota_limits (
    scope      TEXT NOT NULL,
    model      TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('rpm', 'tpm', 'rpd', 'tpd')),
    value      INTEGER NOT NULL,
    source     TEXT NOT NULL,
    learned_at REAL NOT NULL,
    PRIMARY KEY (scope, model, kind)
);

-- the sliding minute: one row per admitted request (or token charge, or seed after a 429)
CREATE TABLE IF NOT EXISTS quota_hits (
    scope    TEXT NOT NULL,
    model    TEXT NOT NULL,
    at       REAL NOT NULL,
    requests INTEGER NOT NULL,
    tokens   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS quota_hits_scope_at ON quota_hits(scope, model, at);
-- the sums of a scope's quota_hits rows (kept with them: an admission never sums rows)
CREATE TABLE IF NOT EXISTS quota_minute (
    scope    TEXT NOT NULL,
    model    TEXT NOT NULL,
    requests INTEGER NOT NULL,
    tokens   INTEGER NOT NULL,
    PRIMARY KEY (scope, model)
);

-- the day window: usage since the daily reset (day = the reset's epoch that started it)
CREATE TABLE IF NOT EXISTS quota_day (
    scope    TEXT NOT NULL,
    model    TEXT NOT NULL,
    day      REAL NOT NULL,
    requests INTEGER NOT NULL,
    tokens   INTEGER NOT NULL,
    PRIMARY KEY (scope, model, day)
);

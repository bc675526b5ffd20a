-- Key state (no secrets, ever: a key is known by its fingerprint id), per-model cooldowns, audit log.
CREATE TABLE IF NOT EXISTS keys (
    id               TEXT PRIMARY KEY,            -- k_<10 hex of sha256(provider NUL secret)>
    provider         TEXT NOT NULL,
    label            TEXT,
    config_weight    REAL NOT NULL DEFAULT 1.0,   -- from config, refreshed on every sync
    weight_override  REAL,                        -- set by an operator; NULL = use config_weight
    enabled          INTEGER NOT NULL DEFAULT 1,  -- operator switch
    disabled_reason  TEXT,
    status           TEXT NOT NULL DEFAULT 'ok' CHECK (status IN ('ok', 'invalid')),  -- automatic
    status_reason    TEXT,
    status_at        REAL,
    retired          INTEGER NOT NULL DEFAULT 0,  -- no longer in config; history kept
    retired_at       REAL,
    circuit          TEXT NOT NULL DEFAULT 'closed' CHECK (circuit IN ('closed', 'open', 'half_open')),
    open_until       REAL,
    failures         INTEGER NOT NULL DEFAULT 0,  -- consecutive transient failures
    last_failure_at  REAL,
    probe_at         REAL,                        -- when the half-open probe was claimed
    health           REAL NOT NULL DEFAULT 1.0,
    health_at        REAL NOT NULL DEFAULT 0,
    requests         INTEGER NOT NULL DEFAULT 0,
    errors           INTEGER NOT NULL DEFAULT 0,
    latency_ms_total REAL NOT NULL DEFAULT 0,
    latency_samples  INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    last_error_at    REAL,
    last_used_at     REAL,
    last_probe_at    REAL,
    created_at       REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS keys_provider ON keys(provider);

CREATE TABLE IF NOT EXISTS key_cooldowns (
    key_id TEXT NOT NULL REFERENCES keys(id) ON DELETE CASCADE,
    model  TEXT NOT NULL,
    until  REAL NOT NULL,
    PRIMARY KEY (key_id, model)
);

CREATE TABLE IF NOT EXISTS audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      REAL NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    key_id  TEXT,
    before  TEXT,                                 -- JSON
    after   TEXT                                  -- JSON
);
CREATE INDEX IF NOT EXISTS audit_at ON audit(at);

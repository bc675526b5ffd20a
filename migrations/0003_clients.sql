-- Client keys: who may call the data plane. No client secret is ever stored: a key is its SHA-256 (hex)
-- plus a display hint (kr-AbCd…xyz); the key itself is shown once, when created or rotated.
CREATE TABLE IF NOT EXISTS clients (
    id             TEXT PRIMARY KEY,             -- c_<12 hex>; a config client's id derives from its name
    name           TEXT NOT NULL UNIQUE,
    team           TEXT,
    models         TEXT NOT NULL DEFAULT '[]',   -- JSON list of globs; empty = every model
    rpm            INTEGER,
    tpm            INTEGER,
    max_concurrent INTEGER,
    model_limits   TEXT NOT NULL DEFAULT '{}',   -- JSON {"<glob>": {"rpm": N, "tpm": N}}
    budget_usd     REAL,
    budget_period  TEXT NOT NULL DEFAULT 'month' CHECK (budget_period IN ('day', 'week', 'month')),
    token_quota    INTEGER,
    quota_period   TEXT NOT NULL DEFAULT 'month' CHECK (quota_period IN ('day', 'week', 'month')),
    expires_at     REAL,                         -- epoch seconds; NULL = never
    enabled        INTEGER NOT NULL DEFAULT 1,
    metadata       TEXT NOT NULL DEFAULT '{}',   -- JSON object
    source         TEXT NOT NULL DEFAULT 'runtime' CHECK (source IN ('config', 'runtime')),
    key_hint       TEXT,
    created_at     REAL NOT NULL,
    updated_at     REAL NOT NULL,
    last_used_at   REAL,
    revoked_at     REAL
);

-- The hashes that authenticate a client: one live key, plus the previous one during a rotation's grace.
CREATE TABLE IF NOT EXISTS client_keys (
    key_hash   TEXT PRIMARY KEY,                 -- sha256 hex of the key
    client_id  TEXT NOT NULL REFERENCES clients(id) ON DELETE CASCADE,
    created_at REAL NOT NULL,
    expires_at REAL                              -- NULL = current key; else the end of a rotation grace
);
CREATE INDEX IF NOT EXISTS client_keys_client ON client_keys(client_id);

-- Bumped by every change to clients or client_keys: workers reload their view when it moves.
CREATE TABLE IF NOT EXISTS client_changes (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO client_changes(id, version) VALUES (1, 0) ON CONFLICT(id) DO NOTHING;

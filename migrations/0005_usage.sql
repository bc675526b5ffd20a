-- Usage: one raw row per data-plane request (kept accounting.retention_days), and daily rollups per
-- (day in accounting.timezone, client, model), kept for ever. No secrets: clients and keys by id only.
CREATE TABLE IF NOT EXISTS usage_records (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    at                REAL NOT NULL,               -- epoch seconds when the request started
    day               TEXT NOT NULL,               -- its local date (accounting.timezone), YYYY-MM-DD
    request_id        TEXT NOT NULL,
    endpoint          TEXT NOT NULL,
    client_id         TEXT NOT NULL DEFAULT '',    -- '' = anonymous (open gateway)
    client_name       TEXT,
    team              TEXT,
    model             TEXT NOT NULL DEFAULT '',    -- as the client asked ('' = none, e.g. a 400)
    provider          TEXT,                        -- the route that answered
    upstream_model    TEXT,
    key_id            TEXT,                        -- upstream key id (k_...), never the secret
    status            INTEGER NOT NULL,
    outcome           TEXT,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cached_tokens     INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens  INTEGER NOT NULL DEFAULT 0,
    cost_usd          REAL,                        -- NULL = unpriced (never a silent 0)
    latency_ms        REAL NOT NULL,
    first_byte_ms     REAL,
    stream            INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS usage_records_at ON usage_records(at);
CREATE INDEX IF NOT EXISTS usage_records_client_at ON usage_records(client_id, at);

CREATE TABLE IF NOT EXISTS usage_daily (
    day               TEXT NOT NULL,
    client_id         TEXT NOT NULL DEFAULT '',
    model             TEXT NOT NULL DEFAULT '',
    client_name       TEXT,
    team              TEXT,
    requests          INTEGER NOT NULL DEFAULT 0,
    errors            INTEGER NOT NULL DEFAULT 0,  -- status >= 400
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cached_tokens     INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens  INTEGER NOT NULL DEFAULT 0,
    cost_usd          REAL NOT NULL DEFAULT 0,     -- sum over the priced requests
    unpriced_requests INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, client_id, model)
);

-- Per key and model history (proxy/keys/history.py): rollups by minute (step 60, kept 48 h) and by hour
-- (step 3600, kept 30 days), added to by every worker's batched key flush; and the periods a key spent
-- cooling down (per model) or with its circuit open. Keys by id only, never a secret.
CREATE TABLE IF NOT EXISTS key_history (
    step         INTEGER NOT NULL,           -- 60 | 3600 seconds
    bucket       INTEGER NOT NULL,           -- epoch seconds at the bucket's start (a multiple of step)
    key_id       TEXT NOT NULL,
    model        TEXT NOT NULL,              -- the upstream model of the attempt
    provider     TEXT NOT NULL,
    requests     INTEGER NOT NULL DEFAULT 0, -- upstream attempts made with the key
    ok           INTEGER NOT NULL DEFAULT 0,
    quota        INTEGER NOT NULL DEFAULT 0,
    auth         INTEGER NOT NULL DEFAULT 0,
    transient    INTEGER NOT NULL DEFAULT 0,
    client       INTEGER NOT NULL DEFAULT 0,
    http_429     INTEGER NOT NULL DEFAULT 0, -- upstream answered 429
    tokens       INTEGER NOT NULL DEFAULT 0, -- prompt + completion, as the upstream reported them
    latency_sum  REAL NOT NULL DEFAULT 0,    -- ms, over answered (ok) attempts
    latency_n    INTEGER NOT NULL DEFAULT 0,
    latency_max  REAL NOT NULL DEFAULT 0,
    latency_min  REAL NOT NULL DEFAULT 0,    -- (of latency_n > 0 samples)
    h0 INTEGER NOT NULL DEFAULT 0, h1 INTEGER NOT NULL DEFAULT 0, h2 INTEGER NOT NULL DEFAULT 0,
    h3 INTEGER NOT NULL DEFAULT 0, h4 INTEGER NOT NULL DEFAULT 0, h5 INTEGER NOT NULL DEFAULT 0,
    h6 INTEGER NOT NULL DEFAULT 0, h7 INTEGER NOT NULL DEFAULT 0, h8 INTEGER NOT NULL DEFAULT 0,
    h9 INTEGER NOT NULL DEFAULT 0, h10 INTEGER NOT NULL DEFAULT 0, h11 INTEGER NOT NULL DEFAULT 0,
    h12 INTEGER NOT NULL DEFAULT 0,           -- latency histogram: history.LATENCY_EDGES_MS buckets
    PRIMARY KEY (step, bucket, key_id, model)
);
CREATE INDEX IF NOT EXISTS key_history_key ON key_history(key_id, step, bucket);

CREATE TABLE IF NOT EXISTS key_periods (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    key_id   TEXT NOT NULL,
    kind     TEXT NOT NULL,                  -- cooldown | circuit_open
    model    TEXT NOT NULL DEFAULT '',       -- the cooled model ('' for a circuit)
    start    REAL NOT NULL,
    until    REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS key_periods_key ON key_periods(key_id, until);
CREATE INDEX IF NOT EXISTS key_periods_until ON key_periods(until);

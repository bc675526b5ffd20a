-- The response cache (proxy/cache, docs/cache.md): one row per stored answer, shared by every worker.
-- key is the SHA-256 of the canonical request (its scope included: a client id, never a secret).
CREATE TABLE IF NOT EXISTS cache_entries (
    key        TEXT PRIMARY KEY,
    endpoint   TEXT NOT NULL,
    model      TEXT NOT NULL,
    answer     BLOB NOT NULL,              -- the complete answer, JSON in the endpoint's dialect
    bytes      INTEGER NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    used_at    REAL NOT NULL,              -- the last store or hit: least recently used goes first
    hits       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS cache_entries_used ON cache_entries(used_at);
CREATE INDEX IF NOT EXISTS cache_entries_expires ON cache_entries(expires_at);

-- running totals kept with the rows (so a store never counts or sums the table) and counters
CREATE TABLE IF NOT EXISTS cache_totals (
    name TEXT PRIMARY KEY,
    n    INTEGER NOT NULL DEFAULT 0
);
INSERT INTO cache_totals(name, n) VALUES
    ('entries', 0), ('bytes', 0), ('hits', 0), ('misses', 0), ('stores', 0), ('evictions', 0), ('expired', 0)
    ON CONFLICT DO NOTHING;

-- a usage record answered from the cache (cost 0, no upstream key)
ALTER TABLE usage_records ADD COLUMN cached INTEGER NOT NULL DEFAULT 0;

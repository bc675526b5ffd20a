-- The traffic inspector's ring (issue 16): one row per captured client request, shared by all workers,
-- trimmed to inspector.max_entries / inspector.max_bytes (oldest first) by the flush that inserts.
-- doc is the transaction as JSON, already redacted: no key, client key or admin token is ever stored.
CREATE TABLE IF NOT EXISTS inspector_entries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          REAL NOT NULL,               -- epoch seconds when the request started
    request_id  TEXT NOT NULL,
    model       TEXT NOT NULL DEFAULT '',    -- as the client asked
    client_id   TEXT NOT NULL DEFAULT '',
    route       TEXT,                        -- provider/model that answered
    status      INTEGER,
    outcome     TEXT,
    duration_ms REAL,                        -- the client's whole exchange
    bytes       INTEGER NOT NULL,            -- length of doc
    doc         BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS inspector_entries_age ON inspector_entries(at, id, bytes);  -- covers the trim

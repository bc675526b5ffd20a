-- Upstream keys added at runtime (admin API, `keyrelay keys add|import`): the secret only as a Fernet
-- token (encrypted with server.secret_key / KEYRELAY_SECRET_KEY), never in clear. The key's state lives
-- in `keys` like a configured key's; a removed runtime key loses this row and its `keys` row is retired.
CREATE TABLE IF NOT EXISTS runtime_keys (
    key_id     TEXT PRIMARY KEY REFERENCES keys(id) ON DELETE CASCADE,
    provider   TEXT NOT NULL,
    secret_enc TEXT NOT NULL,                   -- Fernet token (url-safe base64), never the secret
    hint       TEXT,                            -- first 4 + "…" + last 3 characters (None if short)
    project    TEXT,                            -- keys of one upstream project share its quota
    created_at REAL NOT NULL,
    created_by TEXT NOT NULL
);

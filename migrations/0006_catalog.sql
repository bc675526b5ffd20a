-- Model catalog (models.dev, OpenRouter, or an imported file): one row per (source, provider, model) as
-- the source last said it, replaced per source only by a refresh that succeeded (a failed one keeps the
-- last good copy). Workers merge the sources in memory and reload when catalog_state.version moves.
CREATE TABLE IF NOT EXISTS catalog_entries (
    source     TEXT NOT NULL,              -- models.dev | openrouter
    provider   TEXT NOT NULL,              -- catalog provider id (openrouter, google, anthropic, ...)
    model      TEXT NOT NULL,
    free       INTEGER NOT NULL DEFAULT 0,
    data       TEXT NOT NULL,              -- the entry as JSON (proxy.catalog.parse.Entry)
    PRIMARY KEY (source, provider, model)
);

CREATE TABLE IF NOT EXISTS catalog_sources (
    source        TEXT PRIMARY KEY,
    url           TEXT,                    -- where the current copy came from (a URL, or file:PATH)
    etag          TEXT,
    last_modified TEXT,
    entries       INTEGER NOT NULL DEFAULT 0,
    fetched_at    REAL,                    -- the last attempt
    ok_at         REAL,                    -- the last attempt that succeeded (200 or 304)
    changed_at    REAL,                    -- the last time the rows were replaced
    error         TEXT                     -- why the last attempt failed (NULL: it did not)
);

-- One row: the version workers reload on, and the refresh claim (one refresher at a time).
CREATE TABLE IF NOT EXISTS catalog_state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    version     INTEGER NOT NULL DEFAULT 0,
    claim_owner TEXT,
    claim_until REAL NOT NULL DEFAULT 0,
    next_due    REAL NOT NULL DEFAULT 0
);
INSERT INTO catalog_state(id) VALUES (1) ON CONFLICT DO NOTHING;

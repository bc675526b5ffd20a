-- Client limits that hold across every worker (proxy/clients/limits.py explains the algorithms).
-- No secret here: a scope is a client id ("c_…") or a client id and a model glob ("c_…|gpt-*").

-- rpm: a sliding-window log, one row per admitted request in the last 60 s (at most rpm rows a scope).
CREATE TABLE IF NOT EXISTS limit_hits (
    scope TEXT NOT NULL,
    at    REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS limit_hits_scope_at ON limit_hits(scope, at);
-- how many limit_hits rows a scope has (kept with them, so an admission never counts rows: O(log n))
CREATE TABLE IF NOT EXISTS limit_windows (
    scope TEXT PRIMARY KEY,
    n     INTEGER NOT NULL
);

-- tpm: a token bucket per scope (capacity tpm, refilled at tpm/60 a second); reservations are taken
-- at admission and settled to the real usage afterwards. level may go below 0 (debt of a request
-- that used more than it reserved). charged / reserved are bookkeeping: the tokens settled so far, and
-- the reservations still open.
CREATE TABLE IF NOT EXISTS limit_buckets (
    scope    TEXT PRIMARY KEY,
    level    REAL NOT NULL,
    at       REAL NOT NULL,
    charged  INTEGER NOT NULL DEFAULT 0,
    reserved INTEGER NOT NULL DEFAULT 0
);

-- max_concurrent: one lease per request in flight; a lease expires by itself (a kill -9'ed worker's).
CREATE TABLE IF NOT EXISTS limit_leases (
    id      TEXT PRIMARY KEY,
    scope   TEXT NOT NULL,
    expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS limit_leases_scope ON limit_leases(scope, expires);

-- budgets and token quotas: what a client spent per (period kind, period start), written at settlement.
CREATE TABLE IF NOT EXISTS client_spend (
    client_id    TEXT NOT NULL,
    period       TEXT NOT NULL CHECK (period IN ('day', 'week', 'month')),
    period_start REAL NOT NULL,
    period_end   REAL NOT NULL,
    requests     INTEGER NOT NULL DEFAULT 0,
    tokens       INTEGER NOT NULL DEFAULT 0,
    cost_usd     REAL NOT NULL DEFAULT 0,   -- priced requests only
    unpriced     INTEGER NOT NULL DEFAULT 0, -- requests with no price: their cost is unknown, not $0
    PRIMARY KEY (client_id, period, period_start)
);

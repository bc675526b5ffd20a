-- One limiter row per scope (proxy/clients/limits.py explains the algorithms): a scope is a client id
-- ("c_…") or a client id and a model glob ("c_…|gpt-*"). An admission reads its scopes' rows and writes
-- each back once; a settlement the same. It replaces the per-request rows of 0004 (limit_hits,
-- limit_windows, limit_leases) and the separate token buckets (limit_buckets). No secret here.
CREATE TABLE IF NOT EXISTS limiter_state (
    scope     TEXT PRIMARY KEY,
    -- rpm: the last minute's admissions per whole second, oldest first, as "<time of the second's
    -- last admission>:<count>,…" ('' = none); hits_n is the sum of the counts
    hits_n    INTEGER NOT NULL DEFAULT 0,
    hits      TEXT NOT NULL DEFAULT '',
    -- tpm: the token bucket (capacity tpm, refilled at tpm/60 a second; NULL: no bucket yet, a full
    -- one). level may go below 0 (debt). charged / reserved: tokens settled so far, reservations open.
    level     REAL,
    at        REAL NOT NULL DEFAULT 0,
    charged   INTEGER NOT NULL DEFAULT 0,
    reserved  INTEGER NOT NULL DEFAULT 0,
    -- max_concurrent: requests in flight per lease generation (admission time // (lease ttl / 8)),
    -- oldest first, in the same text form; a generation older than the ttl no longer counts
    flight_at INTEGER NOT NULL DEFAULT 0,
    flight    TEXT NOT NULL DEFAULT '',
    -- budgets / token quotas (the client's row, for a client with either): the spend of the current
    -- day, week and month, added to at settlement, as "day:<period start>:<requests>:<tokens>:<cost>:
    -- <unpriced>|week:…|month:…" (period starts in accounting.timezone; cost counts priced requests
    -- only, unpriced the requests with no price: never a silent $0)
    spend     TEXT NOT NULL DEFAULT ''
);

-- the token buckets and each client's latest spend per period kind carry over; the last minute's rpm
-- hits and the in-flight leases do not (an upgrade restarts every worker, so no request is in flight;
-- the rpm windows start empty). client_spend keeps the older periods' rows; it is no longer written.
INSERT INTO limiter_state(scope, level, at, charged, reserved)
    SELECT scope, level, at, charged, reserved FROM limit_buckets WHERE 1=1;
INSERT INTO limiter_state(scope)
    SELECT DISTINCT client_id FROM client_spend
    WHERE client_id NOT IN (SELECT scope FROM limiter_state);
UPDATE limiter_state SET spend = spend || CASE WHEN spend = '' THEN '' ELSE '|' END || (
    SELECT 'day:' || CAST(s.period_start AS TEXT) || ':' || CAST(s.requests AS TEXT) || ':'
        || CAST(s.tokens AS TEXT) || ':' || CAST(s.cost_usd AS TEXT) || ':' || CAST(s.unpriced AS TEXT)
    FROM client_spend s WHERE s.client_id = limiter_state.scope AND s.period = 'day'
        AND s.period_start = (SELECT MAX(period_start) FROM client_spend m
                              WHERE m.client_id = limiter_state.scope AND m.period = 'day'))
    WHERE EXISTS (SELECT 1 FROM client_spend s WHERE s.client_id = limiter_state.scope AND s.period = 'day');
UPDATE limiter_state SET spend = spend || CASE WHEN spend = '' THEN '' ELSE '|' END || (
    SELECT 'week:' || CAST(s.period_start AS TEXT) || ':' || CAST(s.requests AS TEXT) || ':'
        || CAST(s.tokens AS TEXT) || ':' || CAST(s.cost_usd AS TEXT) || ':' || CAST(s.unpriced AS TEXT)
    FROM client_spend s WHERE s.client_id = limiter_state.scope AND s.period = 'week'
        AND s.period_start = (SELECT MAX(period_start) FROM client_spend m
                              WHERE m.client_id = limiter_state.scope AND m.period = 'week'))
    WHERE EXISTS (SELECT 1 FROM client_spend s WHERE s.client_id = limiter_state.scope AND s.period = 'week');
UPDATE limiter_state SET spend = spend || CASE WHEN spend = '' THEN '' ELSE '|' END || (
    SELECT 'month:' || CAST(s.period_start AS TEXT) || ':' || CAST(s.requests AS TEXT) || ':'
        || CAST(s.tokens AS TEXT) || ':' || CAST(s.cost_usd AS TEXT) || ':' || CAST(s.unpriced AS TEXT)
    FROM client_spend s WHERE s.client_id = limiter_state.scope AND s.period = 'month'
        AND s.period_start = (SELECT MAX(period_start) FROM client_spend m
                              WHERE m.client_id = limiter_state.scope AND m.period = 'month'))
    WHERE EXISTS (SELECT 1 FROM client_spend s WHERE s.client_id = limiter_state.scope AND s.period = 'month');

DROP TABLE IF EXISTS limit_hits;
DROP TABLE IF EXISTS limit_windows;
DROP TABLE IF EXISTS limit_leases;
DROP TABLE IF EXISTS limit_buckets;

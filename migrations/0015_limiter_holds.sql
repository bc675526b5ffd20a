-- Budget headroom held by a worker's slice of a client's capacity (proxy/clients/limits.py, "Slices"):
-- "<until>:<usd>,…", each hold lapsing by itself at <until> (a worker killed with its slice leaves no
-- trace past it). Admissions count live holds as spent. No secret here.
ALTER TABLE limiter_state ADD COLUMN holds TEXT NOT NULL DEFAULT '';

-- Background jobs that must run on one worker of one instance at a time (usage retention, key history
-- pruning): a claim is won by one conditional upsert and lapses by itself when its owner dies.
CREATE TABLE IF NOT EXISTS job_claims (
    name  TEXT PRIMARY KEY,
    owner TEXT NOT NULL,   -- host:pid of the claiming process
    until REAL NOT NULL    -- the claim lapses at this time
);

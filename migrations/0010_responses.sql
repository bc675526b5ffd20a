-- Stored Responses API answers (POST /v1/responses with store: true), for previous_response_id and
-- GET / DELETE /v1/responses/{id}. Per client key (client_id '' = anonymous, open gateway); a row is
-- served until expires_at and purged after it. No secrets: the client by id only.
CREATE TABLE IF NOT EXISTS stored_responses (
    id            TEXT PRIMARY KEY,             -- resp_...
    client_id     TEXT NOT NULL DEFAULT '',
    created_at    REAL NOT NULL,
    expires_at    REAL NOT NULL,
    response      TEXT NOT NULL,                -- the response object (JSON), as GET returns it
    conversation  TEXT NOT NULL                 -- the turns a later previous_response_id replays (JSON)
);
CREATE INDEX IF NOT EXISTS stored_responses_expires ON stored_responses(expires_at);

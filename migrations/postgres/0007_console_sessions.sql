-- Operator console sign-ins. The cookie's token is stored only as its keyed hash. A session
-- acts as the API token or vault secret it was opened with, and ends with it: reads join
-- the token or secret, and revoking one deletes its sessions.
CREATE TABLE console_sessions (
    id              TEXT PRIMARY KEY,       -- UUID
    token_hash      BYTEA NOT NULL UNIQUE,
    api_token_id    BIGINT,                 -- exactly one of these two is set
    vault_secret_id BIGINT,
    created_at      BIGINT NOT NULL,       -- microseconds since the Unix epoch
    expires_at      BIGINT NOT NULL,
    reveal          BYTEA                    -- sealed: a new secret to show once, then NULL
);
CREATE INDEX console_sessions_expires_at ON console_sessions (expires_at);
CREATE INDEX console_sessions_api_token ON console_sessions (api_token_id);
CREATE INDEX console_sessions_vault_secret ON console_sessions (vault_secret_id);
-- The console lists a team's connections.
CREATE INDEX data_connections_team_ids ON data_connections (team_ids, id);

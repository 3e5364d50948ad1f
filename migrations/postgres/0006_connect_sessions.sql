-- Connect sessions: a short-lived link an end user follows to link an account (an OAuth2
-- consent, or an API key typed into a form). The link's token is stored only as its keyed
-- hash; so is the OAuth2 state, and the PKCE verifier is sealed like a credential.
CREATE TABLE connect_sessions (
    id               TEXT PRIMARY KEY,     -- UUID
    token_hash       BYTEA NOT NULL UNIQUE,
    environment      TEXT NOT NULL,
    identity         TEXT NOT NULL,
    identity_type    TEXT NOT NULL,
    platforms        TEXT NOT NULL,        -- JSON array of platform keys; empty: any
    tags             TEXT NOT NULL,        -- JSON array
    name             TEXT,
    reconnect_key    TEXT,                 -- the connection whose credential it replaces
    return_url       TEXT,
    -- pending, completing (claimed by one request), completed, failed; "expired" is a
    -- pending session past expires_at.
    status           TEXT NOT NULL,
    connection_key   TEXT,                 -- the connection it made or renewed
    error            TEXT,
    created_at       BIGINT NOT NULL,       -- microseconds since the Unix epoch
    expires_at       BIGINT NOT NULL,
    finished_at      BIGINT,
    oauth_platform   TEXT,
    oauth_state_hash BYTEA,
    oauth_verifier   BYTEA                   -- sealed
);
CREATE INDEX connect_sessions_expires_at ON connect_sessions (expires_at);

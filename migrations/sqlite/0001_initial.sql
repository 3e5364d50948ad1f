-- Key/value settings the server initialises once: key fingerprint, sealed hash key.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL
) WITHOUT ROWID;

CREATE TABLE users (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    email      TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

-- Tokens are stored only as HMAC-SHA-256 hashes.
CREATE TABLE api_tokens (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash BLOB NOT NULL UNIQUE,
    team_id    INTEGER,                      -- NULL: a global token
    user_id    INTEGER REFERENCES users (id),
    created_at INTEGER NOT NULL
);

CREATE TABLE data_connections (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    client_type   TEXT NOT NULL,
    note          TEXT,
    created_at    INTEGER NOT NULL,          -- milliseconds since the Unix epoch
    valid_until   INTEGER,
    region_id     TEXT NOT NULL,
    host          TEXT NOT NULL,
    port          INTEGER NOT NULL,
    username      TEXT NOT NULL UNIQUE,
    password_hash BLOB NOT NULL,             -- HMAC-SHA-256, never the password
    ip_allowlist  TEXT NOT NULL,             -- JSON array of addresses and CIDR ranges
    team_ids      TEXT,                      -- JSON array; NULL: every team
    created_by    INTEGER REFERENCES users (id)
);

-- A narrow index over the ids lets a page's OFFSET skip index entries instead of whole rows.
CREATE INDEX data_connections_page ON data_connections (id);

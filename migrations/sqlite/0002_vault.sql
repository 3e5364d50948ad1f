-- Vault secrets (sk_test_..., sk_live_...), stored only as HMAC-SHA-256 hashes.
CREATE TABLE vault_secrets (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    environment TEXT NOT NULL,               -- test | live
    secret_hash BLOB NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

-- Integration connections; the third-party credential only sealed (AES-256-GCM, bound to
-- the connection id and environment).
CREATE TABLE integration_connections (
    id               TEXT PRIMARY KEY NOT NULL,   -- UUID
    environment      TEXT NOT NULL,
    platform         TEXT NOT NULL,
    platform_version TEXT NOT NULL,
    name             TEXT,
    connection_key   TEXT NOT NULL UNIQUE,
    identity         TEXT NOT NULL,
    identity_type    TEXT NOT NULL,
    tags             TEXT NOT NULL,               -- JSON array
    version          TEXT NOT NULL,
    active           INTEGER NOT NULL,
    state            TEXT NOT NULL,
    created_at       INTEGER NOT NULL,            -- microseconds since the Unix epoch
    sealed_credentials BLOB NOT NULL
);
CREATE INDEX integration_connections_list ON integration_connections (environment, active, created_at DESC, id);

-- One row per tag, so a tag filter (and the exact total beside it) uses an index instead
-- of reading every row's JSON.
CREATE TABLE integration_tags (
    tag           TEXT NOT NULL,
    connection_id TEXT NOT NULL REFERENCES integration_connections (id) ON DELETE CASCADE,
    PRIMARY KEY (tag, connection_id)
) WITHOUT ROWID;
CREATE INDEX integration_tags_connection ON integration_tags (connection_id);

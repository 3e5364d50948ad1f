-- Key/value settings the server initialises once: key fingerprint, sealed hash key.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);

CREATE TABLE users (
    id         BIGSERIAL PRIMARY KEY,
    email      TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

-- Tokens are stored only as HMAC-SHA-256 hashes.
CREATE TABLE api_tokens (
    id         BIGSERIAL PRIMARY KEY,
    token_hash BYTEA NOT NULL UNIQUE,
    team_id    BIGINT,                       -- NULL: a global token
    user_id    BIGINT REFERENCES users (id),
    created_at BIGINT NOT NULL
);

CREATE TABLE data_connections (
    id            BIGSERIAL PRIMARY KEY,
    client_type   TEXT NOT NULL,
    note          TEXT,
    created_at    BIGINT NOT NULL,           -- milliseconds since the Unix epoch
    valid_until   BIGINT,
    region_id     TEXT NOT NULL,
    host          TEXT NOT NULL,
    port          INTEGER NOT NULL,
    username      TEXT NOT NULL UNIQUE,
    password_hash BYTEA NOT NULL,            -- HMAC-SHA-256, never the password
    ip_allowlist  JSONB NOT NULL,            -- array of addresses and CIDR ranges
    team_ids      JSONB,                     -- array; NULL: every team
    created_by    BIGINT REFERENCES users (id)
);

-- Every replica's gateway learns at once who may authenticate: a notification carries
-- the operation and the connection id; replicas read the row themselves.
CREATE FUNCTION notify_data_connection_change() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('switchboard_credentials', 'revoked:' || OLD.id);
        RETURN OLD;
    END IF;
    PERFORM pg_notify('switchboard_credentials', 'issued:' || NEW.id);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER data_connections_notify
    AFTER INSERT OR UPDATE OR DELETE ON data_connections
    FOR EACH ROW EXECUTE FUNCTION notify_data_connection_change();

-- An exact row count without scanning the table on every list page: a trigger keeps
-- per-slot counters (slots spread concurrent inserts over different rows, so writers do
-- not queue on one counter). The list reads their sum in the same snapshot as its page.
CREATE TABLE data_connection_counts (
    slot SMALLINT PRIMARY KEY,
    n    BIGINT NOT NULL
);
INSERT INTO data_connection_counts (slot, n) SELECT s, 0 FROM generate_series(0, 15) s;

CREATE FUNCTION count_data_connections() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE data_connection_counts SET n = n + 1 WHERE slot = NEW.id % 16;
    ELSE
        UPDATE data_connection_counts SET n = n - 1 WHERE slot = OLD.id % 16;
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER data_connections_count
    AFTER INSERT OR DELETE ON data_connections
    FOR EACH ROW EXECUTE FUNCTION count_data_connections();

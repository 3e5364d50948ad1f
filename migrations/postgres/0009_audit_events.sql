-- The audit log: every control-plane change and every refused authentication, append-only.
-- It names who (a token's or secret's id, a user's e-mail), what and to which target;
-- never a secret.
CREATE TABLE audit_events (
    id          BIGSERIAL PRIMARY KEY,
    at          BIGINT NOT NULL,        -- microseconds since the Unix epoch
    actor_kind  TEXT NOT NULL,          -- api_token, vault_secret, cli, anonymous
    actor_id    BIGINT,
    actor_user  TEXT,
    action      TEXT NOT NULL,          -- e.g. data_connection.create
    target      TEXT,
    request_id  TEXT,
    client_ip   TEXT,
    outcome     TEXT NOT NULL,          -- success, refused, rejected, failed
    status      INTEGER
);
CREATE INDEX audit_events_at ON audit_events (at);
CREATE INDEX audit_events_action ON audit_events (action, at);

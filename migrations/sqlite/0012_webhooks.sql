-- Webhooks: the endpoints events go to, the outbox of events (written in the transaction
-- of the change they announce), one delivery per event and endpoint with its retry state
-- and lease, every attempt, and the expiry notices already announced.

-- `events` is the list of event types delivered, comma-delimited with a comma at each end
-- (",data_connection.created,integration.deleted,"), or "*" for every type.
CREATE TABLE webhook_endpoints (
    id            TEXT PRIMARY KEY NOT NULL,
    source        TEXT NOT NULL,            -- config ([[webhooks]]) or api
    url           TEXT NOT NULL,
    events        TEXT NOT NULL,
    sealed_secret BLOB,                     -- api endpoints: sealed with the master key; config: NULL (secret_file)
    created_at    INTEGER NOT NULL          -- milliseconds since the Unix epoch
) WITHOUT ROWID;

CREATE TABLE webhook_events (
    id          TEXT PRIMARY KEY NOT NULL,  -- the webhook-id header
    event_type  TEXT NOT NULL,
    occurred_at INTEGER NOT NULL,           -- milliseconds
    body        TEXT NOT NULL               -- the exact JSON sent
) WITHOUT ROWID;
CREATE INDEX webhook_events_occurred ON webhook_events (occurred_at);

CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT NOT NULL,
    endpoint_id     TEXT NOT NULL,
    state           TEXT NOT NULL,          -- pending, delivered, failed
    attempts        INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    lease_owner     TEXT,
    lease_until     INTEGER NOT NULL,       -- 0: not leased
    last_status     INTEGER,
    last_error      TEXT,
    last_attempt_at INTEGER,
    delivered_at    INTEGER,
    created_at      INTEGER NOT NULL,
    UNIQUE (event_id, endpoint_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
CREATE INDEX webhook_deliveries_lease ON webhook_deliveries (lease_owner);

CREATE TABLE webhook_attempts (
    delivery_id INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    status      INTEGER,                    -- the endpoint's HTTP status; NULL: no answer
    latency_ms  INTEGER NOT NULL,
    error       TEXT,
    PRIMARY KEY (delivery_id, attempt)
) WITHOUT ROWID;

-- One row per announced expiry: (connection, the valid_until announced, lead time; 0 =
-- expired). A changed valid_until is announced again.
CREATE TABLE webhook_expiry_notices (
    connection_id INTEGER NOT NULL,
    valid_until   INTEGER NOT NULL,
    lead_ms       INTEGER NOT NULL,
    PRIMARY KEY (connection_id, valid_until, lead_ms)
) WITHOUT ROWID;

CREATE INDEX data_connections_valid_until ON data_connections (valid_until);

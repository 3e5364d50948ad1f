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
    sealed_secret BYTEA,                     -- api endpoints: sealed with the master key; config: NULL (secret_file)
    created_at    BIGINT NOT NULL          -- milliseconds since the Unix epoch
);

CREATE TABLE webhook_events (
    id          TEXT PRIMARY KEY NOT NULL,  -- the webhook-id header
    event_type  TEXT NOT NULL,
    occurred_at BIGINT NOT NULL,           -- milliseconds
    body        TEXT NOT NULL               -- the exact JSON sent
);
CREATE INDEX webhook_events_occurred ON webhook_events (occurred_at);

CREATE TABLE webhook_deliveries (
    id              BIGSERIAL PRIMARY KEY,
    event_id        TEXT NOT NULL,
    endpoint_id     TEXT NOT NULL,
    state           TEXT NOT NULL,          -- pending, delivered, failed
    attempts        BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    lease_owner     TEXT,
    lease_until     BIGINT NOT NULL,       -- 0: not leased
    last_status     BIGINT, 
    last_error      TEXT,
    last_attempt_at BIGINT, 
    delivered_at    BIGINT, 
    created_at      BIGINT NOT NULL,
    UNIQUE (event_id, endpoint_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
CREATE INDEX webhook_deliveries_lease ON webhook_deliveries (lease_owner);

CREATE TABLE webhook_attempts (
    delivery_id BIGINT NOT NULL,
    attempt     BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    status      BIGINT,                     -- the endpoint's HTTP status; NULL: no answer
    latency_ms  BIGINT NOT NULL,
    error       TEXT,
    PRIMARY KEY (delivery_id, attempt)
);

-- One row per announced expiry: (connection, the valid_until announced, lead time; 0 =
-- expired). A changed valid_until is announced again.
CREATE TABLE webhook_expiry_notices (
    connection_id BIGINT NOT NULL,
    valid_until   BIGINT NOT NULL,
    lead_ms       BIGINT NOT NULL,
    PRIMARY KEY (connection_id, valid_until, lead_ms)
);

CREATE INDEX data_connections_valid_until ON data_connections (valid_until);

-- Connection health and OAuth2 refresh bookkeeping (all plain: no secret lives here).
-- credential_generation: bumped on every credential write; a caller holding generation N
--   knows a refresh happened when it reads N+1, and a re-seal never overwrites a newer one.
-- expires_at: when the OAuth2 access token expires (µs since the epoch); NULL otherwise.
-- retry_at: when a failed refresh is tried again (backoff); NULL when none failed.
-- lease_owner/lease_until: which process may call the token endpoint for this connection
--   now, so replicas sharing the database never refresh one connection twice.
ALTER TABLE integration_connections ADD COLUMN credential_generation BIGINT NOT NULL DEFAULT 1;
ALTER TABLE integration_connections ADD COLUMN expires_at BIGINT;
ALTER TABLE integration_connections ADD COLUMN retry_at BIGINT;
ALTER TABLE integration_connections ADD COLUMN refresh_attempts BIGINT NOT NULL DEFAULT 0;
ALTER TABLE integration_connections ADD COLUMN consecutive_failures BIGINT NOT NULL DEFAULT 0;
ALTER TABLE integration_connections ADD COLUMN last_error TEXT;
ALTER TABLE integration_connections ADD COLUMN last_error_at BIGINT;
ALTER TABLE integration_connections ADD COLUMN last_refresh_at BIGINT;
ALTER TABLE integration_connections ADD COLUMN lease_owner TEXT;
ALTER TABLE integration_connections ADD COLUMN lease_until BIGINT;
CREATE INDEX integration_connections_expiry ON integration_connections (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX integration_connections_retry ON integration_connections (retry_at) WHERE retry_at IS NOT NULL;

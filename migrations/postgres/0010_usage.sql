-- Usage of data connections, added by the gateway in batches (never a write per query).
ALTER TABLE data_connections ADD COLUMN query_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE data_connections ADD COLUMN response_bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE data_connections ADD COLUMN last_used_at BIGINT;   -- milliseconds since the Unix epoch

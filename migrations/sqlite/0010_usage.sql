-- Usage of data connections, added by the gateway in batches (never a write per query).
ALTER TABLE data_connections ADD COLUMN query_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE data_connections ADD COLUMN response_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE data_connections ADD COLUMN last_used_at INTEGER;   -- milliseconds since the Unix epoch

-- When an integration connection was last called through the passthrough (microseconds
-- since the Unix epoch), added in batches behind the calls.
ALTER TABLE integration_connections ADD COLUMN last_used_at INTEGER;

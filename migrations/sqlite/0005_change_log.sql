-- The change log. Every write that changes what the data planes serve (data connections,
-- integration connections, vault secrets) appends a row in its own transaction; each
-- process's change feed follows the log in seq order and reads the changed rows again, so
-- a write made by any process (the CLI included) reaches every in-memory snapshot. Rows
-- older than an hour are pruned.
CREATE TABLE changes (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    entity    TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    at        INTEGER NOT NULL         -- microseconds since the Unix epoch
);
CREATE INDEX changes_at ON changes (at);

-- The exact number of data connections, kept by triggers as PostgreSQL keeps it, so both
-- stores read a list page's total with the same statement. (One slot: SQLite has one
-- writer, so nothing queues on it.)
CREATE TABLE data_connection_counts (
    slot INTEGER PRIMARY KEY,
    n    INTEGER NOT NULL
);
INSERT INTO data_connection_counts (slot, n) SELECT 0, COUNT(*) FROM data_connections;
CREATE TRIGGER data_connections_count_insert AFTER INSERT ON data_connections
BEGIN
    UPDATE data_connection_counts SET n = n + 1 WHERE slot = 0;
END;
CREATE TRIGGER data_connections_count_delete AFTER DELETE ON data_connections
BEGIN
    UPDATE data_connection_counts SET n = n - 1 WHERE slot = 0;
END;

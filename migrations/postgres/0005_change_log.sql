-- The change log. Every write that changes what the data planes serve (data connections,
-- integration connections, vault secrets) appends a row in its own transaction; each
-- replica's change feed learns of it as it commits (the notification below carries
-- `seq:entity:id`) and reads the changed row again. Rows older than an hour are pruned.
CREATE TABLE changes (
    seq       BIGSERIAL PRIMARY KEY,
    entity    TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    at        BIGINT NOT NULL          -- microseconds since the Unix epoch
);
CREATE INDEX changes_at ON changes (at);

CREATE FUNCTION notify_change() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('switchboard_changes', NEW.seq || ':' || NEW.entity || ':' || NEW.entity_id);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER changes_notify
    AFTER INSERT ON changes
    FOR EACH ROW EXECUTE FUNCTION notify_change();

-- The change log replaces the data connections' own notifications.
DROP TRIGGER data_connections_notify ON data_connections;
DROP FUNCTION notify_data_connection_change();

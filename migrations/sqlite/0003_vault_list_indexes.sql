-- Lists read pages newest first with an exact total. The tag table carries the columns
-- every list filters and sorts on (environment, active, created_at) plus the platform, so a
-- tag filter, its order and its total come from one index range; the connections table
-- gets a platform index for the same reason. Indexes are ascending and scanned backwards
-- (order: created_at DESC, id DESC), the same plan on SQLite and PostgreSQL.
CREATE TABLE integration_tags_v3 (
    environment   TEXT NOT NULL,
    tag           TEXT NOT NULL,
    active        INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    connection_id TEXT NOT NULL REFERENCES integration_connections (id) ON DELETE CASCADE,
    platform      TEXT NOT NULL,
    PRIMARY KEY (environment, tag, active, created_at, connection_id)
) WITHOUT ROWID;
INSERT INTO integration_tags_v3 (environment, tag, active, created_at, connection_id, platform)
    SELECT c.environment, t.tag, c.active, c.created_at, c.id, c.platform
    FROM integration_tags t JOIN integration_connections c ON c.id = t.connection_id;
DROP TABLE integration_tags;
ALTER TABLE integration_tags_v3 RENAME TO integration_tags;
CREATE INDEX integration_tags_connection ON integration_tags (connection_id);

DROP INDEX integration_connections_list;
CREATE INDEX integration_connections_list ON integration_connections (environment, active, created_at, id);
CREATE INDEX integration_connections_platform
    ON integration_connections (environment, active, platform, created_at, id);
CREATE INDEX integration_connections_identity ON integration_connections (environment, identity);

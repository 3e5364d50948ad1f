-- Lists read pages newest first with an exact total. The tag table carries the columns
-- every list filters and sorts on (environment, active, created_at) plus the platform, so a
-- tag filter, its order and its total come from one index range; the connections table
-- gets a platform index for the same reason. Order: created_at DESC, id DESC (a backward
-- index scan), the same plan on SQLite and PostgreSQL.
ALTER TABLE integration_tags
    ADD COLUMN environment TEXT,
    ADD COLUMN active      BOOLEAN,
    ADD COLUMN created_at  BIGINT,
    ADD COLUMN platform    TEXT;
UPDATE integration_tags t
    SET environment = c.environment, active = c.active, created_at = c.created_at, platform = c.platform
    FROM integration_connections c WHERE c.id = t.connection_id;
ALTER TABLE integration_tags
    ALTER COLUMN environment SET NOT NULL,
    ALTER COLUMN active SET NOT NULL,
    ALTER COLUMN created_at SET NOT NULL,
    ALTER COLUMN platform SET NOT NULL,
    DROP CONSTRAINT integration_tags_pkey,
    ADD PRIMARY KEY (environment, tag, active, created_at, connection_id) INCLUDE (platform);

DROP INDEX integration_connections_list;
CREATE INDEX integration_connections_list ON integration_connections (environment, active, created_at, id);
CREATE INDEX integration_connections_platform
    ON integration_connections (environment, active, platform, created_at, id);
CREATE INDEX integration_connections_identity ON integration_connections (environment, identity);

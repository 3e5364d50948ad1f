-- An identity filter (one end user's connections, the list Pica's clients make most) reads
-- its page in order from the index alone: equality on environment, identity, active and
-- platform, then created_at and id scanned backwards, as the other list indexes are. With
-- (environment, identity) only, every row of the identity was read whole and sorted.
DROP INDEX integration_connections_identity;
CREATE INDEX integration_connections_identity
    ON integration_connections (environment, identity, active, platform, created_at, id);

-- The data-connection list is served from memory (its total is the snapshot's size):
-- nothing reads the count the trigger kept, so each insert and delete no longer updates
-- a counter row.
DROP TRIGGER data_connections_count ON data_connections;
DROP FUNCTION count_data_connections();
DROP TABLE data_connection_counts;

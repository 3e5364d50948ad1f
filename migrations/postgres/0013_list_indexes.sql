-- An identity filter (one end user's connections, the list Pica's clients make most) reads
-- its page in order from the index alone: equality on environment, identity, active and
-- platform, then created_at and id scanned backwards, as the other list indexes are. With
-- (environment, identity) only, every row of the identity was read whole and sorted.
DROP INDEX integration_connections_identity;
CREATE INDEX integration_connections_identity
    ON integration_connections (environment, identity, active, platform, created_at, id);

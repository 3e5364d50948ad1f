-- Password rotation with an overlap: the replaced password's hash keeps working until
-- previous_password_until (milliseconds since the Unix epoch), then nothing but the new.
ALTER TABLE data_connections ADD COLUMN previous_password_hash BYTEA;
ALTER TABLE data_connections ADD COLUMN previous_password_until BIGINT;

-- A counter every change to `api_keys` bumps, in the changing transaction, whoever
-- makes it (orgd, the `orgd keys` CLI, another orgd on the same file, plain SQL).
-- Each orgd process keeps valid keys in memory and reads this one row at most every
-- few milliseconds; a new value empties its cache (src/store/sqlite_key_cache.rs).
-- The PostgreSQL store learns the same by LISTEN/NOTIFY (postgres/0004).
CREATE TABLE api_key_changes (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL
);
INSERT INTO api_key_changes (id, generation) VALUES (1, 0);

CREATE TRIGGER api_keys_inserted AFTER INSERT ON api_keys
BEGIN
    UPDATE api_key_changes SET generation = generation + 1 WHERE id = 1;
END;

CREATE TRIGGER api_keys_updated AFTER UPDATE ON api_keys
BEGIN
    UPDATE api_key_changes SET generation = generation + 1 WHERE id = 1;
END;

CREATE TRIGGER api_keys_deleted AFTER DELETE ON api_keys
BEGIN
    UPDATE api_key_changes SET generation = generation + 1 WHERE id = 1;
END;

-- Any change to api_keys (create, revoke, delete — by orgd, its CLI or plain SQL)
-- notifies channel orgd_api_keys when it commits: servers cache valid keys and
-- empty their cache on it (src/store/pg_key_cache.rs).
CREATE FUNCTION orgd_notify_api_keys() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('orgd_api_keys', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER api_keys_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION orgd_notify_api_keys();

-- The list reads live organizations in id order after a cursor. The primary key
-- serves it too, but whether the planner picks it depended on statistics (a fresh,
-- unanalyzed table got a sort); this index is exactly that order over exactly
-- those rows.
CREATE INDEX org_live_id_idx ON organizations (id) WHERE deleted_at IS NULL;

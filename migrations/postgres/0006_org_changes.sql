-- Any change to organizations (by orgd, its CLI or plain SQL) notifies channel
-- orgd_orgs when it commits, naming the rows changed: servers answer reads by id
-- from copies in memory and drop those the notification makes stale
-- (src/store/org_copies.rs, src/store/pg_changes.rs).
--
-- The payload is `id:version,id:version,…` for updated rows (a copy at that
-- version or newer is kept), `id:` for deleted rows, and `*` (drop every copy)
-- when the list would not fit a notification (8,000 bytes) or for TRUNCATE.
-- Inserted rows need no notification: nothing can hold a copy of a row that did
-- not exist. One notification per statement, not per row: a batched update of 64
-- organizations is one trigger call.
CREATE FUNCTION orgd_notify_orgs() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    payload TEXT;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        SELECT CASE WHEN count(*) > 100 THEN '*'
                    ELSE string_agg(id || ':' || version, ',') END
          INTO payload FROM changed;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT CASE WHEN count(*) > 100 THEN '*'
                    ELSE string_agg(id || ':', ',') END
          INTO payload FROM changed;
    ELSE
        payload := '*';
    END IF;
    -- NULL: the statement changed no row.
    IF payload IS NOT NULL THEN
        PERFORM pg_notify('orgd_orgs', payload);
    END IF;
    RETURN NULL;
END;
$$;

-- Transition tables allow one event per trigger, hence three.
CREATE TRIGGER organizations_updated
    AFTER UPDATE ON organizations REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION orgd_notify_orgs();
CREATE TRIGGER organizations_deleted
    AFTER DELETE ON organizations REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION orgd_notify_orgs();
CREATE TRIGGER organizations_truncated
    AFTER TRUNCATE ON organizations
    FOR EACH STATEMENT EXECUTE FUNCTION orgd_notify_orgs();

-- The stored documents of organizations, events and memberships are `json`, not
-- `jsonb`: PostgreSQL keeps the text orgd wrote, checked to be JSON, and gives it
-- back as it is.
--
-- orgd never looks inside these documents in SQL (every filter, sort and constraint
-- reads a column of its own), and reads each whole, as text. JSONB parsed each one
-- into its binary form on every write (~11 µs of PostgreSQL's CPU for a 1 KB
-- document on the bench host) and printed it back to text on every read (~10 µs);
-- `json` only checks the syntax (~0.5 µs). A PATCH writes two documents, the
-- organization and its event; a list page reads fifty (bench/README.md,
-- session 19).
--
-- `json` still takes the operators (`doc->>'name'`) for ad hoc queries. The rewrite
-- below prints every existing document once, in JSONB's normalized form (keys
-- reordered, spaces added); orgd parses what it reads, so either form is the same
-- document to it.
ALTER TABLE organizations ALTER COLUMN doc TYPE json USING doc::json;
ALTER TABLE events ALTER COLUMN doc TYPE json USING doc::json;
ALTER TABLE memberships ALTER COLUMN doc TYPE json USING doc::json;

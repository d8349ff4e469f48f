-- Webhooks, and the consumers of the event outbox (the `events` table).
-- 0002 is left to the memberships migration of another branch; sqlx applies
-- migrations in order and tolerates the gap.
--
-- On SQLite one writer commits at a time and `events.seq` is assigned inside the
-- write lock, so `seq` order is commit order: the event feed's position is `seq`
-- itself (PostgreSQL needs a separate `feed_pos`; see its 0003).

-- Where each consumer of the outbox has got to. `position` is a feed position
-- (here: events.seq). A consumer that works outside one transaction (the NATS
-- publisher) takes a lease on its row, so two processes do not both publish.
CREATE TABLE outbox_cursors (
    name         TEXT PRIMARY KEY NOT NULL,  -- 'webhooks' (fan-out), 'nats'
    position     INTEGER NOT NULL,
    lease_owner  TEXT,
    lease_until  INTEGER                     -- unix ms
) STRICT;
-- Endpoints receive events from their creation on, so the fan-out starts at the
-- current head; NATS starts at the beginning so a new stream gets the history.
INSERT INTO outbox_cursors (name, position)
VALUES ('webhooks', (SELECT COALESCE(MAX(seq), 0) FROM events)), ('nats', 0);

-- The secret is kept in clear (the server signs with it, so a hash would not do);
-- it is never logged and shown only on create and rotate.
CREATE TABLE webhook_endpoints (
    id                   TEXT PRIMARY KEY NOT NULL,  -- whk_…
    url                  TEXT NOT NULL,
    event_types          TEXT NOT NULL,              -- JSON array: "*" or event types
    org_id               TEXT,                       -- only this org's subtree
    description          TEXT,
    secret               TEXT NOT NULL,              -- whsec_…
    previous_secret      TEXT,                       -- still signs until previous_expires_at
    previous_expires_at  TEXT,
    status               TEXT NOT NULL,              -- active | failing
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL
) STRICT;

-- Work to do: one row per (endpoint, event) still to be delivered. The fan-out
-- inserts them in feed order, so within one (endpoint, org) `id` order is version
-- order; a message is due only when no earlier one of its (endpoint, org) is still
-- pending, which keeps each org's events in order at each endpoint. Rows are
-- deleted once delivered or given up (webhook_deliveries keeps the history).
CREATE TABLE webhook_messages (
    id               INTEGER PRIMARY KEY,
    endpoint_id      TEXT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    org_id           TEXT,                   -- NULL for webhook.test (not ordered)
    event_id         TEXT NOT NULL,
    payload          TEXT,                   -- the body of a webhook.test; else events.doc
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,       -- unix ms
    lease_owner      TEXT,                   -- the worker sending it now …
    lease_until      INTEGER                 -- … until then (unix ms); then anyone may
) STRICT;
CREATE INDEX webhook_messages_due_idx ON webhook_messages (next_attempt_at);
CREATE INDEX webhook_messages_order_idx ON webhook_messages (endpoint_id, org_id, id);

-- Every attempt, for GET /v1/webhooks/{id}/deliveries (newest first by id: UUIDv7).
CREATE TABLE webhook_deliveries (
    id            TEXT PRIMARY KEY NOT NULL,  -- dlv_…
    endpoint_id   TEXT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id      TEXT NOT NULL,
    attempt       INTEGER NOT NULL,
    status_code   INTEGER,                    -- NULL when no response came
    error         TEXT,
    duration_ms   INTEGER NOT NULL,
    attempted_at  TEXT NOT NULL,
    succeeded     INTEGER NOT NULL
) STRICT;
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, id);

-- Webhooks, and the consumers of the event outbox (the `events` table). Same tables
-- and meaning as migrations/sqlite/0003_webhooks.sql, plus `events.feed_pos`.
-- 0002 is left to the memberships migration of another branch; sqlx applies
-- migrations in order and tolerates the gap.

-- Why `feed_pos`: `events.seq` is taken from a sequence at INSERT, but transactions
-- commit in any order, so a reader that has seen seq 11 may later find seq 10
-- commit. A cursor on `seq` would skip it. Instead, a background sequencer (one
-- process at a time, holding the 'feed' row of outbox_cursors) numbers events that
-- are already committed, in seq order, and commits each batch of numbers at once:
-- positions therefore become visible in order and a cursor on `feed_pos` never skips.
-- Events of one org are written under its row lock, so seq order (and hence
-- feed_pos order) is version order within an org.
ALTER TABLE events ADD COLUMN feed_pos BIGINT;
UPDATE events SET feed_pos = seq;
CREATE UNIQUE INDEX events_feed_pos_key ON events (feed_pos);
-- What the sequencer looks for: small, since rows leave it within moments.
CREATE INDEX events_unpositioned_idx ON events (seq) WHERE feed_pos IS NULL;

-- Where each consumer of the outbox has got to: 'feed' (the sequencer's last
-- position), 'webhooks' (fan-out), 'nats'. A consumer that works outside one
-- transaction (the NATS publisher) takes a lease on its row.
CREATE TABLE outbox_cursors (
    name         TEXT PRIMARY KEY,
    position     BIGINT NOT NULL,
    lease_owner  TEXT,
    lease_until  BIGINT                      -- unix ms
);
-- Endpoints receive events from their creation on, so the fan-out starts at the
-- current head; NATS starts at the beginning so a new stream gets the history.
INSERT INTO outbox_cursors (name, position)
SELECT 'feed', COALESCE(MAX(seq), 0) FROM events
UNION ALL SELECT 'webhooks', COALESCE(MAX(seq), 0) FROM events
UNION ALL SELECT 'nats', 0;

-- The secret is kept in clear (the server signs with it, so a hash would not do);
-- it is never logged and shown only on create and rotate.
CREATE TABLE webhook_endpoints (
    id                   TEXT PRIMARY KEY,
    url                  TEXT NOT NULL,
    event_types          JSONB NOT NULL,
    org_id               TEXT,
    description          TEXT,
    secret               TEXT NOT NULL,
    previous_secret      TEXT,
    previous_expires_at  TIMESTAMPTZ,
    status               TEXT NOT NULL,
    created_at           TIMESTAMPTZ NOT NULL,
    updated_at           TIMESTAMPTZ NOT NULL
);

-- Work to do: one row per (endpoint, event) still to be delivered, deleted once
-- delivered or given up. The fan-out inserts them in feed order under the
-- 'webhooks' cursor lock, so within one (endpoint, org) `id` order is version order;
-- a message is due only when no earlier one of its (endpoint, org) is pending.
-- Workers in any number of processes claim due rows with FOR UPDATE SKIP LOCKED and
-- a lease (`lease_until`): a crashed worker's rows become due again when it expires.
CREATE TABLE webhook_messages (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint_id      TEXT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    org_id           TEXT,
    event_id         TEXT NOT NULL,
    payload          TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    lease_owner      TEXT,
    lease_until      BIGINT
);
CREATE INDEX webhook_messages_due_idx ON webhook_messages (next_attempt_at);
CREATE INDEX webhook_messages_order_idx ON webhook_messages (endpoint_id, org_id, id);

CREATE TABLE webhook_deliveries (
    id            TEXT PRIMARY KEY,
    endpoint_id   TEXT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id      TEXT NOT NULL,
    attempt       INTEGER NOT NULL,
    status_code   INTEGER,
    error         TEXT,
    duration_ms   BIGINT NOT NULL,
    attempted_at  TIMESTAMPTZ NOT NULL,
    succeeded     BOOLEAN NOT NULL
);
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, id);

-- orgd's first schema (SQLite). Timestamps are TEXT in one fixed RFC 3339 form with
-- milliseconds ("2026-11-23T06:21:28.123Z"), so they sort and compare as strings.

-- Each organization is stored as its JSON document (`doc`, the source of truth for
-- every field) plus the columns that queries filter, sort or constrain on. Both are
-- written by the same statement from the same value, so they cannot disagree.
CREATE TABLE organizations (
    id          TEXT PRIMARY KEY NOT NULL,   -- org_… (TypeID of a UUIDv7: sorts by creation)
    slug        TEXT NOT NULL,
    name        TEXT NOT NULL,
    parent_id   TEXT REFERENCES organizations (id),
    enabled     INTEGER NOT NULL,
    version     INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    deleted_at  TEXT,
    doc         TEXT NOT NULL
) STRICT;

-- Slugs are unique among live organizations only: a deleted org's slug may be
-- reused, and restoring it then fails with slug_taken. The index is the guard, so
-- two concurrent requests can never both take one slug.
CREATE UNIQUE INDEX org_slug_key ON organizations (slug) WHERE deleted_at IS NULL;
-- Children lists and the has_children check walk parent_id; id keeps keyset order.
CREATE INDEX org_parent_idx ON organizations (parent_id, id);

-- One row per domain of a live organization; rows are removed on delete and put
-- back on restore, so the primary key enforces "unique across live orgs".
CREATE TABLE org_domains (
    domain  TEXT PRIMARY KEY NOT NULL,
    org_id  TEXT NOT NULL REFERENCES organizations (id)
) STRICT;
CREATE INDEX org_domains_org_idx ON org_domains (org_id);

-- The audit trail (and, later, the outbox). `seq` orders events as they were
-- committed; `doc` is the event in its API shape.
CREATE TABLE events (
    seq          INTEGER PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    org_id       TEXT NOT NULL,
    type         TEXT NOT NULL,
    version      INTEGER NOT NULL,
    occurred_at  TEXT NOT NULL,
    doc          TEXT NOT NULL
) STRICT;
CREATE INDEX events_org_idx ON events (org_id, seq);

-- API keys: only the SHA-256 of the secret is kept.
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY NOT NULL,
    name         TEXT,
    scopes       TEXT NOT NULL,              -- JSON array of scope names
    org_id       TEXT,                       -- subtree the key is bound to
    secret_hash  TEXT NOT NULL UNIQUE,
    created_at   TEXT NOT NULL,
    revoked_at   TEXT
) STRICT;

-- Idempotency-Key records for create, kept 24 hours. The primary key makes two
-- concurrent first attempts with one key produce one organization.
CREATE TABLE idempotency_keys (
    principal    TEXT NOT NULL,
    key          TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,              -- SHA-256 of the canonical request body
    org_id       TEXT NOT NULL,
    response     TEXT NOT NULL,              -- the 201 body, replayed verbatim
    created_at   TEXT NOT NULL,
    PRIMARY KEY (principal, key)
) STRICT;

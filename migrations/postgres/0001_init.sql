-- orgd's first schema (PostgreSQL; also meant for PostgreSQL-compatible distributed
-- SQL engines, so it uses no advisory locks, triggers or extensions). Same tables,
-- names and meaning as migrations/sqlite/0001_init.sql.

-- Each organization is its JSON document (`doc`, the source of truth for every field)
-- plus the columns queries filter, sort or constrain on, written together.
CREATE TABLE organizations (
    id          TEXT PRIMARY KEY,            -- org_… (TypeID of a UUIDv7: sorts by creation)
    slug        TEXT NOT NULL,
    name        TEXT NOT NULL,
    parent_id   TEXT REFERENCES organizations (id),
    enabled     BOOLEAN NOT NULL,
    version     BIGINT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    deleted_at  TIMESTAMPTZ,
    doc         JSONB NOT NULL
);

-- Unique among live organizations only; the index is the guard against races, and
-- its name is what the store maps to 409 slug_taken.
CREATE UNIQUE INDEX org_slug_key ON organizations (slug) WHERE deleted_at IS NULL;
CREATE INDEX org_parent_idx ON organizations (parent_id, id);

-- One row per domain of a live organization (removed on delete, put back on
-- restore): the primary key `org_domains_pkey` means 409 domain_taken.
CREATE TABLE org_domains (
    domain  TEXT PRIMARY KEY,
    org_id  TEXT NOT NULL REFERENCES organizations (id)
);
CREATE INDEX org_domains_org_idx ON org_domains (org_id);

-- The audit trail. Within one organization, events are inserted while its row is
-- locked, so `seq` order is version order.
CREATE TABLE events (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    org_id       TEXT NOT NULL,
    type         TEXT NOT NULL,
    version      BIGINT NOT NULL,
    occurred_at  TIMESTAMPTZ NOT NULL,
    doc          JSONB NOT NULL
);
CREATE INDEX events_org_idx ON events (org_id, seq);

-- API keys: only the SHA-256 of the secret is kept.
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    name         TEXT,
    scopes       JSONB NOT NULL,
    org_id       TEXT,
    secret_hash  TEXT NOT NULL UNIQUE,
    created_at   TIMESTAMPTZ NOT NULL,
    revoked_at   TIMESTAMPTZ
);

-- Idempotency-Key records for create, kept 24 hours; `idempotency_keys_pkey`
-- makes concurrent first attempts with one key produce one organization.
CREATE TABLE idempotency_keys (
    principal    TEXT NOT NULL,
    key          TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    org_id       TEXT NOT NULL,
    response     JSONB NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (principal, key)
);

-- Memberships: a user's role in an organization. `doc` is the membership in its
-- stored JSON form; `role` is a column too because the last-owner rule counts it.
CREATE TABLE memberships (
    org_id   TEXT NOT NULL REFERENCES organizations (id),
    user_id  TEXT NOT NULL,
    role     TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    doc      JSONB NOT NULL,
    PRIMARY KEY (org_id, user_id)
);

-- "Which organizations does this user belong to": the list endpoint for users, and
-- the membership lookup on every request a user makes.
CREATE INDEX memberships_user_idx ON memberships (user_id, org_id);

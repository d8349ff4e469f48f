//! The organization and membership writes of the SQLite store, as the group
//! committer runs them: synchronous rusqlite calls on the writer connection's own
//! handle, inside the batch's transaction (see [`super::sqlite_writer`] for why
//! they do not go through sqlx statement by statement).

use rusqlite::{params, Connection};

use super::sqlite::{ancestry_sql, decode_org, encode, json_error, parse_org_ids, WALK_LIMIT};
use super::sqlite_point_reads::{optional_text, sqlite_error, texts};
use super::sqlite_writer::{CreateOrg, EncodedEvent, WriteMembership, WriteOrg};
use super::{Constraint, StoreError, StoreResult};
use crate::domain::hierarchy;
use crate::domain::ids::OrgId;
use crate::domain::members::{self, Membership, UserId};
use crate::domain::org::Organization;
use crate::domain::time;

/// Maps a unique violation of the statement that can only break `constraint` to it.
fn unique_as(constraint: Constraint) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |err| {
        let unique = err.sqlite_error().is_some_and(|e| {
            e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
        });
        if unique {
            StoreError::Conflict(constraint)
        } else {
            sqlite_error(err)
        }
    }
}

/// Levels in the live subtree rooted at `org` (1 for a leaf).
fn subtree_height(conn: &Connection, org: &OrgId) -> StoreResult<usize> {
    let height: Option<i64> = conn
        .prepare_cached(
            "WITH RECURSIVE sub(id, level) AS (
                 SELECT id, 1 FROM organizations WHERE id = ?1
                 UNION ALL
                 SELECT o.id, s.level + 1 FROM organizations o JOIN sub s ON o.parent_id = s.id
                  WHERE o.deleted_at IS NULL AND s.level < ?2)
             SELECT MAX(level) FROM sub",
        )
        .and_then(|mut s| s.query_row(params![org.to_string(), WALK_LIMIT], |r| r.get(0)))
        .map_err(sqlite_error)?;
    Ok(height.unwrap_or(1) as usize)
}

fn check_placement(conn: &Connection, org: &Organization, height: usize) -> StoreResult<()> {
    if let Some(parent) = &org.parent_id {
        let chain = texts(
            conn,
            ancestry_sql(true),
            params![parent.to_string(), WALK_LIMIT],
        )
        .map_err(sqlite_error)?;
        hierarchy::check_placement(&org.id, &parse_org_ids(&chain)?, height)?;
    }
    Ok(())
}

fn insert_domains(conn: &Connection, org: &Organization) -> StoreResult<()> {
    let mut insert = conn
        .prepare_cached("INSERT INTO org_domains (domain, org_id) VALUES (?1, ?2)")
        .map_err(sqlite_error)?;
    for domain in &org.domains {
        insert
            .execute(params![domain.as_str(), org.id.to_string()])
            .map_err(unique_as(Constraint::DomainTaken))?;
    }
    Ok(())
}

fn insert_event(conn: &Connection, event: &EncodedEvent) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO events (id, org_id, type, version, occurred_at, doc) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut s| {
        s.execute(params![
            event.id,
            event.org_id,
            event.event_type,
            event.version,
            event.occurred_at,
            event.doc,
        ])
    })
    .map_err(sqlite_error)?;
    Ok(())
}

fn upsert_membership(conn: &Connection, member: &Membership) -> StoreResult<()> {
    let doc = encode(member)?;
    conn.prepare_cached(
        "INSERT INTO memberships (org_id, user_id, role, doc) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (org_id, user_id) DO UPDATE SET role = excluded.role, doc = excluded.doc",
    )
    .and_then(|mut s| {
        s.execute(params![
            member.org_id.to_string(),
            member.user_id.as_str(),
            member.role.as_str(),
            doc,
        ])
    })
    .map_err(sqlite_error)?;
    Ok(())
}

/// Inserts a new organization with its owner, event and idempotency record.
pub(super) fn create_org(conn: &Connection, op: &CreateOrg) -> StoreResult<()> {
    let CreateOrg {
        org,
        doc,
        event,
        owner,
        idempotency,
    } = op;
    // The idempotency record goes first: a concurrent retry with the same key
    // then fails on its key, not on the slug or domains the first attempt took.
    if let Some((record, response)) = idempotency {
        // An expired record with the same key makes room for the new one.
        conn.prepare_cached(
            "DELETE FROM idempotency_keys WHERE principal = ?1 AND key = ?2 AND created_at < ?3",
        )
        .and_then(|mut s| {
            s.execute(params![
                record.principal,
                record.key,
                time::format(record.created_at - jiff::SignedDuration::from_hours(24)),
            ])
        })
        .map_err(sqlite_error)?;
        conn.prepare_cached(
            "INSERT INTO idempotency_keys (principal, key, fingerprint, org_id, response, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .and_then(|mut s| {
            s.execute(params![
                record.principal,
                record.key,
                record.fingerprint,
                record.org_id.to_string(),
                response,
                time::format(record.created_at),
            ])
        })
        .map_err(unique_as(Constraint::IdempotencyKey))?;
    }
    check_placement(conn, org, 1)?;
    conn.prepare_cached(
        "INSERT INTO organizations
             (id, slug, name, parent_id, enabled, version, created_at, updated_at, deleted_at, doc)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL, ?9)",
    )
    .and_then(|mut s| {
        s.execute(params![
            org.id.to_string(),
            org.slug.as_str(),
            org.name.as_str(),
            org.parent_id.map(|p| p.to_string()),
            org.enabled,
            org.version,
            time::format(org.created_at),
            time::format(org.updated_at),
            doc,
        ])
    })
    .map_err(unique_as(Constraint::SlugTaken))?;
    insert_domains(conn, org)?;
    if let Some(owner) = owner {
        upsert_membership(conn, owner)?;
    }
    insert_event(conn, event)
}

/// The common update — the org stays live, under the same parent, with the same
/// domains ([`Organization::changes_only_its_row`], decided on the request's
/// thread) — as one guarded UPDATE and its event: no read of the old document and
/// no tree or domain work, which keeps the single writer's time per write short.
/// `false` when it is not such an update or the guard does not hold (a stale
/// version, a missing row): [`write_org`] then decides.
///
/// The guard is the version: a row that still has it is the org the change was
/// planned on, so its parent and domains are known. The old statement also
/// compared the stored document's domains (`json_extract`), parsing every
/// updated row's JSON on the one writer thread; liveness, the parent and the slug
/// are still compared, as columns they cost nothing.
pub(super) fn write_org_in_place(conn: &Connection, op: &WriteOrg) -> StoreResult<bool> {
    if !op.in_place {
        return Ok(false);
    }
    let WriteOrg {
        expected_version,
        org,
        columns,
        renames,
        event,
        ..
    } = op;
    // `slug` is named only when it changes: SQLite rewrites an indexed column's
    // index entry whenever the UPDATE names the column, even to the same value —
    // one more page in the WAL per write.
    let sql = if *renames {
        "UPDATE organizations
            SET slug = ?2, name = ?3, enabled = ?4, version = ?5, updated_at = ?6, doc = ?7
          WHERE id = ?1 AND version = ?8 AND deleted_at IS NULL AND parent_id IS ?9"
    } else {
        "UPDATE organizations
            SET name = ?3, enabled = ?4, version = ?5, updated_at = ?6, doc = ?7
          WHERE id = ?1 AND version = ?8 AND deleted_at IS NULL AND parent_id IS ?9
            AND slug = ?2"
    };
    let updated = conn
        .prepare_cached(sql)
        .and_then(|mut s| {
            s.execute(params![
                columns.id,
                org.slug.as_str(),
                org.name.as_str(),
                org.enabled,
                org.version,
                columns.updated_at,
                columns.doc,
                expected_version,
                columns.parent_id,
            ])
        })
        .map_err(unique_as(Constraint::SlugTaken))?;
    if updated != 1 {
        return Ok(false);
    }
    insert_event(conn, event)?;
    Ok(true)
}

/// Replaces an organization if its version is still the one the write was planned
/// against, keeping the domain index and the tree rules, with its event.
pub(super) fn write_org(conn: &Connection, op: &WriteOrg) -> StoreResult<()> {
    let WriteOrg {
        expected_version,
        org,
        columns,
        event,
        ..
    } = op;
    let org_id = &org.id;
    let stored = optional_text(
        conn,
        "SELECT doc FROM organizations WHERE id = ?1",
        [&columns.id],
    )
    .map_err(sqlite_error)?;
    let old = decode_org(&stored.ok_or(StoreError::NotFound)?)?;
    if old.version != *expected_version {
        return Err(StoreError::VersionMismatch);
    }
    let restoring = !old.is_live() && org.is_live();
    if org.parent_id != old.parent_id || (restoring && org.parent_id.is_some()) {
        let height = subtree_height(conn, org_id)?;
        check_placement(conn, org, height)?;
    }
    if old.is_live() && !org.is_live() {
        let children: i64 = conn
            .prepare_cached(
                "SELECT COUNT(*) FROM organizations WHERE parent_id = ?1 AND deleted_at IS NULL",
            )
            .and_then(|mut s| s.query_row([&columns.id], |r| r.get(0)))
            .map_err(sqlite_error)?;
        if children > 0 {
            return Err(StoreError::Conflict(Constraint::HasChildren));
        }
    }
    conn.prepare_cached(
        "UPDATE organizations
            SET slug = ?2, name = ?3, parent_id = ?4, enabled = ?5, version = ?6,
                updated_at = ?7, deleted_at = ?8, doc = ?9
          WHERE id = ?1 AND version = ?10",
    )
    .and_then(|mut s| {
        s.execute(params![
            columns.id,
            org.slug.as_str(),
            org.name.as_str(),
            columns.parent_id,
            org.enabled,
            org.version,
            columns.updated_at,
            columns.deleted_at,
            columns.doc,
            expected_version,
        ])
    })
    .map_err(unique_as(Constraint::SlugTaken))?;
    if old.domains != org.domains || old.is_live() != org.is_live() {
        conn.prepare_cached("DELETE FROM org_domains WHERE org_id = ?1")
            .and_then(|mut s| s.execute([&columns.id]))
            .map_err(sqlite_error)?;
        if org.is_live() {
            insert_domains(conn, org)?;
        }
    }
    insert_event(conn, event)
}

/// Adds, changes or removes a membership if it is still as the write expects,
/// under the membership rules (last owner, the policy's member cap), with its event.
pub(super) fn write_membership(conn: &Connection, op: &WriteMembership) -> StoreResult<()> {
    let WriteMembership {
        org_id,
        user_id,
        expected,
        after,
        event,
    } = op;
    let doc = optional_text(
        conn,
        "SELECT doc FROM organizations WHERE id = ?1 AND deleted_at IS NULL",
        [org_id.to_string()],
    )
    .map_err(sqlite_error)?;
    let org = decode_org(&doc.ok_or(StoreError::NotFound)?)?;
    let current: Option<Membership> = read_membership(conn, org_id, user_id)?;
    if current.as_ref() != expected.as_ref() {
        return Err(StoreError::VersionMismatch);
    }
    let (owners, total): (i64, i64) = conn
        .prepare_cached(
            "SELECT COALESCE(SUM(role = 'owner'), 0), COUNT(*) FROM memberships WHERE org_id = ?1",
        )
        .and_then(|mut s| s.query_row([org_id.to_string()], |r| Ok((r.get(0)?, r.get(1)?))))
        .map_err(sqlite_error)?;
    members::check_member_rules(
        expected.as_ref(),
        after.as_ref(),
        owners as u64,
        total as u64,
        org.policy.as_ref(),
    )?;
    match after {
        Some(member) => upsert_membership(conn, member)?,
        None => {
            conn.prepare_cached("DELETE FROM memberships WHERE org_id = ?1 AND user_id = ?2")
                .and_then(|mut s| s.execute(params![org_id.to_string(), user_id.as_str()]))
                .map_err(sqlite_error)?;
        }
    }
    insert_event(conn, event)
}

fn read_membership(
    conn: &Connection,
    org_id: &OrgId,
    user_id: &UserId,
) -> StoreResult<Option<Membership>> {
    optional_text(
        conn,
        super::sqlite::MEMBERSHIP_DOC,
        params![org_id.to_string(), user_id.as_str()],
    )
    .map_err(sqlite_error)?
    .map(|d| serde_json::from_str(&d).map_err(json_error))
    .transpose()
}

//! The embedded store: one SQLite file in WAL mode with `synchronous=FULL`, so a
//! commit is on disk before the request that made it is answered.
//!
//! Writes go through a pool of exactly one connection: SQLite admits one writer at
//! a time anyway, and queueing in-process avoids `SQLITE_BUSY` between our own
//! writers. Organization and membership writes are group-committed on it
//! ([`super::sqlite_writer`]). Reads use a separate pool and never wait for writes
//! (WAL readers see the last commit).

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, SqliteConnection};

use super::sqlite_writer::{
    CommitStats, CreateOrg, EncodedEvent, GroupCommit, WriteMembership, WriteOp, WriteOrg,
};
use super::{Constraint, IdempotencyRecord, OrgFilter, OrgLookup, Store, StoreError, StoreResult};
use crate::domain::apikey::{ApiKey, ScopeSet, SecretHash};
use crate::domain::event::Event;
use crate::domain::hierarchy::{self, MAX_DEPTH};
use crate::domain::ids::{KeyId, OrgId};
use crate::domain::members::{self, Membership, UserId};
use crate::domain::org::Organization;
use crate::domain::secrets_key::SecretsKey;
use crate::domain::time;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Bound on recursive walks, well past MAX_DEPTH, so corrupt data cannot loop forever.
pub(super) const WALK_LIMIT: i64 = 2 * MAX_DEPTH as i64;

pub struct SqliteStore {
    /// One connection: the group committer's batches and the rarer direct writes
    /// (API keys, webhook endpoints, the outbox workers) take turns on it.
    pub(super) writer: SqlitePool,
    pub(super) reader: SqlitePool,
    group_commit: GroupCommit,
    /// Seals and opens webhook signing secrets (store/sealed_secrets.rs).
    pub(super) secrets_key: SecretsKey,
}

impl SqliteStore {
    /// Connects, migrates, refuses a secrets key other than the one the stored
    /// secrets are sealed with, and seals secrets older versions stored in clear.
    pub async fn open(url: &str, secrets_key: SecretsKey) -> anyhow::Result<Self> {
        let store = Self::connect(url, secrets_key).await?;
        store.adopt_secrets_key().await?;
        Ok(store)
    }

    /// Connects and migrates, without looking at the stored secrets.
    pub(super) async fn connect(url: &str, secrets_key: SecretsKey) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .with_context(|| "invalid SQLite URL")?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: the WAL is synced at every commit, so an acknowledged write
            // survives a power cut (NORMAL would only survive a process crash).
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .with_context(|| format!("cannot open the SQLite database {url}"))?;
        MIGRATOR
            .run(&writer)
            .await
            .context("cannot apply SQLite migrations")?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await
            .context("cannot open SQLite readers")?;
        Ok(Self {
            group_commit: GroupCommit::start(writer.clone()),
            writer,
            reader,
            secrets_key,
        })
    }

    /// Group-commit figures so far: how many transactions carried how many writes.
    pub fn commit_stats(&self) -> &CommitStats {
        &self.group_commit.stats
    }
}

/// Starts a write transaction holding SQLite's write lock from its first statement.
/// A deferred BEGIN would read first and then fail at once with SQLITE_BUSY when
/// another process (a second `orgd`, or `orgd keys`) committed in between; IMMEDIATE
/// waits for the lock within the busy timeout instead.
pub(super) async fn begin_immediate(
    pool: &SqlitePool,
) -> StoreResult<sqlx::Transaction<'static, Sqlite>> {
    pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)
}

/// Sorts a sqlx error into what the caller can act on.
pub(super) fn db_error(err: sqlx::Error) -> StoreError {
    match &err {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            StoreError::Unavailable(err.into())
        }
        sqlx::Error::Database(db)
            if matches!(db.code().as_deref(), Some("5") | Some("6") | Some("517")) =>
        {
            // SQLITE_BUSY, SQLITE_LOCKED, SQLITE_BUSY_SNAPSHOT: another process holds the lock.
            StoreError::Unavailable(err.into())
        }
        _ => StoreError::Other(err.into()),
    }
}

/// Maps a unique violation of the statement that can only break `constraint` to it.
fn unique_as(constraint: Constraint) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |err| match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(constraint),
        _ => db_error(err),
    }
}

pub(super) fn json_error(err: serde_json::Error) -> StoreError {
    StoreError::Other(anyhow::Error::new(err).context("stored JSON does not decode"))
}

fn decode_org(doc: &str) -> StoreResult<Organization> {
    serde_json::from_str(doc).map_err(json_error)
}

pub(super) fn encode<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(json_error)
}

/// The live parent's id followed by its ancestors; empty if the parent is not live.
pub(super) async fn ancestry(
    conn: &mut SqliteConnection,
    start: &OrgId,
    live_only: bool,
) -> StoreResult<Vec<OrgId>> {
    let sql = format!(
        "WITH RECURSIVE chain(id, parent_id, depth) AS (
             SELECT id, parent_id, 1 FROM organizations WHERE id = ?1 {}
             UNION ALL
             SELECT o.id, o.parent_id, c.depth + 1 FROM organizations o
               JOIN chain c ON o.id = c.parent_id
              WHERE c.depth < ?2)
         SELECT id FROM chain ORDER BY depth",
        if live_only {
            "AND deleted_at IS NULL"
        } else {
            ""
        }
    );
    let rows = sqlx::query(&sql)
        .bind(start.to_string())
        .bind(WALK_LIMIT)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error)?;
    rows.iter()
        .map(|r| {
            let id: String = r.get(0);
            OrgId::parse(&id).map_err(|e| StoreError::Other(e.into()))
        })
        .collect()
}

/// Levels in the live subtree rooted at `org` (1 for a leaf).
async fn subtree_height(conn: &mut SqliteConnection, org: &OrgId) -> StoreResult<usize> {
    let height: Option<i64> = sqlx::query_scalar(
        "WITH RECURSIVE sub(id, level) AS (
             SELECT id, 1 FROM organizations WHERE id = ?1
             UNION ALL
             SELECT o.id, s.level + 1 FROM organizations o JOIN sub s ON o.parent_id = s.id
              WHERE o.deleted_at IS NULL AND s.level < ?2)
         SELECT MAX(level) FROM sub",
    )
    .bind(org.to_string())
    .bind(WALK_LIMIT)
    .fetch_one(&mut *conn)
    .await
    .map_err(db_error)?;
    Ok(height.unwrap_or(1) as usize)
}

async fn check_placement(
    conn: &mut SqliteConnection,
    org: &Organization,
    height: usize,
) -> StoreResult<()> {
    if let Some(parent) = &org.parent_id {
        let chain = ancestry(conn, parent, true).await?;
        hierarchy::check_placement(&org.id, &chain, height)?;
    }
    Ok(())
}

async fn insert_domains(conn: &mut SqliteConnection, org: &Organization) -> StoreResult<()> {
    for domain in &org.domains {
        sqlx::query("INSERT INTO org_domains (domain, org_id) VALUES (?1, ?2)")
            .bind(domain.as_str())
            .bind(org.id.to_string())
            .execute(&mut *conn)
            .await
            .map_err(unique_as(Constraint::DomainTaken))?;
    }
    Ok(())
}

async fn insert_event(conn: &mut SqliteConnection, encoded: &EncodedEvent) -> StoreResult<()> {
    let EncodedEvent { event, doc } = encoded;
    sqlx::query(
        "INSERT INTO events (id, org_id, type, version, occurred_at, doc) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .bind(event.id.to_string())
    .bind(event.organization_id.to_string())
    .bind(event.event_type.as_str())
    .bind(event.version)
    .bind(time::format(event.occurred_at))
    .bind(doc)
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    Ok(())
}

async fn upsert_membership(conn: &mut SqliteConnection, member: &Membership) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO memberships (org_id, user_id, role, doc) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (org_id, user_id) DO UPDATE SET role = excluded.role, doc = excluded.doc",
    )
    .bind(member.org_id.to_string())
    .bind(member.user_id.as_str())
    .bind(member.role.as_str())
    .bind(encode(member)?)
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    Ok(())
}

async fn read_membership<'c, E>(
    conn: E,
    org_id: &OrgId,
    user_id: &UserId,
) -> StoreResult<Option<Membership>>
where
    E: sqlx::Executor<'c, Database = Sqlite>,
{
    let doc: Option<String> =
        sqlx::query_scalar("SELECT doc FROM memberships WHERE org_id = ?1 AND user_id = ?2")
            .bind(org_id.to_string())
            .bind(user_id.as_str())
            .fetch_optional(conn)
            .await
            .map_err(db_error)?;
    doc.map(|d| serde_json::from_str(&d).map_err(json_error))
        .transpose()
}

fn decode_key(row: &sqlx::sqlite::SqliteRow) -> StoreResult<ApiKey> {
    let parse_ts = |s: String| {
        s.parse::<Timestamp>()
            .map_err(|e| StoreError::Other(e.into()))
    };
    let id: String = row.get("id");
    let scopes: String = row.get("scopes");
    let org_id: Option<String> = row.get("org_id");
    let revoked_at: Option<String> = row.get("revoked_at");
    Ok(ApiKey {
        id: KeyId::parse(&id).map_err(|e| StoreError::Other(e.into()))?,
        name: row.get("name"),
        scopes: serde_json::from_str::<ScopeSet>(&scopes).map_err(json_error)?,
        org_id: org_id
            .map(|s| OrgId::parse(&s))
            .transpose()
            .map_err(|e| StoreError::Other(e.into()))?,
        secret_hash: SecretHash(row.get("secret_hash")),
        created_at: parse_ts(row.get("created_at"))?,
        revoked_at: revoked_at.map(parse_ts).transpose()?,
    })
}

// ---- the writes that go through group commit (sqlite_writer) ----------------------

/// Inserts a new organization with its owner, event and idempotency record.
pub(super) async fn create_org_in(conn: &mut SqliteConnection, op: &CreateOrg) -> StoreResult<()> {
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
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE principal = ?1 AND key = ?2 AND created_at < ?3",
        )
        .bind(&record.principal)
        .bind(&record.key)
        .bind(time::format(
            record.created_at - jiff::SignedDuration::from_hours(24),
        ))
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
        sqlx::query(
            "INSERT INTO idempotency_keys (principal, key, fingerprint, org_id, response, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(&record.principal)
        .bind(&record.key)
        .bind(&record.fingerprint)
        .bind(record.org_id.to_string())
        .bind(response)
        .bind(time::format(record.created_at))
        .execute(&mut *conn)
        .await
        .map_err(unique_as(Constraint::IdempotencyKey))?;
    }
    check_placement(conn, org, 1).await?;
    sqlx::query(
        "INSERT INTO organizations
             (id, slug, name, parent_id, enabled, version, created_at, updated_at, deleted_at, doc)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL, ?9)",
    )
    .bind(org.id.to_string())
    .bind(org.slug.as_str())
    .bind(org.name.as_str())
    .bind(org.parent_id.map(|p| p.to_string()))
    .bind(org.enabled)
    .bind(org.version)
    .bind(time::format(org.created_at))
    .bind(time::format(org.updated_at))
    .bind(doc)
    .execute(&mut *conn)
    .await
    .map_err(unique_as(Constraint::SlugTaken))?;
    insert_domains(conn, org).await?;
    if let Some(owner) = owner {
        upsert_membership(conn, owner).await?;
    }
    insert_event(conn, event).await
}

/// The common update — the org stays live, under the same parent, with the same
/// domains — as one guarded UPDATE and its event: no read of the old document and
/// no tree or domain work, which keeps the single writer's time per write short.
/// `false` when the guard does not hold (a stale version, a move, a delete or
/// restore, new domains, a missing row): [`write_org_in`] then decides.
pub(super) async fn write_org_in_place(
    conn: &mut SqliteConnection,
    op: &WriteOrg,
) -> StoreResult<bool> {
    let WriteOrg {
        org_id,
        expected_version,
        org,
        doc,
        event,
    } = op;
    if !org.is_live() {
        return Ok(false);
    }
    // json_extract returns an array as minified JSON text, which is how serde_json
    // writes it; any difference only sends the write down the full path.
    let done = sqlx::query(
        "UPDATE organizations
            SET slug = ?2, name = ?3, enabled = ?5, version = ?6, updated_at = ?7, doc = ?8
          WHERE id = ?1 AND version = ?9 AND deleted_at IS NULL AND parent_id IS ?4
            AND json_extract(doc, '$.domains') IS ?10",
    )
    .bind(org_id.to_string())
    .bind(org.slug.as_str())
    .bind(org.name.as_str())
    .bind(org.parent_id.map(|p| p.to_string()))
    .bind(org.enabled)
    .bind(org.version)
    .bind(time::format(org.updated_at))
    .bind(doc)
    .bind(expected_version)
    .bind(encode(&org.domains)?)
    .execute(&mut *conn)
    .await
    .map_err(unique_as(Constraint::SlugTaken))?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    insert_event(conn, event).await?;
    Ok(true)
}

/// Replaces an organization if its version is still the one the write was planned
/// against, keeping the domain index and the tree rules, with its event.
pub(super) async fn write_org_in(conn: &mut SqliteConnection, op: &WriteOrg) -> StoreResult<()> {
    let WriteOrg {
        org_id,
        expected_version,
        org,
        doc,
        event,
    } = op;
    let stored: Option<String> = sqlx::query_scalar("SELECT doc FROM organizations WHERE id = ?1")
        .bind(org_id.to_string())
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?;
    let old = decode_org(&stored.ok_or(StoreError::NotFound)?)?;
    if old.version != *expected_version {
        return Err(StoreError::VersionMismatch);
    }
    let restoring = !old.is_live() && org.is_live();
    if org.parent_id != old.parent_id || (restoring && org.parent_id.is_some()) {
        let height = subtree_height(conn, org_id).await?;
        check_placement(conn, org, height).await?;
    }
    if old.is_live() && !org.is_live() {
        let children: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM organizations WHERE parent_id = ?1 AND deleted_at IS NULL",
        )
        .bind(org_id.to_string())
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error)?;
        if children > 0 {
            return Err(StoreError::Conflict(Constraint::HasChildren));
        }
    }
    sqlx::query(
        "UPDATE organizations
            SET slug = ?2, name = ?3, parent_id = ?4, enabled = ?5, version = ?6,
                updated_at = ?7, deleted_at = ?8, doc = ?9
          WHERE id = ?1 AND version = ?10",
    )
    .bind(org_id.to_string())
    .bind(org.slug.as_str())
    .bind(org.name.as_str())
    .bind(org.parent_id.map(|p| p.to_string()))
    .bind(org.enabled)
    .bind(org.version)
    .bind(time::format(org.updated_at))
    .bind(org.deleted_at.map(time::format))
    .bind(doc)
    .bind(expected_version)
    .execute(&mut *conn)
    .await
    .map_err(unique_as(Constraint::SlugTaken))?;
    if old.domains != org.domains || old.is_live() != org.is_live() {
        sqlx::query("DELETE FROM org_domains WHERE org_id = ?1")
            .bind(org_id.to_string())
            .execute(&mut *conn)
            .await
            .map_err(db_error)?;
        if org.is_live() {
            insert_domains(conn, org).await?;
        }
    }
    insert_event(conn, event).await
}

/// Adds, changes or removes a membership if it is still as the write expects,
/// under the membership rules (last owner, the policy's member cap), with its event.
pub(super) async fn write_membership_in(
    conn: &mut SqliteConnection,
    op: &WriteMembership,
) -> StoreResult<()> {
    let WriteMembership {
        org_id,
        user_id,
        expected,
        after,
        event,
    } = op;
    let doc: Option<String> =
        sqlx::query_scalar("SELECT doc FROM organizations WHERE id = ?1 AND deleted_at IS NULL")
            .bind(org_id.to_string())
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error)?;
    let org = decode_org(&doc.ok_or(StoreError::NotFound)?)?;
    let current = read_membership(&mut *conn, org_id, user_id).await?;
    if current.as_ref() != expected.as_ref() {
        return Err(StoreError::VersionMismatch);
    }
    let (owners, total): (i64, i64) = sqlx::query_as(
        "SELECT COALESCE(SUM(role = 'owner'), 0), COUNT(*) FROM memberships WHERE org_id = ?1",
    )
    .bind(org_id.to_string())
    .fetch_one(&mut *conn)
    .await
    .map_err(db_error)?;
    members::check_member_rules(
        expected.as_ref(),
        after.as_ref(),
        owners as u64,
        total as u64,
        org.policy.as_ref(),
    )?;
    match after {
        Some(member) => upsert_membership(conn, member).await?,
        None => {
            sqlx::query("DELETE FROM memberships WHERE org_id = ?1 AND user_id = ?2")
                .bind(org_id.to_string())
                .bind(user_id.as_str())
                .execute(&mut *conn)
                .await
                .map_err(db_error)?;
        }
    }
    insert_event(conn, event).await
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn find_org(&self, lookup: &OrgLookup) -> StoreResult<Option<Organization>> {
        let row: Option<String> = match lookup {
            OrgLookup::Id(id) => {
                sqlx::query_scalar("SELECT doc FROM organizations WHERE id = ?1")
                    .bind(id.to_string())
                    .fetch_optional(&self.reader)
                    .await
            }
            OrgLookup::Slug(slug) => {
                sqlx::query_scalar(
                    "SELECT doc FROM organizations WHERE slug = ?1
                  ORDER BY deleted_at IS NOT NULL, deleted_at DESC LIMIT 1",
                )
                .bind(slug.as_str())
                .fetch_optional(&self.reader)
                .await
            }
        }
        .map_err(db_error)?;
        row.as_deref().map(decode_org).transpose()
    }

    async fn lineage(&self, org_id: &OrgId) -> StoreResult<Vec<OrgId>> {
        let mut conn = self.reader.acquire().await.map_err(db_error)?;
        ancestry(&mut conn, org_id, false).await
    }

    async fn list_orgs(
        &self,
        filter: &OrgFilter,
        after: Option<&OrgId>,
        limit: u32,
    ) -> StoreResult<Vec<Organization>> {
        let docs: Vec<String> = super::org_list_query("doc", filter, after, limit, WALK_LIMIT)
            .build_query_scalar()
            .fetch_all(&self.reader)
            .await
            .map_err(db_error)?;
        docs.iter().map(|d| decode_org(d)).collect()
    }

    async fn create_org(
        &self,
        org: &Organization,
        event: &Event,
        owner: Option<&Membership>,
        idempotency: Option<&IdempotencyRecord>,
    ) -> StoreResult<()> {
        let op = CreateOrg {
            org: org.clone(),
            doc: encode(org)?,
            event: EncodedEvent::new(event)?,
            owner: owner.cloned(),
            idempotency: idempotency
                .map(|r| Ok::<_, StoreError>((r.clone(), encode(&r.response)?)))
                .transpose()?,
        };
        self.group_commit
            .submit(WriteOp::CreateOrg(Box::new(op)))
            .await
    }

    async fn write_org(
        &self,
        org_id: &OrgId,
        expected_version: i64,
        org: &Organization,
        event: &Event,
    ) -> StoreResult<()> {
        let op = WriteOrg {
            org_id: *org_id,
            expected_version,
            org: org.clone(),
            doc: encode(org)?,
            event: EncodedEvent::new(event)?,
        };
        self.group_commit
            .submit(WriteOp::WriteOrg(Box::new(op)))
            .await
    }

    async fn list_org_events(
        &self,
        org_id: &OrgId,
        after_seq: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<(i64, Event)>> {
        let rows = sqlx::query(
            "SELECT seq, doc FROM events WHERE org_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )
        .bind(org_id.to_string())
        .bind(after_seq.unwrap_or(0))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|r| {
                let doc: String = r.get("doc");
                Ok((
                    r.get("seq"),
                    serde_json::from_str(&doc).map_err(json_error)?,
                ))
            })
            .collect()
    }

    async fn find_membership(
        &self,
        org_id: &OrgId,
        user_id: &UserId,
    ) -> StoreResult<Option<Membership>> {
        read_membership(&self.reader, org_id, user_id).await
    }

    async fn list_members(
        &self,
        org_id: &OrgId,
        after: Option<&UserId>,
        limit: u32,
    ) -> StoreResult<Vec<Membership>> {
        let docs: Vec<String> = sqlx::query_scalar(
            "SELECT doc FROM memberships WHERE org_id = ?1 AND user_id > ?2 ORDER BY user_id LIMIT ?3",
        )
        .bind(org_id.to_string())
        .bind(after.map_or("", UserId::as_str))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(db_error)?;
        docs.iter()
            .map(|d| serde_json::from_str(d).map_err(json_error))
            .collect()
    }

    async fn write_membership(
        &self,
        org_id: &OrgId,
        user_id: &UserId,
        expected: Option<&Membership>,
        after: Option<&Membership>,
        event: &Event,
    ) -> StoreResult<()> {
        let op = WriteMembership {
            org_id: *org_id,
            user_id: user_id.clone(),
            expected: expected.cloned(),
            after: after.cloned(),
            event: EncodedEvent::new(event)?,
        };
        self.group_commit
            .submit(WriteOp::WriteMembership(Box::new(op)))
            .await
    }

    async fn find_idempotency(
        &self,
        principal: &str,
        key: &str,
        since: Timestamp,
    ) -> StoreResult<Option<IdempotencyRecord>> {
        let row = sqlx::query(
            "SELECT fingerprint, org_id, response, created_at FROM idempotency_keys
              WHERE principal = ?1 AND key = ?2 AND created_at >= ?3",
        )
        .bind(principal)
        .bind(key)
        .bind(time::format(since))
        .fetch_optional(&self.reader)
        .await
        .map_err(db_error)?;
        let Some(row) = row else { return Ok(None) };
        let org_id: String = row.get("org_id");
        let response: String = row.get("response");
        let created_at: String = row.get("created_at");
        Ok(Some(IdempotencyRecord {
            principal: principal.to_owned(),
            key: key.to_owned(),
            fingerprint: row.get("fingerprint"),
            org_id: OrgId::parse(&org_id).map_err(|e| StoreError::Other(e.into()))?,
            response: serde_json::from_str(&response).map_err(json_error)?,
            created_at: created_at
                .parse()
                .map_err(|e: jiff::Error| StoreError::Other(e.into()))?,
        }))
    }

    async fn insert_api_key(&self, key: &ApiKey) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO api_keys (id, name, scopes, org_id, secret_hash, created_at, revoked_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .bind(key.id.to_string())
        .bind(&key.name)
        .bind(encode(&key.scopes)?)
        .bind(key.org_id.map(|o| o.to_string()))
        .bind(&key.secret_hash.0)
        .bind(time::format(key.created_at))
        .bind(key.revoked_at.map(time::format))
        .execute(&self.writer)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn find_api_key(&self, hash: &SecretHash) -> StoreResult<Option<ApiKey>> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE secret_hash = ?1")
            .bind(&hash.0)
            .fetch_optional(&self.reader)
            .await
            .map_err(db_error)?;
        row.as_ref().map(decode_key).transpose()
    }

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKey>> {
        let rows = sqlx::query("SELECT * FROM api_keys ORDER BY id")
            .fetch_all(&self.reader)
            .await
            .map_err(db_error)?;
        rows.iter().map(decode_key).collect()
    }

    async fn revoke_api_key(&self, key_id: &KeyId, at: Timestamp) -> StoreResult<bool> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL")
                .bind(key_id.to_string())
                .bind(time::format(at))
                .execute(&self.writer)
                .await
                .map_err(db_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn backup(&self, target: &std::path::Path) -> StoreResult<()> {
        // VACUUM INTO copies one read snapshot (WAL readers never block the writer),
        // producing a compact, self-contained database file.
        let target = target
            .to_str()
            .ok_or_else(|| StoreError::Other(anyhow::anyhow!("the backup path must be UTF-8")))?;
        sqlx::query("VACUUM INTO ?1")
            .bind(target)
            .execute(&self.reader)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn count_api_keys(&self) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys")
            .fetch_one(&self.reader)
            .await
            .map_err(db_error)?;
        Ok(n as u64)
    }
}

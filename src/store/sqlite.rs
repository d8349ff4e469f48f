//! The embedded store: one SQLite file in WAL mode with `synchronous=FULL`, so a
//! commit is on disk before the request that made it is answered.
//!
//! Writes go through a pool of exactly one connection: SQLite admits one writer at
//! a time anyway, and queueing in-process avoids `SQLITE_BUSY` between our own
//! writers. Organization and membership writes are group-committed on it
//! ([`super::sqlite_writer`]). Reads use a separate pool and never wait for writes
//! (WAL readers see the last commit).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, Sqlite};

use super::org_copies::{self, OrgCopies};
use super::sqlite_checkpoint::Checkpoints;
use super::sqlite_key_cache::SqliteKeyCache;
use super::sqlite_point_reads::PointReads;
use super::sqlite_writer::{
    CommitStats, CreateOrg, EncodedEvent, GroupCommit, OrgColumns, WriteMembership, WriteOp,
    WriteOrg,
};
use super::{IdempotencyRecord, OrgFilter, OrgLookup, Store, StoreError, StoreResult};
use crate::domain::apikey::{ApiKey, ScopeSet, SecretHash};
use crate::domain::event::Event;
use crate::domain::hierarchy::MAX_DEPTH;
use crate::domain::ids::{KeyId, OrgId};
use crate::domain::members::{Membership, UserId};
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
    /// Lists and scans; reads that find rows by key use `point`.
    pub(super) reader: SqlitePool,
    point: PointReads,
    /// Valid API keys, checked against the change counter (sqlite_key_cache.rs).
    keys: SqliteKeyCache,
    /// Organizations as stored, for reads by id (org_copies.rs).
    copies: Arc<OrgCopies>,
    pub(super) group_commit: GroupCommit,
    /// Seals and opens webhook signing secrets (store/sealed_secrets.rs).
    pub(super) secrets_key: SecretsKey,
}

impl SqliteStore {
    /// Connects, migrates, refuses a secrets key other than the one the stored
    /// secrets are sealed with, and seals secrets older versions stored in clear.
    pub async fn open(url: &str, secrets_key: SecretsKey) -> anyhow::Result<Self> {
        Self::open_keeping(url, secrets_key, org_copies::DEFAULT_CAPACITY).await
    }

    /// [`Self::open`], keeping copies of at most `org_copies` organizations
    /// (`store/org_copies.rs`; 0: none).
    pub async fn open_keeping(
        url: &str,
        secrets_key: SecretsKey,
        org_copies: usize,
    ) -> anyhow::Result<Self> {
        let store = Self::connect(url, secrets_key, org_copies).await?;
        store.adopt_secrets_key().await?;
        Ok(store)
    }

    /// Connects and migrates, without looking at the stored secrets.
    pub(super) async fn connect(
        url: &str,
        secrets_key: SecretsKey,
        org_copies: usize,
    ) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .with_context(|| "invalid SQLite URL")?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: the WAL is synced at every commit, so an acknowledged write
            // survives a power cut (NORMAL would only survive a process crash).
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        // No ping before lending a connection (sqlx's default): for SQLite it is
        // one more hop to the connection's thread per statement, and an open file
        // does not go stale the way a network connection does.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            // Checkpoints run beside the writer, not in its commits (sqlite_checkpoint.rs).
            .connect_with(
                options
                    .clone()
                    .pragma("wal_autocheckpoint", "0")
                    // The sub-journal of a savepoint or statement stays in memory
                    // instead of spilling past 64 KiB to a temporary file created and
                    // deleted within one batch; savepoints are released per write
                    // (sqlite_writer.rs), so it holds one write's pages. Sorts on
                    // this connection stay in memory too: a future migration that
                    // builds an index on a large table holds that index's keys.
                    .pragma("temp_store", "memory"),
            )
            .await
            .with_context(|| format!("cannot open the SQLite database {url}"))?;
        MIGRATOR
            .run(&writer)
            .await
            .context("cannot apply SQLite migrations")?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(options.clone().read_only(true))
            .await
            .context("cannot open SQLite readers")?;
        // One per runtime thread and a few more, so a reader rarely finds them all
        // taken (tests run several runtimes against one store).
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let point = PointReads::open(options.get_filename(), threads * 2 + 2)
            .context("cannot open SQLite point readers")?;
        let checkpoints = Checkpoints::start(options.get_filename())
            .context("cannot start the SQLite checkpoint thread")?;
        let copies = Arc::new(OrgCopies::new(org_copies));
        Ok(Self {
            point,
            keys: SqliteKeyCache::new(),
            group_commit: GroupCommit::start(writer.clone(), checkpoints, copies.clone())?,
            copies,
            writer,
            reader,
            secrets_key,
        })
    }

    /// Group-commit figures so far: how many transactions carried how many writes.
    pub fn commit_stats(&self) -> &CommitStats {
        &self.group_commit.stats
    }

    /// Has the writer connection's change counter read in the background when the
    /// last reading has lapsed (`org_copies.rs`); the caller does not wait.
    fn recheck_copies(&self) {
        if !self.copies.claim_check() {
            return;
        }
        /// Ends the claim however the task ends (a runtime shut down under it too).
        struct Claim(Arc<OrgCopies>);
        impl Drop for Claim {
            fn drop(&mut self) {
                self.0.check_done();
            }
        }
        let (writer, claim) = (self.writer.clone(), Claim(self.copies.clone()));
        tokio::spawn(async move {
            let read_at = claim.0.now();
            // On the writer's connection: its counter moves only with another
            // connection's commits, not with this process's own.
            let version = sqlx::query_scalar::<_, i64>("PRAGMA data_version")
                .fetch_one(&writer)
                .await;
            if let Ok(version) = version {
                claim.0.confirm(version, read_at);
            }
        });
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

pub(super) fn json_error(err: serde_json::Error) -> StoreError {
    StoreError::Other(anyhow::Error::new(err).context("stored JSON does not decode"))
}

pub(super) fn decode_org(doc: &str) -> StoreResult<Organization> {
    serde_json::from_str(doc).map_err(json_error)
}

pub(super) fn encode<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(json_error)
}

/// The walk up from `?1` (bounded by `?2` levels), nearest first.
pub(super) fn ancestry_sql(live_only: bool) -> &'static str {
    macro_rules! walk {
        ($start_filter:literal) => {
            concat!(
                "WITH RECURSIVE chain(id, parent_id, depth) AS (
                     SELECT id, parent_id, 1 FROM organizations WHERE id = ?1 ",
                $start_filter,
                " UNION ALL
                     SELECT o.id, o.parent_id, c.depth + 1 FROM organizations o
                       JOIN chain c ON o.id = c.parent_id
                      WHERE c.depth < ?2)
                 SELECT id FROM chain ORDER BY depth"
            )
        };
    }
    if live_only {
        walk!("AND deleted_at IS NULL")
    } else {
        walk!("")
    }
}

pub(super) fn parse_org_ids(ids: &[String]) -> StoreResult<Vec<OrgId>> {
    ids.iter()
        .map(|id| OrgId::parse(id).map_err(|e| StoreError::Other(e.into())))
        .collect()
}

pub(super) const MEMBERSHIP_DOC: &str =
    "SELECT doc FROM memberships WHERE org_id = ?1 AND user_id = ?2";

/// An `api_keys` row as stored, whichever library read it.
#[derive(sqlx::FromRow)]
struct KeyRow {
    id: String,
    name: Option<String>,
    scopes: String,
    org_id: Option<String>,
    secret_hash: String,
    created_at: String,
    revoked_at: Option<String>,
}

/// The columns [`KeyRow::read`] expects, in its order.
macro_rules! key_columns {
    () => {
        "id, name, scopes, org_id, secret_hash, created_at, revoked_at"
    };
}

impl KeyRow {
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            name: row.get(1)?,
            scopes: row.get(2)?,
            org_id: row.get(3)?,
            secret_hash: row.get(4)?,
            created_at: row.get(5)?,
            revoked_at: row.get(6)?,
        })
    }

    fn decode(self) -> StoreResult<ApiKey> {
        let parse_ts = |s: String| {
            s.parse::<Timestamp>()
                .map_err(|e| StoreError::Other(e.into()))
        };
        Ok(ApiKey {
            id: KeyId::parse(&self.id).map_err(|e| StoreError::Other(e.into()))?,
            name: self.name,
            scopes: serde_json::from_str::<ScopeSet>(&self.scopes).map_err(json_error)?,
            org_id: self
                .org_id
                .map(|s| OrgId::parse(&s))
                .transpose()
                .map_err(|e| StoreError::Other(e.into()))?,
            secret_hash: SecretHash(self.secret_hash),
            created_at: parse_ts(self.created_at)?,
            revoked_at: self.revoked_at.map(parse_ts).transpose()?,
        })
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn org_copies(&self) -> &OrgCopies {
        &self.copies
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn find_org(&self, lookup: &OrgLookup) -> StoreResult<Option<Organization>> {
        let doc = match lookup {
            OrgLookup::Id(id) => self.point.optional_text(
                "SELECT doc FROM organizations WHERE id = ?1",
                [id.to_string()],
            ),
            OrgLookup::Slug(slug) => self.point.optional_text(
                "SELECT doc FROM organizations WHERE slug = ?1
                  ORDER BY deleted_at IS NOT NULL, deleted_at DESC LIMIT 1",
                [slug.as_str()],
            ),
        }?;
        doc.as_deref().map(decode_org).transpose()
    }

    async fn read_org(&self, lookup: &OrgLookup) -> StoreResult<Option<Arc<Organization>>> {
        let OrgLookup::Id(id) = lookup else {
            return Ok(self.find_org(lookup).await?.map(Arc::new));
        };
        // On a miss, a lapsed reading of the change counter is also renewed in
        // the background, so the copies vouch again soon.
        let read = async {
            self.recheck_copies();
            self.find_org(lookup).await
        };
        self.copies.read_through(id, read).await
    }

    async fn lineage(&self, org_id: &OrgId) -> StoreResult<Vec<OrgId>> {
        let ids = self.point.texts(
            ancestry_sql(false),
            rusqlite::params![org_id.to_string(), WALK_LIMIT],
        )?;
        parse_org_ids(&ids)
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
            org: Arc::new(org.clone()),
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
        current: &Organization,
        next: Arc<Organization>,
        event: &Event,
    ) -> StoreResult<()> {
        let op = WriteOrg {
            expected_version: current.version,
            columns: OrgColumns::new(&next)?,
            in_place: current.changes_only_its_row(&next),
            renames: current.slug != next.slug,
            org: next,
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
        self.point
            .optional_text(
                MEMBERSHIP_DOC,
                [org_id.to_string().as_str(), user_id.as_str()],
            )?
            .map(|d| serde_json::from_str(&d).map_err(json_error))
            .transpose()
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
        let row = self.point.optional_row(
            "SELECT fingerprint, org_id, response, created_at FROM idempotency_keys
              WHERE principal = ?1 AND key = ?2 AND created_at >= ?3",
            [principal, key, &time::format(since)],
            |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                ))
            },
        )?;
        let Some((fingerprint, org_id, response, created_at)) = row else {
            return Ok(None);
        };
        Ok(Some(IdempotencyRecord {
            principal: principal.to_owned(),
            key: key.to_owned(),
            fingerprint,
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
        if self.keys.fresh(&self.point) {
            if let Some(key) = self.keys.keys.get(hash) {
                return Ok(Some(key));
            }
        }
        let ticket = self.keys.keys.ticket();
        let found = self
            .point
            .optional_row(
                concat!(
                    "SELECT ",
                    key_columns!(),
                    " FROM api_keys WHERE secret_hash = ?1"
                ),
                [&hash.0],
                KeyRow::read,
            )?
            .map(KeyRow::decode)
            .transpose()?;
        if let Some(key) = &found {
            self.keys.keys.store(ticket, key);
        }
        Ok(found)
    }

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKey>> {
        let rows: Vec<KeyRow> = sqlx::query_as(concat!(
            "SELECT ",
            key_columns!(),
            " FROM api_keys ORDER BY id"
        ))
        .fetch_all(&self.reader)
        .await
        .map_err(db_error)?;
        rows.into_iter().map(KeyRow::decode).collect()
    }

    async fn revoke_api_key(&self, key_id: &KeyId, at: Timestamp) -> StoreResult<bool> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL")
                .bind(key_id.to_string())
                .bind(time::format(at))
                .execute(&self.writer)
                .await
                .map_err(db_error)?;
        self.keys.keys.invalidate();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_writer_keeps_its_sub_journal_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("orgd.db").display());
        let store = SqliteStore::open(&url, SecretsKey::generate())
            .await
            .unwrap();
        // 2 = MEMORY; the pool's only connection is the group committer's.
        let temp_store: i64 = sqlx::query_scalar("PRAGMA temp_store")
            .fetch_one(&store.writer)
            .await
            .unwrap();
        assert_eq!(temp_store, 2);
    }

    /// The flag reaches libsqlite3-sys's build script through the same `[env]`
    /// table of `.cargo/config.toml` that sets it for this crate; SQLite has no
    /// pragma or compile option that reports which sync call it makes.
    #[test]
    fn sqlite_is_built_to_sync_with_fdatasync() {
        let flags = option_env!("LIBSQLITE3_FLAGS").unwrap_or_default();
        assert!(
            flags.split_whitespace().any(|f| f == "-DHAVE_FDATASYNC=1"),
            "LIBSQLITE3_FLAGS = {flags:?}"
        );
    }
}

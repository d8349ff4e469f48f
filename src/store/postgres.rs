//! The PostgreSQL store, for running any number of orgd processes on one database
//! (or on a PostgreSQL-compatible distributed SQL engine; see docs/scaling.md).
//!
//! Guarantees match the SQLite store's, by different means: an update that leaves
//! the org live, under the same parent and with the same domains is one guarded
//! statement, shared with the other such updates of the moment (the row lock is
//! taken by its UPDATE and the event is inserted under it; pg_group_commit.rs);
//! any other update locks the row (`FOR UPDATE`) for its read-check-write;
//! transactions that
//! rely on tree facts (a move, a delete, a restore, a create under a parent) run
//! SERIALIZABLE so two concurrent moves cannot build a cycle; serialization
//! failures and deadlocks are retried a bounded number of times; and uniqueness is
//! left to named unique indexes, whose names map to the client's 409.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Postgres, Row};

use super::key_cache::KeyCache;
use super::org_copies::{self, OrgCopies};
use super::pg_changes;
use super::pg_group_commit::{InPlaceRow, InPlaceWrites};
use super::pg_point_reads::IdReads;
use super::{Constraint, IdempotencyRecord, OrgFilter, OrgLookup, Store, StoreError, StoreResult};
use crate::domain::apikey::{ApiKey, ScopeSet, SecretHash};
use crate::domain::event::Event;
use crate::domain::hierarchy::{self, MAX_DEPTH};
use crate::domain::ids::{KeyId, OrgId};
use crate::domain::members::{self, Membership, UserId};
use crate::domain::org::Organization;
use crate::domain::secrets_key::SecretsKey;
use crate::domain::time;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Bound on recursive walks, well past MAX_DEPTH, so corrupt data cannot loop forever.
pub(super) const WALK_LIMIT: i64 = 2 * MAX_DEPTH as i64;
/// Attempts of a transaction that keeps failing with 40001 / 40P01.
const TX_ATTEMPTS: usize = 8;

/// Every event passes through `events_unpositioned`: inserted with the event,
/// deleted by the sequencer. Each deleted row stays in the table, dead, until
/// VACUUM removes it, and autovacuum visits a table about once a minute
/// (`autovacuum_naptime`). Under PATCH load the queue held ~180,000 dead rows
/// after 14 s; each sequencer statement scanned them all, and that was 7% of
/// PostgreSQL's CPU (bench/README.md, session 13). So the sequencer vacuums the
/// queue itself after this many rows (~2 ms for 5,000, measured).
pub const FEED_QUEUE_VACUUM_EVERY: u64 = 5_000;

pub struct PgStore {
    pub(super) pool: PgPool,
    /// Valid API keys, while PostgreSQL notifies us of key changes.
    keys: Arc<KeyCache>,
    /// Organizations as stored, for reads by id, while PostgreSQL notifies us of
    /// their changes (org_copies.rs).
    copies: Arc<OrgCopies>,
    /// Hears those notifications (pg_changes.rs).
    listener: tokio::task::JoinHandle<()>,
    /// Batches the common update from concurrent requests into one statement.
    in_place: InPlaceWrites,
    /// Batches reads of one org by id from concurrent requests into one statement.
    by_id: IdReads,
    /// Seals and opens webhook signing secrets (store/sealed_secrets.rs).
    pub(super) secrets_key: SecretsKey,
    /// Rows this process's sequencer took off the feed's queue since it last
    /// vacuumed it (postgres_outbox.rs).
    pub(super) dequeued: std::sync::atomic::AtomicU64,
}

impl PgStore {
    /// Connects, migrates, refuses a secrets key other than the one the stored
    /// secrets are sealed with, and seals secrets older versions stored in clear.
    pub async fn open(url: &str, pool_size: u32, secrets_key: SecretsKey) -> anyhow::Result<Self> {
        Self::open_keeping(url, pool_size, secrets_key, org_copies::DEFAULT_CAPACITY).await
    }

    /// [`Self::open`], keeping copies of at most `org_copies` organizations
    /// (`store/org_copies.rs`; 0: none).
    pub async fn open_keeping(
        url: &str,
        pool_size: u32,
        secrets_key: SecretsKey,
        org_copies: usize,
    ) -> anyhow::Result<Self> {
        let store = Self::connect(url, pool_size, secrets_key, org_copies).await?;
        store.adopt_secrets_key().await?;
        Ok(store)
    }

    /// Connects and migrates, without looking at the stored secrets.
    pub(super) async fn connect(
        url: &str,
        pool_size: u32,
        secrets_key: SecretsKey,
        org_copies: usize,
    ) -> anyhow::Result<Self> {
        let options: PgConnectOptions = url
            .parse::<PgConnectOptions>()
            .context("invalid PostgreSQL URL")?
            .log_statements(tracing::log::LevelFilter::Trace);
        let pool = PgPoolOptions::new()
            .max_connections(pool_size.max(1))
            // Fail fast when the database is down: requests answer 503 within a few
            // seconds rather than queueing for the default 30.
            .acquire_timeout(Duration::from_secs(3))
            // sqlx pings every idle connection before lending it out: a full
            // round trip to the server before each statement (or transaction),
            // which halved throughput. A connection that died while idle fails its
            // next statement instead (503 for that request) and is discarded.
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .context("cannot connect to PostgreSQL")?;
        // sqlx's migrator takes a lock, so processes starting together apply each
        // migration once.
        MIGRATOR
            .run(&pool)
            .await
            .context("cannot apply PostgreSQL migrations")?;
        let keys = Arc::new(KeyCache::default());
        let copies = Arc::new(OrgCopies::new(org_copies));
        let listener = pg_changes::start(pool.clone(), &keys, &copies);
        let in_place = InPlaceWrites::start(pool.clone());
        let by_id = IdReads::start(pool.clone());
        Ok(Self {
            pool,
            keys,
            copies,
            listener,
            in_place,
            by_id,
            secrets_key,
            dequeued: Default::default(),
        })
    }

    /// Whether API keys are being cached (the change notifications are listened to).
    pub fn caches_api_keys(&self) -> bool {
        self.keys.is_enabled()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

pub(super) fn sqlstate(err: &sqlx::Error) -> Option<String> {
    match err {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// Sorts a sqlx error into what the caller can act on.
pub(super) fn db_error(err: sqlx::Error) -> StoreError {
    let unavailable = match &err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(_) => sqlstate(&err).is_some_and(|code| {
            // Connection exceptions, shutdown, too many connections, and the
            // serialization failures / deadlocks that outlived their retries.
            code.starts_with("08")
                || code.starts_with("57P")
                || code == "53300"
                || is_retryable_code(&code)
        }),
        _ => false,
    };
    if unavailable {
        StoreError::Unavailable(err.into())
    } else {
        StoreError::Other(err.into())
    }
}

pub(super) fn is_retryable_code(code: &str) -> bool {
    code == "40001" || code == "40P01"
}

fn is_retryable(err: &StoreError) -> bool {
    match err {
        StoreError::Unavailable(cause) => cause
            .downcast_ref::<sqlx::Error>()
            .and_then(sqlstate)
            .is_some_and(|c| is_retryable_code(&c)),
        _ => false,
    }
}

/// Maps a unique violation to the constraint its index name stands for.
pub(super) fn constraint_error(err: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &err {
        if db.is_unique_violation() {
            match db.constraint() {
                Some("org_slug_key") => return StoreError::Conflict(Constraint::SlugTaken),
                Some("org_domains_pkey") => return StoreError::Conflict(Constraint::DomainTaken),
                Some("idempotency_keys_pkey") => {
                    return StoreError::Conflict(Constraint::IdempotencyKey)
                }
                _ => {}
            }
        }
    }
    db_error(err)
}

/// Runs `attempt` again while it fails with a serialization failure or deadlock.
async fn retrying<T, F, Fut>(mut attempt: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = StoreResult<T>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Err(err) if tries < TX_ATTEMPTS && is_retryable(&err) => {
                // A short, growing pause lets the competing transaction finish.
                tokio::time::sleep(Duration::from_millis(2 * tries as u64)).await;
            }
            other => return other,
        }
    }
}

pub(super) fn json_error(err: serde_json::Error) -> StoreError {
    StoreError::Other(anyhow::Error::new(err).context("stored JSON does not decode"))
}

pub(super) fn encode<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(json_error)
}

fn decode_org(doc: &str) -> StoreResult<Organization> {
    serde_json::from_str(doc).map_err(json_error)
}

pub(super) fn parse_id<T>(parsed: Result<T, crate::domain::ids::IdParseError>) -> StoreResult<T> {
    parsed.map_err(|e| StoreError::Other(e.into()))
}

async fn begin(
    pool: &PgPool,
    serializable: bool,
) -> StoreResult<sqlx::Transaction<'static, Postgres>> {
    let mut tx = pool.begin().await.map_err(db_error)?;
    if serializable {
        sqlx::query("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
    }
    Ok(tx)
}

/// The start org's id followed by its ancestors'; empty if it is not live (when asked).
pub(super) async fn ancestry(
    conn: &mut PgConnection,
    start: &OrgId,
    live_only: bool,
) -> StoreResult<Vec<OrgId>> {
    let sql = format!(
        "WITH RECURSIVE chain(id, parent_id, depth) AS (
             SELECT id, parent_id, 1 FROM organizations WHERE id = $1 {}
             UNION ALL
             SELECT o.id, o.parent_id, c.depth + 1 FROM organizations o
               JOIN chain c ON o.id = c.parent_id
              WHERE c.depth < $2)
         SELECT id FROM chain ORDER BY depth",
        if live_only {
            "AND deleted_at IS NULL"
        } else {
            ""
        }
    );
    let ids: Vec<String> = sqlx::query_scalar(&sql)
        .bind(start.to_string())
        .bind(WALK_LIMIT as i32)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error)?;
    ids.iter().map(|id| parse_id(OrgId::parse(id))).collect()
}

async fn subtree_height(conn: &mut PgConnection, org: &OrgId) -> StoreResult<usize> {
    let height: Option<i32> = sqlx::query_scalar(
        "WITH RECURSIVE sub(id, level) AS (
             SELECT id, 1 FROM organizations WHERE id = $1
             UNION ALL
             SELECT o.id, s.level + 1 FROM organizations o JOIN sub s ON o.parent_id = s.id
              WHERE o.deleted_at IS NULL AND s.level < $2)
         SELECT MAX(level) FROM sub",
    )
    .bind(org.to_string())
    .bind(WALK_LIMIT as i32)
    .fetch_one(&mut *conn)
    .await
    .map_err(db_error)?;
    Ok(height.unwrap_or(1) as usize)
}

async fn check_placement(
    conn: &mut PgConnection,
    org: &Organization,
    height: usize,
) -> StoreResult<()> {
    if let Some(parent) = &org.parent_id {
        let chain = ancestry(conn, parent, true).await?;
        hierarchy::check_placement(&org.id, &chain, height)?;
    }
    Ok(())
}

async fn insert_domains(conn: &mut PgConnection, org: &Organization) -> StoreResult<()> {
    if org.domains.is_empty() {
        return Ok(());
    }
    let domains: Vec<&str> = org.domains.iter().map(|d| d.as_str()).collect();
    sqlx::query(
        "INSERT INTO org_domains (domain, org_id) SELECT d, $2 FROM UNNEST($1::text[]) AS d",
    )
    .bind(&domains)
    .bind(org.id.to_string())
    .execute(&mut *conn)
    .await
    .map_err(constraint_error)?;
    Ok(())
}

async fn insert_event(conn: &mut PgConnection, event: &Event) -> StoreResult<()> {
    sqlx::query(
        // Queued for the feed's sequencer in the same statement
        // (migrations/postgres/0005_event_positions.sql).
        "WITH inserted AS (
             INSERT INTO events (id, org_id, type, version, occurred_at, doc)
             VALUES ($1, $2, $3, $4, $5::timestamptz, $6::json)
             RETURNING seq)
         INSERT INTO events_unpositioned (seq) SELECT seq FROM inserted",
    )
    .bind(event.id.to_string())
    .bind(event.organization_id.to_string())
    .bind(event.event_type.as_str())
    .bind(event.version)
    .bind(time::format(event.occurred_at))
    .bind(encode(event)?)
    .execute(&mut *conn)
    .await
    .map_err(db_error)?;
    Ok(())
}

async fn upsert_membership(conn: &mut PgConnection, member: &Membership) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO memberships (org_id, user_id, role, doc) VALUES ($1, $2, $3, $4::json)
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

async fn read_membership(
    conn: &mut PgConnection,
    org_id: &OrgId,
    user_id: &UserId,
) -> StoreResult<Option<Membership>> {
    let doc: Option<String> =
        sqlx::query_scalar("SELECT doc::text FROM memberships WHERE org_id = $1 AND user_id = $2")
            .bind(org_id.to_string())
            .bind(user_id.as_str())
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error)?;
    doc.map(|d| serde_json::from_str(&d).map_err(json_error))
        .transpose()
}

pub(super) fn millis(ms: i64) -> StoreResult<Timestamp> {
    Timestamp::from_millisecond(ms).map_err(|e| StoreError::Other(e.into()))
}

const KEY_COLUMNS: &str = "id, name, scopes::text AS scopes, org_id, secret_hash,
    (extract(epoch FROM created_at) * 1000)::bigint AS created_ms,
    (extract(epoch FROM revoked_at) * 1000)::bigint AS revoked_ms";

fn decode_key(row: &PgRow) -> StoreResult<ApiKey> {
    let id: String = row.get("id");
    let scopes: String = row.get("scopes");
    let org_id: Option<String> = row.get("org_id");
    let revoked_ms: Option<i64> = row.get("revoked_ms");
    Ok(ApiKey {
        id: parse_id(KeyId::parse(&id))?,
        name: row.get("name"),
        scopes: serde_json::from_str::<ScopeSet>(&scopes).map_err(json_error)?,
        org_id: org_id.map(|s| parse_id(OrgId::parse(&s))).transpose()?,
        secret_hash: SecretHash(row.get("secret_hash")),
        created_at: millis(row.get("created_ms"))?,
        revoked_at: revoked_ms.map(millis).transpose()?,
    })
}

impl PgStore {
    async fn create_org_once(
        &self,
        org: &Organization,
        event: &Event,
        owner: Option<&Membership>,
        idempotency: Option<&IdempotencyRecord>,
    ) -> StoreResult<()> {
        let mut tx = begin(&self.pool, org.parent_id.is_some()).await?;
        // The idempotency record goes first: a concurrent retry with the same key
        // then fails on its key, not on the slug or domains the first attempt took.
        if let Some(record) = idempotency {
            sqlx::query(
                "DELETE FROM idempotency_keys
                  WHERE principal = $1 AND key = $2 AND created_at < $3::timestamptz - interval '24 hours'",
            )
            .bind(&record.principal)
            .bind(&record.key)
            .bind(time::format(record.created_at))
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
            sqlx::query(
                "INSERT INTO idempotency_keys (principal, key, fingerprint, org_id, response, created_at)
                 VALUES ($1, $2, $3, $4, $5::jsonb, $6::timestamptz)",
            )
            .bind(&record.principal)
            .bind(&record.key)
            .bind(&record.fingerprint)
            .bind(record.org_id.to_string())
            .bind(encode(&record.response)?)
            .bind(time::format(record.created_at))
            .execute(&mut *tx)
            .await
            .map_err(constraint_error)?;
        }
        check_placement(&mut tx, org, 1).await?;
        sqlx::query(
            "INSERT INTO organizations
                 (id, slug, name, parent_id, enabled, version, created_at, updated_at, deleted_at, doc)
             VALUES ($1, $2, $3, $4, $5, $6, $7::timestamptz, $8::timestamptz, NULL, $9::json)",
        )
        .bind(org.id.to_string())
        .bind(org.slug.as_str())
        .bind(org.name.as_str())
        .bind(org.parent_id.map(|p| p.to_string()))
        .bind(org.enabled)
        .bind(org.version)
        .bind(time::format(org.created_at))
        .bind(time::format(org.updated_at))
        .bind(encode(org)?)
        .execute(&mut *tx)
        .await
        .map_err(constraint_error)?;
        insert_domains(&mut tx, org).await?;
        if let Some(owner) = owner {
            upsert_membership(&mut tx, owner).await?;
        }
        insert_event(&mut tx, event).await?;
        tx.commit().await.map_err(db_error)
    }

    async fn write_membership_once(
        &self,
        org_id: &OrgId,
        user_id: &UserId,
        expected: Option<&Membership>,
        after: Option<&Membership>,
        event: &Event,
    ) -> StoreResult<()> {
        let mut tx = begin(&self.pool, false).await?;
        // Holding the org's row serializes membership changes per organization, so
        // the owner and member counts below cannot be overtaken by a concurrent add
        // or demotion.
        let doc: Option<String> = sqlx::query_scalar(
            "SELECT doc::text FROM organizations WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
        )
        .bind(org_id.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let org = decode_org(&doc.ok_or(StoreError::NotFound)?)?;
        let current = read_membership(&mut tx, org_id, user_id).await?;
        if current.as_ref() != expected {
            return Err(StoreError::VersionMismatch);
        }
        let (owners, total): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*) FILTER (WHERE role = 'owner'), COUNT(*) FROM memberships WHERE org_id = $1",
        )
        .bind(org_id.to_string())
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        members::check_member_rules(
            expected,
            after,
            owners as u64,
            total as u64,
            org.policy.as_ref(),
        )?;
        match after {
            Some(member) => upsert_membership(&mut tx, member).await?,
            None => {
                sqlx::query("DELETE FROM memberships WHERE org_id = $1 AND user_id = $2")
                    .bind(org_id.to_string())
                    .bind(user_id.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
            }
        }
        insert_event(&mut tx, event).await?;
        tx.commit().await.map_err(db_error)
    }

    /// The common update — the org stays live, under the same parent, with the same
    /// domains ([`Organization::changes_only_its_row`]) — as a guarded UPDATE that
    /// takes the row lock, with the event inserted under it, in one statement
    /// shared with the other requests' updates of the moment
    /// (store/pg_group_commit.rs). It touches no tree fact and no domain row, so
    /// READ COMMITTED is enough. `false` when the guard does not hold (a stale
    /// version, a missing row): the full transaction then decides, and answers the
    /// precise error.
    async fn write_org_in_place(
        &self,
        expected_version: i64,
        org: &Organization,
        event: &Event,
    ) -> StoreResult<bool> {
        self.in_place
            .write(InPlaceRow {
                org_id: org.id.to_string(),
                expected_version,
                slug: org.slug.as_str().to_owned(),
                name: org.name.as_str().to_owned(),
                parent_id: org.parent_id.map(|p| p.to_string()),
                enabled: org.enabled,
                version: org.version,
                updated_at: time::format(org.updated_at),
                doc: encode(org)?,
                event_id: event.id.to_string(),
                event_type: event.event_type.as_str().to_owned(),
                event_version: event.version,
                occurred_at: time::format(event.occurred_at),
                event_doc: encode(event)?,
            })
            .await
    }

    async fn write_org_once(
        &self,
        org_id: &OrgId,
        expected_version: i64,
        org: &Organization,
        event: &Event,
    ) -> StoreResult<()> {
        // Whether this write depends on tree facts is known from the new state and
        // confirmed against the locked row below; deciding isolation up front keeps
        // plain field updates at READ COMMITTED.
        let touches_tree = org.parent_id.is_some() || !org.is_live();
        let mut tx = begin(&self.pool, touches_tree).await?;
        let doc: Option<String> =
            sqlx::query_scalar("SELECT doc::text FROM organizations WHERE id = $1 FOR UPDATE")
                .bind(org_id.to_string())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
        let old = decode_org(&doc.ok_or(StoreError::NotFound)?)?;
        if old.version != expected_version {
            return Err(StoreError::VersionMismatch);
        }
        let restoring = !old.is_live() && org.is_live();
        if org.parent_id != old.parent_id || (restoring && org.parent_id.is_some()) {
            let height = subtree_height(&mut tx, org_id).await?;
            check_placement(&mut tx, org, height).await?;
        }
        if old.is_live() && !org.is_live() {
            let children: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM organizations WHERE parent_id = $1 AND deleted_at IS NULL",
            )
            .bind(org_id.to_string())
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
            if children > 0 {
                return Err(StoreError::Conflict(Constraint::HasChildren));
            }
        }
        sqlx::query(
            "UPDATE organizations
                SET slug = $2, name = $3, parent_id = $4, enabled = $5, version = $6,
                    updated_at = $7::timestamptz, deleted_at = $8::timestamptz, doc = $9::json
              WHERE id = $1 AND version = $10",
        )
        .bind(org_id.to_string())
        .bind(org.slug.as_str())
        .bind(org.name.as_str())
        .bind(org.parent_id.map(|p| p.to_string()))
        .bind(org.enabled)
        .bind(org.version)
        .bind(time::format(org.updated_at))
        .bind(org.deleted_at.map(time::format))
        .bind(encode(org)?)
        .bind(expected_version)
        .execute(&mut *tx)
        .await
        .map_err(constraint_error)?;
        if old.domains != org.domains || old.is_live() != org.is_live() {
            sqlx::query("DELETE FROM org_domains WHERE org_id = $1")
                .bind(org_id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
            if org.is_live() {
                insert_domains(&mut tx, org).await?;
            }
        }
        insert_event(&mut tx, event).await?;
        tx.commit().await.map_err(db_error)
    }
}

#[async_trait]
impl Store for PgStore {
    fn org_copies(&self) -> &OrgCopies {
        &self.copies
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn find_org(&self, lookup: &OrgLookup) -> StoreResult<Option<Organization>> {
        let doc: Option<String> = match lookup {
            OrgLookup::Id(id) => {
                let doc = self.by_id.doc(id.to_string()).await?;
                return doc.as_deref().map(decode_org).transpose();
            }
            OrgLookup::Slug(slug) => {
                sqlx::query_scalar(
                    "SELECT doc::text FROM organizations WHERE slug = $1
                  ORDER BY deleted_at IS NOT NULL, deleted_at DESC LIMIT 1",
                )
                .bind(slug.as_str())
                .fetch_optional(&self.pool)
                .await
            }
        }
        .map_err(db_error)?;
        doc.as_deref().map(decode_org).transpose()
    }

    async fn read_org(&self, lookup: &OrgLookup) -> StoreResult<Option<Arc<Organization>>> {
        let OrgLookup::Id(id) = lookup else {
            return Ok(self.find_org(lookup).await?.map(Arc::new));
        };
        self.copies.read_through(id, self.find_org(lookup)).await
    }

    async fn lineage(&self, org_id: &OrgId) -> StoreResult<Vec<OrgId>> {
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        ancestry(&mut conn, org_id, false).await
    }

    async fn list_orgs(
        &self,
        filter: &OrgFilter,
        after: Option<&OrgId>,
        limit: u32,
    ) -> StoreResult<Vec<Organization>> {
        let docs: Vec<String> =
            super::org_list_query("doc::text", filter, after, limit, WALK_LIMIT)
                .build_query_scalar()
                .fetch_all(&self.pool)
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
        retrying(|| self.create_org_once(org, event, owner, idempotency)).await
    }

    async fn write_org(
        &self,
        current: &Organization,
        next: Arc<Organization>,
        event: &Event,
    ) -> StoreResult<()> {
        // Reads by id go to the database until this write ends, and then answer
        // what it committed (org_copies.rs).
        let writing = self.copies.writing([&current.id]);
        if !(current.changes_only_its_row(&next)
            && self
                .write_org_in_place(current.version, &next, event)
                .await?)
        {
            retrying(|| self.write_org_once(&current.id, current.version, &next, event)).await?;
        }
        writing.committed([next]);
        Ok(())
    }

    async fn list_org_events(
        &self,
        org_id: &OrgId,
        after_seq: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<(i64, Event)>> {
        let rows = sqlx::query(
            "SELECT seq, doc::text AS doc FROM events WHERE org_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(org_id.to_string())
        .bind(after_seq.unwrap_or(0))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
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
        let mut conn = self.pool.acquire().await.map_err(db_error)?;
        read_membership(&mut conn, org_id, user_id).await
    }

    async fn list_members(
        &self,
        org_id: &OrgId,
        after: Option<&UserId>,
        limit: u32,
    ) -> StoreResult<Vec<Membership>> {
        let docs: Vec<String> = sqlx::query_scalar(
            "SELECT doc::text FROM memberships WHERE org_id = $1 AND user_id > $2 ORDER BY user_id LIMIT $3",
        )
        .bind(org_id.to_string())
        .bind(after.map_or("", UserId::as_str))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
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
        retrying(|| self.write_membership_once(org_id, user_id, expected, after, event)).await
    }

    async fn find_idempotency(
        &self,
        principal: &str,
        key: &str,
        since: Timestamp,
    ) -> StoreResult<Option<IdempotencyRecord>> {
        let row = sqlx::query(
            "SELECT fingerprint, org_id, response::text AS response,
                    (extract(epoch FROM created_at) * 1000)::bigint AS created_ms
               FROM idempotency_keys
              WHERE principal = $1 AND key = $2 AND created_at >= $3::timestamptz",
        )
        .bind(principal)
        .bind(key)
        .bind(time::format(since))
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        let Some(row) = row else { return Ok(None) };
        let org_id: String = row.get("org_id");
        let response: String = row.get("response");
        Ok(Some(IdempotencyRecord {
            principal: principal.to_owned(),
            key: key.to_owned(),
            fingerprint: row.get("fingerprint"),
            org_id: parse_id(OrgId::parse(&org_id))?,
            response: serde_json::from_str(&response).map_err(json_error)?,
            created_at: millis(row.get("created_ms"))?,
        }))
    }

    async fn insert_api_key(&self, key: &ApiKey) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO api_keys (id, name, scopes, org_id, secret_hash, created_at, revoked_at)
             VALUES ($1, $2, $3::jsonb, $4, $5, $6::timestamptz, $7::timestamptz)",
        )
        .bind(key.id.to_string())
        .bind(&key.name)
        .bind(encode(&key.scopes)?)
        .bind(key.org_id.map(|o| o.to_string()))
        .bind(&key.secret_hash.0)
        .bind(time::format(key.created_at))
        .bind(key.revoked_at.map(time::format))
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn find_api_key(&self, hash: &SecretHash) -> StoreResult<Option<ApiKey>> {
        if let Some(key) = self.keys.get(hash) {
            return Ok(Some(key));
        }
        let ticket = self.keys.ticket();
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE secret_hash = $1"
        ))
        .bind(&hash.0)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        let key = row.as_ref().map(decode_key).transpose()?;
        if let Some(key) = &key {
            self.keys.store(ticket, key);
        }
        Ok(key)
    }

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKey>> {
        let rows = sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY id"))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        rows.iter().map(decode_key).collect()
    }

    async fn revoke_api_key(&self, key_id: &KeyId, at: Timestamp) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = $2::timestamptz WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(key_id.to_string())
        .bind(time::format(at))
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        // Effective here at once, not only when the trigger's notification arrives.
        self.keys.invalidate();
        Ok(done.rows_affected() == 1)
    }

    async fn backup(&self, _target: &std::path::Path) -> StoreResult<()> {
        Err(StoreError::Other(anyhow::anyhow!(
            "back up PostgreSQL with pg_dump or base backups with WAL archiving (see README)"
        )))
    }

    async fn count_api_keys(&self) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys")
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(n as u64)
    }
}

//! Persistence behind one trait, so the HTTP layer runs unchanged on SQLite or
//! PostgreSQL. Each backend keeps the same guarantees: a change and its event commit
//! together; uniqueness and the tree rules are enforced inside the transaction that
//! writes; a write names the version it read and fails if the row moved on.
//!
//! Every organization-owned method takes the organization's id first, so no query
//! forgets whose data it touches.

mod key_cache;
pub mod org_copies;
pub mod outbox;
mod pg_batcher;
mod pg_changes;
mod pg_group_commit;
mod pg_point_reads;
pub mod postgres;
mod postgres_outbox;
mod sealed_secrets;
pub mod sqlite;
mod sqlite_checkpoint;
mod sqlite_key_cache;
mod sqlite_outbox;
mod sqlite_point_reads;
pub mod sqlite_writer;
mod sqlite_writes;

pub use sealed_secrets::KeyMismatch;

use std::sync::Arc;

use async_trait::async_trait;
use jiff::Timestamp;

use crate::domain::apikey::{ApiKey, SecretHash};
use crate::domain::event::Event;
use crate::domain::fields::{DomainName, Slug};
use crate::domain::hierarchy::HierarchyError;
use crate::domain::ids::{KeyId, OrgId};
use crate::domain::members::{MemberRuleError, Membership, UserId};
use crate::domain::org::Organization;
use crate::domain::secrets_key::SecretsKey;

/// How a request names an organization: `org_…` or its slug (slugs never hold `_`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrgLookup {
    Id(OrgId),
    Slug(Slug),
}

impl OrgLookup {
    /// `None` when the text can be neither an id nor a slug.
    pub fn parse(text: &str) -> Option<Self> {
        if text.starts_with("org_") {
            OrgId::parse(text).ok().map(Self::Id)
        } else {
            Slug::parse(text).ok().map(Self::Slug)
        }
    }
}

/// Filters of the organization list; all optional and combined with AND.
#[derive(Debug, Clone, Default)]
pub struct OrgFilter {
    pub parent_id: Option<OrgId>,
    pub enabled: Option<bool>,
    pub domain: Option<DomainName>,
    /// Case-insensitive substring of the name.
    pub name_contains: Option<String>,
    /// Only this organization and its descendants (a key bound to a subtree).
    pub within: Option<OrgId>,
    /// Only organizations this user is a member of.
    pub member: Option<UserId>,
}

/// The organization-list query, shared by both backends (the SQL is the same;
/// only the expression that reads the stored document differs: `doc` on SQLite,
/// `doc::text` on PostgreSQL, whose column is `json`).
pub(crate) fn org_list_query<'a, DB>(
    doc: &str,
    filter: &OrgFilter,
    after: Option<&OrgId>,
    limit: u32,
    walk_limit: i64,
) -> sqlx::QueryBuilder<'a, DB>
where
    DB: sqlx::Database,
    String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    bool: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut q = sqlx::QueryBuilder::new("");
    if let Some(root) = &filter.within {
        q.push("WITH RECURSIVE subtree(id, level) AS (SELECT id, 1 FROM organizations WHERE id = ")
            .push_bind(root.to_string())
            .push(
                " UNION ALL SELECT o.id, s.level + 1 FROM organizations o
                     JOIN subtree s ON o.parent_id = s.id WHERE s.level < ",
            )
            .push_bind(walk_limit)
            .push(") ");
    }
    q.push(format!(
        "SELECT {doc} FROM organizations WHERE deleted_at IS NULL"
    ));
    if filter.within.is_some() {
        q.push(" AND id IN (SELECT id FROM subtree)");
    }
    if let Some(user) = &filter.member {
        q.push(" AND id IN (SELECT org_id FROM memberships WHERE user_id = ")
            .push_bind(user.as_str().to_owned())
            .push(")");
    }
    if let Some(parent) = &filter.parent_id {
        q.push(" AND parent_id = ").push_bind(parent.to_string());
    }
    if let Some(enabled) = filter.enabled {
        q.push(" AND enabled = ").push_bind(enabled);
    }
    if let Some(domain) = &filter.domain {
        q.push(" AND id IN (SELECT org_id FROM org_domains WHERE domain = ")
            .push_bind(domain.as_str().to_owned())
            .push(")");
    }
    if let Some(text) = &filter.name_contains {
        // `%` and `_` in the search text are literal.
        let escaped = text
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        q.push(" AND lower(name) LIKE ")
            .push_bind(format!("%{}%", escaped.to_lowercase()))
            .push(" ESCAPE '\\'");
    }
    if let Some(after) = after {
        q.push(" AND id > ").push_bind(after.to_string());
    }
    q.push(" ORDER BY id LIMIT ").push_bind(i64::from(limit));
    q
}

/// A stored Idempotency-Key: the request it was first used with and the answer given.
#[derive(Debug, Clone)]
pub struct IdempotencyRecord {
    pub principal: String,
    pub key: String,
    pub fingerprint: String,
    pub org_id: OrgId,
    pub response: serde_json::Value,
    pub created_at: Timestamp,
}

/// A uniqueness or integrity rule the store enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Constraint {
    /// `org_slug_key`: one live organization per slug.
    SlugTaken,
    /// `org_domains` primary key: one live organization per domain.
    DomainTaken,
    /// Deleting an organization that still has live children.
    HasChildren,
    /// `idempotency_keys` primary key: the key was used concurrently.
    IdempotencyKey,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// The row's version is no longer the one the write was planned against.
    #[error("the organization changed since it was read")]
    VersionMismatch,
    #[error("constraint violated: {0:?}")]
    Conflict(Constraint),
    #[error(transparent)]
    Hierarchy(#[from] HierarchyError),
    #[error(transparent)]
    Member(#[from] MemberRuleError),
    /// The database cannot be reached or is too busy; the request may be retried.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl StoreError {
    /// The same failure for one more request of a failed batch (errors are not
    /// `Clone`): its message, and whether it is worth retrying (503) or not.
    pub(crate) fn copied(&self) -> StoreError {
        let cause = anyhow::anyhow!("{self:#}");
        match self {
            StoreError::Unavailable(_) => StoreError::Unavailable(cause),
            _ => StoreError::Other(cause),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[async_trait]
/// Organizations and keys; the outbox's methods come from [`outbox::OutboxStore`].
pub trait Store: outbox::OutboxStore + Send + Sync + 'static {
    /// Succeeds when the database answers a trivial query.
    async fn ping(&self) -> StoreResult<()>;

    /// The organizations this process keeps for reads by id (`org_copies.rs`);
    /// `/metrics` reports how often they answered.
    fn org_copies(&self) -> &org_copies::OrgCopies;

    // ---- organizations ----

    /// An organization, live or deleted. A slug resolves to the live org holding it,
    /// else to the most recently deleted one (so a deleted org can be restored by slug).
    async fn find_org(&self, lookup: &OrgLookup) -> StoreResult<Option<Organization>>;

    /// [`Store::find_org`] for a request that only answers what it finds (a GET):
    /// the store may answer it from this process's copies, which can lag another
    /// process's commit by a moment (org_copies.rs: on SQLite at most 20 ms, on
    /// PostgreSQL until its change notification arrives).
    /// Writes, and what they answer, plan on `find_org`.
    async fn read_org(&self, lookup: &OrgLookup) -> StoreResult<Option<Arc<Organization>>> {
        Ok(self.find_org(lookup).await?.map(Arc::new))
    }

    /// The org's id followed by its ancestors' up to the root.
    async fn lineage(&self, org_id: &OrgId) -> StoreResult<Vec<OrgId>>;

    /// Live organizations in id order, after `after`, at most `limit`.
    async fn list_orgs(
        &self,
        filter: &OrgFilter,
        after: Option<&OrgId>,
        limit: u32,
    ) -> StoreResult<Vec<Organization>>;

    /// Inserts a new organization with its `organization.created` event and, if
    /// given, its first owner and the idempotency record, in one transaction.
    async fn create_org(
        &self,
        org: &Organization,
        event: &Event,
        owner: Option<&Membership>,
        idempotency: Option<&IdempotencyRecord>,
    ) -> StoreResult<()>;

    /// Replaces `current` with `next` if the stored row still has `current`'s
    /// version, and records `event`, in one transaction. Placement in the tree,
    /// children on delete and uniqueness are checked inside it.
    ///
    /// The version changes with every change to an organization, so a row that
    /// still has it is `current` to the byte: what the change leaves alone (the
    /// parent, the domains, being live) is known without reading the row, and the
    /// common update skips the tree and domain work on that knowledge alone.
    async fn write_org(
        &self,
        current: &Organization,
        next: Arc<Organization>,
        event: &Event,
    ) -> StoreResult<()>;

    /// The org's events, oldest first, with their sequence numbers (the cursor).
    async fn list_org_events(
        &self,
        org_id: &OrgId,
        after_seq: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<(i64, Event)>>;

    // ---- memberships ----

    async fn find_membership(
        &self,
        org_id: &OrgId,
        user_id: &UserId,
    ) -> StoreResult<Option<Membership>>;

    /// The org's members in user-id order, after `after`, at most `limit`.
    async fn list_members(
        &self,
        org_id: &OrgId,
        after: Option<&UserId>,
        limit: u32,
    ) -> StoreResult<Vec<Membership>>;

    /// Replaces the membership `expected` (as the caller read it; `None` for "not a
    /// member") by `after` (`None` removes it) and records `event`, in one
    /// transaction that holds the organization: fails with `VersionMismatch` if the
    /// membership changed meanwhile, and with `Member` if the last owner would go or
    /// the plan's member limit would be passed (counted inside the transaction, so
    /// concurrent adds cannot overshoot it).
    async fn write_membership(
        &self,
        org_id: &OrgId,
        user_id: &UserId,
        expected: Option<&Membership>,
        after: Option<&Membership>,
        event: &Event,
    ) -> StoreResult<()>;

    /// The record for `key`, if one was made at or after `since`.
    async fn find_idempotency(
        &self,
        principal: &str,
        key: &str,
        since: Timestamp,
    ) -> StoreResult<Option<IdempotencyRecord>>;

    // ---- API keys ----

    async fn insert_api_key(&self, key: &ApiKey) -> StoreResult<()>;
    async fn find_api_key(&self, hash: &SecretHash) -> StoreResult<Option<ApiKey>>;
    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKey>>;
    /// `false` when no unrevoked key has that id.
    async fn revoke_api_key(&self, key_id: &KeyId, at: Timestamp) -> StoreResult<bool>;
    async fn count_api_keys(&self) -> StoreResult<u64>;

    // ---- operations ----

    /// Writes a consistent copy of the whole store to `target` while it keeps
    /// serving (SQLite); stores with their own tooling say which to use instead.
    async fn backup(&self, target: &std::path::Path) -> StoreResult<()>;
}

pub type SharedStore = Arc<dyn Store>;

/// Opens the store a URL names (`sqlite://…` or `postgres://…`) and applies
/// pending migrations. `pool_size` bounds PostgreSQL connections; `secrets_key`
/// seals webhook signing secrets, and opening fails with [`KeyMismatch`] when the
/// stored ones are sealed with another key; the store keeps copies of at most
/// `org_copies` organizations (`org_copies.rs`).
pub async fn open(
    database_url: &str,
    pool_size: u32,
    secrets_key: SecretsKey,
    org_copies: usize,
) -> anyhow::Result<SharedStore> {
    if is_sqlite(database_url)? {
        Ok(Arc::new(
            sqlite::SqliteStore::open_keeping(database_url, secrets_key, org_copies).await?,
        ))
    } else {
        Ok(Arc::new(
            postgres::PgStore::open_keeping(database_url, pool_size, secrets_key, org_copies)
                .await?,
        ))
    }
}

/// After the key that sealed the webhook secrets was lost: gives each endpoint
/// whose secret `secrets_key` cannot open a new random secret sealed with it, so
/// orgd starts with that key again. Returns the endpoints changed; each needs its
/// secret rotated through the API and handed to its receiver.
pub async fn reset_unreadable_webhook_secrets(
    database_url: &str,
    secrets_key: SecretsKey,
) -> anyhow::Result<Vec<String>> {
    if is_sqlite(database_url)? {
        let store = sqlite::SqliteStore::connect(database_url, secrets_key, 0).await?;
        store.replace_unreadable_secrets().await
    } else {
        let store = postgres::PgStore::connect(database_url, 1, secrets_key, 0).await?;
        store.replace_unreadable_secrets().await
    }
}

fn is_sqlite(database_url: &str) -> anyhow::Result<bool> {
    if database_url.starts_with("sqlite:") {
        Ok(true)
    } else if database_url.starts_with("postgres:") || database_url.starts_with("postgresql:") {
        Ok(false)
    } else {
        anyhow::bail!("ORGD_DATABASE_URL must start with sqlite:// or postgres://")
    }
}

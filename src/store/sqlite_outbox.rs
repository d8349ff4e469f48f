//! The outbox on SQLite: the feed is `events` in `seq` order (one writer at a time
//! makes `seq` commit order), and every queue operation is a short write
//! transaction on the single writer connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};

use super::outbox::{
    route, status_from_db, ClaimedMessage, Consumer, DeliveryAttempt, FeedEvent, MessageFate,
    OutboxStore,
};
use super::sealed_secrets::{self, PREVIOUS_SECRET, SECRET};
use super::sqlite::{
    ancestry_sql, begin_immediate, db_error, encode, json_error, parse_org_ids, SqliteStore,
    WALK_LIMIT,
};
use super::sqlite_point_reads::{sqlite_error, texts};
use super::sqlite_writer::{FanOut, WriteOp};
use super::{StoreError, StoreResult};
use crate::domain::ids::{DeliveryId, EventId, OrgId, WebhookId};
use crate::domain::secrets_key::SecretsKey;
use crate::domain::time;
use crate::domain::webhook::{Endpoint, EventTypes, WebhookUrl};

fn other(err: impl Into<anyhow::Error>) -> StoreError {
    StoreError::Other(err.into())
}

fn parse_ts(text: &str) -> StoreResult<Timestamp> {
    text.parse::<Timestamp>().map_err(other)
}

/// A `webhook_endpoints` row as stored, whichever library read it (the API's
/// reads go through sqlx, the fan-out runs in the group committer's rusqlite batch).
struct EndpointRow {
    id: String,
    url: String,
    event_types: String,
    org_id: Option<String>,
    description: Option<String>,
    secret: String,
    previous_secret: Option<String>,
    previous_expires_at: Option<String>,
    status: String,
    created_at: String,
    updated_at: String,
}

impl EndpointRow {
    fn from_sqlx(row: &SqliteRow) -> Self {
        Self {
            id: row.get("id"),
            url: row.get("url"),
            event_types: row.get("event_types"),
            org_id: row.get("org_id"),
            description: row.get("description"),
            secret: row.get("secret"),
            previous_secret: row.get("previous_secret"),
            previous_expires_at: row.get("previous_expires_at"),
            status: row.get("status"),
            created_at: row.get("created_at"),
            updated_at: row.get("updated_at"),
        }
    }

    fn from_rusqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get("id")?,
            url: row.get("url")?,
            event_types: row.get("event_types")?,
            org_id: row.get("org_id")?,
            description: row.get("description")?,
            secret: row.get("secret")?,
            previous_secret: row.get("previous_secret")?,
            previous_expires_at: row.get("previous_expires_at")?,
            status: row.get("status")?,
            created_at: row.get("created_at")?,
            updated_at: row.get("updated_at")?,
        })
    }

    fn open(self, key: &SecretsKey) -> StoreResult<Endpoint> {
        let id = &self.id;
        Ok(Endpoint {
            id: WebhookId::parse(id).map_err(other)?,
            url: WebhookUrl::parse(&self.url).map_err(|e| other(anyhow::anyhow!(e.message)))?,
            event_types: EventTypes::from_stored(
                serde_json::from_str(&self.event_types).map_err(json_error)?,
            ),
            org_id: self
                .org_id
                .map(|o| OrgId::parse(&o))
                .transpose()
                .map_err(other)?,
            description: self.description,
            secret: sealed_secrets::open(key, id, SECRET, &self.secret)?,
            previous_secret: self
                .previous_secret
                .as_deref()
                .map(|p| sealed_secrets::open(key, id, PREVIOUS_SECRET, p))
                .transpose()?,
            previous_expires_at: self
                .previous_expires_at
                .as_deref()
                .map(parse_ts)
                .transpose()?,
            status: status_from_db(&self.status),
            created_at: parse_ts(&self.created_at)?,
            updated_at: parse_ts(&self.updated_at)?,
        })
    }
}

fn decode_endpoint(key: &SecretsKey, row: &SqliteRow) -> StoreResult<Endpoint> {
    EndpointRow::from_sqlx(row).open(key)
}

fn decode_attempt(row: &SqliteRow) -> StoreResult<DeliveryAttempt> {
    let id: String = row.get("id");
    let endpoint_id: String = row.get("endpoint_id");
    let event_id: String = row.get("event_id");
    let status_code: Option<i64> = row.get("status_code");
    let duration_ms: i64 = row.get("duration_ms");
    let attempt: i64 = row.get("attempt");
    Ok(DeliveryAttempt {
        id: DeliveryId::parse(&id).map_err(other)?,
        endpoint_id: WebhookId::parse(&endpoint_id).map_err(other)?,
        event_id: EventId::parse(&event_id).map_err(other)?,
        attempt: attempt as u32,
        status_code: status_code.map(|c| c as u16),
        error: row.get("error"),
        duration_ms: duration_ms.max(0) as u64,
        attempted_at: parse_ts(row.get("attempted_at"))?,
        succeeded: row.get("succeeded"),
    })
}

#[async_trait]
impl OutboxStore for SqliteStore {
    async fn assign_feed_positions(&self, _limit: u32) -> StoreResult<u64> {
        // `seq` is already commit order here.
        Ok(0)
    }

    async fn feed(
        &self,
        after: i64,
        limit: u32,
        within: Option<&OrgId>,
    ) -> StoreResult<Vec<FeedEvent>> {
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("");
        if let Some(root) = within {
            q.push(
                "WITH RECURSIVE subtree(id, level) AS (SELECT id, 1 FROM organizations WHERE id = ",
            )
            .push_bind(root.to_string())
            .push(
                " UNION ALL SELECT o.id, s.level + 1 FROM organizations o
                         JOIN subtree s ON o.parent_id = s.id WHERE s.level < ",
            )
            .push_bind(WALK_LIMIT)
            .push(") ");
        }
        q.push("SELECT seq, doc FROM events WHERE seq > ")
            .push_bind(after);
        if within.is_some() {
            q.push(" AND org_id IN (SELECT id FROM subtree)");
        }
        q.push(" ORDER BY seq LIMIT ").push_bind(i64::from(limit));
        let rows = q.build().fetch_all(&self.reader).await.map_err(db_error)?;
        rows.iter()
            .map(|r| {
                let doc: String = r.get("doc");
                Ok(FeedEvent {
                    position: r.get("seq"),
                    event: serde_json::from_str(&doc).map_err(json_error)?,
                })
            })
            .collect()
    }

    async fn insert_webhook(&self, e: &Endpoint) -> StoreResult<()> {
        let id = e.id.to_string();
        let (secret, previous) = sealed_secrets::seal_columns(&self.secrets_key, e);
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, url, event_types, org_id, description, secret,
                 previous_secret, previous_expires_at, status, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .bind(&id)
        .bind(e.url.as_str())
        .bind(encode(&e.event_types.as_slice())?)
        .bind(e.org_id.map(|o| o.to_string()))
        .bind(&e.description)
        .bind(secret)
        .bind(previous)
        .bind(e.previous_expires_at.map(time::format))
        .bind(e.status.as_str())
        .bind(time::format(e.created_at))
        .bind(time::format(e.updated_at))
        .execute(&self.writer)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn find_webhook(&self, id: &WebhookId) -> StoreResult<Option<Endpoint>> {
        let row = sqlx::query("SELECT * FROM webhook_endpoints WHERE id = ?1")
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(db_error)?;
        row.as_ref()
            .map(|r| decode_endpoint(&self.secrets_key, r))
            .transpose()
    }

    async fn list_webhooks(
        &self,
        after: Option<&WebhookId>,
        limit: u32,
    ) -> StoreResult<Vec<Endpoint>> {
        let rows =
            sqlx::query("SELECT * FROM webhook_endpoints WHERE id > ?1 ORDER BY id LIMIT ?2")
                .bind(after.map_or_else(String::new, |a| a.to_string()))
                .bind(i64::from(limit))
                .fetch_all(&self.reader)
                .await
                .map_err(db_error)?;
        rows.iter()
            .map(|r| decode_endpoint(&self.secrets_key, r))
            .collect()
    }

    async fn update_webhook(&self, e: &Endpoint) -> StoreResult<bool> {
        let id = e.id.to_string();
        let (secret, previous) = sealed_secrets::seal_columns(&self.secrets_key, e);
        let done = sqlx::query(
            "UPDATE webhook_endpoints
                SET url = ?2, event_types = ?3, org_id = ?4, description = ?5, secret = ?6,
                    previous_secret = ?7, previous_expires_at = ?8, updated_at = ?9
              WHERE id = ?1",
        )
        .bind(&id)
        .bind(e.url.as_str())
        .bind(encode(&e.event_types.as_slice())?)
        .bind(e.org_id.map(|o| o.to_string()))
        .bind(&e.description)
        .bind(secret)
        .bind(previous)
        .bind(e.previous_expires_at.map(time::format))
        .bind(time::format(e.updated_at))
        .execute(&self.writer)
        .await
        .map_err(db_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_webhook(&self, id: &WebhookId) -> StoreResult<bool> {
        // Messages and attempts go with it (ON DELETE CASCADE).
        let done = sqlx::query("DELETE FROM webhook_endpoints WHERE id = ?1")
            .bind(id.to_string())
            .execute(&self.writer)
            .await
            .map_err(db_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_deliveries(
        &self,
        endpoint: &WebhookId,
        before: Option<&DeliveryId>,
        limit: u32,
    ) -> StoreResult<Vec<DeliveryAttempt>> {
        let rows = sqlx::query(
            "SELECT * FROM webhook_deliveries WHERE endpoint_id = ?1 AND (?2 IS NULL OR id < ?2)
              ORDER BY id DESC LIMIT ?3",
        )
        .bind(endpoint.to_string())
        .bind(before.map(|b| b.to_string()))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(db_error)?;
        rows.iter().map(decode_attempt).collect()
    }

    async fn fan_out(&self, limit: u32, now_ms: i64) -> StoreResult<u64> {
        // Look first, through a reader: an idle poll must not take the write lock,
        // or every poll would make other processes (`orgd keys`, a second orgd)
        // queue behind it.
        let pending: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM events
                             WHERE seq > (SELECT position FROM outbox_cursors WHERE name = 'webhooks'))",
        )
        .fetch_one(&self.reader)
        .await
        .map_err(db_error)?;
        if !pending {
            return Ok(0);
        }
        self.fan_out_in_next_batch(limit, now_ms).await
    }

    async fn enqueue_test(
        &self,
        endpoint: &WebhookId,
        event_id: &EventId,
        payload: &str,
        now_ms: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO webhook_messages (endpoint_id, org_id, event_id, payload, next_attempt_at)
             VALUES (?1, NULL, ?2, ?3, ?4)",
        )
        .bind(endpoint.to_string())
        .bind(event_id.to_string())
        .bind(payload)
        .bind(now_ms)
        .execute(&self.writer)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn claim_messages(
        &self,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<ClaimedMessage>> {
        // As in fan_out: only take the write lock when something may be due.
        let due: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM webhook_messages
                             WHERE next_attempt_at <= ?1 AND (lease_until IS NULL OR lease_until <= ?1))",
        )
        .bind(now_ms)
        .fetch_one(&self.reader)
        .await
        .map_err(db_error)?;
        if !due {
            return Ok(Vec::new());
        }
        let mut tx = begin_immediate(&self.writer).await?;
        // `p.org_id = m.org_id` is never true for NULL, so test messages are unordered.
        let rows = sqlx::query(
            "SELECT m.id, m.endpoint_id, m.event_id, COALESCE(m.payload, e.doc) AS body, m.attempts
               FROM webhook_messages m LEFT JOIN events e ON e.id = m.event_id
              WHERE m.next_attempt_at <= ?1
                AND (m.lease_until IS NULL OR m.lease_until <= ?1)
                AND NOT EXISTS (SELECT 1 FROM webhook_messages p
                                 WHERE p.endpoint_id = m.endpoint_id AND p.org_id = m.org_id
                                   AND p.id < m.id)
              ORDER BY m.next_attempt_at, m.id
              LIMIT ?2",
        )
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: i64 = row.get("id");
            sqlx::query(
                "UPDATE webhook_messages SET lease_owner = ?2, lease_until = ?3 WHERE id = ?1",
            )
            .bind(id)
            .bind(owner)
            .bind(now_ms + lease_ms)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
            let endpoint_id: String = row.get("endpoint_id");
            let event_id: String = row.get("event_id");
            let attempts: i64 = row.get("attempts");
            let body: Option<String> = row.get("body");
            claimed.push(ClaimedMessage {
                id,
                endpoint_id: WebhookId::parse(&endpoint_id).map_err(other)?,
                event_id: EventId::parse(&event_id).map_err(other)?,
                body: body.unwrap_or_default(),
                attempts: attempts.max(0) as u32,
            });
        }
        tx.commit().await.map_err(db_error)?;
        Ok(claimed)
    }

    async fn finish_attempt(
        &self,
        message_id: i64,
        owner: &str,
        a: &DeliveryAttempt,
        fate: MessageFate,
    ) -> StoreResult<()> {
        let mut tx = begin_immediate(&self.writer).await?;
        // An endpoint deleted while its message was in flight keeps no log.
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, endpoint_id, event_id, attempt, status_code, error,
                 duration_ms, attempted_at, succeeded)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9
              WHERE EXISTS (SELECT 1 FROM webhook_endpoints WHERE id = ?2)",
        )
        .bind(a.id.to_string())
        .bind(a.endpoint_id.to_string())
        .bind(a.event_id.to_string())
        .bind(i64::from(a.attempt))
        .bind(a.status_code.map(i64::from))
        .bind(&a.error)
        .bind(a.duration_ms as i64)
        .bind(time::format(a.attempted_at))
        .bind(a.succeeded)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let owned: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM webhook_messages WHERE id = ?1 AND lease_owner = ?2",
        )
        .bind(message_id)
        .bind(owner)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        if owned.is_some() {
            let endpoint = a.endpoint_id.to_string();
            match fate {
                MessageFate::RetryAt(at) => {
                    sqlx::query(
                        "UPDATE webhook_messages SET attempts = attempts + 1, next_attempt_at = ?2,
                                lease_owner = NULL, lease_until = NULL WHERE id = ?1",
                    )
                    .bind(message_id)
                    .bind(at)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                }
                MessageFate::Delivered | MessageFate::Dropped | MessageFate::GaveUp => {
                    sqlx::query("DELETE FROM webhook_messages WHERE id = ?1")
                        .bind(message_id)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error)?;
                    let status = match fate {
                        MessageFate::Delivered => Some("active"),
                        MessageFate::GaveUp => Some("failing"),
                        _ => None,
                    };
                    if let Some(status) = status {
                        sqlx::query(
                            "UPDATE webhook_endpoints SET status = ?2 WHERE id = ?1 AND status <> ?2",
                        )
                        .bind(&endpoint)
                        .bind(status)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error)?;
                    }
                }
            }
        }
        tx.commit().await.map_err(db_error)
    }

    async fn lease_cursor(
        &self,
        consumer: Consumer,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> StoreResult<Option<i64>> {
        sqlx::query_scalar(
            "UPDATE outbox_cursors SET lease_owner = ?2, lease_until = ?3
              WHERE name = ?1 AND (lease_owner IS NULL OR lease_owner = ?2 OR lease_until <= ?4)
             RETURNING position",
        )
        .bind(consumer.name())
        .bind(owner)
        .bind(now_ms + lease_ms)
        .bind(now_ms)
        .fetch_optional(&self.writer)
        .await
        .map_err(db_error)
    }

    async fn advance_cursor(
        &self,
        consumer: Consumer,
        owner: &str,
        position: i64,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE outbox_cursors SET position = ?3
              WHERE name = ?1 AND lease_owner = ?2 AND position < ?3",
        )
        .bind(consumer.name())
        .bind(owner)
        .bind(position)
        .execute(&self.writer)
        .await
        .map_err(db_error)?;
        Ok(done.rows_affected() == 1)
    }
}

impl SqliteStore {
    /// Runs the fan-out step in the group committer's next batch.
    async fn fan_out_in_next_batch(&self, limit: u32, now_ms: i64) -> StoreResult<u64> {
        let covered = Arc::new(AtomicU64::new(0));
        let step = FanOut {
            secrets_key: self.secrets_key.clone(),
            limit,
            now_ms,
            covered: covered.clone(),
        };
        self.group_commit
            .submit(WriteOp::FanOut(Box::new(step)))
            .await?;
        Ok(covered.load(Ordering::Relaxed))
    }
}

/// What the secrets key needs at open and on reset (store/sealed_secrets.rs).
impl SqliteStore {
    /// Refuses this process's secrets key if the stored secrets are sealed with
    /// another, then seals any secret a version before sealing stored in clear, so
    /// the database holds none after the first start of this version.
    pub(super) async fn adopt_secrets_key(&self) -> anyhow::Result<()> {
        // Look through a reader first, so a start with nothing to seal (every start
        // but the first after an upgrade) does not take the write lock.
        let sample = sqlx::query_as(sealed_secrets::ONE_SEALED)
            .fetch_optional(&self.reader)
            .await
            .map_err(db_error)?;
        sealed_secrets::check_key(&self.secrets_key, sample)?;
        let legacy: Vec<(String, String, Option<String>)> =
            sqlx::query_as(sealed_secrets::LEGACY_ROWS)
                .fetch_all(&self.reader)
                .await
                .map_err(db_error)?;
        if legacy.is_empty() {
            return Ok(());
        }
        let mut tx = begin_immediate(&self.writer).await?;
        // Again under the write lock: another process may have sealed meanwhile.
        let sample = sqlx::query_as(sealed_secrets::ONE_SEALED)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
        sealed_secrets::check_key(&self.secrets_key, sample)?;
        let legacy: Vec<(String, String, Option<String>)> =
            sqlx::query_as(sealed_secrets::LEGACY_ROWS)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
        for (id, secret, previous) in &legacy {
            let (secret, previous) =
                sealed_secrets::reseal_legacy(&self.secrets_key, id, secret, previous.as_deref())?;
            sqlx::query(
                "UPDATE webhook_endpoints SET secret = ?2, previous_secret = ?3 WHERE id = ?1",
            )
            .bind(id)
            .bind(secret)
            .bind(previous)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)?;
        tracing::info!(
            endpoints = legacy.len(),
            secrets_key.id = self.secrets_key.key_id(),
            "sealed the webhook secrets an earlier version stored in clear"
        );
        Ok(())
    }

    /// Gives every endpoint whose secret this key cannot open a new random secret
    /// (and drops its unreadable previous one), in one transaction; returns their ids.
    pub(super) async fn replace_unreadable_secrets(&self) -> anyhow::Result<Vec<String>> {
        let mut tx = begin_immediate(&self.writer).await?;
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT id, secret FROM webhook_endpoints ORDER BY id")
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
        let mut replaced = Vec::new();
        for (id, secret) in rows {
            let Some(fresh) =
                sealed_secrets::replacement_if_unreadable(&self.secrets_key, &id, &secret)
            else {
                continue;
            };
            sqlx::query(
                "UPDATE webhook_endpoints
                    SET secret = ?2, previous_secret = NULL, previous_expires_at = NULL
                  WHERE id = ?1",
            )
            .bind(&id)
            .bind(fresh)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
            replaced.push(id);
        }
        tx.commit().await.map_err(db_error)?;
        Ok(replaced)
    }
}

/// Turns up to `limit` events past the webhook cursor into messages for the
/// endpoints that want them, and moves the cursor past them, inside the caller's
/// transaction (the group committer's batch: see [`super::sqlite_writer::FanOut`]).
/// Returns how many events it covered.
pub(super) fn fan_out_in(
    db: &rusqlite::Connection,
    key: &SecretsKey,
    limit: u32,
    now_ms: i64,
) -> StoreResult<u64> {
    let position: i64 = db
        .prepare_cached("SELECT position FROM outbox_cursors WHERE name = 'webhooks'")
        .and_then(|mut q| q.query_row([], |row| row.get(0)))
        .map_err(sqlite_error)?;
    let endpoints = db
        .prepare_cached("SELECT * FROM webhook_endpoints")
        .and_then(|mut q| {
            q.query_map([], EndpointRow::from_rusqlite)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sqlite_error)?;
    if endpoints.is_empty() {
        return skip_past_committed(db, position);
    }
    let endpoints = endpoints
        .into_iter()
        .map(|row| row.open(key))
        .collect::<StoreResult<Vec<_>>>()?;
    let events = db
        .prepare_cached(
            "SELECT seq, id, org_id, type, occurred_at FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )
        .and_then(|mut q| {
            q.query_map(rusqlite::params![position, i64::from(limit)], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, String>(4)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sqlite_error)?;
    let Some(&(last, ..)) = events.last() else {
        return Ok(0);
    };
    let needs_lineage = endpoints.iter().any(|e| e.org_id.is_some());
    for (_, event_id, org_text, event_type, occurred_at) in &events {
        let org = OrgId::parse(org_text).map_err(other)?;
        let lineage = if needs_lineage {
            let ids = texts(
                db,
                ancestry_sql(false),
                rusqlite::params![org_text, WALK_LIMIT],
            )
            .map_err(sqlite_error)?;
            parse_org_ids(&ids)?
        } else {
            vec![org]
        };
        for endpoint in route(&endpoints, event_type, parse_ts(occurred_at)?, &lineage) {
            db.prepare_cached(
                "INSERT INTO webhook_messages (endpoint_id, org_id, event_id, next_attempt_at)
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut q| {
                q.execute(rusqlite::params![
                    endpoint.id.to_string(),
                    org_text,
                    event_id,
                    now_ms
                ])
            })
            .map_err(sqlite_error)?;
        }
    }
    db.prepare_cached("UPDATE outbox_cursors SET position = ?1 WHERE name = 'webhooks'")
        .and_then(|mut q| q.execute([last]))
        .map_err(sqlite_error)?;
    Ok(events.len() as u64)
}

/// With no endpoint, no event has a recipient: the cursor moves past every event
/// committed so far without reading them, which is where reading them would have
/// left it. Reading, parsing and routing each one took ~6% of the one writer
/// thread's time under update load (bench/README.md, session 11), for no message.
/// Returns how far the cursor moved: the events covered, as events are never
/// deleted and `seq` is assigned in order.
fn skip_past_committed(db: &rusqlite::Connection, position: i64) -> StoreResult<u64> {
    let last: Option<i64> = db
        .prepare_cached("SELECT MAX(seq) FROM events")
        .and_then(|mut q| q.query_row([], |row| row.get(0)))
        .map_err(sqlite_error)?;
    match last {
        Some(last) if last > position => {
            db.prepare_cached("UPDATE outbox_cursors SET position = ?1 WHERE name = 'webhooks'")
                .and_then(|mut q| q.execute([last]))
                .map_err(sqlite_error)?;
            Ok((last - position) as u64)
        }
        _ => Ok(0),
    }
}

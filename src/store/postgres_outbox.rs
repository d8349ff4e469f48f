//! The outbox on PostgreSQL, shared by any number of orgd processes: the feed is
//! `events` in `feed_pos` order (numbered after commit by one sequencer at a time;
//! see migrations/postgres/0003_webhooks.sql), the fan-out and the sequencer hold
//! their cursor row with `FOR UPDATE SKIP LOCKED` (another process at it means
//! "nothing to do now"), and workers claim messages with `SKIP LOCKED` plus a lease
//! that expires if the process dies.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row};

use super::outbox::{
    route, status_from_db, ClaimedMessage, Consumer, DeliveryAttempt, FeedEvent, MessageFate,
    OutboxStore,
};
use super::postgres::{
    ancestry, db_error, encode, json_error, millis, parse_id, PgStore, FEED_QUEUE_VACUUM_EVERY,
    WALK_LIMIT,
};
use super::sealed_secrets::{self, PREVIOUS_SECRET, SECRET};
use super::{StoreError, StoreResult};
use crate::domain::ids::{DeliveryId, EventId, OrgId, WebhookId};
use crate::domain::secrets_key::SecretsKey;
use crate::domain::time;
use crate::domain::webhook::{Endpoint, EventTypes, WebhookUrl};

fn other(err: impl Into<anyhow::Error>) -> StoreError {
    StoreError::Other(err.into())
}

const ENDPOINT_COLUMNS: &str = "id, url, event_types::text AS event_types, org_id, description,
    secret, previous_secret, status,
    (extract(epoch FROM previous_expires_at) * 1000)::bigint AS previous_ms,
    (extract(epoch FROM created_at) * 1000)::bigint AS created_ms,
    (extract(epoch FROM updated_at) * 1000)::bigint AS updated_ms";

fn decode_endpoint(key: &SecretsKey, row: &PgRow) -> StoreResult<Endpoint> {
    let id: String = row.get("id");
    let secret: String = row.get("secret");
    let url: String = row.get("url");
    let event_types: String = row.get("event_types");
    let org_id: Option<String> = row.get("org_id");
    let previous: Option<String> = row.get("previous_secret");
    let previous_ms: Option<i64> = row.get("previous_ms");
    let status: String = row.get("status");
    Ok(Endpoint {
        id: parse_id(WebhookId::parse(&id))?,
        url: WebhookUrl::parse(&url).map_err(|e| other(anyhow::anyhow!(e.message)))?,
        event_types: EventTypes::from_stored(
            serde_json::from_str(&event_types).map_err(json_error)?,
        ),
        org_id: org_id.map(|o| parse_id(OrgId::parse(&o))).transpose()?,
        description: row.get("description"),
        secret: sealed_secrets::open(key, &id, SECRET, &secret)?,
        previous_secret: previous
            .as_deref()
            .map(|p| sealed_secrets::open(key, &id, PREVIOUS_SECRET, p))
            .transpose()?,
        previous_expires_at: previous_ms.map(millis).transpose()?,
        status: status_from_db(&status),
        created_at: millis(row.get("created_ms"))?,
        updated_at: millis(row.get("updated_ms"))?,
    })
}

const ATTEMPT_COLUMNS: &str = "id, endpoint_id, event_id, attempt, status_code, error,
    duration_ms, succeeded, (extract(epoch FROM attempted_at) * 1000)::bigint AS attempted_ms";

fn decode_attempt(row: &PgRow) -> StoreResult<DeliveryAttempt> {
    let id: String = row.get("id");
    let endpoint_id: String = row.get("endpoint_id");
    let event_id: String = row.get("event_id");
    let status_code: Option<i32> = row.get("status_code");
    let duration_ms: i64 = row.get("duration_ms");
    let attempt: i32 = row.get("attempt");
    Ok(DeliveryAttempt {
        id: parse_id(DeliveryId::parse(&id))?,
        endpoint_id: parse_id(WebhookId::parse(&endpoint_id))?,
        event_id: parse_id(EventId::parse(&event_id))?,
        attempt: attempt.max(0) as u32,
        status_code: status_code.map(|c| c as u16),
        error: row.get("error"),
        duration_ms: duration_ms.max(0) as u64,
        attempted_at: millis(row.get("attempted_ms"))?,
        succeeded: row.get("succeeded"),
    })
}

impl PgStore {
    /// See [`FEED_QUEUE_VACUUM_EVERY`].
    async fn vacuum_queue_when_due(&self, dequeued: u64) {
        use std::sync::atomic::Ordering;
        let since = self.dequeued.fetch_add(dequeued, Ordering::Relaxed) + dequeued;
        if since < FEED_QUEUE_VACUUM_EVERY {
            return;
        }
        self.dequeued.store(0, Ordering::Relaxed);
        // SKIP_LOCKED: if another process is vacuuming it right now, that will do.
        // TRUNCATE false: handing the empty pages at the end back to the file
        // system takes an exclusive lock on the table, which every event's INSERT
        // conflicts with; with it, the sequencer fell behind the writes (4,500 of
        // 13,000 events/s numbered, measured). The simple query protocol, since
        // VACUUM cannot run in the implicit transaction of a prepared statement.
        if let Err(err) = sqlx::raw_sql("VACUUM (SKIP_LOCKED, TRUNCATE false) events_unpositioned")
            .execute(&self.pool)
            .await
        {
            // A PostgreSQL-compatible engine without VACUUM cleans up its own way;
            // the queue only gets slower to scan.
            tracing::debug!(error = %err, "could not vacuum the feed's queue");
        }
    }
}

#[async_trait]
impl OutboxStore for PgStore {
    async fn assign_feed_positions(&self, limit: u32) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let head: Option<i64> = sqlx::query_scalar(
            "SELECT position FROM outbox_cursors WHERE name = 'feed' FOR UPDATE SKIP LOCKED",
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let Some(head) = head else { return Ok(0) };
        // READ COMMITTED: this statement sees exactly the events committed before it
        // began; later commits get later positions in a later batch.
        // The queue holds the seq of every event not yet numbered; its rows commit
        // with their events (migrations/postgres/0005_event_positions.sql).
        // The batch is deleted as one range of the queue's key, up to its last seq:
        // in this statement's snapshot that range holds exactly the batch. `seq IN
        // (the batch)` probed the index once per event (bench/README.md, session 18).
        let numbered = sqlx::query(
            "WITH batch AS (SELECT seq FROM events_unpositioned ORDER BY seq LIMIT $2),
                  next AS (
                 DELETE FROM events_unpositioned
                  WHERE seq <= (SELECT MAX(seq) FROM batch)
              RETURNING seq)
             INSERT INTO event_positions (feed_pos, seq)
             SELECT $1 + row_number() OVER (ORDER BY seq), seq FROM next",
        )
        .bind(head)
        .bind(i64::from(limit))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?
        .rows_affected();
        if numbered > 0 {
            sqlx::query("UPDATE outbox_cursors SET position = $1 WHERE name = 'feed'")
                .bind(head + numbered as i64)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)?;
        self.vacuum_queue_when_due(numbered).await;
        Ok(numbered)
    }

    async fn feed(
        &self,
        after: i64,
        limit: u32,
        within: Option<&OrgId>,
    ) -> StoreResult<Vec<FeedEvent>> {
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new("");
        if let Some(root) = within {
            q.push(
                "WITH RECURSIVE subtree(id, level) AS (SELECT id, 1 FROM organizations WHERE id = ",
            )
            .push_bind(root.to_string())
            .push(
                " UNION ALL SELECT o.id, s.level + 1 FROM organizations o
                         JOIN subtree s ON o.parent_id = s.id WHERE s.level < ",
            )
            .push_bind(WALK_LIMIT as i32)
            .push(") ");
        }
        q.push(
            "SELECT p.feed_pos, e.doc::text AS doc
               FROM event_positions p JOIN events e ON e.seq = p.seq WHERE p.feed_pos > ",
        )
        .push_bind(after);
        if within.is_some() {
            q.push(" AND e.org_id IN (SELECT id FROM subtree)");
        }
        q.push(" ORDER BY p.feed_pos LIMIT ")
            .push_bind(i64::from(limit));
        let rows = q.build().fetch_all(&self.pool).await.map_err(db_error)?;
        rows.iter()
            .map(|r| {
                let doc: String = r.get("doc");
                Ok(FeedEvent {
                    position: r.get("feed_pos"),
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
             VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7, $8::timestamptz, $9, $10::timestamptz,
                     $11::timestamptz)",
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
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn find_webhook(&self, id: &WebhookId) -> StoreResult<Option<Endpoint>> {
        let row = sqlx::query(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
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
        let rows = sqlx::query(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after.map_or_else(String::new, |a| a.to_string()))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
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
                SET url = $2, event_types = $3::jsonb, org_id = $4, description = $5, secret = $6,
                    previous_secret = $7, previous_expires_at = $8::timestamptz,
                    updated_at = $9::timestamptz
              WHERE id = $1",
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
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_webhook(&self, id: &WebhookId) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1")
            .bind(id.to_string())
            .execute(&self.pool)
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
        let rows = sqlx::query(&format!(
            "SELECT {ATTEMPT_COLUMNS} FROM webhook_deliveries
              WHERE endpoint_id = $1 AND ($2::text IS NULL OR id < $2)
              ORDER BY id DESC LIMIT $3"
        ))
        .bind(endpoint.to_string())
        .bind(before.map(|b| b.to_string()))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter().map(decode_attempt).collect()
    }

    async fn fan_out(&self, limit: u32, now_ms: i64) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let position: Option<i64> = sqlx::query_scalar(
            "SELECT position FROM outbox_cursors WHERE name = 'webhooks' FOR UPDATE SKIP LOCKED",
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let Some(position) = position else {
            return Ok(0);
        };
        // The newest position first, the endpoints after: an event numbered by then
        // occurred before any endpoint the next read misses was created, so that
        // endpoint would not get it anyway (`route`). Events are read up to it only.
        let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(feed_pos) FROM event_positions")
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
        let Some(newest) = newest.filter(|&newest| newest > position) else {
            return Ok(0);
        };
        let endpoints = sqlx::query(&format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints"))
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?
            .iter()
            .map(|r| decode_endpoint(&self.secrets_key, r))
            .collect::<StoreResult<Vec<_>>>()?;
        if endpoints.is_empty() {
            // No event has a recipient: past every numbered event without reading
            // them, as the SQLite store does (sqlite_outbox.rs, `skip_past_committed`).
            // Reading them was ~2 index fetches per event and per update, for no message.
            commit_webhook_cursor(tx, newest).await?;
            // Positions are numbered without gaps, so this is the events covered.
            return Ok((newest - position) as u64);
        }
        let events = sqlx::query(
            "SELECT p.feed_pos, e.id, e.org_id, e.type,
                    (extract(epoch FROM e.occurred_at) * 1000)::bigint AS occurred_ms
               FROM event_positions p JOIN events e ON e.seq = p.seq
              WHERE p.feed_pos > $1 AND p.feed_pos <= $3 ORDER BY p.feed_pos LIMIT $2",
        )
        .bind(position)
        .bind(i64::from(limit))
        .bind(newest)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        let Some(last) = events.last().map(|r| r.get::<i64, _>("feed_pos")) else {
            return Ok(0);
        };
        let needs_lineage = endpoints.iter().any(|e| e.org_id.is_some());
        let (mut endpoint_ids, mut org_ids, mut event_ids) = (Vec::new(), Vec::new(), Vec::new());
        for row in &events {
            let org_text: String = row.get("org_id");
            let event_type: String = row.get("type");
            let event_id: String = row.get("id");
            let occurred_at = millis(row.get("occurred_ms"))?;
            let org = parse_id(OrgId::parse(&org_text))?;
            let lineage = if needs_lineage {
                ancestry(&mut tx, &org, false).await?
            } else {
                vec![org]
            };
            for endpoint in route(&endpoints, &event_type, occurred_at, &lineage) {
                endpoint_ids.push(endpoint.id.to_string());
                org_ids.push(org_text.clone());
                event_ids.push(event_id.clone());
            }
        }
        if !endpoint_ids.is_empty() {
            // One statement; rows are inserted in array order, so `id` follows feed order.
            sqlx::query(
                "INSERT INTO webhook_messages (endpoint_id, org_id, event_id, next_attempt_at)
                 SELECT m.endpoint_id, m.org_id, m.event_id, $4
                   FROM UNNEST($1::text[], $2::text[], $3::text[])
                        WITH ORDINALITY AS m(endpoint_id, org_id, event_id, n)
                  ORDER BY m.n",
            )
            .bind(&endpoint_ids)
            .bind(&org_ids)
            .bind(&event_ids)
            .bind(now_ms)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }
        commit_webhook_cursor(tx, last).await?;
        Ok(events.len() as u64)
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
             VALUES ($1, NULL, $2, $3, $4)",
        )
        .bind(endpoint.to_string())
        .bind(event_id.to_string())
        .bind(payload)
        .bind(now_ms)
        .execute(&self.pool)
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
        // A message whose predecessor (same endpoint and org) is still queued is not
        // due, even while another worker holds that predecessor: its row exists until
        // it is delivered or given up.
        let rows = sqlx::query(
            "WITH due AS (
                 SELECT m.id FROM webhook_messages m
                  WHERE m.next_attempt_at <= $1
                    AND (m.lease_until IS NULL OR m.lease_until <= $1)
                    AND NOT EXISTS (SELECT 1 FROM webhook_messages p
                                     WHERE p.endpoint_id = m.endpoint_id AND p.org_id = m.org_id
                                       AND p.id < m.id)
                  ORDER BY m.next_attempt_at, m.id
                  LIMIT $2
                  FOR UPDATE OF m SKIP LOCKED)
             UPDATE webhook_messages w SET lease_owner = $3, lease_until = $4
               FROM due WHERE w.id = due.id
             RETURNING w.id, w.endpoint_id, w.event_id, w.attempts,
                       COALESCE(w.payload, (SELECT e.doc::text FROM events e WHERE e.id = w.event_id)) AS body",
        )
        .bind(now_ms)
        .bind(i64::from(limit))
        .bind(owner)
        .bind(now_ms + lease_ms)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        let mut claimed = rows
            .iter()
            .map(|row| {
                let endpoint_id: String = row.get("endpoint_id");
                let event_id: String = row.get("event_id");
                let attempts: i32 = row.get("attempts");
                let body: Option<String> = row.get("body");
                Ok(ClaimedMessage {
                    id: row.get("id"),
                    endpoint_id: parse_id(WebhookId::parse(&endpoint_id))?,
                    event_id: parse_id(EventId::parse(&event_id))?,
                    body: body.unwrap_or_default(),
                    attempts: attempts.max(0) as u32,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        claimed.sort_by_key(|m| m.id);
        Ok(claimed)
    }

    async fn finish_attempt(
        &self,
        message_id: i64,
        owner: &str,
        a: &DeliveryAttempt,
        fate: MessageFate,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, endpoint_id, event_id, attempt, status_code, error,
                 duration_ms, attempted_at, succeeded)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8::timestamptz, $9
              WHERE EXISTS (SELECT 1 FROM webhook_endpoints WHERE id = $2)",
        )
        .bind(a.id.to_string())
        .bind(a.endpoint_id.to_string())
        .bind(a.event_id.to_string())
        .bind(a.attempt as i32)
        .bind(a.status_code.map(i32::from))
        .bind(&a.error)
        .bind(a.duration_ms as i64)
        .bind(time::format(a.attempted_at))
        .bind(a.succeeded)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let owned: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM webhook_messages WHERE id = $1 AND lease_owner = $2 FOR UPDATE",
        )
        .bind(message_id)
        .bind(owner)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        if owned.is_some() {
            match fate {
                MessageFate::RetryAt(at) => {
                    sqlx::query(
                        "UPDATE webhook_messages SET attempts = attempts + 1, next_attempt_at = $2,
                                lease_owner = NULL, lease_until = NULL WHERE id = $1",
                    )
                    .bind(message_id)
                    .bind(at)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                }
                MessageFate::Delivered | MessageFate::Dropped | MessageFate::GaveUp => {
                    sqlx::query("DELETE FROM webhook_messages WHERE id = $1")
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
                        // `<>` keeps the common case (already active) from writing.
                        sqlx::query(
                            "UPDATE webhook_endpoints SET status = $2 WHERE id = $1 AND status <> $2",
                        )
                        .bind(a.endpoint_id.to_string())
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
            "UPDATE outbox_cursors SET lease_owner = $2, lease_until = $3
              WHERE name = $1 AND (lease_owner IS NULL OR lease_owner = $2 OR lease_until <= $4)
             RETURNING position",
        )
        .bind(consumer.name())
        .bind(owner)
        .bind(now_ms + lease_ms)
        .bind(now_ms)
        .fetch_optional(&self.pool)
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
            "UPDATE outbox_cursors SET position = $3
              WHERE name = $1 AND lease_owner = $2 AND position < $3",
        )
        .bind(consumer.name())
        .bind(owner)
        .bind(position)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(done.rows_affected() == 1)
    }
}

/// What the secrets key needs at open and on reset (store/sealed_secrets.rs).
impl PgStore {
    /// Refuses this process's secrets key if the stored secrets are sealed with
    /// another, then seals any secret a version before sealing stored in clear, so
    /// the database holds none after the first start of this version.
    pub(super) async fn adopt_secrets_key(&self) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        // Locking the clear rows first makes processes that start together take
        // turns: the second waits here, then finds the rows sealed (READ COMMITTED
        // re-reads them), and its check below sees the first one's key.
        let legacy: Vec<(String, String, Option<String>)> =
            sqlx::query_as(&format!("{} FOR UPDATE", sealed_secrets::LEGACY_ROWS))
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
        let sample = sqlx::query_as(sealed_secrets::ONE_SEALED)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
        sealed_secrets::check_key(&self.secrets_key, sample)?;
        for (id, secret, previous) in &legacy {
            let (secret, previous) =
                sealed_secrets::reseal_legacy(&self.secrets_key, id, secret, previous.as_deref())?;
            sqlx::query(
                "UPDATE webhook_endpoints SET secret = $2, previous_secret = $3 WHERE id = $1",
            )
            .bind(id)
            .bind(secret)
            .bind(previous)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)?;
        if !legacy.is_empty() {
            tracing::info!(
                endpoints = legacy.len(),
                secrets_key.id = self.secrets_key.key_id(),
                "sealed the webhook secrets an earlier version stored in clear"
            );
        }
        Ok(())
    }

    /// Gives every endpoint whose secret this key cannot open a new random secret
    /// (and drops its unreadable previous one), in one transaction; returns their ids.
    pub(super) async fn replace_unreadable_secrets(&self) -> anyhow::Result<Vec<String>> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT id, secret FROM webhook_endpoints ORDER BY id FOR UPDATE")
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
                    SET secret = $2, previous_secret = NULL, previous_expires_at = NULL
                  WHERE id = $1",
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

/// Moves the fan-out's cursor to `position` and commits the step.
async fn commit_webhook_cursor(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    position: i64,
) -> StoreResult<()> {
    sqlx::query("UPDATE outbox_cursors SET position = $1 WHERE name = 'webhooks'")
        .bind(position)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    tx.commit().await.map_err(db_error)
}

//! Group commit of in-place updates on PostgreSQL: the common update (the org stays
//! live, under the same parent, with the same domains; see
//! `PgStore::write_org_in_place`) from many requests goes out as one guarded
//! statement that updates every row and inserts every event, and commits once.
//!
//! Why, and how requests are gathered: store/pg_batcher.rs.
//!
//! Each request keeps its own outcome: the statement's guard is per row, so a row
//! whose guard fails (a stale version, a missing row) is simply not updated
//! and its caller falls back to the full transaction, which answers the precise
//! error. If the statement as a whole fails (a unique slug taken by one row, a
//! deadlock with another process), the batch is re-run one row per statement, so
//! one request's failure never fails its neighbours. No two rows of one batch name
//! the same org: a later write to an org already in the batch waits for the next.

use std::collections::HashSet;

use sqlx::PgPool;

use super::pg_batcher::{fail_all, Batcher, Request};
use super::postgres::{constraint_error, db_error, is_retryable_code, sqlstate};
use super::StoreResult;

/// Rows per statement: enough to amortize the per-statement cost, small enough that
/// the arrays stay cheap to encode and a re-run of a failed batch stays short.
const MAX_BATCH: usize = 64;
/// Statements in flight at once, each on its own pooled connection. One: the next
/// batch gathers while this one commits, and goes out larger. In session 7 one and
/// two were even and four and eight slower; on session 18's faster host one beat
/// two in all four pairs (+4.5 to +11.5% PATCH/s, 3–7 µs less orgd CPU per
/// PATCH), as PostgreSQL's own CPU, not the wait for a commit, sets the rate
/// (bench/README.md).
const WORKERS: usize = 1;

/// One in-place update with its event, encoded for the statement.
#[derive(Debug)]
pub(super) struct InPlaceRow {
    pub org_id: String,
    pub expected_version: i64,
    pub slug: String,
    pub name: String,
    pub parent_id: Option<String>,
    pub enabled: bool,
    pub version: i64,
    pub updated_at: String,
    pub doc: String,
    pub event_id: String,
    pub event_type: String,
    pub event_version: i64,
    pub occurred_at: String,
    pub event_doc: String,
}

/// The handle the store keeps; the workers end when it is dropped.
pub(super) struct InPlaceWrites(Batcher<InPlaceRow, bool>);

impl InPlaceWrites {
    /// Starts the workers on the current tokio runtime.
    pub fn start(pool: PgPool) -> Self {
        Self(Batcher::start(
            "PostgreSQL update batches",
            WORKERS,
            MAX_BATCH,
            move |batch| {
                let pool = pool.clone();
                async move {
                    let mut batch = batch;
                    while !batch.is_empty() {
                        let (mut now, later) = split_repeats(batch);
                        // Rows locked in id order in every batch (the plan takes
                        // them in input order), so two batches in flight, here or
                        // in another process, wait for each other instead of
                        // deadlocking.
                        now.sort_by(|a, b| a.item.org_id.cmp(&b.item.org_id));
                        commit(&pool, now).await;
                        batch = later;
                    }
                }
            },
        ))
    }

    /// Queues the update and waits for the commit of the statement that carries it:
    /// `true` when it was applied, `false` when its guard did not hold.
    pub async fn write(&self, row: InPlaceRow) -> StoreResult<bool> {
        self.0.ask(row).await
    }
}

type Write = Request<InPlaceRow, bool>;

/// The first request for each org, and the rest (in arrival order), so that one
/// statement never updates an org twice: PostgreSQL would apply one of the two,
/// and which one could not be told from the result.
fn split_repeats(batch: Vec<Write>) -> (Vec<Write>, Vec<Write>) {
    let mut seen = HashSet::with_capacity(batch.len());
    batch
        .into_iter()
        .partition(|r| seen.insert(r.item.org_id.clone()))
}

/// Commits the batch as one statement and answers each request; re-runs it one
/// row at a time if the database rejected the statement.
async fn commit(pool: &PgPool, batch: Vec<Write>) {
    let rows: Vec<&InPlaceRow> = batch.iter().map(|r| &r.item).collect();
    match execute(pool, &rows).await {
        Ok(applied) => {
            for request in batch {
                let done = applied.contains(&request.item.org_id);
                request.answer(Ok(done));
            }
        }
        Err(err) if batch.len() == 1 => {
            let outcome = match sqlstate(&err) {
                // Lost a deadlock or was cancelled by a conflict: the full
                // transaction (which retries) decides.
                Some(code) if is_retryable_code(&code) => Ok(false),
                _ => Err(constraint_error(err)),
            };
            if let Some(request) = batch.into_iter().next() {
                request.answer(outcome);
            }
        }
        Err(sqlx::Error::Database(_)) => {
            // A row broke the statement (a taken slug, a deadlock), but which one
            // is not known: each row alone says.
            for request in batch {
                Box::pin(commit(pool, vec![request])).await;
            }
        }
        // The database did not run it (unreachable, no connection free): every
        // row would fail alike, and one after another each would wait out the
        // pool's timeout again.
        Err(err) => fail_all(batch, db_error(err)),
    }
}

/// The guarded update of every row and the insert of the events of those updated,
/// in one statement (so one commit); the ids of the orgs updated.
async fn execute(pool: &PgPool, rows: &[&InPlaceRow]) -> Result<HashSet<String>, sqlx::Error> {
    fn column<'a, T>(rows: &[&'a InPlaceRow], field: impl Fn(&'a InPlaceRow) -> T) -> Vec<T> {
        rows.iter().map(|r| field(r)).collect()
    }
    let updated: Vec<String> = sqlx::query_scalar(
        "WITH input AS (
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[],
                                  $6::boolean[], $7::bigint[], $8::text[], $9::text[],
                                  $10::text[], $11::text[], $12::bigint[], $13::text[], $14::text[])
                 AS i(id, expected_version, slug, name, parent_id, enabled, version, updated_at,
                      doc, event_id, event_type, event_version, occurred_at, event_doc)),
         updated AS (
             UPDATE organizations o
                SET slug = i.slug, name = i.name, enabled = i.enabled, version = i.version,
                    updated_at = i.updated_at::timestamptz, doc = i.doc::json
               FROM input i
              WHERE o.id = i.id AND o.version = i.expected_version AND o.deleted_at IS NULL
                AND o.parent_id IS NOT DISTINCT FROM i.parent_id
          RETURNING o.id),
         inserted AS (
             INSERT INTO events (id, org_id, type, version, occurred_at, doc)
             SELECT i.event_id, i.id, i.event_type, i.event_version,
                    i.occurred_at::timestamptz, i.event_doc::json
               FROM input i JOIN updated u ON u.id = i.id
          RETURNING seq, org_id),
         -- Queued for the feed's sequencer (migrations/postgres/0005_event_positions.sql).
         queued AS (INSERT INTO events_unpositioned (seq) SELECT seq FROM inserted)
         SELECT org_id FROM inserted",
    )
    .bind(column(rows, |r| r.org_id.as_str()))
    .bind(column(rows, |r| r.expected_version))
    .bind(column(rows, |r| r.slug.as_str()))
    .bind(column(rows, |r| r.name.as_str()))
    .bind(column(rows, |r| r.parent_id.as_deref()))
    .bind(column(rows, |r| r.enabled))
    .bind(column(rows, |r| r.version))
    .bind(column(rows, |r| r.updated_at.as_str()))
    .bind(column(rows, |r| r.doc.as_str()))
    .bind(column(rows, |r| r.event_id.as_str()))
    .bind(column(rows, |r| r.event_type.as_str()))
    .bind(column(rows, |r| r.event_version))
    .bind(column(rows, |r| r.occurred_at.as_str()))
    .bind(column(rows, |r| r.event_doc.as_str()))
    .fetch_all(pool)
    .await?;
    Ok(updated.into_iter().collect())
}

//! Reads of one organization by id on PostgreSQL, gathered from concurrent
//! requests into one `WHERE id = ANY(…)` statement (why: store/pg_batcher.rs).
//!
//! Each request's statement starts after the request was queued, so it sees every
//! commit that finished before the request began, as its own statement would.

use std::collections::HashMap;

use sqlx::PgPool;

use super::pg_batcher::{fail_all, Batcher, Request};
use super::postgres::db_error;
use super::StoreResult;

/// Ids per statement.
const MAX_BATCH: usize = 64;
/// Statements in flight at once. One gave the most reads (22.0k/21.7k GET/s
/// against 18.1k/20.2k with two and 16.9k/17.9k with four, bench/README.md session
/// 7): a read waits for no commit, so a second statement in flight mostly splits
/// the batch in two.
const WORKERS: usize = 1;

/// The handle the store keeps; the workers end when it is dropped.
pub(super) struct IdReads(Batcher<String, Option<String>>);

impl IdReads {
    /// Starts the workers on the current tokio runtime.
    pub fn start(pool: PgPool) -> Self {
        Self(Batcher::start(
            "PostgreSQL read batches",
            WORKERS,
            MAX_BATCH,
            move |batch| {
                let pool = pool.clone();
                async move { read(&pool, batch).await }
            },
        ))
    }

    /// The organization's stored document (JSON), if the id exists.
    pub async fn doc(&self, org_id: String) -> StoreResult<Option<String>> {
        self.0.ask(org_id).await
    }
}

async fn read(pool: &PgPool, batch: Vec<Request<String, Option<String>>>) {
    let ids: Vec<&str> = batch.iter().map(|r| r.item.as_str()).collect();
    let rows: Result<Vec<(String, String)>, _> =
        sqlx::query_as("SELECT id, doc::text FROM organizations WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_all(pool)
            .await;
    match rows {
        Ok(rows) => {
            let docs: HashMap<String, String> = rows.into_iter().collect();
            for request in batch {
                let doc = docs.get(&request.item).cloned();
                request.answer(Ok(doc));
            }
        }
        Err(err) => fail_all(batch, db_error(err)),
    }
}

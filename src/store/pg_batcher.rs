//! Gathers requests from many tasks into batches, each run as one PostgreSQL
//! statement (store/pg_group_commit.rs for updates, store/pg_point_reads.rs for
//! reads by id).
//!
//! Why: under load every request was its own statement from its own connection,
//! and PostgreSQL spent its time on what every statement pays — a round trip, a
//! backend wake-up, a snapshot, for a write a commit record and its flush — rather
//! than on the rows (bench/README.md, session 7). No batching is forced: a worker
//! takes what is queued the moment it is free, so an idle server answers a lone
//! request at once, and a busy one sends larger batches.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use tokio::sync::{mpsc, oneshot, Mutex};

use super::{StoreError, StoreResult};

const QUEUE_DEPTH: usize = 4096;

/// A request and where its answer goes.
pub(super) struct Request<T, A> {
    pub item: T,
    pub reply: oneshot::Sender<StoreResult<A>>,
}

impl<T, A> Request<T, A> {
    pub fn answer(self, outcome: StoreResult<A>) {
        // The asker may have gone (its client hung up); nothing waits for this.
        let _ = self.reply.send(outcome);
    }
}

/// Answers every request of a batch with the same failure.
pub(super) fn fail_all<T, A>(batch: Vec<Request<T, A>>, failure: StoreError) {
    for request in batch {
        request.answer(Err(failure.copied()));
    }
}

/// The handle a store keeps; its workers end when it is dropped.
pub(super) struct Batcher<T, A> {
    queue: mpsc::Sender<Request<T, A>>,
    what: &'static str,
}

impl<T: Send + 'static, A: Send + 'static> Batcher<T, A> {
    /// Starts `workers` tasks on the current tokio runtime. Each takes up to
    /// `max_batch` queued requests (waiting for at least one) and hands them to
    /// `run`, which answers every one. Several workers let one batch gather and
    /// execute while another waits for the database.
    pub fn start<F, Fut>(what: &'static str, workers: usize, max_batch: usize, run: F) -> Self
    where
        F: Fn(Vec<Request<T, A>>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (queue, requests) = mpsc::channel(QUEUE_DEPTH);
        let requests = Arc::new(Mutex::new(requests));
        for _ in 0..workers.max(1) {
            tokio::spawn(work(requests.clone(), max_batch.max(1), run.clone()));
        }
        Self { queue, what }
    }

    /// Queues `item` and waits for its answer.
    pub async fn ask(&self, item: T) -> StoreResult<A> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Unavailable(anyhow::anyhow!("the {} have stopped", self.what));
        self.queue
            .send(Request { item, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// One worker. The receiver is shared: the worker that holds it waits for the next
/// request, takes what else is queued, and lets go before running the batch.
async fn work<T, A, F, Fut>(
    requests: Arc<Mutex<mpsc::Receiver<Request<T, A>>>>,
    max_batch: usize,
    run: F,
) where
    F: Fn(Vec<Request<T, A>>) -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        let mut batch = Vec::new();
        {
            let mut requests = requests.lock().await;
            let Some(first) = requests.recv().await else {
                return;
            };
            batch.push(first);
            while batch.len() < max_batch {
                match requests.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
        }
        // A panic in one batch (a bug) answers its requests "unavailable", as their
        // dropped reply channels say, and must not stop the worker for the rest.
        if AssertUnwindSafe(run(batch)).catch_unwind().await.is_err() {
            tracing::error!("a PostgreSQL batch panicked; its requests were not answered");
        }
    }
}

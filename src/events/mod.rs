//! The outbox's consumers, as background tasks of `orgd serve`: the pump (numbers
//! committed events for the feed, then fans them out into webhook messages), the
//! webhook workers, and the optional NATS publisher.
//!
//! Nothing here runs on the request path: a handler that committed a change only
//! pokes [`OutboxSignals::event_committed`], which returns at once. Every worker
//! also polls, so events committed by other processes are found too.

pub mod nats;
pub mod net;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::domain::webhook::RetrySchedule;
use crate::store::SharedStore;

/// Events the pump numbers or fans out per transaction.
const PUMP_BATCH: u32 = 500;

/// The least time from the start of a pump round that found work to the start of
/// the next. Every commit wakes the pump, and a round that finds events writes (the
/// fan-out cursor; on PostgreSQL the numbering too): under a stream of writes, a
/// round per commit doubled the syncs and, before the SQLite fan-out moved into the
/// group committer's batches, made the committer wait for the one connection
/// (bench/README.md, sessions 5 and 6). Spaced out, one round covers every commit
/// of the gap; an idle pump still answers the first commit at once, and feed
/// streams and webhooks are at most this much later under load.
const BUSY_ROUND_GAP: Duration = Duration::from_millis(25);

/// How handlers and feed readers talk to the background tasks.
#[derive(Clone)]
pub struct OutboxSignals {
    pump: Arc<Notify>,
    deliver: Arc<Notify>,
    feed: watch::Receiver<u64>,
    closing: watch::Receiver<bool>,
    /// How often feed streams look again when nothing woke them.
    pub poll_interval: Duration,
}

impl OutboxSignals {
    /// A change committed in this process: wake the pump now rather than at its next poll.
    pub fn event_committed(&self) {
        self.pump.notify_one();
    }

    /// A message was queued directly (`/test`): wake the webhook workers.
    pub fn message_queued(&self) {
        self.deliver.notify_one();
    }

    /// Changes whenever the pump may have made new events visible in the feed.
    pub fn feed_changes(&self) -> watch::Receiver<u64> {
        self.feed.clone()
    }

    /// Becomes `true` when the server shuts down, so long-lived streams end and the
    /// graceful shutdown does not wait for them forever.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.clone()
    }
}

/// The running background tasks, stopped with the server.
pub struct Background {
    tasks: Vec<JoinHandle<()>>,
    closing: watch::Sender<bool>,
}

impl Background {
    /// Ends feed streams (so in-flight HTTP requests can drain).
    pub fn begin_shutdown(&self) {
        self.closing.send_replace(true);
    }

    /// Stops the workers. Messages in flight are abandoned: their leases expire
    /// and another worker (or the next start) sends them again.
    pub fn stop(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// What the background tasks need to know.
#[derive(Debug, Clone)]
pub struct OutboxConfig {
    pub poll_interval: Duration,
    pub webhooks: webhooks::DeliveryConfig,
    pub nats: Option<nats::NatsConfig>,
}

impl OutboxConfig {
    /// From `orgd serve`'s configuration; fails on a malformed retry schedule.
    pub fn from_serve(serve: &crate::config::ServeConfig) -> anyhow::Result<Self> {
        let retry_schedule = match &serve.webhook_retry_schedule {
            Some(text) => RetrySchedule::parse(text)
                .map_err(|e| anyhow::anyhow!("ORGD_WEBHOOK_RETRY_SCHEDULE: {e}"))?,
            None => RetrySchedule::default_schedule(),
        };
        Ok(Self {
            poll_interval: serve.events_poll_interval,
            webhooks: webhooks::DeliveryConfig {
                retry_schedule,
                timeout: serve.webhook_timeout,
                concurrency: serve.webhook_concurrency.max(1),
                allow_private: serve.webhooks_allow_private,
                poll_interval: serve.events_poll_interval,
            },
            nats: serve.nats_url.as_ref().map(|url| nats::NatsConfig {
                url: url.clone(),
                stream: serve.nats_stream.clone(),
                subject_prefix: serve.nats_subject_prefix.clone(),
                poll_interval: serve.events_poll_interval,
            }),
        })
    }
}

/// A unique name for this process's leases.
fn worker_id() -> String {
    format!("{}-{}", std::process::id(), uuid::Uuid::now_v7().simple())
}

/// Starts the pump, the webhook workers and (if configured) the NATS publisher.
pub fn start(
    store: SharedStore,
    config: OutboxConfig,
) -> anyhow::Result<(OutboxSignals, Background)> {
    let pump = Arc::new(Notify::new());
    let deliver = Arc::new(Notify::new());
    let (feed_tx, feed_rx) = watch::channel(0u64);
    let owner = worker_id();
    let mut tasks = vec![tokio::spawn(run_pump(
        store.clone(),
        pump.clone(),
        deliver.clone(),
        feed_tx,
        config.poll_interval,
    ))];
    let deliverer = webhooks::Deliverer::new(store.clone(), config.webhooks, owner.clone())?;
    tasks.push(tokio::spawn(deliverer.run(deliver.clone())));
    if let Some(nats) = config.nats {
        tasks.push(tokio::spawn(nats::run(store, nats, owner, feed_rx.clone())));
    }
    let (closing, closing_rx) = watch::channel(false);
    Ok((
        OutboxSignals {
            pump,
            deliver,
            feed: feed_rx,
            closing: closing_rx,
            poll_interval: config.poll_interval,
        },
        Background { tasks, closing },
    ))
}

/// Numbers committed events for the feed (PostgreSQL), tells feed readers, and turns
/// new events into webhook messages; then sleeps until poked or the poll interval.
async fn run_pump(
    store: SharedStore,
    wake: Arc<Notify>,
    deliver: Arc<Notify>,
    feed: watch::Sender<u64>,
    poll: Duration,
) {
    let mut generation = 0u64;
    loop {
        let started = tokio::time::Instant::now();
        let numbered = drain(|| store.assign_feed_positions(PUMP_BATCH)).await;
        // On SQLite nothing is numbered (seq is the position): a local commit or the
        // poll is the only hint, so readers are told after every round.
        generation += 1;
        feed.send_replace(generation);
        let fanned =
            drain(|| store.fan_out(PUMP_BATCH, crate::domain::time::now().as_millisecond())).await;
        if fanned > 0 {
            deliver.notify_one();
        }
        if numbered == 0 && fanned == 0 {
            let _ = tokio::time::timeout(poll, wake.notified()).await;
        } else {
            tokio::time::sleep_until(started + BUSY_ROUND_GAP.min(poll)).await;
        }
    }
}

/// Runs a batch step until it reports no more work (or fails, which is logged:
/// the next round tries again). Returns the total done.
async fn drain<F, Fut>(mut step: F) -> u64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = crate::store::StoreResult<u64>>,
{
    let mut total = 0;
    loop {
        match step().await {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(err) => {
                tracing::warn!(error = %err, "outbox step failed; retrying at the next poll");
                return total;
            }
        }
    }
}

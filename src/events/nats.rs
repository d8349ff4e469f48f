//! The optional NATS JetStream sink: every event, in feed order, published to
//! `<prefix>.<type>` with its id as `Nats-Msg-Id`, so JetStream drops the
//! duplicates a retry or a second process may send.
//!
//! It reads the same outbox as everything else, from its own cursor, which moves
//! only past events JetStream acknowledged: a broker outage delays events, never
//! loses them. One process publishes at a time (a lease on the cursor row).

use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage, stream};
use tokio::sync::watch;

use crate::store::outbox::Consumer;
use crate::store::SharedStore;

/// Events published per round; acknowledgements are awaited after each round.
const BATCH: u32 = 200;
/// How long the publisher's cursor lease lasts (renewed every round).
const LEASE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct NatsConfig {
    pub url: String,
    pub stream: String,
    pub subject_prefix: String,
    pub poll_interval: Duration,
}

/// Connects (retrying with backoff), makes sure the stream exists, then publishes
/// for as long as the process runs.
pub async fn run(
    store: SharedStore,
    config: NatsConfig,
    owner: String,
    mut feed: watch::Receiver<u64>,
) {
    let mut backoff = Duration::from_millis(200);
    let context = loop {
        match connect(&config).await {
            Ok(context) => break context,
            Err(err) => {
                tracing::warn!(error = %err, retry_in = ?backoff, "cannot reach NATS JetStream");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    };
    tracing::info!(stream = %config.stream, "publishing events to NATS JetStream");
    loop {
        match publish_round(&store, &context, &config, &owner).await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(error = %err, "publishing to NATS failed; will retry");
                tokio::time::sleep(backoff).await;
            }
        }
        let _ = tokio::time::timeout(config.poll_interval, feed.changed()).await;
    }
}

async fn connect(config: &NatsConfig) -> anyhow::Result<jetstream::Context> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(config.url.as_str())
        .await?;
    let context = jetstream::new(client);
    context
        .get_or_create_stream(stream::Config {
            name: config.stream.clone(),
            subjects: vec![format!("{}.>", config.subject_prefix)],
            ..Default::default()
        })
        .await?;
    Ok(context)
}

/// Publishes the next batch; `Ok(true)` when there may be more right away.
async fn publish_round(
    store: &SharedStore,
    context: &jetstream::Context,
    config: &NatsConfig,
    owner: &str,
) -> anyhow::Result<bool> {
    let now = crate::domain::time::now().as_millisecond();
    let Some(position) = store
        .lease_cursor(Consumer::Nats, owner, now, LEASE.as_millis() as i64)
        .await?
    else {
        // Another process is publishing.
        return Ok(false);
    };
    let events = store.feed(position, BATCH, None).await?;
    if events.is_empty() {
        return Ok(false);
    }
    // Publish the whole batch, then collect acknowledgements in order; the cursor
    // moves to the last event of the unbroken run of acknowledged ones.
    let mut pending = Vec::with_capacity(events.len());
    for feed_event in &events {
        let event = &feed_event.event;
        let subject = format!("{}.{}", config.subject_prefix, event.event_type.as_str());
        let payload = serde_json::to_vec(event)?;
        let publish = PublishMessage::build()
            .payload(payload.into())
            .message_id(event.id.to_string());
        match context.send_publish(subject, publish).await {
            Ok(ack) => pending.push((feed_event.position, ack)),
            Err(err) => {
                tracing::warn!(error = %err, event.id = %event.id, "cannot publish an event to NATS");
                break;
            }
        }
    }
    let mut acknowledged = None;
    let mut count = 0u64;
    let mut complete = pending.len() == events.len();
    for (position, ack) in pending {
        match ack.await {
            Ok(_) => {
                acknowledged = Some(position);
                count += 1;
            }
            Err(err) => {
                tracing::warn!(error = %err, "NATS did not acknowledge an event");
                complete = false;
                break;
            }
        }
    }
    if let Some(position) = acknowledged {
        store
            .advance_cursor(Consumer::Nats, owner, position)
            .await?;
        metrics::counter!("orgd_nats_published_total").increment(count);
    }
    if !complete {
        anyhow::bail!("NATS acknowledged only part of a batch");
    }
    Ok(events.len() as u32 == BATCH)
}

//! The webhook workers: claim due messages (leased, so any number of processes can
//! share the queue), sign and POST each, record the attempt, and decide its fate
//! with the pure rules of `domain::webhook`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::Rng;
use tokio::sync::{Notify, Semaphore};

use super::net::{self, ForbiddenTarget};
use crate::domain::ids::DeliveryId;
use crate::domain::time;
use crate::domain::webhook::{signature_header, verdict, RetrySchedule, Verdict};
use crate::store::outbox::{ClaimedMessage, DeliveryAttempt, MessageFate};
use crate::store::SharedStore;

/// Longest error text kept per attempt.
const MAX_ERROR_CHARS: usize = 500;

#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub retry_schedule: RetrySchedule,
    pub timeout: Duration,
    pub concurrency: u32,
    pub allow_private: bool,
    pub poll_interval: Duration,
}

impl DeliveryConfig {
    /// A lease comfortably longer than one attempt, so a live worker keeps its
    /// message; a dead one's message is due again this long after it was claimed.
    fn lease(&self) -> Duration {
        self.timeout * 2 + Duration::from_secs(1)
    }
}

#[derive(Clone)]
pub struct Deliverer {
    store: SharedStore,
    client: reqwest::Client,
    config: Arc<DeliveryConfig>,
    owner: Arc<str>,
}

/// What came back from one POST.
struct Answer {
    status: Option<u16>,
    error: Option<String>,
}

impl Deliverer {
    pub fn new(store: SharedStore, config: DeliveryConfig, owner: String) -> anyhow::Result<Self> {
        Ok(Self {
            store,
            client: net::delivery_client(config.timeout, config.allow_private)?,
            config: Arc::new(config),
            owner: owner.into(),
        })
    }

    /// Claims as many due messages as there are free slots, sends each in its own
    /// task, and sleeps when there is nothing due (until poked or the poll interval).
    pub async fn run(self, wake: Arc<Notify>) {
        let slots = Arc::new(Semaphore::new(self.config.concurrency as usize));
        let lease_ms = self.config.lease().as_millis() as i64;
        loop {
            // Wait for at least one free slot before claiming anything.
            let Ok(first) = slots.clone().acquire_owned().await else {
                return;
            };
            let free = slots.available_permits() as u32 + 1;
            let now = time::now().as_millisecond();
            let claimed = match self
                .store
                .claim_messages(&self.owner, now, lease_ms, free)
                .await
            {
                Ok(claimed) => claimed,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot claim webhook messages; retrying");
                    Vec::new()
                }
            };
            if claimed.is_empty() {
                drop(first);
                let _ = tokio::time::timeout(self.config.poll_interval, wake.notified()).await;
                continue;
            }
            let mut permit = Some(first);
            for message in claimed {
                let permit = match permit.take() {
                    Some(p) => p,
                    None => match slots.clone().acquire_owned().await {
                        Ok(p) => p,
                        Err(_) => return,
                    },
                };
                let worker = self.clone();
                let wake = wake.clone();
                tokio::spawn(async move {
                    worker.deliver(message).await;
                    drop(permit);
                    // The next message of the same org may be due now.
                    wake.notify_one();
                });
            }
        }
    }

    async fn deliver(&self, message: ClaimedMessage) {
        let endpoint = match self.store.find_webhook(&message.endpoint_id).await {
            Ok(Some(endpoint)) => endpoint,
            // Deleted meanwhile: its messages went with it.
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(error = %err, webhook.id = %message.endpoint_id, "cannot load webhook endpoint");
                return;
            }
        };
        let attempt = message.attempts + 1;
        let attempted_at = time::now();
        let started = Instant::now();
        let answer = self.post(&endpoint, &message, attempted_at).await;
        let duration_ms = started.elapsed().as_millis() as u64;
        let fate = match verdict(answer.status) {
            Verdict::Delivered => MessageFate::Delivered,
            Verdict::Refused => MessageFate::Dropped,
            Verdict::Retry => {
                let jitter = rand::thread_rng().gen::<f64>();
                match self.config.retry_schedule.next_delay(attempt, jitter) {
                    Some(delay) => MessageFate::RetryAt(
                        time::now().as_millisecond() + delay.as_millis() as i64,
                    ),
                    None => MessageFate::GaveUp,
                }
            }
        };
        let result = match fate {
            MessageFate::Delivered => "delivered",
            MessageFate::RetryAt(_) => "retry",
            MessageFate::Dropped => "refused",
            MessageFate::GaveUp => "gave_up",
        };
        metrics::counter!("orgd_webhook_attempts_total", "result" => result).increment(1);
        if fate != MessageFate::Delivered {
            tracing::info!(
                webhook.id = %endpoint.id,
                event.id = %message.event_id,
                attempt,
                http.status = answer.status,
                error = answer.error.as_deref().unwrap_or(""),
                result,
                "webhook attempt did not deliver"
            );
        }
        let record = DeliveryAttempt {
            id: DeliveryId::generate(),
            endpoint_id: endpoint.id,
            event_id: message.event_id,
            attempt,
            status_code: answer.status,
            error: answer.error,
            duration_ms,
            attempted_at,
            succeeded: fate == MessageFate::Delivered,
        };
        if let Err(err) = self
            .store
            .finish_attempt(message.id, &self.owner, &record, fate)
            .await
        {
            // The lease runs out and the message is sent again: at least once.
            tracing::warn!(error = %err, webhook.id = %endpoint.id, event.id = %message.event_id, "cannot record a webhook attempt");
        }
    }

    async fn post(
        &self,
        endpoint: &crate::domain::webhook::Endpoint,
        message: &ClaimedMessage,
        now: jiff::Timestamp,
    ) -> Answer {
        if let Some(ForbiddenTarget(reason)) =
            net::literal_refusal(&endpoint.url, self.config.allow_private)
        {
            return Answer {
                status: None,
                error: Some(reason),
            };
        }
        let msg_id = message.event_id.to_string();
        let timestamp = now.as_second();
        let body = Bytes::from(message.body.clone());
        let signature = signature_header(&endpoint.signing_secrets(now), &msg_id, timestamp, &body);
        let sent = self
            .client
            .post(endpoint.url.url().clone())
            .header("content-type", "application/json")
            .header("webhook-id", &msg_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(mut response) => {
                let status = response.status();
                // Read (a bounded part of) the body so the connection can be reused.
                let mut read = 0usize;
                while let Ok(Some(chunk)) = response.chunk().await {
                    read += chunk.len();
                    if read > 64 * 1024 {
                        break;
                    }
                }
                Answer {
                    status: Some(status.as_u16()),
                    error: (!status.is_success())
                        .then(|| format!("the receiver answered {status}")),
                }
            }
            Err(err) => {
                let text = if err.is_timeout() {
                    format!("timed out after {:?}", self.config.timeout)
                } else {
                    net::describe(&err)
                };
                Answer {
                    status: None,
                    error: Some(text.chars().take(MAX_ERROR_CHARS).collect()),
                }
            }
        }
    }
}

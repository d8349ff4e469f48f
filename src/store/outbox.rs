//! The outbox side of the store: the global event feed, webhook endpoints, the
//! queue of webhook messages with its leases, the attempt log, and the cursors of
//! the outbox's other consumers (NATS).
//!
//! A separate trait from [`super::Store`] (which requires it) so the organization
//! store and the outbox evolve in separate files.

use async_trait::async_trait;
use jiff::Timestamp;

use super::StoreResult;
use crate::domain::event::Event;
use crate::domain::ids::{DeliveryId, EventId, OrgId, WebhookId};
use crate::domain::webhook::{Endpoint, EndpointStatus};

/// One event of the global feed, at its position.
#[derive(Debug, Clone)]
pub struct FeedEvent {
    /// The feed position (the cursor): commit order on both stores.
    pub position: i64,
    pub event: Event,
}

/// A webhook message claimed by one worker until its lease ends.
#[derive(Debug, Clone)]
pub struct ClaimedMessage {
    pub id: i64,
    pub endpoint_id: WebhookId,
    pub event_id: EventId,
    /// The request body: the event as stored, or the `webhook.test` payload.
    pub body: String,
    /// Attempts made before this one.
    pub attempts: u32,
}

/// One attempt to deliver a message, as `GET /v1/webhooks/{id}/deliveries` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryAttempt {
    pub id: DeliveryId,
    pub endpoint_id: WebhookId,
    pub event_id: EventId,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
    pub attempted_at: Timestamp,
    pub succeeded: bool,
}

/// What becomes of a message after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageFate {
    /// Delivered: the message is done and the endpoint is `active`.
    Delivered,
    /// Try again at this time (unix ms).
    RetryAt(i64),
    /// Refused by the receiver for good: the message is done.
    Dropped,
    /// Retries used up: the message is done and the endpoint is `failing`.
    GaveUp,
}

/// The two outbox consumers that keep a cursor outside the webhook queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consumer {
    Nats,
}

impl Consumer {
    pub fn name(self) -> &'static str {
        match self {
            Consumer::Nats => "nats",
        }
    }
}

#[async_trait]
pub trait OutboxStore: Send + Sync + 'static {
    // ---- the feed ----

    /// Gives committed events their feed positions (PostgreSQL; a no-op on SQLite,
    /// where `seq` already is commit order). Returns how many it numbered; at most
    /// one process numbers at a time, the others return 0.
    async fn assign_feed_positions(&self, limit: u32) -> StoreResult<u64>;

    /// Events after `after`, in feed order, optionally only those of `within`'s
    /// subtree (the current tree, deleted orgs included).
    async fn feed(
        &self,
        after: i64,
        limit: u32,
        within: Option<&OrgId>,
    ) -> StoreResult<Vec<FeedEvent>>;

    // ---- endpoints ----

    async fn insert_webhook(&self, endpoint: &Endpoint) -> StoreResult<()>;
    async fn find_webhook(&self, id: &WebhookId) -> StoreResult<Option<Endpoint>>;
    /// In id (creation) order, after `after`.
    async fn list_webhooks(
        &self,
        after: Option<&WebhookId>,
        limit: u32,
    ) -> StoreResult<Vec<Endpoint>>;
    /// Replaces the endpoint's fields (not its status, which deliveries own);
    /// `false` when it does not exist.
    async fn update_webhook(&self, endpoint: &Endpoint) -> StoreResult<bool>;
    /// Deletes it with its pending messages and attempt log; `false` when absent.
    async fn delete_webhook(&self, id: &WebhookId) -> StoreResult<bool>;
    /// Attempts newest first, before `before`.
    async fn list_deliveries(
        &self,
        endpoint: &WebhookId,
        before: Option<&DeliveryId>,
        limit: u32,
    ) -> StoreResult<Vec<DeliveryAttempt>>;

    // ---- delivery ----

    /// Turns the next events after the fan-out cursor into messages for the
    /// endpoints that want them, and advances the cursor, in one transaction.
    /// Returns how many events it read; 0 also when another process is at it.
    async fn fan_out(&self, limit: u32, now_ms: i64) -> StoreResult<u64>;

    /// Queues a `webhook.test` message for one endpoint.
    async fn enqueue_test(
        &self,
        endpoint: &WebhookId,
        event_id: &EventId,
        payload: &str,
        now_ms: i64,
    ) -> StoreResult<()>;

    /// Leases up to `limit` due messages to `owner` until `now_ms + lease_ms`: at
    /// most one per (endpoint, org), and only the oldest pending one of each.
    async fn claim_messages(
        &self,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<ClaimedMessage>>;

    /// Records an attempt and applies its fate to the message and the endpoint, if
    /// `owner` still holds the message's lease (otherwise only the attempt is kept).
    async fn finish_attempt(
        &self,
        message_id: i64,
        owner: &str,
        attempt: &DeliveryAttempt,
        fate: MessageFate,
    ) -> StoreResult<()>;

    // ---- cursors of other consumers ----

    /// Takes (or renews) the consumer's lease and returns its position, or `None`
    /// when another owner holds an unexpired lease.
    async fn lease_cursor(
        &self,
        consumer: Consumer,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> StoreResult<Option<i64>>;

    /// Moves the consumer's cursor forward, if `owner` holds its lease.
    async fn advance_cursor(
        &self,
        consumer: Consumer,
        owner: &str,
        position: i64,
    ) -> StoreResult<bool>;
}

/// Which endpoints want an event: it occurred after the endpoint was created (so
/// an endpoint never gets history, however far behind the fan-out runs), its type
/// passes the filter and, for endpoints limited to a subtree, the org's lineage
/// (itself, then its ancestors) contains the subtree's root. Pure, so both stores
/// route alike.
pub fn route<'a>(
    endpoints: &'a [Endpoint],
    event_type: &str,
    occurred_at: Timestamp,
    lineage: &[OrgId],
) -> impl Iterator<Item = &'a Endpoint> + 'a {
    let lineage = lineage.to_vec();
    let event_type = event_type.to_owned();
    endpoints.iter().filter(move |e| {
        e.created_at <= occurred_at
            && e.event_types.matches(&event_type)
            && e.org_id.is_none_or(|root| lineage.contains(&root))
    })
}

/// Stored status text back to the type; unknown text reads as active.
pub fn status_from_db(text: &str) -> EndpointStatus {
    EndpointStatus::parse(text).unwrap_or(EndpointStatus::Active)
}

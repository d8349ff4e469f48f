//! `/v1/events`: every organization's events in commit order, as pages and as a
//! server-sent-events stream (scope `events:read`; a key bound to a subtree sees
//! only its subtree's events).
//!
//! Positions are feed positions, assigned in commit order (see
//! `store::outbox::OutboxStore::assign_feed_positions`), so resuming from a cursor
//! never skips an event that committed late. The cursor is always returned, also
//! on an empty last page: it is where to resume.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::Json;
use futures::Stream;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, Problem};
use super::events::EventOut;
use super::extract::Caller;
use super::query::{FeedParams, Params};
use super::AppState;
use crate::domain::access;
use crate::domain::apikey::Scope;
use crate::domain::cursor::{self, CursorKind};
use crate::domain::ids::OrgId;
use crate::domain::problems::FieldError;
use crate::store::outbox::FeedEvent;
use crate::store::SharedStore;

/// Events a stream reads per query.
const STREAM_BATCH: u32 = 100;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_events))
        .routes(routes!(stream_events))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FeedPage {
    pub items: Vec<EventOut>,
    /// Where to resume (`after`): always present, also when `items` is empty.
    pub next_cursor: String,
}

fn feed_cursor(position: i64) -> String {
    cursor::encode(CursorKind::Feed, &position.to_string())
}

/// One server-sent event of the stream, as its fields arrive on the wire.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)] // documents the stream for OpenAPI
pub struct SseEventDoc {
    /// The cursor after this event (send it back as `Last-Event-ID` or `after`).
    id: String,
    /// The event's type, e.g. `organization.updated`.
    event: String,
    /// The event as JSON (the shape of `GET /v1/events` items).
    data: String,
}

/// List events of all organizations, oldest first (in commit order).
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    params(FeedParams),
    responses(
        (status = 200, body = FeedPage),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_events(
    State(app): State<AppState>,
    Caller(principal): Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<FeedPage>, ApiError> {
    access::authorize_deployment(&principal, Scope::EventsRead, false)?;
    let page = Params::parse(query.as_deref())
        .feed_page()
        .map_err(ApiError::Validation)?;
    let after = page.after.unwrap_or(0);
    let events = app
        .store
        .feed(after, page.limit, principal.root().as_ref())
        .await?;
    let next = events.last().map_or(after, |e| e.position);
    Ok(Json(FeedPage {
        items: events.iter().map(|e| EventOut::from(&e.event)).collect(),
        next_cursor: feed_cursor(next),
    }))
}

/// The same events as a `text/event-stream` that stays open: each SSE event's
/// `id` is its cursor (so `Last-Event-ID` resumes after it), `event` its type and
/// `data` the event JSON. `Last-Event-ID` wins over `after`.
#[utoipa::path(
    get,
    path = "/v1/events/stream",
    tag = "events",
    params(
        FeedParams,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event (sent by EventSource on reconnect)"),
    ),
    responses(
        (status = 200, description = "A stream of events", content_type = "text/event-stream", body = SseEventDoc),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn stream_events(
    State(app): State<AppState>,
    Caller(principal): Caller,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    access::authorize_deployment(&principal, Scope::EventsRead, false)?;
    let page = Params::parse(query.as_deref())
        .feed_page()
        .map_err(ApiError::Validation)?;
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|text| cursor::decode(CursorKind::Feed, text))
                .and_then(|p| p.parse::<i64>().ok())
                .ok_or_else(|| {
                    ApiError::Validation(vec![FieldError::new(
                        "/Last-Event-ID",
                        "invalid_cursor",
                        "is not an event id this stream sent",
                    )])
                })?,
        ),
    };
    let reader = FeedReader {
        store: app.store.clone(),
        within: principal.root(),
        position: last_event_id.or(page.after).unwrap_or(0),
        buffered: VecDeque::new(),
        changes: app.outbox.feed_changes(),
        closing: app.outbox.closing(),
        poll: app.outbox.poll_interval,
    };
    Ok(
        Sse::new(futures::stream::unfold(reader, FeedReader::next))
            .keep_alive(KeepAlive::default()),
    )
}

/// One open stream's position and what wakes it.
struct FeedReader {
    store: SharedStore,
    within: Option<OrgId>,
    position: i64,
    buffered: VecDeque<FeedEvent>,
    changes: tokio::sync::watch::Receiver<u64>,
    closing: tokio::sync::watch::Receiver<bool>,
    poll: std::time::Duration,
}

impl FeedReader {
    /// The next SSE event; `None` ends the stream (only at server shutdown).
    async fn next(mut self) -> Option<(Result<SseEvent, Infallible>, Self)> {
        loop {
            if *self.closing.borrow() || self.closing.has_changed().is_err() {
                return None;
            }
            if let Some(feed_event) = self.buffered.pop_front() {
                let data = serde_json::to_string(&EventOut::from(&feed_event.event))
                    .unwrap_or_else(|_| "{}".to_owned());
                let sse = SseEvent::default()
                    .id(feed_cursor(feed_event.position))
                    .event(feed_event.event.event_type.as_str())
                    .data(data);
                return Some((Ok(sse), self));
            }
            match self
                .store
                .feed(self.position, STREAM_BATCH, self.within.as_ref())
                .await
            {
                Ok(events) if !events.is_empty() => {
                    if let Some(last) = events.last() {
                        self.position = last.position;
                    }
                    self.buffered.extend(events);
                    continue;
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "event stream cannot read the feed"),
            }
            // Nothing new: wait for the pump to say there may be, or poll.
            tokio::select! {
                changed = self.changes.changed() => {
                    if changed.is_err() {
                        // The pump is gone (shutting down): fall back to polling.
                        tokio::time::sleep(self.poll).await;
                    }
                }
                _ = self.closing.changed() => {}
                _ = tokio::time::sleep(self.poll) => {}
            }
        }
    }
}

//! `/v1/organizations/{org}/events`: an organization's audit trail, oldest first.

use axum::extract::{RawQuery, State};
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, Problem};
use super::extract::{Caller, OrgRef};
use super::query::{PageParams, Params};
use super::AppState;
use crate::domain::access;
use crate::domain::apikey::Scope;
use crate::domain::cursor::CursorKind;
use crate::domain::event::Event;
use crate::domain::time;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_org_events))
}

/// One audit event (SPEC §5).
#[derive(Debug, Serialize, ToSchema)]
pub struct EventOut {
    #[schema(example = "evt_01h455vb4pex5vsknk084sn02q")]
    pub id: String,
    /// `organization.created|updated|deleted|restored`, `member.added|updated|removed`.
    #[serde(rename = "type")]
    pub event_type: String,
    pub organization_id: String,
    pub actor: ActorOut,
    /// JSON Pointer → `{from, to}`.
    #[schema(value_type = Object)]
    pub changes: Value,
    pub version: i64,
    pub request_id: String,
    pub occurred_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ActorOut {
    /// `api_key` or `user`.
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    pub items: Vec<EventOut>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl From<&Event> for EventOut {
    fn from(event: &Event) -> Self {
        Self {
            id: event.id.to_string(),
            event_type: event.event_type.as_str().to_owned(),
            organization_id: event.organization_id.to_string(),
            actor: ActorOut {
                kind: event.actor.kind.as_str().to_owned(),
                id: event.actor.id.clone(),
            },
            changes: serde_json::to_value(&event.changes).unwrap_or(Value::Null),
            version: event.version,
            request_id: event.request_id.clone(),
            occurred_at: time::format(event.occurred_at),
        }
    }
}

/// List an organization's events, oldest first (deleted organizations included).
#[utoipa::path(
    get,
    path = "/v1/organizations/{org}/events",
    tag = "events",
    params(("org" = String, Path, description = "Organization id (`org_…`) or slug"), PageParams),
    responses(
        (status = 200, body = EventList),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_org_events(
    State(app): State<AppState>,
    Caller(principal): Caller,
    OrgRef(lookup): OrgRef,
    RawQuery(query): RawQuery,
) -> Result<Json<EventList>, ApiError> {
    let loaded = super::orgs::load_for_trail(&app, &principal, &lookup).await?;
    access::authorize_org_read(
        &principal,
        &loaded.authority,
        &loaded.org,
        Scope::EventsRead,
    )?;
    let org = loaded.org;
    let page = Params::parse(query.as_deref())
        .event_page()
        .map_err(ApiError::Validation)?;
    let events = app
        .store
        .list_org_events(&org.id, page.after, page.fetch())
        .await?;
    let (events, next_cursor) = page.finish(events, CursorKind::Events, |(seq, _)| seq.to_string());
    Ok(Json(EventList {
        items: events.iter().map(|(_, e)| EventOut::from(e)).collect(),
        next_cursor,
    }))
}

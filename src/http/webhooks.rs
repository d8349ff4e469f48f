//! `/v1/webhooks`: endpoints that receive events, their secrets, test sends and
//! the log of delivery attempts (scope `webhooks:manage`).
//!
//! A key bound to a subtree sees and manages only endpoints limited to an
//! organization inside that subtree; its endpoints default to its own root.

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, Problem};
use super::extract::{Caller, JsonObject};
use super::query::{PageParams, Params};
use super::AppState;
use crate::domain::access::{self, Principal};
use crate::domain::apikey::Scope;
use crate::domain::cursor::CursorKind;
use crate::domain::ids::{DeliveryId, EventId, OrgId, WebhookId};
use crate::domain::problems::{FieldError, Invalid};
use crate::domain::time;
use crate::domain::webhook::{
    Endpoint, EndpointStatus, EventTypes, SigningSecret, WebhookUrl, TEST_EVENT_TYPE,
};
use crate::events::net;
use crate::store::outbox::DeliveryAttempt;
use crate::store::OrgLookup;

/// How long the secret replaced by a rotation keeps signing.
const ROTATION_GRACE: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);
const MAX_DESCRIPTION_CHARS: usize = 500;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_webhook, list_webhooks))
        .routes(routes!(get_webhook, update_webhook, delete_webhook))
        .routes(routes!(rotate_webhook_secret))
        .routes(routes!(test_webhook))
        .routes(routes!(list_webhook_deliveries))
}

// ---- wire types ---------------------------------------------------------------

/// A new endpoint.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct WebhookIn {
    /// `http` or `https`; private, loopback and link-local targets are refused.
    #[schema(example = "https://hooks.example.com/orgd")]
    url: String,
    /// Event types to receive, or `["*"]` for all.
    #[schema(example = json!(["organization.updated"]))]
    event_types: Vec<String>,
    /// Only events of this organization and its descendants.
    organization_id: Option<String>,
    description: Option<String>,
}

/// Changes to an endpoint: only the fields sent; `null` clears `organization_id`
/// and `description`.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct WebhookPatch {
    url: Option<String>,
    event_types: Option<Vec<String>>,
    organization_id: Option<String>,
    description: Option<String>,
}

/// An endpoint (never its secret, except in [`WebhookWithSecret`]).
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookOut {
    #[schema(example = "whk_01h455vb4pex5vsknk084sn02q")]
    pub id: String,
    pub url: String,
    pub event_types: Vec<String>,
    pub organization_id: Option<String>,
    pub description: Option<String>,
    /// `active`, or `failing` after a message used up its retries (until a delivery succeeds).
    pub status: String,
    /// When the previous secret stops signing, during a rotation.
    pub previous_secret_expires_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// An endpoint with its signing secret: only the answers to create and rotate.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookWithSecret {
    #[serde(flatten)]
    pub endpoint: WebhookOut,
    /// `whsec_` + base64 of the key; verify `webhook-signature` with it. Shown only now.
    pub secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    pub items: Vec<WebhookOut>,
    pub next_cursor: Option<String>,
}

/// One delivery attempt.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryOut {
    #[schema(example = "dlv_01h455vb4pex5vsknk084sn02q")]
    pub id: String,
    pub event_id: String,
    /// 1 for the first attempt of this event.
    pub attempt: u32,
    /// The receiver's HTTP status; `null` when no answer came.
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
    pub attempted_at: String,
    pub succeeded: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    pub items: Vec<DeliveryOut>,
    pub next_cursor: Option<String>,
}

impl From<&Endpoint> for WebhookOut {
    fn from(e: &Endpoint) -> Self {
        let rotating =
            e.previous_secret.is_some() && e.previous_expires_at.is_some_and(|t| t > time::now());
        Self {
            id: e.id.to_string(),
            url: e.url.as_str().to_owned(),
            event_types: e.event_types.as_slice().to_vec(),
            organization_id: e.org_id.map(|o| o.to_string()),
            description: e.description.clone(),
            status: e.status.as_str().to_owned(),
            previous_secret_expires_at: e
                .previous_expires_at
                .filter(|_| rotating)
                .map(time::format),
            created_at: time::format(e.created_at),
            updated_at: time::format(e.updated_at),
        }
    }
}

impl From<&DeliveryAttempt> for DeliveryOut {
    fn from(a: &DeliveryAttempt) -> Self {
        Self {
            id: a.id.to_string(),
            event_id: a.event_id.to_string(),
            attempt: a.attempt,
            status_code: a.status_code,
            error: a.error.clone(),
            duration_ms: a.duration_ms,
            attempted_at: time::format(a.attempted_at),
            succeeded: a.succeeded,
        }
    }
}

fn with_secret(endpoint: &Endpoint) -> WebhookWithSecret {
    WebhookWithSecret {
        endpoint: WebhookOut::from(endpoint),
        secret: endpoint.secret.expose().to_owned(),
    }
}

// ---- parsing ------------------------------------------------------------------

/// The fields a body sets; `Some(None)` clears a nullable one.
#[derive(Debug, Default)]
struct EndpointFields {
    url: Option<WebhookUrl>,
    event_types: Option<EventTypes>,
    org_id: Option<Option<OrgId>>,
    description: Option<Option<String>>,
}

/// Parses a create (`creating`: `url` and `event_types` required) or patch body,
/// reporting every problem at once.
fn parse_fields(body: &Map<String, Value>, creating: bool) -> Result<EndpointFields, ApiError> {
    let mut errors = Vec::new();
    let mut fields = EndpointFields::default();
    for (key, value) in body {
        let pointer = format!("/{}", crate::domain::problems::escape_token(key));
        match key.as_str() {
            "url" => match value.as_str() {
                Some(text) => match WebhookUrl::parse(text) {
                    Ok(url) => fields.url = Some(url),
                    Err(e) => errors.push(e.at(pointer)),
                },
                None => errors.push(type_error(pointer, "a URL string")),
            },
            "event_types" => match value.as_array() {
                Some(items) => {
                    let mut texts = Vec::new();
                    for (i, item) in items.iter().enumerate() {
                        match item.as_str() {
                            Some(t) => texts.push(t.to_owned()),
                            None => errors.push(type_error(format!("{pointer}/{i}"), "a string")),
                        }
                    }
                    if texts.len() == items.len() {
                        match EventTypes::parse(&texts) {
                            Ok(types) => fields.event_types = Some(types),
                            Err(problems) => {
                                errors.extend(problems.into_iter().map(|(i, e)| match i {
                                    Some(i) => e.at(format!("{pointer}/{i}")),
                                    None => e.at(pointer.clone()),
                                }))
                            }
                        }
                    }
                }
                None => errors.push(type_error(pointer, "an array of event types")),
            },
            "organization_id" => match value {
                Value::Null => fields.org_id = Some(None),
                Value::String(text) => match OrgId::parse(text) {
                    Ok(id) => fields.org_id = Some(Some(id)),
                    Err(_) => errors.push(FieldError::new(
                        pointer,
                        "invalid_id",
                        "must be an organization id (org_…)",
                    )),
                },
                _ => errors.push(type_error(pointer, "an organization id or null")),
            },
            "description" => match value {
                Value::Null => fields.description = Some(None),
                Value::String(text) => {
                    if text.chars().count() > MAX_DESCRIPTION_CHARS {
                        errors.push(FieldError::new(
                            pointer,
                            "too_long",
                            format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
                        ));
                    } else if text
                        .chars()
                        .any(|c| c.is_control() && c != '\n' && c != '\t')
                    {
                        errors.push(FieldError::new(
                            pointer,
                            "invalid_character",
                            "must not contain control characters",
                        ));
                    } else {
                        fields.description = Some(Some(text.clone()));
                    }
                }
                _ => errors.push(type_error(pointer, "a string or null")),
            },
            "id"
            | "secret"
            | "status"
            | "created_at"
            | "updated_at"
            | "previous_secret_expires_at" => errors.push(FieldError::new(
                pointer,
                "read_only",
                "is set by the server",
            )),
            _ => errors.push(FieldError::new(
                pointer,
                "unknown_field",
                "is not a field of a webhook endpoint",
            )),
        }
    }
    if creating {
        for required in ["url", "event_types"] {
            if !body.contains_key(required) {
                errors.push(FieldError::new(
                    format!("/{required}"),
                    "required",
                    "is required",
                ));
            }
        }
    } else if body.is_empty() {
        return Err(ApiError::NoFields);
    }
    if errors.is_empty() {
        Ok(fields)
    } else {
        errors.sort_by(|a, b| a.pointer.cmp(&b.pointer));
        Err(ApiError::Validation(errors))
    }
}

fn type_error(pointer: impl Into<String>, expected: &str) -> FieldError {
    FieldError::new(pointer, "invalid_type", format!("must be {expected}"))
}

/// The checks that need I/O: the target's addresses, and the organization (which
/// must exist and be visible to the caller).
async fn check_fields(
    app: &AppState,
    principal: &Principal,
    fields: &EndpointFields,
) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    if let Some(url) = &fields.url {
        if let Err(refused) = net::check_target(url, app.webhooks_allow_private).await {
            errors.push(refused.at("/url"));
        }
    }
    if let Some(Some(org_id)) = &fields.org_id {
        if !org_visible(app, principal, org_id).await? {
            errors.push(
                Invalid::new("organization_not_found", "no such organization")
                    .at("/organization_id"),
            );
        }
    } else if let (Some(None), Some(_)) = (&fields.org_id, principal.root()) {
        errors.push(FieldError::new(
            "/organization_id",
            "permission_denied",
            "a key bound to a subtree can only manage endpoints limited to it",
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(errors))
    }
}

async fn org_visible(
    app: &AppState,
    principal: &Principal,
    org_id: &OrgId,
) -> Result<bool, ApiError> {
    if app.store.find_org(&OrgLookup::Id(*org_id)).await?.is_none() {
        return Ok(false);
    }
    let lineage = app.store.lineage(org_id).await?;
    Ok(principal.can_see(&lineage, None))
}

/// Whether a subtree-bound caller may see this endpoint.
async fn endpoint_visible(
    app: &AppState,
    principal: &Principal,
    endpoint: &Endpoint,
) -> Result<bool, ApiError> {
    match (principal.root(), endpoint.org_id) {
        (None, _) => Ok(true),
        (Some(_), None) => Ok(false),
        (Some(_), Some(org)) => Ok(principal.can_see(&app.store.lineage(&org).await?, None)),
    }
}

/// The endpoint the path names, if it exists for this caller.
async fn load_webhook(
    app: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<Endpoint, ApiError> {
    let id = WebhookId::parse(id).map_err(|_| ApiError::WebhookNotFound)?;
    let endpoint = app
        .store
        .find_webhook(&id)
        .await?
        .ok_or(ApiError::WebhookNotFound)?;
    if endpoint_visible(app, principal, &endpoint).await? {
        Ok(endpoint)
    } else {
        Err(ApiError::WebhookNotFound)
    }
}

fn authorize(principal: &Principal) -> Result<(), ApiError> {
    Ok(access::authorize_deployment(
        principal,
        Scope::WebhooksManage,
        true,
    )?)
}

// ---- handlers -----------------------------------------------------------------

/// Register an endpoint; the answer carries its signing secret, shown only here.
#[utoipa::path(
    post,
    path = "/v1/webhooks",
    tag = "webhooks",
    request_body(content = WebhookIn, content_type = "application/json"),
    responses(
        (status = 201, body = WebhookWithSecret, headers(("Location" = String))),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, or a forbidden target (`forbidden_target` at `/url`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create_webhook(
    State(app): State<AppState>,
    Caller(principal): Caller,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    authorize(&principal)?;
    let mut fields = parse_fields(&body, true)?;
    if fields.org_id.is_none() {
        // A bound key's endpoints are limited to its subtree unless it names one inside.
        fields.org_id = Some(principal.root());
    }
    check_fields(&app, &principal, &fields).await?;
    let (Some(url), Some(event_types)) = (fields.url, fields.event_types) else {
        return Err(ApiError::Internal(anyhow::anyhow!(
            "parse_fields let a create without url or event_types through"
        )));
    };
    let now = time::now();
    let endpoint = Endpoint {
        id: WebhookId::generate(),
        url,
        event_types,
        org_id: fields.org_id.flatten(),
        description: fields.description.flatten(),
        secret: SigningSecret::generate(),
        previous_secret: None,
        previous_expires_at: None,
        status: EndpointStatus::Active,
        created_at: now,
        updated_at: now,
    };
    app.store.insert_webhook(&endpoint).await?;
    // Not the URL: receivers often put a token in its query string.
    tracing::info!(webhook.id = %endpoint.id, "webhook endpoint created");
    let mut response = (StatusCode::CREATED, Json(with_secret(&endpoint))).into_response();
    if let Ok(location) = format!("/v1/webhooks/{}", endpoint.id).parse() {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// List endpoints, oldest first.
#[utoipa::path(
    get,
    path = "/v1/webhooks",
    tag = "webhooks",
    params(PageParams),
    responses(
        (status = 200, body = WebhookList),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_webhooks(
    State(app): State<AppState>,
    Caller(principal): Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<WebhookList>, ApiError> {
    authorize(&principal)?;
    let page = Params::parse(query.as_deref())
        .id_page(CursorKind::Webhooks, |p| WebhookId::parse(p).ok())
        .map_err(ApiError::Validation)?;
    let endpoints = app
        .store
        .list_webhooks(page.after.as_ref(), page.fetch())
        .await?;
    let (endpoints, next_cursor) =
        page.finish(endpoints, CursorKind::Webhooks, |e| e.id.to_string());
    let mut items = Vec::with_capacity(endpoints.len());
    for endpoint in &endpoints {
        if endpoint_visible(&app, &principal, endpoint).await? {
            items.push(WebhookOut::from(endpoint));
        }
    }
    Ok(Json(WebhookList { items, next_cursor }))
}

/// One endpoint (without its secret).
#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id (`whk_…`)")),
    responses(
        (status = 200, body = WebhookOut),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_webhook(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<Json<WebhookOut>, ApiError> {
    authorize(&principal)?;
    let endpoint = load_webhook(&app, &principal, &id).await?;
    Ok(Json(WebhookOut::from(&endpoint)))
}

/// Change an endpoint's URL, event types, organization or description.
#[utoipa::path(
    patch,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id (`whk_…`)")),
    request_body(content = WebhookPatch, content_type = "application/json"),
    responses(
        (status = 200, body = WebhookOut),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn update_webhook(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
    JsonObject(body): JsonObject,
) -> Result<Json<WebhookOut>, ApiError> {
    authorize(&principal)?;
    let mut endpoint = load_webhook(&app, &principal, &id).await?;
    let fields = parse_fields(&body, false)?;
    check_fields(&app, &principal, &fields).await?;
    if let Some(url) = fields.url {
        endpoint.url = url;
    }
    if let Some(types) = fields.event_types {
        endpoint.event_types = types;
    }
    if let Some(org) = fields.org_id {
        endpoint.org_id = org;
    }
    if let Some(description) = fields.description {
        endpoint.description = description;
    }
    endpoint.updated_at = time::now();
    if !app.store.update_webhook(&endpoint).await? {
        return Err(ApiError::WebhookNotFound);
    }
    Ok(Json(WebhookOut::from(&endpoint)))
}

/// Delete an endpoint, its queued messages and its delivery log.
#[utoipa::path(
    delete,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id (`whk_…`)")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn delete_webhook(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    authorize(&principal)?;
    let endpoint = load_webhook(&app, &principal, &id).await?;
    if !app.store.delete_webhook(&endpoint.id).await? {
        return Err(ApiError::WebhookNotFound);
    }
    tracing::info!(webhook.id = %endpoint.id, "webhook endpoint deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Replace the signing secret. For 24 hours the old secret signs too (a second
/// `v1,` entry in `webhook-signature`), so receivers can switch without a gap.
#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/rotate-secret",
    tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id (`whk_…`)")),
    responses(
        (status = 200, body = WebhookWithSecret),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn rotate_webhook_secret(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<Json<WebhookWithSecret>, ApiError> {
    authorize(&principal)?;
    let mut endpoint = load_webhook(&app, &principal, &id).await?;
    let now = time::now();
    // Only two secrets sign at once: a second rotation within the grace period
    // retires the oldest secret immediately.
    endpoint.previous_secret = Some(std::mem::replace(
        &mut endpoint.secret,
        SigningSecret::generate(),
    ));
    endpoint.previous_expires_at = Some(now + ROTATION_GRACE);
    endpoint.updated_at = now;
    if !app.store.update_webhook(&endpoint).await? {
        return Err(ApiError::WebhookNotFound);
    }
    tracing::info!(webhook.id = %endpoint.id, "webhook secret rotated");
    Ok(Json(with_secret(&endpoint)))
}

/// Queue a `webhook.test` event for this endpoint (whatever its event types); the
/// answer is the event that will be sent.
#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/test",
    tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id (`whk_…`)")),
    responses(
        (status = 202, description = "The test event, queued for delivery", body = Object),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn test_webhook(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    authorize(&principal)?;
    let endpoint = load_webhook(&app, &principal, &id).await?;
    let context = app.event_context(&principal);
    let event_id = EventId::generate();
    // The shape of every event (SPEC §5), with no changes and version 0.
    let event = json!({
        "id": event_id.to_string(),
        "type": TEST_EVENT_TYPE,
        "organization_id": endpoint.org_id.map(|o| o.to_string()),
        "actor": context.actor,
        "changes": {},
        "version": 0,
        "request_id": context.request_id,
        "occurred_at": time::format(context.now),
    });
    app.store
        .enqueue_test(
            &endpoint.id,
            &event_id,
            &event.to_string(),
            context.now.as_millisecond(),
        )
        .await?;
    app.outbox.message_queued();
    Ok((StatusCode::ACCEPTED, Json(event)))
}

/// Delivery attempts to this endpoint, newest first.
#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}/deliveries",
    tag = "webhooks",
    params(("id" = String, Path, description = "Endpoint id (`whk_…`)"), PageParams),
    responses(
        (status = 200, body = DeliveryList),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_webhook_deliveries(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<DeliveryList>, ApiError> {
    authorize(&principal)?;
    let endpoint = load_webhook(&app, &principal, &id).await?;
    let page = Params::parse(query.as_deref())
        .id_page(CursorKind::Deliveries, |p| DeliveryId::parse(p).ok())
        .map_err(ApiError::Validation)?;
    let attempts = app
        .store
        .list_deliveries(&endpoint.id, page.after.as_ref(), page.fetch())
        .await?;
    let (attempts, next_cursor) =
        page.finish(attempts, CursorKind::Deliveries, |a| a.id.to_string());
    Ok(Json(DeliveryList {
        items: attempts.iter().map(DeliveryOut::from).collect(),
        next_cursor,
    }))
}

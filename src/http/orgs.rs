//! `/v1/organizations`: create, read, list, update (the heart), delete, restore,
//! children.
//!
//! Every write follows one path: caller → load → preconditions → parse → authorize
//! → validate → apply and diff → commit with its event → respond. `change_org`
//! holds the part shared by update, delete and restore.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, Problem};
use super::extract::{Caller, IdempotencyKey, IfMatch, JsonObject, OrgRef, WriteHeaders};
use super::query::{ListParams, Params};
use super::AppState;
use crate::domain::access::{self, Authority, OrgRole, Principal};
use crate::domain::apikey::Scope;
use crate::domain::cursor::CursorKind;
use crate::domain::event::{Event, EventContext, EventType};
use crate::domain::fields::{
    AppId, DomainName, OrgName, Phone, Slug, SubscriptionId, Text, TimeZoneName, WebUrl,
};
use crate::domain::ids::OrgId;
use crate::domain::members::Membership;
use crate::domain::org::{Address, Organization, Policy};
use crate::domain::patch::{self, FieldChange, Outcome};
use crate::domain::problems::FieldError;
use crate::domain::time;
use crate::store::{IdempotencyRecord, OrgFilter, OrgLookup, StoreError};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_orgs, create_org))
        .routes(routes!(get_org, update_org, delete_org))
        .routes(routes!(restore_org))
        .routes(routes!(list_children))
}

/// How many times a write without `If-Match` is re-planned against a newer row
/// before giving up with 503. Updates in this process take turns (`org_turns.rs`),
/// so an attempt fails only when another process committed to the same org in
/// between.
const MAX_ATTEMPTS: usize = 64;

// ---- wire types ---------------------------------------------------------------

// Borrowed from the stored organization and serialized as it is: an owned copy,
// every field turned into a new `String` first, was 5.5% of a GET's CPU
// (bench/README.md, session 14). Every domain type here serializes as the
// string the API shows.
/// An organization as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrganizationOut<'a> {
    #[schema(value_type = String, example = "org_01h455vb4pex5vsknk084sn02q")]
    pub id: OrgId,
    #[schema(value_type = String, example = "acme-ltd")]
    pub slug: &'a Slug,
    #[schema(value_type = String)]
    pub name: &'a OrgName,
    #[schema(value_type = Option<String>)]
    pub alias_name: Option<&'a Text>,
    #[schema(value_type = Option<String>)]
    pub description: Option<&'a Text>,
    pub enabled: bool,
    #[schema(value_type = Vec<String>)]
    pub domains: &'a [DomainName],
    #[schema(value_type = Option<String>)]
    pub primary_domain: Option<&'a DomainName>,
    #[schema(value_type = Option<String>)]
    pub logo_url: Option<&'a WebUrl>,
    #[schema(value_type = Option<String>)]
    pub website: Option<&'a WebUrl>,
    /// E.164.
    #[schema(value_type = Option<String>)]
    pub phone: Option<&'a Phone>,
    #[schema(value_type = Option<AddressOut>)]
    pub address: Option<&'a Address>,
    pub is_business: bool,
    pub mfa_required: bool,
    /// IANA time-zone name.
    #[schema(value_type = Option<String>)]
    pub time_zone: Option<&'a TimeZoneName>,
    #[schema(value_type = Option<String>)]
    pub parent_id: Option<OrgId>,
    /// Derived: `parent_id != null`.
    pub managed: bool,
    #[schema(value_type = Option<String>)]
    pub subscription_id: Option<&'a SubscriptionId>,
    #[schema(value_type = Vec<String>)]
    pub app_ids: &'a [AppId],
    #[schema(value_type = Option<PolicyOut>)]
    pub policy: Option<&'a Policy>,
    #[schema(value_type = Object)]
    pub metadata: &'a Map<String, Value>,
    pub version: i64,
    #[serde(serialize_with = "time::serialize")]
    #[schema(value_type = String)]
    pub created_at: Timestamp,
    #[serde(serialize_with = "time::serialize")]
    #[schema(value_type = String)]
    pub updated_at: Timestamp,
    #[serde(serialize_with = "time::option::serialize")]
    #[schema(value_type = Option<String>)]
    pub deleted_at: Option<Timestamp>,
}

// The shape of `address` in `OrganizationOut`, for the OpenAPI document: the
// value shown is the domain's `Address`, which serializes the same.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)]
pub struct AddressOut {
    line1: Option<String>,
    line2: Option<String>,
    city: Option<String>,
    region: Option<String>,
    postal_code: Option<String>,
    /// ISO 3166-1 alpha-2, upper-case.
    country: Option<String>,
}

// The shape of `policy` in `OrganizationOut`, for the OpenAPI document: the
// value shown is the domain's `Policy`, which serializes the same.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)]
pub struct PolicyOut {
    name: String,
    /// Limit name → number, string or boolean.
    #[schema(value_type = Object)]
    limits: Value,
}

impl<'a> From<&'a Organization> for OrganizationOut<'a> {
    fn from(org: &'a Organization) -> Self {
        Self {
            id: org.id,
            slug: &org.slug,
            name: &org.name,
            alias_name: org.alias_name.as_ref(),
            description: org.description.as_ref(),
            enabled: org.enabled,
            domains: &org.domains,
            primary_domain: org.primary_domain.as_ref(),
            logo_url: org.logo_url.as_ref(),
            website: org.website.as_ref(),
            phone: org.phone.as_ref(),
            address: org.address.as_ref(),
            is_business: org.is_business,
            mfa_required: org.mfa_required,
            time_zone: org.time_zone.as_ref(),
            parent_id: org.parent_id,
            managed: org.managed(),
            subscription_id: org.subscription_id.as_ref(),
            app_ids: &org.app_ids,
            policy: org.policy.as_ref(),
            metadata: &org.metadata,
            version: org.version,
            created_at: org.created_at,
            updated_at: org.updated_at,
            deleted_at: org.deleted_at,
        }
    }
}

/// The body of create and update. Every field is optional on update (absent fields
/// are left alone; `null` clears a nullable one); `name` is required on create.
/// `address` and `metadata` merge key by key; arrays replace whole.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // documents the body for OpenAPI; the body is parsed by domain::patch
pub struct OrganizationWrite {
    slug: Option<String>,
    name: Option<String>,
    alias_name: Option<String>,
    description: Option<String>,
    enabled: Option<bool>,
    domains: Option<Vec<String>>,
    primary_domain: Option<String>,
    logo_url: Option<String>,
    website: Option<String>,
    phone: Option<String>,
    address: Option<AddressWrite>,
    is_business: Option<bool>,
    mfa_required: Option<bool>,
    time_zone: Option<String>,
    parent_id: Option<String>,
    subscription_id: Option<String>,
    app_ids: Option<Vec<String>>,
    policy: Option<PolicyWrite>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
}

#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct AddressWrite {
    line1: Option<String>,
    line2: Option<String>,
    city: Option<String>,
    region: Option<String>,
    postal_code: Option<String>,
    country: Option<String>,
}

#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct PolicyWrite {
    name: String,
    #[schema(value_type = Option<Object>)]
    limits: Option<Value>,
}

/// A page of organizations.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrganizationList<'a> {
    pub items: Vec<OrganizationOut<'a>>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

// ---- responses ----------------------------------------------------------------

fn etag(org: &Organization) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{}\"", org.version))
        .unwrap_or(HeaderValue::from_static("\"0\""))
}

/// The organization with its `ETag`, or only the `ETag` when the client asked for
/// `Prefer: return=minimal`.
fn respond_org(status: StatusCode, org: &Organization, minimal: bool) -> Response {
    let mut response = if minimal {
        let mut r = StatusCode::NO_CONTENT.into_response();
        r.headers_mut().insert(
            "preference-applied",
            HeaderValue::from_static("return=minimal"),
        );
        r
    } else {
        (status, Json(OrganizationOut::from(org))).into_response()
    };
    response.headers_mut().insert(header::ETAG, etag(org));
    response
}

// ---- loading and changing -----------------------------------------------------

/// Which organizations a lookup may find.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Find {
    Live,
    LiveOrDeleted,
}

/// An organization as loaded for one caller, with what the caller is in it.
pub(super) struct Loaded {
    /// Shared with the store's or this process's copy it came from, not cloned.
    pub org: Arc<Organization>,
    pub authority: Authority,
}

/// The organization `lookup` names, if this principal may know it exists, with
/// the caller's authority in it (from its membership, for users).
pub(super) async fn load_org(
    app: &AppState,
    principal: &Principal,
    lookup: &OrgLookup,
    which: Find,
) -> Result<Loaded, ApiError> {
    let found = app.store.find_org(lookup).await?.map(Arc::new);
    authority_in(app, principal, found, which).await
}

/// [`load_org`] of a live org for a request that only answers it (a GET), which the
/// store may answer from its copies (`Store::read_org`).
async fn read_live_org(
    app: &AppState,
    principal: &Principal,
    lookup: &OrgLookup,
) -> Result<Loaded, ApiError> {
    let found = app.store.read_org(lookup).await?;
    authority_in(app, principal, found, Find::Live).await
}

/// The org `found`, if it is one `which` admits, with the caller's authority in it,
/// if the caller may know it exists.
async fn authority_in(
    app: &AppState,
    principal: &Principal,
    found: Option<Arc<Organization>>,
    which: Find,
) -> Result<Loaded, ApiError> {
    let org = found
        .filter(|o| which == Find::LiveOrDeleted || o.is_live())
        .ok_or(ApiError::OrganizationNotFound)?;
    let membership = membership_role(app, principal, &org.id).await?;
    let lineage = match principal.root() {
        Some(_) => app.store.lineage(&org.id).await?,
        None => Vec::new(),
    };
    if !principal.can_see(&lineage, membership) {
        return Err(ApiError::OrganizationNotFound);
    }
    let authority = principal.authority(membership);
    Ok(Loaded { org, authority })
}

/// A user's role in an org (keys have none).
pub(super) async fn membership_role(
    app: &AppState,
    principal: &Principal,
    org_id: &OrgId,
) -> Result<Option<OrgRole>, ApiError> {
    match principal.user() {
        Some(user) => Ok(app
            .store
            .find_membership(org_id, &user.id)
            .await?
            .map(|m| m.role)),
        None => Ok(None),
    }
}

/// The caller's authority on another organization (a new parent), or `None` when
/// it may not see it (then it is reported as not found, like any unknown parent).
async fn authority_on_parent(
    app: &AppState,
    principal: &Principal,
    parent: &OrgId,
) -> Result<Option<Authority>, ApiError> {
    let role = membership_role(app, principal, parent).await?;
    let lineage = match principal.root() {
        Some(_) => app.store.lineage(parent).await?,
        None => Vec::new(),
    };
    Ok(principal
        .can_see(&lineage, role)
        .then(|| principal.authority(role)))
}

fn parent_not_found() -> ApiError {
    ApiError::Validation(vec![FieldError::new(
        "/parent_id",
        "parent_not_found",
        "the parent organization does not exist or is deleted",
    )])
}

fn check_if_match(if_match: Option<&IfMatch>, org: &Organization) -> Result<(), ApiError> {
    match if_match {
        Some(condition) if !condition.matches(org.version) => Err(ApiError::VersionMismatch),
        _ => Ok(()),
    }
}

/// Loads the organization, checks `If-Match`, asks `plan` for the new state and
/// its event, and commits them together. When another writer commits first and
/// the client sent no `If-Match`, the plan is made again on the newer row, so
/// concurrent updates to different fields both survive.
async fn change_org<F>(
    app: &AppState,
    principal: &Principal,
    lookup: &OrgLookup,
    which: Find,
    if_match: Option<&IfMatch>,
    mut plan: F,
) -> Result<Arc<Organization>, ApiError>
where
    F: FnMut(&Loaded) -> Result<Option<(Organization, Event)>, ApiError>,
{
    // Updates of one org in this process go one at a time (`org_turns.rs`); by
    // slug, the turn is taken once the first read has found the id.
    let mut turn = match lookup {
        OrgLookup::Id(id) => Some(app.org_turns.take(*id).await),
        OrgLookup::Slug(_) => None,
    };
    if let Some(org) = change_recent_org(app, principal, lookup, which, if_match, &mut plan).await {
        return Ok(org);
    }
    for _ in 0..MAX_ATTEMPTS {
        let loaded = load_org(app, principal, lookup, which).await?;
        if turn.is_none() {
            // What was read before the turn came may be stale: its commit is
            // then refused and the next attempt reads again, within the turn.
            turn = Some(app.org_turns.take(loaded.org.id).await);
        }
        check_if_match(if_match, &loaded.org)?;
        let Some((next, event)) = plan(&loaded)? else {
            return Ok(loaded.org);
        };
        match commit_change(app, &loaded.org, next, &event).await {
            Ok(next) => return Ok(next),
            Err(StoreError::VersionMismatch) if if_match.is_none() => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Err(ApiError::gave_up_retrying(MAX_ATTEMPTS))
}

/// The same change planned on the copy this process kept of its own last write
/// (`recent_orgs.rs`), saving the read. Only a commit counts: the store commits
/// only if the row still has the copy's version. Anything else — no copy, a
/// refusal, an error, nothing to change — is `None`, and [`change_org`] decides
/// it on a fresh read, so every answer but a committed change comes from there.
async fn change_recent_org<F>(
    app: &AppState,
    principal: &Principal,
    lookup: &OrgLookup,
    which: Find,
    if_match: Option<&IfMatch>,
    plan: &mut F,
) -> Option<Arc<Organization>>
where
    F: FnMut(&Loaded) -> Result<Option<(Organization, Event)>, ApiError>,
{
    let OrgLookup::Id(id) = lookup else {
        return None;
    };
    let copy = app.recent_orgs.get(id)?;
    // A copy `which` does not admit, like one the caller may not see, is left to
    // the read of the stored row.
    let loaded = authority_in(app, principal, Some(copy), which).await.ok()?;
    check_if_match(if_match, &loaded.org).ok()?;
    let (next, event) = plan(&loaded).ok()??;
    match commit_change(app, &loaded.org, next, &event).await {
        Ok(next) => Some(next),
        Err(_) => {
            app.recent_orgs.forget(id);
            None
        }
    }
}

/// Writes `next` over `current` (if the stored row still has `current`'s version)
/// with its event; once committed, wakes the outbox and keeps `next` as this
/// process's copy. Shared rather than copied: the store's writer, the copy and the
/// response all read the one value.
async fn commit_change(
    app: &AppState,
    current: &Organization,
    next: Organization,
    event: &Event,
) -> Result<Arc<Organization>, StoreError> {
    let next = Arc::new(next);
    app.store
        .write_org(current, Arc::clone(&next), event)
        .await?;
    app.outbox.event_committed();
    app.recent_orgs.committed(Arc::clone(&next));
    Ok(next)
}

// ---- handlers -----------------------------------------------------------------

/// Update an organization (PATCH and PUT alike: both change only the fields sent).
#[utoipa::path(
    method(patch, put),
    path = "/v1/organizations/{org}",
    tag = "organizations",
    params(
        ("org" = String, Path, description = "Organization id (`org_…`) or slug"),
        ("If-Match" = Option<String>, Header, description = "Apply only if the version is still this ETag"),
        ("Prefer" = Option<String>, Header, description = "`return=minimal` answers 204 without a body"),
    ),
    request_body(
        content(
            (OrganizationWrite = "application/json"),
            (OrganizationWrite = "application/merge-patch+json"),
        )
    ),
    responses(
        (status = 200, description = "The updated organization", body = OrganizationOut, headers(("ETag" = String))),
        (status = 204, description = "Updated (Prefer: return=minimal)", headers(("ETag" = String))),
        (status = 400, description = "Malformed JSON, or no fields", body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "slug_taken, domain_taken or hierarchy_cycle", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match does not match", body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Every invalid field, by JSON Pointer", body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn update_org(
    State(app): State<AppState>,
    Caller(principal): Caller,
    OrgRef(lookup): OrgRef,
    headers: WriteHeaders,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    if body.is_empty() {
        return Err(ApiError::NoFields);
    }
    // Parsing depends only on the body, so it is done once even if the write is
    // re-planned against a newer row.
    let parsed = patch::parse(&body);
    // Moving under a new parent also needs owner or admin there (SPEC §1,
    // parent_id); looked up once here, judged after the org's own checks below.
    let new_parent = match &parsed.patch.parent_id {
        patch::Nullable::Set(parent) => Some(authority_on_parent(&app, &principal, parent).await?),
        _ => None,
    };
    let events = app.event_context(&principal);
    let org = change_org(
        &app,
        &principal,
        &lookup,
        Find::Live,
        headers.if_match.as_ref(),
        |Loaded {
             org: current,
             authority,
         }| {
            access::authorize_update(&principal, authority, current, &parsed.touched)?;
            if let Some(parent) = &new_parent {
                access::authorize_new_parent(parent.as_ref().ok_or_else(parent_not_found)?)?;
            }
            match parsed
                .plan(current, events.now)
                .map_err(ApiError::Validation)?
            {
                Outcome::Unchanged => Ok(None),
                Outcome::Changed { org, changes } => {
                    let event =
                        events.event(EventType::OrganizationUpdated, org.id, org.version, changes);
                    Ok(Some((*org, event)))
                }
            }
        },
    )
    .await?;
    Ok(respond_org(StatusCode::OK, &org, headers.return_minimal))
}

/// Create an organization.
#[utoipa::path(
    post,
    path = "/v1/organizations",
    tag = "organizations",
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key and body within 24 h return the first result"),
        ("Prefer" = Option<String>, Header, description = "`return=minimal` answers without a body"),
    ),
    request_body(content((OrganizationWrite = "application/json"), (OrganizationWrite = "application/merge-patch+json"))),
    responses(
        (status = 201, description = "Created", body = OrganizationOut, headers(("ETag" = String), ("Location" = String))),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create_org(
    State(app): State<AppState>,
    Caller(principal): Caller,
    IdempotencyKey(idempotency_key): IdempotencyKey,
    headers: WriteHeaders,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let events = app.event_context(&principal);
    let fingerprint = hex::encode(Sha256::digest(Value::Object(body.clone()).to_string()));
    if let Some(key) = &idempotency_key {
        let since = events.now - jiff::SignedDuration::from_hours(24);
        if let Some(record) = app
            .store
            .find_idempotency(&principal.key(), key, since)
            .await?
        {
            return replay(&record, &fingerprint);
        }
    }
    let parsed = patch::parse_create(&body);
    if let Some(root) = principal.root() {
        check_parent_within(&app, &root, &parsed.patch.parent_id).await?;
    }
    let parent_authority = match &parsed.patch.parent_id {
        patch::Nullable::Set(parent) => Some(
            authority_on_parent(&app, &principal, parent)
                .await?
                .ok_or_else(parent_not_found)?,
        ),
        _ => None,
    };
    access::authorize_create(&principal, &parsed.touched, parent_authority.as_ref())?;
    let (mut org, slug_was_made) =
        patch::plan_create(&parsed, OrgId::generate(), events.now).map_err(ApiError::Validation)?;
    // A user who creates an organization becomes its first owner.
    let mut owner = principal.user().map(|user| Membership {
        org_id: org.id,
        user_id: user.id.clone(),
        role: OrgRole::Owner,
        display_name: None,
        external_id: None,
        title: None,
        created_at: events.now,
        updated_at: events.now,
    });
    for attempt in 0u32.. {
        let event = events.event(
            EventType::OrganizationCreated,
            org.id,
            org.version,
            patch::creation_changes(&org),
        );
        let out = serde_json::to_value(OrganizationOut::from(&org))
            .map_err(|e| ApiError::Internal(e.into()))?;
        let record = idempotency_key.as_ref().map(|key| IdempotencyRecord {
            principal: principal.key(),
            key: key.clone(),
            fingerprint: fingerprint.clone(),
            org_id: org.id,
            response: out,
            created_at: events.now,
        });
        if let Some(owner) = owner.as_mut() {
            owner.org_id = org.id;
        }
        match app
            .store
            .create_org(&org, &event, owner.as_ref(), record.as_ref())
            .await
        {
            Ok(()) => {
                app.outbox.event_committed();
                app.recent_orgs.committed(Arc::new(org.clone()));
                break;
            }
            // A slug we made from the name collides: try it with a short suffix.
            Err(StoreError::Conflict(crate::store::Constraint::SlugTaken))
                if slug_was_made && attempt < 5 =>
            {
                org.slug = suffixed_slug(&org.slug, &org.id, attempt)?;
            }
            Err(StoreError::Conflict(crate::store::Constraint::IdempotencyKey)) => {
                let key = idempotency_key.as_deref().unwrap_or_default();
                let since = events.now - jiff::SignedDuration::from_hours(24);
                return match app
                    .store
                    .find_idempotency(&principal.key(), key, since)
                    .await?
                {
                    Some(record) => replay(&record, &fingerprint),
                    None => Err(ApiError::Unavailable),
                };
            }
            Err(err) => return Err(err.into()),
        }
    }
    tracing::info!(org.id = %org.id, org.slug = %org.slug, "organization created");
    let mut response = respond_org(StatusCode::CREATED, &org, headers.return_minimal);
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/organizations/{}", org.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

fn suffixed_slug(slug: &Slug, id: &OrgId, attempt: u32) -> Result<Slug, ApiError> {
    // The id's last characters are random (UUIDv7's tail), so they make a fair suffix.
    let id = id.to_string();
    let len = 4 + attempt as usize;
    let suffix = &id[id.len() - len..];
    slug.with_suffix(suffix).ok_or(ApiError::SlugTaken)
}

/// A key bound to a subtree creates only inside it: a parent is required and must
/// lie in the subtree (anything else is reported as a missing parent, not leaked).
async fn check_parent_within(
    app: &AppState,
    root: &OrgId,
    parent: &patch::Nullable<OrgId>,
) -> Result<(), ApiError> {
    let patch::Nullable::Set(parent) = parent else {
        return Err(ApiError::PermissionDenied {
            detail: "this API key is bound to a subtree; give a parent_id inside it".into(),
            errors: vec![FieldError::new(
                "/parent_id",
                "permission_denied",
                "a parent inside the key's subtree is required",
            )],
        });
    };
    let lineage = app.store.lineage(parent).await?;
    if lineage.contains(root) {
        Ok(())
    } else {
        Err(ApiError::Validation(vec![FieldError::new(
            "/parent_id",
            "parent_not_found",
            "the parent organization does not exist or is deleted",
        )]))
    }
}

/// Answers a retry with the stored first answer, or refuses a reused key.
fn replay(record: &IdempotencyRecord, fingerprint: &str) -> Result<Response, ApiError> {
    if record.fingerprint != fingerprint {
        return Err(ApiError::IdempotencyKeyReused);
    }
    let version = record
        .response
        .get("version")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let mut response = (StatusCode::CREATED, Json(record.response.clone())).into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
        headers.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/organizations/{}", record.org_id)) {
        headers.insert(header::LOCATION, v);
    }
    headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    Ok(response)
}

/// Get an organization by id or slug.
#[utoipa::path(
    get,
    path = "/v1/organizations/{org}",
    tag = "organizations",
    params(("org" = String, Path, description = "Organization id (`org_…`) or slug")),
    responses(
        (status = 200, body = OrganizationOut, headers(("ETag" = String))),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_org(
    State(app): State<AppState>,
    Caller(principal): Caller,
    OrgRef(lookup): OrgRef,
) -> Result<Response, ApiError> {
    let Loaded { org, authority } = read_live_org(&app, &principal, &lookup).await?;
    access::authorize_org_read(&principal, &authority, &org, Scope::OrganizationsRead)?;
    let body = app.rendered_orgs.body(&org, |org| {
        serde_json::to_vec(&OrganizationOut::from(org))
            .map(Bytes::from)
            .map_err(|e| ApiError::Internal(e.into()))
    })?;
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ),
        (header::ETAG, etag(&org)),
    ];
    Ok((headers, body).into_response())
}

/// Delete an organization (soft: it can be restored).
#[utoipa::path(
    delete,
    path = "/v1/organizations/{org}",
    tag = "organizations",
    params(
        ("org" = String, Path, description = "Organization id (`org_…`) or slug"),
        ("If-Match" = Option<String>, Header, description = "Delete only if the version is still this ETag"),
        ("Prefer" = Option<String>, Header, description = "`return=minimal` answers 204 without a body"),
    ),
    responses(
        (status = 200, description = "The deleted organization (with `deleted_at`)", body = OrganizationOut, headers(("ETag" = String))),
        (status = 204, description = "Deleted (Prefer: return=minimal)"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "has_children", body = Problem, content_type = "application/problem+json"),
        (status = 412, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn delete_org(
    State(app): State<AppState>,
    Caller(principal): Caller,
    OrgRef(lookup): OrgRef,
    headers: WriteHeaders,
) -> Result<Response, ApiError> {
    let events = app.event_context(&principal);
    let org = change_org(
        &app,
        &principal,
        &lookup,
        Find::Live,
        headers.if_match.as_ref(),
        |Loaded {
             org: current,
             authority,
         }| {
            access::authorize_lifecycle(&principal, authority, current)?;
            Ok(Some(lifecycle_step(
                current,
                Some(events.now),
                EventType::OrganizationDeleted,
                &events,
            )))
        },
    )
    .await?;
    tracing::info!(org.id = %org.id, "organization deleted");
    Ok(respond_org(StatusCode::OK, &org, headers.return_minimal))
}

/// Restore a deleted organization; a live one is returned unchanged.
#[utoipa::path(
    post,
    path = "/v1/organizations/{org}/restore",
    tag = "organizations",
    params(("org" = String, Path, description = "Organization id (`org_…`) or slug")),
    responses(
        (status = 200, body = OrganizationOut, headers(("ETag" = String))),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "slug_taken, domain_taken or parent_deleted", body = Problem, content_type = "application/problem+json"),
        (status = 412, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn restore_org(
    State(app): State<AppState>,
    Caller(principal): Caller,
    OrgRef(lookup): OrgRef,
    headers: WriteHeaders,
) -> Result<Response, ApiError> {
    let events = app.event_context(&principal);
    let result = change_org(
        &app,
        &principal,
        &lookup,
        Find::LiveOrDeleted,
        headers.if_match.as_ref(),
        |Loaded {
             org: current,
             authority,
         }| {
            access::authorize_lifecycle(&principal, authority, current)?;
            if current.is_live() {
                return Ok(None);
            }
            Ok(Some(lifecycle_step(
                current,
                None,
                EventType::OrganizationRestored,
                &events,
            )))
        },
    )
    .await;
    let org = result.map_err(|err| match err {
        ApiError::Validation(errors) if errors.iter().any(|e| e.code == "parent_not_found") => {
            ApiError::ParentDeleted
        }
        other => other,
    })?;
    Ok(respond_org(StatusCode::OK, &org, headers.return_minimal))
}

/// The org deleted (`deleted_at` set) or restored (`None`), as a new version, with
/// its event; the change is recorded at `/deleted_at`.
fn lifecycle_step(
    current: &Organization,
    deleted_at: Option<jiff::Timestamp>,
    event_type: EventType,
    events: &EventContext,
) -> (Organization, Event) {
    let mut next = current.clone();
    next.deleted_at = deleted_at;
    next.version += 1;
    next.updated_at = events.now;
    let stamp = |o: &Organization| {
        o.deleted_at
            .map_or(Value::Null, |t| Value::String(time::format(t)))
    };
    let changes = BTreeMap::from([(
        "/deleted_at".to_owned(),
        FieldChange {
            from: stamp(current),
            to: stamp(&next),
        },
    )]);
    let event = events.event(event_type, next.id, next.version, changes);
    (next, event)
}

/// List organizations, in creation order.
#[utoipa::path(
    get,
    path = "/v1/organizations",
    tag = "organizations",
    params(ListParams),
    responses(
        (status = 200, body = OrganizationList),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid limit, cursor or filter", body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_orgs(
    State(app): State<AppState>,
    Caller(principal): Caller,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    access::authorize_read(&principal, Scope::OrganizationsRead)?;
    let params = Params::parse(query.as_deref());
    let (filter, page) = params.org_list().map_err(ApiError::Validation)?;
    list_page(&app, &principal, filter, page).await
}

/// List an organization's live children.
#[utoipa::path(
    get,
    path = "/v1/organizations/{org}/children",
    tag = "organizations",
    params(("org" = String, Path, description = "Organization id (`org_…`) or slug"), ListParams),
    responses(
        (status = 200, body = OrganizationList),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_children(
    State(app): State<AppState>,
    Caller(principal): Caller,
    OrgRef(lookup): OrgRef,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let Loaded { org, authority } = load_org(&app, &principal, &lookup, Find::Live).await?;
    access::authorize_org_read(&principal, &authority, &org, Scope::OrganizationsRead)?;
    let params = Params::parse(query.as_deref());
    let (mut filter, page) = params.org_list().map_err(ApiError::Validation)?;
    filter.parent_id = Some(org.id);
    list_page(&app, &principal, filter, page).await
}

async fn list_page(
    app: &AppState,
    principal: &Principal,
    mut filter: OrgFilter,
    page: super::query::Page<OrgId>,
) -> Result<Response, ApiError> {
    filter.within = principal.root();
    // Users see the organizations they belong to; staff with global roles see all.
    if !principal.is_global() {
        filter.member = principal.user().map(|u| u.id.clone());
    }
    let orgs = app
        .store
        .list_orgs(&filter, page.after.as_ref(), page.fetch())
        .await?;
    let (orgs, next_cursor) = page.finish(orgs, CursorKind::Organizations, |o| o.id.to_string());
    Ok(Json(OrganizationList {
        items: orgs.iter().map(OrganizationOut::from).collect(),
        next_cursor,
    })
    .into_response())
}

// Re-exported for the events module, which shows deleted orgs' trails too.
pub(super) async fn load_for_trail(
    app: &AppState,
    principal: &Principal,
    lookup: &OrgLookup,
) -> Result<Loaded, ApiError> {
    load_org(app, principal, lookup, Find::LiveOrDeleted).await
}

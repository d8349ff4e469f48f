//! `/v1/organizations/{org}/members`: who belongs to an organization, with which
//! role. Owners and admins manage members; only owners grant or take `owner`; the
//! last owner stays; a plan's `max_members` holds.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, Problem};
use super::extract::{Caller, JsonObject, MemberRef, OrgRef};
use super::orgs::{load_org, Find, Loaded};
use super::query::{PageParams, Params};
use super::AppState;
use crate::domain::access::{self, Principal};
use crate::domain::apikey::Scope;
use crate::domain::cursor::CursorKind;
use crate::domain::event::EventType;
use crate::domain::members::{self, Membership};
use crate::domain::time;
use crate::store::{OrgLookup, StoreError};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_members))
        .routes(routes!(get_member, put_member, delete_member))
}

/// Re-planning bound when concurrent writers keep changing the same membership.
const MAX_ATTEMPTS: usize = 16;

/// A membership as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberOut {
    pub user_id: String,
    pub organization_id: String,
    /// `owner`, `admin` or `member`.
    pub role: String,
    pub display_name: Option<String>,
    pub external_id: Option<String>,
    /// E.g. a group manager's title.
    pub title: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&Membership> for MemberOut {
    fn from(m: &Membership) -> Self {
        let text = |t: &Option<crate::domain::fields::Text>| t.as_ref().map(ToString::to_string);
        Self {
            user_id: m.user_id.to_string(),
            organization_id: m.org_id.to_string(),
            role: m.role.as_str().to_owned(),
            display_name: text(&m.display_name),
            external_id: text(&m.external_id),
            title: text(&m.title),
            created_at: time::format(m.created_at),
            updated_at: time::format(m.updated_at),
        }
    }
}

/// The body of `PUT …/members/{user_id}`; absent fields are left alone, `null`
/// clears; a new member's role defaults to `member`.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // documents the body for OpenAPI; parsed by domain::members
pub struct MemberWrite {
    /// `owner`, `admin` or `member`.
    role: Option<String>,
    display_name: Option<String>,
    external_id: Option<String>,
    title: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberList {
    pub items: Vec<MemberOut>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

async fn load_for_members(
    app: &AppState,
    principal: &Principal,
    lookup: &OrgLookup,
) -> Result<Loaded, ApiError> {
    load_org(app, principal, lookup, Find::Live).await
}

/// List an organization's members, by user id.
#[utoipa::path(
    get,
    path = "/v1/organizations/{org}/members",
    tag = "members",
    params(("org" = String, Path, description = "Organization id (`org_…`) or slug"), PageParams),
    responses(
        (status = 200, body = MemberList),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_members(
    State(app): State<AppState>,
    Caller(principal): Caller,
    OrgRef(lookup): OrgRef,
    RawQuery(query): RawQuery,
) -> Result<Json<MemberList>, ApiError> {
    let Loaded { org, authority } = load_for_members(&app, &principal, &lookup).await?;
    access::authorize_org_read(&principal, &authority, &org, Scope::MembersRead)?;
    let page = Params::parse(query.as_deref())
        .member_page()
        .map_err(ApiError::Validation)?;
    let items = app
        .store
        .list_members(&org.id, page.after.as_ref(), page.fetch())
        .await?;
    let (items, next_cursor) = page.finish(items, CursorKind::Members, |m| m.user_id.to_string());
    Ok(Json(MemberList {
        items: items.iter().map(MemberOut::from).collect(),
        next_cursor,
    }))
}

/// Get one membership.
#[utoipa::path(
    get,
    path = "/v1/organizations/{org}/members/{user_id}",
    tag = "members",
    params(
        ("org" = String, Path, description = "Organization id (`org_…`) or slug"),
        ("user_id" = String, Path, description = "The user's id (the token's `sub`)"),
    ),
    responses(
        (status = 200, body = MemberOut),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "organization_not_found or member_not_found", body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_member(
    State(app): State<AppState>,
    Caller(principal): Caller,
    OrgRef(lookup): OrgRef,
    MemberRef(target): MemberRef,
) -> Result<Json<MemberOut>, ApiError> {
    let Loaded { org, authority } = load_for_members(&app, &principal, &lookup).await?;
    access::authorize_org_read(&principal, &authority, &org, Scope::MembersRead)?;
    let member = app
        .store
        .find_membership(&org.id, &target)
        .await?
        .ok_or(ApiError::MemberNotFound)?;
    Ok(Json(MemberOut::from(&member)))
}

/// Add a member, or change one (201 when added, 200 when changed or unchanged).
#[utoipa::path(
    put,
    path = "/v1/organizations/{org}/members/{user_id}",
    tag = "members",
    params(
        ("org" = String, Path, description = "Organization id (`org_…`) or slug"),
        ("user_id" = String, Path, description = "The user's id (the token's `sub`)"),
    ),
    request_body(content((MemberWrite = "application/json"), (MemberWrite = "application/merge-patch+json"))),
    responses(
        (status = 200, description = "Changed (or already so)", body = MemberOut),
        (status = 201, description = "Added", body = MemberOut),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "last_owner or member_limit_reached", body = Problem, content_type = "application/problem+json"),
        (status = 413, body = Problem, content_type = "application/problem+json"),
        (status = 415, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn put_member(
    State(app): State<AppState>,
    Caller(principal): Caller,
    OrgRef(lookup): OrgRef,
    MemberRef(target): MemberRef,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let patch = members::parse_member(&body).map_err(ApiError::Validation)?;
    let events = app.event_context(&principal);
    for _ in 0..MAX_ATTEMPTS {
        let Loaded { org, authority } = load_for_members(&app, &principal, &lookup).await?;
        let current = app.store.find_membership(&org.id, &target).await?;
        let after = patch.apply(current.as_ref(), org.id, &target, events.now);
        access::authorize_member_change(
            &principal,
            &authority,
            &org,
            &target,
            current.as_ref().map(|m| m.role),
            Some(after.role),
        )?;
        if members::is_unchanged(current.as_ref(), Some(&after)) {
            return Ok((StatusCode::OK, Json(MemberOut::from(&after))).into_response());
        }
        let (event_type, status) = match current {
            None => (EventType::MemberAdded, StatusCode::CREATED),
            Some(_) => (EventType::MemberUpdated, StatusCode::OK),
        };
        let changes = members::member_changes(&target, current.as_ref(), Some(&after));
        let event = events.event(event_type, org.id, org.version, changes);
        match app
            .store
            .write_membership(&org.id, &target, current.as_ref(), Some(&after), &event)
            .await
        {
            Ok(()) => {
                app.outbox.event_committed();
                return Ok((status, Json(MemberOut::from(&after))).into_response());
            }
            Err(StoreError::VersionMismatch) => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Err(ApiError::gave_up_retrying(MAX_ATTEMPTS))
}

/// Remove a member (anyone may remove themselves; the last owner stays).
#[utoipa::path(
    delete,
    path = "/v1/organizations/{org}/members/{user_id}",
    tag = "members",
    params(
        ("org" = String, Path, description = "Organization id (`org_…`) or slug"),
        ("user_id" = String, Path, description = "The user's id (the token's `sub`)"),
    ),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "last_owner", body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn delete_member(
    State(app): State<AppState>,
    Caller(principal): Caller,
    OrgRef(lookup): OrgRef,
    MemberRef(target): MemberRef,
) -> Result<StatusCode, ApiError> {
    let events = app.event_context(&principal);
    for _ in 0..MAX_ATTEMPTS {
        let Loaded { org, authority } = load_for_members(&app, &principal, &lookup).await?;
        let current = app
            .store
            .find_membership(&org.id, &target)
            .await?
            .ok_or(ApiError::MemberNotFound)?;
        access::authorize_member_change(
            &principal,
            &authority,
            &org,
            &target,
            Some(current.role),
            None,
        )?;
        let changes = members::member_changes(&target, Some(&current), None);
        let event = events.event(EventType::MemberRemoved, org.id, org.version, changes);
        match app
            .store
            .write_membership(&org.id, &target, Some(&current), None, &event)
            .await
        {
            Ok(()) => {
                app.outbox.event_committed();
                return Ok(StatusCode::NO_CONTENT);
            }
            Err(StoreError::VersionMismatch) => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Err(ApiError::gave_up_retrying(MAX_ATTEMPTS))
}

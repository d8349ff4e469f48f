//! The one error type handlers return, rendered as RFC 9457 problem+json.
//!
//! Each variant is named for what the client sees; its status and stable `code`
//! sit side by side in `meta()`, the single registry of error codes. Internal
//! causes are logged here, once, and never sent.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::edge::current_request_id;
use crate::domain::access::{requirement, Denied, Requirement};
use crate::domain::hierarchy::HierarchyError;
use crate::domain::members::MemberRuleError;
use crate::domain::problems::FieldError;
use crate::store::{Constraint, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{detail}")]
    PermissionDenied {
        detail: String,
        errors: Vec<FieldError>,
    },
    #[error("the organization is disabled")]
    OrganizationDisabled,
    #[error("this organization requires multi-factor authentication; sign in with MFA")]
    MfaRequired,
    #[error("no such member")]
    MemberNotFound,
    #[error("an organization must keep at least one owner")]
    LastOwner,
    #[error("{0}")]
    MemberLimitReached(String),
    #[error("too many requests; retry after {retry_after_secs} s")]
    RateLimited {
        retry_after_secs: u64,
        limit: u32,
        window_secs: u64,
    },
    #[error("no such organization")]
    OrganizationNotFound,
    #[error("no such webhook endpoint")]
    WebhookNotFound,
    #[error("no such route")]
    NotFound,
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("the request has invalid fields")]
    Validation(Vec<FieldError>),
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("{0}")]
    InvalidHeader(String),
    #[error("the body names no fields to update")]
    NoFields,
    #[error("send application/json or application/merge-patch+json")]
    UnsupportedMediaType,
    #[error("the body is larger than 64 KiB")]
    PayloadTooLarge,
    #[error("the body did not arrive in time")]
    RequestTimeout,
    #[error("If-Match does not match the organization's current version")]
    VersionMismatch,
    #[error("another live organization has this slug")]
    SlugTaken,
    #[error("another live organization has one of these domains")]
    DomainTaken,
    #[error("an organization cannot be placed under itself or one of its descendants")]
    HierarchyCycle,
    #[error("the organization has live children; delete or move them first")]
    HasChildren,
    #[error("the organization's parent is deleted; restore the parent first")]
    ParentDeleted,
    #[error("this Idempotency-Key was used with a different request body")]
    IdempotencyKeyReused,
    #[error("the database is unavailable; retry shortly")]
    Unavailable,
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// A write re-planned `attempts` times, each refused because another writer
    /// committed first: 503, so the client retries later, and a line in the log,
    /// since nothing else records it.
    pub fn gave_up_retrying(attempts: usize) -> Self {
        tracing::warn!(
            request.id = %current_request_id(),
            attempts,
            "gave up a write: other writers kept changing what it was planned on"
        );
        ApiError::Unavailable
    }

    /// Status, code and title: the registry of every error the API can answer.
    #[rustfmt::skip] // one line per code reads as the table it is
    pub fn meta(&self) -> (StatusCode, &'static str, &'static str) {
        use ApiError::*;
        match self {
            Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated", "Unauthenticated"),
            PermissionDenied { .. } => (StatusCode::FORBIDDEN, "permission_denied", "Permission denied"),
            OrganizationDisabled => (StatusCode::FORBIDDEN, "organization_disabled", "Organization disabled"),
            MfaRequired => (StatusCode::FORBIDDEN, "mfa_required", "MFA required"),
            OrganizationNotFound => (StatusCode::NOT_FOUND, "organization_not_found", "Organization not found"),
            MemberNotFound => (StatusCode::NOT_FOUND, "member_not_found", "Member not found"),
            WebhookNotFound => (StatusCode::NOT_FOUND, "webhook_not_found", "Webhook endpoint not found"),
            NotFound => (StatusCode::NOT_FOUND, "not_found", "Not found"),
            MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "Method not allowed"),
            Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_error", "Validation failed"),
            InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_json", "Malformed JSON"),
            InvalidHeader(_) => (StatusCode::BAD_REQUEST, "invalid_header", "Invalid header"),
            NoFields => (StatusCode::BAD_REQUEST, "no_fields", "No fields to update"),
            UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "Unsupported media type"),
            PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "Payload too large"),
            RequestTimeout => (StatusCode::REQUEST_TIMEOUT, "request_timeout", "Request timeout"),
            VersionMismatch => (StatusCode::PRECONDITION_FAILED, "version_mismatch", "Version mismatch"),
            SlugTaken => (StatusCode::CONFLICT, "slug_taken", "Slug taken"),
            DomainTaken => (StatusCode::CONFLICT, "domain_taken", "Domain taken"),
            HierarchyCycle => (StatusCode::CONFLICT, "hierarchy_cycle", "Hierarchy cycle"),
            HasChildren => (StatusCode::CONFLICT, "has_children", "Organization has children"),
            ParentDeleted => (StatusCode::CONFLICT, "parent_deleted", "Parent deleted"),
            LastOwner => (StatusCode::CONFLICT, "last_owner", "Last owner"),
            MemberLimitReached(_) => (StatusCode::CONFLICT, "member_limit_reached", "Member limit reached"),
            IdempotencyKeyReused => (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused", "Idempotency key reused"),
            RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited", "Too many requests"),
            Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable"),
            Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal server error"),
        }
    }

    fn field_errors(&self) -> Option<&[FieldError]> {
        match self {
            ApiError::Validation(errors) => Some(errors),
            ApiError::PermissionDenied { errors, .. } if !errors.is_empty() => Some(errors),
            _ => None,
        }
    }
}

/// An RFC 9457 problem document, as every error response carries it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// `urn:orgd:problem:<code>`.
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable snake_case error code.
    pub code: String,
    pub request_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<ProblemItem>>,
}

/// One field-level problem.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProblemItem {
    /// JSON Pointer into the request body.
    pub pointer: String,
    pub code: String,
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, title) = self.meta();
        let request_id = current_request_id();
        if let ApiError::Internal(cause) = &self {
            // `{:#}` is the whole cause chain on one line: a multi-line record would be
            // split apart by line-based log shippers, and grep would miss the cause.
            tracing::error!(request.id = %request_id, error = %format_args!("{cause:#}"), "request failed with an internal error");
        }
        let problem = Problem {
            problem_type: format!("urn:orgd:problem:{code}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: self.to_string(),
            code: code.to_owned(),
            request_id,
            errors: self.field_errors().map(|errors| {
                errors
                    .iter()
                    .map(|e| ProblemItem {
                        pointer: e.pointer.clone(),
                        code: e.code.to_owned(),
                        message: e.message.clone(),
                    })
                    .collect()
            }),
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match &self {
            ApiError::Unauthenticated(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"orgd\""),
                );
            }
            ApiError::Unavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::RateLimited {
                retry_after_secs,
                limit,
                window_secs,
            } => {
                let retry = retry_after_secs.to_string();
                if let Ok(v) = HeaderValue::from_str(&retry) {
                    headers.insert(header::RETRY_AFTER, v);
                }
                // draft-ietf-httpapi-ratelimit-headers
                if let Ok(v) = HeaderValue::from_str(&format!("{limit};w={window_secs}")) {
                    headers.insert("ratelimit-policy", v);
                }
                if let Ok(v) =
                    HeaderValue::from_str(&format!("limit={limit}, remaining=0, reset={retry}"))
                {
                    headers.insert("ratelimit", v);
                }
            }
            _ => {}
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => ApiError::OrganizationNotFound,
            StoreError::VersionMismatch => ApiError::VersionMismatch,
            StoreError::Conflict(Constraint::SlugTaken) => ApiError::SlugTaken,
            StoreError::Conflict(Constraint::DomainTaken) => ApiError::DomainTaken,
            StoreError::Conflict(Constraint::HasChildren) => ApiError::HasChildren,
            StoreError::Conflict(Constraint::IdempotencyKey) => ApiError::Unavailable,
            StoreError::Member(MemberRuleError::LastOwner) => ApiError::LastOwner,
            StoreError::Member(err @ MemberRuleError::LimitReached { .. }) => {
                ApiError::MemberLimitReached(err.to_string())
            }
            StoreError::Hierarchy(HierarchyError::Cycle) => ApiError::HierarchyCycle,
            StoreError::Hierarchy(err @ HierarchyError::ParentNotFound) => {
                ApiError::Validation(vec![FieldError::new(
                    "/parent_id",
                    "parent_not_found",
                    err.to_string(),
                )])
            }
            StoreError::Hierarchy(err @ HierarchyError::TooDeep { .. }) => {
                ApiError::Validation(vec![FieldError::new(
                    "/parent_id",
                    "max_depth_exceeded",
                    err.to_string(),
                )])
            }
            StoreError::Unavailable(cause) => {
                tracing::warn!(request.id = %current_request_id(), error = %cause, "database unavailable");
                ApiError::Unavailable
            }
            StoreError::Other(cause) => ApiError::Internal(cause),
        }
    }
}

impl From<Denied> for ApiError {
    fn from(denied: Denied) -> Self {
        match denied {
            Denied::MissingScope(scope) => ApiError::PermissionDenied {
                detail: format!("this API key lacks the `{scope}` scope"),
                errors: Vec::new(),
            },
            Denied::OrganizationDisabled => ApiError::OrganizationDisabled,
            Denied::MfaRequired => ApiError::MfaRequired,
            Denied::Role(why) => ApiError::PermissionDenied {
                detail: why.to_owned(),
                errors: Vec::new(),
            },
            Denied::Fields(mut fields) => {
                // Sorted by name, like every other list of field errors.
                fields.sort_by_key(|f| f.name());
                ApiError::PermissionDenied {
                    detail: format!(
                        "you may not change: {}",
                        fields
                            .iter()
                            .map(|f| f.name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    errors: fields
                        .iter()
                        .map(|&f| {
                            let needs = match requirement(f) {
                                Requirement::Admin => "an admin or owner of the organization",
                                Requirement::Owner => "an owner of the organization",
                                Requirement::Support => "support staff or a system administrator",
                                Requirement::System => {
                                    "a system administrator or a write-scoped API key"
                                }
                            };
                            FieldError::new(
                                f.pointer(),
                                "permission_denied",
                                format!("only {needs} may set this field"),
                            )
                        })
                        .collect(),
                }
            }
        }
    }
}

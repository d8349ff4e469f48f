//! Extractors that turn a request into typed inputs — the caller, the organization
//! named in the path, the JSON body, the preconditions — and refuse bad requests
//! with problem+json rather than axum's plain-text rejections.

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use serde_json::{Map, Value};

use super::error::ApiError;
use super::AppState;
use crate::auth::AuthError;
use crate::domain::access::Principal;
use crate::domain::members::UserId;
use crate::domain::problems::FieldError;
use crate::store::OrgLookup;

/// Largest body accepted (SPEC §2).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// A body must arrive within this long: a client trickling bytes cannot hold a
/// connection and a request slot open for ever.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// The authenticated caller, within its rate limit.
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or(ApiError::Unauthenticated(
                "send an Authorization: Bearer header",
            ))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or(ApiError::Unauthenticated(
                "the Authorization header must be `Bearer <token>`",
            ))?;
        let principal = app
            .auth
            .authenticate(token)
            .await
            .map_err(|err| match err {
                AuthError::Store(err) => ApiError::from(err),
                AuthError::NoUserTokens => {
                    ApiError::Unauthenticated("user tokens are not accepted by this deployment")
                }
                AuthError::Invalid => {
                    ApiError::Unauthenticated("the token is invalid, expired or revoked")
                }
            })?;
        if let Some(limiter) = &app.limiter {
            limiter
                .check(&principal.key())
                .map_err(|wait| ApiError::RateLimited {
                    retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
                    limit: limiter.per,
                    window_secs: limiter.window_secs,
                })?;
        }
        Ok(Caller(principal))
    }
}

/// One named path parameter, percent-decoded; `None` when absent or not UTF-8.
async fn path_param<S: Send + Sync>(parts: &mut Parts, state: &S, name: &str) -> Option<String> {
    let params = RawPathParams::from_request_parts(parts, state).await.ok()?;
    params
        .iter()
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

/// The `{org}` path segment: an id or a slug. Anything that can be neither names no
/// organization, so it is a 404 like an unknown one.
pub struct OrgRef(pub OrgLookup);

impl<S: Send + Sync> FromRequestParts<S> for OrgRef {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let text = path_param(parts, state, "org")
            .await
            .ok_or(ApiError::OrganizationNotFound)?;
        OrgLookup::parse(&text)
            .map(OrgRef)
            .ok_or(ApiError::OrganizationNotFound)
    }
}

/// The `{user_id}` path segment of a membership route.
pub struct MemberRef(pub UserId);

impl<S: Send + Sync> FromRequestParts<S> for MemberRef {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let text = path_param(parts, state, "user_id")
            .await
            .ok_or(ApiError::MemberNotFound)?;
        UserId::parse(&text)
            .map(MemberRef)
            .map_err(|_| ApiError::MemberNotFound)
    }
}

/// A JSON object body (`application/json` or `application/merge-patch+json`), at
/// most 64 KiB.
pub struct JsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, ApiError> {
        check_content_type(request.headers())?;
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
            return Err(ApiError::PayloadTooLarge);
        }
        let bytes = tokio::time::timeout(BODY_READ_TIMEOUT, read_limited(request.into_body()))
            .await
            .map_err(|_| ApiError::RequestTimeout)??;
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
        match value {
            Value::Object(map) => Ok(JsonObject(map)),
            _ => Err(ApiError::Validation(vec![FieldError::new(
                "",
                "invalid_type",
                "the body must be a JSON object",
            )])),
        }
    }
}

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let essence = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    match essence.as_deref() {
        Some("application/json") | Some("application/merge-patch+json") => Ok(()),
        _ => Err(ApiError::UnsupportedMediaType),
    }
}

async fn read_limited(body: Body) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|err| {
            let too_large = std::error::Error::source(&err)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                ApiError::PayloadTooLarge
            } else {
                ApiError::InvalidJson("the body could not be read".into())
            }
        })
}

/// `If-Match`, compared strongly (RFC 9110 §13.1.1): `*`, or a list of `"<version>"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfMatch {
    any: bool,
    versions: Vec<i64>,
}

impl IfMatch {
    /// `None` when the header is absent; malformed members simply match nothing.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let mut values = headers.get_all(header::IF_MATCH).iter().peekable();
        values.peek()?;
        let mut parsed = IfMatch {
            any: false,
            versions: Vec::new(),
        };
        for member in values
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
        {
            if member == "*" {
                parsed.any = true;
            } else if let Some(v) = member
                .strip_prefix('"')
                .and_then(|m| m.strip_suffix('"'))
                .and_then(|m| m.parse::<i64>().ok())
            {
                parsed.versions.push(v);
            }
        }
        Some(parsed)
    }

    pub fn matches(&self, version: i64) -> bool {
        self.any || self.versions.contains(&version)
    }
}

/// Request headers that shape a write: `If-Match` and `Prefer: return=minimal`.
pub struct WriteHeaders {
    pub if_match: Option<IfMatch>,
    pub return_minimal: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for WriteHeaders {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let return_minimal = parts
            .headers
            .get_all("prefer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim().eq_ignore_ascii_case("return=minimal"));
        Ok(WriteHeaders {
            if_match: IfMatch::from_headers(&parts.headers),
            return_minimal,
        })
    }
}

/// `Idempotency-Key`: 1–255 visible ASCII characters, when present.
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get("idempotency-key") else {
            return Ok(IdempotencyKey(None));
        };
        value
            .to_str()
            .ok()
            .filter(|v| !v.is_empty() && v.len() <= 255 && v.bytes().all(|b| b.is_ascii_graphic()))
            .map(|v| IdempotencyKey(Some(v.to_owned())))
            .ok_or_else(|| {
                ApiError::InvalidHeader(
                    "Idempotency-Key must be 1-255 visible ASCII characters".into(),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn if_match(value: &str) -> IfMatch {
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_MATCH, HeaderValue::from_str(value).unwrap());
        IfMatch::from_headers(&headers).unwrap()
    }

    #[test]
    fn if_match_is_strong_and_lists_are_allowed() {
        assert!(if_match("\"3\"").matches(3));
        assert!(!if_match("\"3\"").matches(4));
        assert!(if_match("\"1\", \"3\"").matches(3));
        assert!(if_match("*").matches(9));
        assert!(!if_match("W/\"3\"").matches(3));
        assert!(!if_match("3").matches(3));
        assert!(!if_match("garbage").matches(1));
        assert!(IfMatch::from_headers(&HeaderMap::new()).is_none());
    }
}

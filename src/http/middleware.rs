//! Cross-cutting layers: the request id every log line and error body carries,
//! security headers, CORS, and request metrics.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::request_metrics;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    static REQUEST_ID: HeaderValue;
}

/// The current request's id, for error bodies, events and logs; empty outside a request.
pub fn current_request_id() -> String {
    REQUEST_ID
        .try_with(|id| id.to_str().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

/// Accepts the caller's `X-Request-Id` or makes one, echoes it, and makes it
/// available to everything the request runs. Written here rather than with
/// tower-http's request-id layers because those keep any incoming value, and this
/// one is echoed into logs and bodies: it is bounded to 128 visible ASCII characters.
pub async fn request_id(mut request: Request, next: Next) -> Response {
    let incoming = request
        .headers()
        .get(&X_REQUEST_ID)
        .filter(|v| {
            let bytes = v.as_bytes();
            !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(u8::is_ascii_graphic)
        })
        .cloned();
    // The id is kept as a `HeaderValue` (shared bytes): the header, the task-local
    // and the log line then share one copy instead of three strings.
    let value = incoming.unwrap_or_else(|| {
        let mut buffer = uuid::Uuid::encode_buffer();
        let id = uuid::Uuid::now_v7().hyphenated().encode_lower(&mut buffer);
        HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
    });
    request
        .headers_mut()
        .insert(X_REQUEST_ID.clone(), value.clone());
    let method = request.method().clone();
    let uri = request.uri().clone();
    let started = Instant::now();
    let mut response = REQUEST_ID.scope(value.clone(), next.run(request)).await;
    tracing::info!(
        request.id = %value.to_str().unwrap_or_default(),
        http.method = %method,
        http.path = %uri.path(),
        http.status = response.status().as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request finished"
    );
    response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    response
}

/// Request count and latency by route template (not raw path, so ids do not
/// explode the label set).
pub async fn record_metrics(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    request_metrics::record(
        route.as_ref().map_or("unmatched", MatchedPath::as_str),
        &method,
        response.status(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// Adds [`security_headers`] where a handler has not set its own.
pub async fn add_security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in security_headers() {
        if let header::Entry::Vacant(slot) = headers.entry(name) {
            slot.insert(value);
        }
    }
    response
}

/// The headers of SPEC §6 (seed 003's set).
fn security_headers() -> [(HeaderName, HeaderValue); 5] {
    [
        (
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ]
}

/// The docs page runs Swagger UI's own scripts and styles from this origin.
pub const DOCS_CSP: &str = "default-src 'none'; script-src 'self' 'unsafe-inline'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'";

/// Gives the docs page and its assets (under `/docs`) [`DOCS_CSP`]; `/openapi.json`,
/// served by the same router, keeps the strict API policy.
pub async fn docs_csp(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let docs = path == "/docs" || path.starts_with("/docs/");
    let mut response = next.run(request).await;
    if docs {
        response.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(DOCS_CSP),
        );
    }
    response
}

/// CORS from `ORGD_CORS_ORIGINS`: `*`, or a comma-separated list of origins.
pub fn cors(origins: &str) -> CorsLayer {
    let allow_origin = if origins.trim() == "*" {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .split(',')
                .map(str::trim)
                .filter(|o| !o.is_empty())
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        )
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("prefer"),
            X_REQUEST_ID.clone(),
        ])
        .expose_headers([header::ETAG, X_REQUEST_ID.clone(), header::LOCATION])
        .max_age(std::time::Duration::from_secs(600))
}

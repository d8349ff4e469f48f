//! The docs page's own content security policy. What every request passes through
//! first is in `edge.rs`; request metrics are in `request_metrics.rs`.

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

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

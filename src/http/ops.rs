//! Operational endpoints (health, readiness, metrics) and the answers for routes
//! and methods that do not exist.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::error::ApiError;
use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// The process is up (says nothing about the database).
async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// The process can serve: the database answers.
async fn readyz(State(app): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    app.store.ping().await?;
    Ok(Json(json!({"status": "ready"})))
}

/// Prometheus text exposition.
async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    // The store counts these itself (atomics on its hot path); they are copied
    // into the registry when scraped. `absolute` keeps the larger value, so a
    // registry shared by several stores (tests) never goes back.
    let copies = app.store.org_copies();
    metrics::counter!("orgd_org_copies_hits_total").absolute(copies.hits());
    metrics::counter!("orgd_org_copies_drops_total").absolute(copies.drops());
    metrics::gauge!("orgd_org_copies_kept").set(copies.kept() as f64);
    metrics::gauge!("orgd_org_copies_capacity").set(copies.capacity() as f64);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

//! The HTTP API: routing, the OpenAPI document generated from the handlers, and
//! the layers every response passes through.

pub mod edge;
pub mod error;
pub mod events;
pub mod extract;
pub mod feed;
pub mod first_bytes;
pub mod members;
pub mod middleware;
pub mod ops;
pub mod org_turns;
pub mod orgs;
pub mod query;
pub mod recent_orgs;
pub mod rendered_orgs;
pub mod request_metrics;
pub mod webhooks;

use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use std::sync::Arc;

use crate::auth::rate_limit::PrincipalLimiter;
use crate::auth::Authenticator;
use crate::domain::access::Principal;
use crate::domain::event::EventContext;
use crate::domain::time;
use crate::events::OutboxSignals;
use crate::store::SharedStore;

/// What every handler can reach, behind one `Arc`: axum clones the state for the
/// router and for each extractor of every request, and cloning the fields one by
/// one was ~10 reference-count updates per clone on counters every runtime thread
/// shares (`drop_in_place<AppState>` and the clones were ~2% of a GET's CPU).
#[derive(Clone)]
pub struct AppState(Arc<App>);

impl AppState {
    pub fn new(app: App) -> Self {
        Self(Arc::new(app))
    }
}

impl std::ops::Deref for AppState {
    type Target = App;

    fn deref(&self) -> &App {
        &self.0
    }
}

/// The shared parts of the service.
pub struct App {
    pub store: SharedStore,
    pub auth: Arc<Authenticator>,
    pub limiter: Option<Arc<PrincipalLimiter>>,
    pub metrics: PrometheusHandle,
    /// Wakes the outbox workers after a commit; tells feed streams about new events.
    pub outbox: OutboxSignals,
    /// `ORGD_WEBHOOKS_ALLOW_PRIVATE`: skip the SSRF checks on webhook targets.
    pub webhooks_allow_private: bool,
    /// Organizations this process last wrote, to plan the next update on.
    pub recent_orgs: Arc<recent_orgs::RecentOrgs>,
    /// GET answers as rendered for the store's kept copies (`rendered_orgs.rs`),
    /// as many as the store keeps.
    pub rendered_orgs: rendered_orgs::RenderedOrgs,
    /// Updates of one organization wait for each other here (`org_turns.rs`).
    pub org_turns: org_turns::OrgTurns,
}

impl App {
    /// Who and when, for the events this request records.
    pub fn event_context(&self, principal: &Principal) -> EventContext {
        EventContext {
            actor: principal.actor(),
            request_id: edge::current_request_id(),
            now: time::now(),
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "orgd",
        description = "Organization (tenant) management: organizations, their hierarchy and their audit trail. \
                       Errors are RFC 9457 problem+json documents with a stable `code`."
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "organizations", description = "Create, read, update (PATCH/PUT), delete and restore organizations"),
        (name = "members", description = "Who belongs to an organization, with which role"),
        (name = "events", description = "The audit trail, per organization and as one feed (pages and server-sent events)"),
        (name = "webhooks", description = "Endpoints that receive events, signed per Standard Webhooks"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key (`orgd_…`) or a user JWT from the identity provider",
                    ))
                    .build(),
            ),
        );
    }
}

/// The API routes and their OpenAPI document, before layers.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(orgs::router())
        .merge(members::router())
        .merge(events::router())
        .merge(feed::router())
        .merge(webhooks::router())
        .split_for_parts()
}

/// The whole service: API, operations, docs, and the layers of SPEC §6 (the
/// request id, CORS and the security headers in `edge.rs`).
pub fn service(state: AppState, cors_origins: &str) -> edge::Edge {
    let (api, openapi) = api();
    let docs: Router<AppState> =
        Router::from(SwaggerUi::new("/docs").url("/openapi.json", openapi))
            .layer(axum::middleware::from_fn(middleware::docs_csp));
    let router = api
        .merge(ops::router())
        .route_layer(request_metrics::RecordLayer)
        .merge(docs)
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .with_state(state);
    edge::Edge::new(router, cors_origins)
}

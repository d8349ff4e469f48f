//! What every request passes through before routing, as one tower service: its
//! request id (accepted or made, echoed, logged), the access log line, CORS, the
//! security headers of SPEC §6, and a handler's panic turned into a 500 problem.
//!
//! Written as one service rather than four layers on the router because of what
//! layers cost there. axum's `Router::layer` wraps every route, and each request
//! clones its route's stack and boxes each `from_fn` middleware's `Next` and future;
//! tower-http's `Cors` also clones its whole configuration (its lists of methods,
//! headers and `Vary` names) for every request and fills a `HeaderMap` for it.
//! Counted with callgrind on `GET /healthz` (42,700 instructions per request;
//! bench/README.md, "Session 17"), removing one layer saved: CORS 10,900, the
//! security headers 7,500, the request id 6,800, the panic catcher 2,000. With this
//! service doing the same work without those clones (and the metrics layer made a
//! plain one, `request_metrics.rs`), the request takes 24,000–24,900.
//!
//! CORS itself stays tower-http's, for the requests it concerns: those with an
//! `Origin` header (every cross-origin request a browser makes carries one) and
//! every `OPTIONS` (tower-http answers them all as preflights). Any other request
//! gets only `Vary: Origin`, so a cache never serves its answer to a browser's
//! cross-origin request, whose answer differs by the `Access-Control-*` headers.

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::future::RouteFuture;
use axum::Router;
use futures::future::BoxFuture;
use futures::FutureExt;
use tower::{Layer, Service};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::error::ApiError;

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

/// The router behind the edge; cloned for every request (two reference counts).
#[derive(Clone)]
pub struct Edge {
    router: Router,
    cors: Arc<CorsLayer>,
}

impl Edge {
    pub fn new(router: Router, cors_origins: &str) -> Self {
        Self {
            router,
            cors: Arc::new(cors(cors_origins)),
        }
    }
}

impl<B> Service<axum::http::Request<B>> for Edge
where
    B: axum::body::HttpBody<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let request = request.map(Body::new);
        let id = request_id(&request);
        let method = request.method().clone();
        let uri = request.uri().clone();
        let started = Instant::now();
        let cross_origin =
            request.headers().contains_key(header::ORIGIN) || method == Method::OPTIONS;
        // `Caught` and `Cors<Caught>` are always ready (`Router::poll_ready` is), and
        // this clone of the edge is used for this request only.
        let mut caught = Caught(self.router.clone());
        let answer = if cross_origin {
            self.cors.layer(caught).call(request).left_future()
        } else {
            caught.call(request).right_future()
        };
        Box::pin(async move {
            let Ok(mut response) = REQUEST_ID.scope(id.clone(), answer).await;
            tracing::info!(
                request.id = %id.to_str().unwrap_or_default(),
                http.method = %method,
                http.path = %uri.path(),
                http.status = response.status().as_u16(),
                latency_ms = started.elapsed().as_secs_f64() * 1000.0,
                "request finished"
            );
            let headers = response.headers_mut();
            for (name, value) in security_headers() {
                if let header::Entry::Vacant(slot) = headers.entry(name) {
                    slot.insert(value);
                }
            }
            if !cross_origin {
                headers.append(header::VARY, HeaderValue::from_static("origin"));
            }
            headers.insert(X_REQUEST_ID.clone(), id);
            Ok(response)
        })
    }
}

/// The router, with a handler's panic answered as the 500 problem (with the request
/// id, read inside its scope). Inside CORS, so that a cross-origin caller can read
/// that answer too. Only polling can panic: axum's `Router::call` runs no handler
/// code, it builds the route's future.
#[derive(Clone)]
struct Caught(Router);

type Answer = Result<Response, Infallible>;

impl Service<Request> for Caught {
    type Response = Response;
    type Error = Infallible;
    #[allow(clippy::type_complexity)]
    type Future = futures::future::Map<
        futures::future::CatchUnwind<AssertUnwindSafe<RouteFuture<Infallible>>>,
        fn(std::thread::Result<Answer>) -> Answer,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<Request>::poll_ready(&mut self.0, cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        AssertUnwindSafe(self.0.call(request))
            .catch_unwind()
            .map(answer_panics as fn(_) -> _)
    }
}

fn answer_panics(caught: std::thread::Result<Answer>) -> Answer {
    caught.unwrap_or_else(|_panic| {
        Ok(ApiError::Internal(anyhow::anyhow!("a handler panicked")).into_response())
    })
}

/// The caller's `X-Request-Id`, or a new one (a UUIDv7). Written here rather than
/// with tower-http's request-id layers because those keep any incoming value, and
/// this one is echoed into logs and bodies: it is bounded to 128 visible ASCII
/// characters. Kept as a `HeaderValue` (shared bytes): the header, the task-local
/// and the log line then share one copy.
fn request_id(request: &Request) -> HeaderValue {
    let incoming = request.headers().get(&X_REQUEST_ID).filter(|v| {
        let bytes = v.as_bytes();
        !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(u8::is_ascii_graphic)
    });
    match incoming {
        Some(value) => value.clone(),
        None => {
            let mut buffer = uuid::Uuid::encode_buffer();
            let id = uuid::Uuid::now_v7().hyphenated().encode_lower(&mut buffer);
            HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
        }
    }
}

/// The headers of SPEC §6 (seed 003's set), added where a handler has not set its own.
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

/// CORS from `ORGD_CORS_ORIGINS`: `*`, or a comma-separated list of origins.
fn cors(origins: &str) -> CorsLayer {
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

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    fn edge() -> Edge {
        let router = Router::new()
            .route("/ok", get(|| async { current_request_id() }))
            .route(
                "/own-csp",
                get(|| async { ([(header::CONTENT_SECURITY_POLICY, "sandbox")], "x") }),
            )
            .route("/panics", get(panics));
        Edge::new(router, "*")
    }

    async fn panics() -> &'static str {
        panic!("a bug")
    }

    async fn send(request: axum::http::Request<Body>) -> (Response, String) {
        let response = edge().oneshot(request).await.expect("infallible");
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.expect("body").to_bytes();
        let text = String::from_utf8(bytes.to_vec()).expect("utf-8");
        (Response::from_parts(parts, Body::empty()), text)
    }

    /// `GET path` with `headers`, through the edge.
    async fn get_with(path: &str, headers: &[(&HeaderName, &str)]) -> (Response, String) {
        let mut request = axum::http::Request::get(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        send(request.body(Body::empty()).expect("a valid request")).await
    }

    #[tokio::test]
    async fn a_request_id_is_made_echoed_and_in_scope_for_the_handler() {
        let (response, text) = get_with("/ok", &[]).await;
        let echoed = response.headers()[&X_REQUEST_ID].to_str().unwrap();
        assert_eq!(echoed.len(), 36, "a hyphenated UUID: {echoed}");
        assert_eq!(text, echoed, "the handler saw the same id");
    }

    #[tokio::test]
    async fn a_usable_incoming_id_is_kept_and_an_unusable_one_replaced() {
        let (response, text) = get_with("/ok", &[(&X_REQUEST_ID, "trace-42")]).await;
        assert_eq!(response.headers()[&X_REQUEST_ID], "trace-42");
        assert_eq!(text, "trace-42");

        for unusable in ["has space".to_owned(), "x".repeat(129)] {
            let (response, _) = get_with("/ok", &[(&X_REQUEST_ID, unusable.as_str())]).await;
            assert_ne!(response.headers()[&X_REQUEST_ID], unusable.as_str());
        }
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_a_500_problem_with_the_request_id_and_all_headers() {
        let (response, text) = get_with("/panics", &[(&X_REQUEST_ID, "boom-1")]).await;
        assert_eq!(response.status(), 500);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let problem: serde_json::Value = serde_json::from_str(&text).expect("a problem body");
        assert_eq!(problem["request_id"], "boom-1", "{problem}");
        assert_eq!(response.headers()[&X_REQUEST_ID], "boom-1");
        assert_eq!(response.headers()[header::X_FRAME_OPTIONS], "DENY");

        // A browser's cross-origin caller can read that answer too.
        let (response, _) = get_with("/panics", &[(&header::ORIGIN, "https://app.example")]).await;
        assert_eq!(response.status(), 500);
        assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    }

    #[tokio::test]
    async fn security_headers_are_added_where_the_handler_set_none() {
        let (response, _) = get_with("/ok", &[]).await;
        for (name, value) in security_headers() {
            assert_eq!(response.headers().get(&name), Some(&value), "{name}");
        }
        let (response, _) = get_with("/own-csp", &[]).await;
        assert_eq!(
            response.headers()[header::CONTENT_SECURITY_POLICY],
            "sandbox",
            "a handler's own policy stays"
        );
        assert_eq!(response.headers()[header::X_FRAME_OPTIONS], "DENY");
    }

    #[tokio::test]
    async fn only_requests_with_an_origin_and_preflights_get_cors_headers() {
        let (plain, _) = get_with("/ok", &[]).await;
        assert!(!plain
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
        assert_eq!(plain.headers()[header::VARY], "origin");

        let (cross, _) = get_with("/ok", &[(&header::ORIGIN, "https://app.example")]).await;
        assert_eq!(cross.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(cross
            .headers()
            .contains_key(header::ACCESS_CONTROL_EXPOSE_HEADERS));

        let (preflight, _) = send(
            axum::http::Request::options("/ok")
                .header(header::ORIGIN, "https://app.example")
                .header(header::ACCESS_CONTROL_REQUEST_METHOD, "PATCH")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert!(preflight.status().is_success());
        assert!(preflight
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_METHODS));
        assert_eq!(preflight.headers()[header::X_FRAME_OPTIONS], "DENY");
    }
}

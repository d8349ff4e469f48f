//! Request count and latency by route template, method and status: a layer on the
//! router's routes (only there is the matched route template known).
//!
//! The layer is a plain tower service rather than an axum `from_fn` middleware,
//! which boxes the rest of the route's stack and its own future for every request:
//! ~3,600 instructions of a 42,700-instruction `GET /healthz` (callgrind,
//! bench/README.md, "Session 17").
//!
//! The `metrics` macros build the key (the name and one string per label) and look
//! it up in the registry on every call: for two series with three labels, four
//! allocations and two hashed lookups per request. The handles they return are the
//! registry's own counter and histogram, so they are kept here, per runtime
//! thread, by (route, method, status): a request then records with two atomic
//! updates, and what `/metrics` shows is the same.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use metrics::{Counter, Histogram};
use tower::{Layer, Service};

/// Records every request of the routes it is laid on (`Router::route_layer`).
#[derive(Clone, Copy)]
pub struct RecordLayer;

impl<S> Layer<S> for RecordLayer {
    type Service = Record<S>;

    fn layer(&self, inner: S) -> Record<S> {
        Record { inner }
    }
}

#[derive(Clone)]
pub struct Record<S> {
    inner: S,
}

impl<S> Service<Request> for Record<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Recording<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let route = request.extensions().get::<MatchedPath>().cloned();
        let method = request.method().clone();
        Recording {
            inner: self.inner.call(request),
            route,
            method,
            started: Instant::now(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The route's answer, recorded when it is ready.
    pub struct Recording<F> {
        #[pin]
        inner: F,
        route: Option<MatchedPath>,
        method: Method,
        started: Instant,
    }
}

impl<F, E> Future for Recording<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let answered = ready!(this.inner.poll(cx));
        if let Ok(response) = &answered {
            record(
                this.route.as_ref().map_or("unmatched", MatchedPath::as_str),
                this.method,
                response.status(),
                this.started.elapsed().as_secs_f64(),
            );
        }
        Poll::Ready(answered)
    }
}

struct Handles {
    method: &'static str,
    status: StatusCode,
    requests: Counter,
    duration: Histogram,
}

thread_local! {
    /// By route template, then a short list of (method, status). Bounded: routes are
    /// the router's templates and methods are sorted into a fixed set; statuses are
    /// the few that handlers answer with.
    static HANDLES: RefCell<HashMap<Box<str>, Vec<Handles>>> = RefCell::default();
}

/// Counts one request on `route` (a route template, never a raw path) and records
/// how long it took.
fn record(route: &str, method: &Method, status: StatusCode, seconds: f64) {
    let method = method_label(method);
    HANDLES.with_borrow_mut(|by_route| {
        let handles = match by_route.get_mut(route) {
            Some(handles) => handles,
            None => by_route.entry(route.into()).or_default(),
        };
        let found = match handles
            .iter()
            .position(|h| h.method == method && h.status == status)
        {
            Some(i) => &handles[i],
            None => {
                let labels = [
                    ("method", method.to_owned()),
                    ("route", route.to_owned()),
                    ("status", status.as_str().to_owned()),
                ];
                handles.push(Handles {
                    method,
                    status,
                    requests: metrics::counter!("orgd_http_requests_total", &labels),
                    duration: metrics::histogram!("orgd_http_request_duration_seconds", &labels),
                });
                &handles[handles.len() - 1]
            }
        };
        found.requests.increment(1);
        found.duration.record(seconds);
    });
}

/// The method's name for the standard methods; any other (an extension method a
/// client made up) is `OTHER`, so clients cannot grow the label set.
fn method_label(method: &Method) -> &'static str {
    const STANDARD: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
    ];
    STANDARD
        .into_iter()
        .find(|name| *name == method.as_str())
        .unwrap_or("OTHER")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_methods_keep_their_names_and_others_are_one_label() {
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        assert_eq!(method_label(&Method::GET), "GET");
        let made_up = Method::from_bytes(b"FROBNICATE").expect("a valid token");
        assert_eq!(method_label(&made_up), "OTHER");
    }
}

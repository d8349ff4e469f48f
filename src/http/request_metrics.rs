//! Request count and latency by route template, method and status.
//!
//! The `metrics` macros build the key (the name and one string per label) and look
//! it up in the registry on every call: for two series with three labels, four
//! allocations and two hashed lookups per request. The handles they return are the
//! registry's own counter and histogram, so they are kept here, per runtime
//! thread, by (route, method, status): a request then records with two atomic
//! updates, and what `/metrics` shows is the same.

use std::cell::RefCell;
use std::collections::HashMap;

use axum::http::{Method, StatusCode};
use metrics::{Counter, Histogram};

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
pub fn record(route: &str, method: &Method, status: StatusCode, seconds: f64) {
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

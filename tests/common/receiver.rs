//! A real webhook receiver on 127.0.0.1:0 for the tests: it records every request
//! and answers as the test tells it (a status, optionally after a delay), and it
//! verifies Standard Webhooks signatures with its own HMAC code, written from the
//! spec rather than borrowed from orgd.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::Notify;

/// One request the receiver got, and what it answered.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub json: Value,
    pub answered: u16,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn delivered(&self) -> bool {
        (200..300).contains(&self.answered)
    }
}

/// How to answer request number `n` (0-based, counting every request).
pub type Behavior = dyn Fn(usize, &Received) -> (u16, Duration) + Send + Sync;

struct Shared {
    /// Requests that have arrived, answered or not (a slow answer is still pending).
    arrivals: std::sync::atomic::AtomicUsize,
    received: Mutex<Vec<Received>>,
    arrived: Notify,
    behavior: Box<Behavior>,
}

pub struct Receiver {
    pub url: String,
    shared: Arc<Shared>,
}

impl Receiver {
    /// A receiver that answers 204 to everything.
    pub async fn ok() -> Receiver {
        Self::start(|_, _| (204, Duration::ZERO)).await
    }

    pub async fn start(
        behavior: impl Fn(usize, &Received) -> (u16, Duration) + Send + Sync + 'static,
    ) -> Receiver {
        let shared = Arc::new(Shared {
            arrivals: std::sync::atomic::AtomicUsize::new(0),
            received: Mutex::new(Vec::new()),
            arrived: Notify::new(),
            behavior: Box::new(behavior),
        });
        let app = Router::new().fallback(receive).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("receiver binds");
        let addr = listener.local_addr().expect("receiver address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            url: format!("http://{addr}/hooks/orgd"),
            shared,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().expect("lock").clone()
    }

    /// Requests that were answered 2xx.
    pub fn delivered(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.delivered())
            .collect()
    }

    /// Waits until `done` holds for the requests so far; panics after `within`.
    pub async fn wait_until(
        &self,
        within: Duration,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let notified = self.shared.arrived.notified();
            let received = self.received();
            if done(&received) {
                return received;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "the receiver did not get what was expected within {within:?}; it got {} requests: {:#?}",
                received.len(),
                received.iter().map(|r| (r.answered, r.json["type"].clone(), r.json["version"].clone())).collect::<Vec<_>>()
            );
            let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), notified).await;
        }
    }

    /// Requests that have arrived so far, including ones not answered yet.
    pub fn arrivals(&self) -> usize {
        self.shared
            .arrivals
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until `n` requests have arrived (answered or not).
    pub async fn wait_for_arrivals(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.arrivals() < n {
            assert!(
                Instant::now() < deadline,
                "only {} requests arrived within {within:?}",
                self.arrivals()
            );
            let notified = self.shared.arrived.notified();
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
    }

    /// Waits for `n` delivered (2xx) requests.
    pub async fn wait_for_deliveries(&self, n: usize, within: Duration) -> Vec<Received> {
        self.wait_until(within, |r| r.iter().filter(|r| r.delivered()).count() >= n)
            .await;
        self.delivered()
    }
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut request = Received {
        json: serde_json::from_slice(&body).unwrap_or(Value::Null),
        headers,
        body,
        answered: 0,
        at: Instant::now(),
    };
    let n = shared
        .arrivals
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    shared.arrived.notify_waiters();
    let (status, delay) = (shared.behavior)(n, &request);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    request.answered = status;
    shared.received.lock().expect("lock").push(request);
    shared.arrived.notify_waiters();
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// `base64(HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}"))`, where the
/// key is the base64 after `whsec_` (Standard Webhooks, "Verifying webhooks").
pub fn expected_signature(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("base64 secret");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Whether one of the `v1,` entries of `webhook-signature` was made with `secret`,
/// and the timestamp is within five minutes of now (the spec's replay window).
pub fn verify(secret: &str, request: &Received) -> bool {
    let timestamp = request.header("webhook-timestamp");
    let Ok(seconds) = timestamp.parse::<i64>() else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    if (now - seconds).abs() > 300 {
        return false;
    }
    let expected = expected_signature(
        secret,
        request.header("webhook-id"),
        timestamp,
        &request.body,
    );
    request
        .header("webhook-signature")
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .any(|sig| sig == expected)
}

//! Per-principal rate limits (SPEC §6, `ORGD_RATE_LIMIT`): off by default; when
//! set, each principal has its own allowance and the one over it gets 429
//! `rate_limited` with `Retry-After`. A per-minute rate keeps refills from racing
//! the test. Black-box: a real server, over HTTP.

mod common;

use common::{TestApp, TestResponse, UserClaims};

const LIMIT: usize = 5;

async fn spawn_limited() -> TestApp {
    TestApp::spawn_with(|serve| {
        common::accept_users(serve);
        serve.rate_limit = Some(format!("{LIMIT}/m"));
    })
    .await
}

async fn list(app: &TestApp, key: Option<&str>) -> TestResponse {
    app.get("/v1/organizations").key(key).send_any().await
}

/// Spends the whole allowance of `key`, checking each request is served.
async fn exhaust(app: &TestApp, key: &str) {
    for i in 0..LIMIT {
        let response = list(app, Some(key)).await;
        assert_eq!(
            response.status,
            200,
            "request {} of {LIMIT}: {}",
            i + 1,
            response.text
        );
    }
}

fn assert_rate_limited(response: &TestResponse) {
    assert_eq!(response.status, 429, "{}", response.text);
    assert_eq!(response.code(), "rate_limited");
    assert_eq!(response.body["status"], 429);
    assert_eq!(
        response.header("content-type"),
        Some("application/problem+json")
    );
    let retry_after: u64 = response
        .header("retry-after")
        .expect("Retry-After is sent")
        .parse()
        .expect("Retry-After is a number of seconds");
    assert!(
        (1..=60).contains(&retry_after),
        "Retry-After {retry_after} s for a {LIMIT}/m limit"
    );
    assert_eq!(response.header("ratelimit-policy"), Some("5;w=60"));
}

#[tokio::test]
async fn the_request_over_the_limit_gets_429_with_retry_after_and_the_policy() {
    let app = spawn_limited().await;
    exhaust(&app, &app.admin).await;
    let response = list(&app, Some(&app.admin)).await;
    assert_rate_limited(&response);
    // Still limited on the next try, and on any route that needs a principal.
    assert_rate_limited(&list(&app, Some(&app.admin)).await);
    let create = app
        .post(
            "/v1/organizations",
            &serde_json::json!({"name": "Too Many"}),
        )
        .send_any()
        .await;
    assert_rate_limited(&create);
    // The refused create wrote nothing.
    let other = app.key(&["organizations:read"], None).await;
    let orgs = list(&app, Some(&other)).await;
    assert_eq!(orgs.body["items"], serde_json::json!([]));
}

#[tokio::test]
async fn another_principal_keeps_its_own_allowance() {
    let app = spawn_limited().await;
    let other_key = app.key(&["organizations:read"], None).await;
    let alice = UserClaims::new("alice").token();
    exhaust(&app, &app.admin).await;
    assert_rate_limited(&list(&app, Some(&app.admin)).await);

    exhaust(&app, &other_key).await;
    assert_rate_limited(&list(&app, Some(&other_key)).await);

    exhaust(&app, &alice).await;
    assert_rate_limited(&list(&app, Some(&alice)).await);

    // A user is limited as a user, not per token: a fresh token for alice is
    // still alice, while bob is served.
    let alice_again = UserClaims::new("alice").roles(&["support"]).token();
    assert_rate_limited(&list(&app, Some(&alice_again)).await);
    let bob = UserClaims::new("bob").token();
    assert_eq!(list(&app, Some(&bob)).await.status, 200);
}

#[tokio::test]
async fn unauthenticated_requests_are_401_not_429() {
    let app = spawn_limited().await;
    exhaust(&app, &app.admin).await;
    for key in [
        None,
        Some("orgd_not-a-real-key-0123456789"),
        Some("not-a-jwt"),
    ] {
        for _ in 0..LIMIT + 2 {
            let response = list(&app, key).await;
            assert_eq!(response.status, 401, "{key:?}: {}", response.text);
            assert_eq!(response.code(), "unauthenticated");
            assert!(response.header("retry-after").is_none());
        }
    }
    // Health checks carry no principal and are never limited.
    for _ in 0..LIMIT + 2 {
        app.get("/healthz").key(None).send(200).await;
    }
}

#[tokio::test]
async fn rate_limits_are_off_by_default() {
    let app = TestApp::spawn().await;
    for i in 0..100 {
        let response = list(&app, Some(&app.admin)).await;
        assert_eq!(response.status, 200, "request {i}: {}", response.text);
        assert!(response.header("ratelimit-policy").is_none());
    }
}

//! User tokens (SPEC §3): which JWTs orgd accepts and which forgeries it refuses.
//! HS256 with a shared secret; RS256 and ES256 from a JWKS file or URL, with the
//! algorithm decided by the key, never by the token. Black-box: a real server,
//! over HTTP, with tokens signed here by the fixtures in `tests/fixtures/`.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::{hs256_token, TestApp, TestResponse, UserClaims, JWT_AUDIENCE, JWT_ISSUER};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{json, Value};

// ---- helpers --------------------------------------------------------------------

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).expect("fixture is readable")
}

/// Valid claims for `sub`: right issuer and audience, an hour to live.
fn claims(sub: &str) -> Value {
    UserClaims::new(sub).to_json()
}

/// Claims for `sub` with some keys replaced (`null` removes a key).
fn claims_with(sub: &str, changes: Value) -> Value {
    let mut claims = claims(sub);
    for (key, value) in changes.as_object().expect("an object of changes") {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(key);
        } else {
            claims[key] = value.clone();
        }
    }
    claims
}

fn signed(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("token signs")
}

/// An RS256 token signed by the PKCS#8 key in fixture `pem`.
fn rs256(pem: &str, kid: Option<&str>, claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(&fixture_bytes(pem)).expect("an RSA key");
    signed(Algorithm::RS256, kid, &key, claims)
}

/// An ES256 token signed by the PKCS#8 key in fixture `pem`.
fn es256(pem: &str, kid: Option<&str>, claims: &Value) -> String {
    let key = EncodingKey::from_ec_pem(&fixture_bytes(pem)).expect("an EC key");
    signed(Algorithm::ES256, kid, &key, claims)
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// A server that accepts tokens signed by the keys of `jwks` (a path or URL),
/// with the test issuer and audience, and no HS256 secret.
async fn spawn_with_jwks(jwks: &str) -> TestApp {
    let jwks = jwks.to_owned();
    TestApp::spawn_with(move |serve| {
        serve.jwt_jwks = Some(jwks);
        serve.jwt_issuer = Some(JWT_ISSUER.into());
        serve.jwt_audience = Some(JWT_AUDIENCE.into());
    })
    .await
}

async fn spawn_with_fixture_jwks() -> TestApp {
    spawn_with_jwks(fixture("jwks.json").to_str().expect("UTF-8 path")).await
}

/// `GET /v1/organizations` with `token`.
async fn list_as(app: &TestApp, token: &str) -> TestResponse {
    app.get("/v1/organizations")
        .key(Some(token))
        .send_any()
        .await
}

async fn assert_accepted(app: &TestApp, token: &str) {
    let response = list_as(app, token).await;
    assert_eq!(
        response.status, 200,
        "the token was refused: {}",
        response.text
    );
}

/// The token is refused as a credential: 401 `unauthenticated` problem+json with
/// `WWW-Authenticate`.
async fn assert_refused(app: &TestApp, token: &str) {
    let response = list_as(app, token).await;
    assert_eq!(
        response.status, 401,
        "the token was not refused: {}",
        response.text
    );
    assert_eq!(response.code(), "unauthenticated", "{}", response.text);
    assert_eq!(
        response.header("content-type"),
        Some("application/problem+json")
    );
    assert!(
        response
            .header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer")),
        "a 401 carries WWW-Authenticate: {:?}",
        response.headers
    );
}

/// A tiny JWKS endpoint on a local port: serves `body` at `/jwks.json` and
/// counts the fetches.
struct JwksServer {
    url: String,
    hits: Arc<AtomicUsize>,
}

async fn serve_jwks(body: String) -> JwksServer {
    use axum::extract::State;
    use axum::routing::get;
    type Shared = (Arc<AtomicUsize>, Arc<String>);
    let hits = Arc::new(AtomicUsize::new(0));
    let router = axum::Router::new()
        .route(
            "/jwks.json",
            get(|State((hits, body)): State<Shared>| async move {
                hits.fetch_add(1, Ordering::SeqCst);
                ([("content-type", "application/json")], body.to_string())
            }),
        )
        .with_state((hits.clone(), Arc::new(body)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a local port");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    JwksServer {
        url: format!("http://{addr}/jwks.json"),
        hits,
    }
}

// ---- HS256 ------------------------------------------------------------------------

#[tokio::test]
async fn a_valid_hs256_token_is_accepted_and_lists_only_the_users_organizations() {
    let app = TestApp::spawn_with_users().await;
    let alice = UserClaims::new("alice").token();
    let bob = UserClaims::new("bob").token();
    app.org_named("Not Alices").await;
    let mine = app
        .post("/v1/organizations", &json!({"name": "Alice Co"}))
        .key(Some(&alice))
        .send(201)
        .await
        .body;

    let list = list_as(&app, &alice).await;
    assert_eq!(list.status, 200, "{}", list.text);
    let ids: Vec<&str> = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [mine["id"].as_str().unwrap()]);

    let list = list_as(&app, &bob).await;
    assert_eq!(list.status, 200, "{}", list.text);
    assert_eq!(list.body["items"], json!([]), "bob belongs to nothing");

    let everything = app.get("/v1/organizations").send(200).await.body;
    assert_eq!(everything["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_token_expired_beyond_the_leeway_is_refused_and_one_within_it_is_accepted() {
    let app = TestApp::spawn_with_users().await;
    let expired = hs256_token(&claims_with("alice", json!({"exp": now() - 120})));
    assert_refused(&app, &expired).await;
    let just_expired = hs256_token(&claims_with("alice", json!({"exp": now() - 5})));
    assert_accepted(&app, &just_expired).await;
}

#[tokio::test]
async fn a_token_not_yet_valid_beyond_the_leeway_is_refused_and_one_within_it_is_accepted() {
    let app = TestApp::spawn_with_users().await;
    let future = hs256_token(&claims_with("alice", json!({"nbf": now() + 300})));
    assert_refused(&app, &future).await;
    let soon = hs256_token(&claims_with("alice", json!({"nbf": now() + 10})));
    assert_accepted(&app, &soon).await;
    let past = hs256_token(&claims_with("alice", json!({"nbf": now() - 60})));
    assert_accepted(&app, &past).await;
}

#[tokio::test]
async fn a_token_with_a_malformed_nbf_is_refused() {
    let app = TestApp::spawn_with_users().await;
    for nbf in [json!("9999999999"), json!(true), json!({"at": 1})] {
        let token = hs256_token(&claims_with("alice", json!({ "nbf": nbf })));
        let response = list_as(&app, &token).await;
        assert_eq!(response.status, 401, "nbf {nbf}: {}", response.text);
    }
}

#[tokio::test]
async fn a_token_without_exp_is_refused() {
    let app = TestApp::spawn_with_users().await;
    assert_accepted(&app, &hs256_token(&claims("alice"))).await;
    let forever = hs256_token(&claims_with("alice", json!({"exp": null})));
    assert_refused(&app, &forever).await;
    let text_exp = hs256_token(&claims_with("alice", json!({"exp": "tomorrow"})));
    assert_refused(&app, &text_exp).await;
}

#[tokio::test]
async fn a_token_without_a_usable_sub_is_refused() {
    let app = TestApp::spawn_with_users().await;
    for changes in [
        json!({"sub": null}),
        json!({"sub": ""}),
        json!({"sub": 42}),
        json!({"sub": "tab\there"}),
    ] {
        let token = hs256_token(&claims_with("alice", changes.clone()));
        let response = list_as(&app, &token).await;
        assert_eq!(response.status, 401, "{changes}: {}", response.text);
        assert_eq!(response.code(), "unauthenticated");
    }
}

#[tokio::test]
async fn a_token_with_a_wrong_signature_is_refused() {
    let app = TestApp::spawn_with_users().await;
    let good = hs256_token(&claims("alice"));
    assert_accepted(&app, &good).await;

    let other_secret = signed(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(b"not-the-configured-secret-0123456789"),
        &claims("alice"),
    );
    assert_refused(&app, &other_secret).await;

    // Alice's signature on Mallory's claims.
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(&claims_with("mallory", json!({"roles": ["system_admin"]}))),
        parts[2]
    );
    assert_refused(&app, &tampered).await;

    // The signature cut off.
    assert_refused(&app, &format!("{}.{}.", parts[0], parts[1])).await;
    assert_refused(&app, "not-a-jwt").await;
}

#[tokio::test]
async fn a_token_for_another_issuer_or_audience_is_refused() {
    let app = TestApp::spawn_with_users().await;
    for changes in [
        json!({"iss": "https://evil.test"}),
        json!({"aud": "another-service"}),
        json!({"aud": ["another-service"]}),
    ] {
        let token = hs256_token(&claims_with("alice", changes.clone()));
        let response = list_as(&app, &token).await;
        assert_eq!(response.status, 401, "{changes}: {}", response.text);
        assert_eq!(response.code(), "unauthenticated");
    }
    let listed = hs256_token(&claims_with(
        "alice",
        json!({"aud": [JWT_AUDIENCE, "another-service"]}),
    ));
    assert_accepted(&app, &listed).await;
}

#[tokio::test]
async fn a_token_without_iss_or_aud_is_refused_when_they_are_configured() {
    let app = TestApp::spawn_with_users().await;
    let no_iss = hs256_token(&claims_with("alice", json!({"iss": null})));
    assert_refused(&app, &no_iss).await;
    let no_aud = hs256_token(&claims_with("alice", json!({"aud": null})));
    assert_refused(&app, &no_aud).await;
}

#[tokio::test]
async fn an_unsigned_alg_none_token_is_refused() {
    let app = TestApp::spawn_with_users().await;
    let body = b64(&claims_with("alice", json!({"roles": ["system_admin"]})));
    for alg in ["none", "None", "NONE"] {
        let header = b64(&json!({"alg": alg, "typ": "JWT"}));
        assert_refused(&app, &format!("{header}.{body}.")).await;
    }
    // The same claims, properly signed, are fine: the refusal is about `alg`.
    assert_accepted(
        &app,
        &hs256_token(&claims_with("alice", json!({"roles": ["system_admin"]}))),
    )
    .await;
}

#[tokio::test]
async fn user_tokens_are_refused_when_no_jwt_key_is_configured() {
    let app = TestApp::spawn().await;
    assert_refused(&app, &hs256_token(&claims("alice"))).await;
    app.get("/v1/organizations").send(200).await;
}

// ---- RS256 / ES256 from a JWKS file -------------------------------------------

#[tokio::test]
async fn rs256_and_es256_tokens_signed_by_jwks_keys_are_accepted() {
    let app = spawn_with_fixture_jwks().await;
    assert_accepted(&app, &rs256("rsa.pem", Some("rsa-1"), &claims("alice"))).await;
    assert_accepted(&app, &es256("ec.pem", Some("ec-1"), &claims("alice"))).await;
    // Without a kid, the only key of the token's type is used.
    assert_accepted(&app, &rs256("rsa.pem", None, &claims("alice"))).await;
    assert_accepted(&app, &es256("ec.pem", None, &claims("alice"))).await;

    // A JWKS token is a real user: what she creates, she owns and lists.
    let token = rs256("rsa.pem", Some("rsa-1"), &claims("alice"));
    let org = app
        .post("/v1/organizations", &json!({"name": "RS Co"}))
        .key(Some(&token))
        .send(201)
        .await
        .body;
    let list = list_as(&app, &token).await.body;
    assert_eq!(list["items"][0]["id"], org["id"]);
}

#[tokio::test]
async fn jwks_tokens_still_check_exp_issuer_and_audience() {
    let app = spawn_with_fixture_jwks().await;
    for changes in [
        json!({"exp": now() - 120}),
        json!({"exp": null}),
        json!({"nbf": now() + 300}),
        json!({"iss": "https://evil.test"}),
        json!({"aud": "another-service"}),
    ] {
        let token = rs256(
            "rsa.pem",
            Some("rsa-1"),
            &claims_with("alice", changes.clone()),
        );
        let response = list_as(&app, &token).await;
        assert_eq!(response.status, 401, "{changes}: {}", response.text);
    }
}

#[tokio::test]
async fn a_token_signed_by_a_key_outside_the_jwks_is_refused_even_with_a_known_kid() {
    let app = spawn_with_fixture_jwks().await;
    assert_refused(
        &app,
        &rs256("rsa-other.pem", Some("rsa-1"), &claims("alice")),
    )
    .await;
    assert_refused(&app, &es256("ec-other.pem", Some("ec-1"), &claims("alice"))).await;
    assert_refused(&app, &rs256("rsa-other.pem", None, &claims("alice"))).await;
    // A kid that names a key of the other type does not help either.
    assert_refused(&app, &rs256("rsa.pem", Some("ec-1"), &claims("alice"))).await;
}

#[tokio::test]
async fn an_hs256_token_signed_with_the_public_key_is_refused_by_a_jwks_only_server() {
    let app = spawn_with_fixture_jwks().await;
    let public_pem = fixture_bytes("rsa.pub.pem");
    for kid in [Some("rsa-1"), None] {
        let forged = signed(
            Algorithm::HS256,
            kid,
            &EncodingKey::from_secret(&public_pem),
            &claims("alice"),
        );
        assert_refused(&app, &forged).await;
    }
    // Nor is any HS256 token: there is no secret to check it with.
    assert_refused(&app, &hs256_token(&claims("alice"))).await;
    assert_accepted(&app, &rs256("rsa.pem", Some("rsa-1"), &claims("alice"))).await;
}

#[tokio::test]
async fn an_unknown_kid_is_refused_and_the_server_keeps_serving() {
    let app = spawn_with_fixture_jwks().await;
    for i in 0..5 {
        let kid = format!("nobody-{i}");
        assert_refused(&app, &rs256("rsa.pem", Some(&kid), &claims("alice"))).await;
    }
    assert_accepted(&app, &rs256("rsa.pem", Some("rsa-1"), &claims("alice"))).await;
    app.get("/v1/organizations").send(200).await;
}

// ---- JWKS from a URL ----------------------------------------------------------

#[tokio::test]
async fn tokens_are_checked_against_a_jwks_served_over_http() {
    let jwks = serve_jwks(std::fs::read_to_string(fixture("jwks.json")).unwrap()).await;
    let app = spawn_with_jwks(&jwks.url).await;
    assert!(
        jwks.hits.load(Ordering::SeqCst) >= 1,
        "the JWKS is fetched at start"
    );
    assert_accepted(&app, &rs256("rsa.pem", Some("rsa-1"), &claims("alice"))).await;
    assert_accepted(&app, &es256("ec.pem", Some("ec-1"), &claims("alice"))).await;
    assert_refused(
        &app,
        &rs256("rsa-other.pem", Some("rsa-1"), &claims("alice")),
    )
    .await;
}

#[tokio::test]
async fn unknown_kids_do_not_make_orgd_refetch_the_jwks_on_every_request() {
    let jwks = serve_jwks(std::fs::read_to_string(fixture("jwks.json")).unwrap()).await;
    let app = spawn_with_jwks(&jwks.url).await;
    let at_start = jwks.hits.load(Ordering::SeqCst);
    for i in 0..20 {
        let kid = format!("forged-{i}");
        assert_refused(&app, &rs256("rsa.pem", Some(&kid), &claims("alice"))).await;
    }
    let fetches = jwks.hits.load(Ordering::SeqCst) - at_start;
    assert!(
        fetches <= 1,
        "20 unknown kids within seconds refetched the JWKS {fetches} times"
    );
    assert_accepted(&app, &rs256("rsa.pem", Some("rsa-1"), &claims("alice"))).await;
}

#[tokio::test]
async fn an_unreachable_jwks_url_does_not_stop_the_service_and_api_keys_still_work() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let app = spawn_with_jwks(&format!("http://127.0.0.1:{port}/jwks.json")).await;
    let org = app.org_named("Still Here").await;
    app.get(&format!("/v1/organizations/{org}")).send(200).await;
    assert_refused(&app, &rs256("rsa.pem", Some("rsa-1"), &claims("alice"))).await;
    app.get("/healthz").send(200).await;
}

// ---- key rotation -------------------------------------------------------------

#[tokio::test]
async fn a_key_added_to_the_jwks_file_is_picked_up_after_the_refetch_interval() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let rotated: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("jwks-rotated.json")).unwrap())
            .unwrap();
    let before = json!({"keys": [rotated["keys"][0].clone()]});
    assert_eq!(before["keys"][0]["kid"], "rsa-1");
    std::fs::write(&path, before.to_string()).unwrap();
    let app = spawn_with_jwks(path.to_str().unwrap()).await;

    let old = rs256("rsa.pem", Some("rsa-1"), &claims("alice"));
    let new = rs256("rsa-other.pem", Some("rsa-2"), &claims("alice"));
    assert_accepted(&app, &old).await;
    assert_refused(&app, &new).await;

    // Replace the file atomically, as a deploy would.
    let staged = dir.path().join("jwks.json.new");
    std::fs::write(&staged, rotated.to_string()).unwrap();
    std::fs::rename(&staged, &path).unwrap();

    let started = Instant::now();
    loop {
        let response = list_as(&app, &new).await;
        if response.status == 200 {
            break;
        }
        assert_eq!(response.status, 401, "{}", response.text);
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the rotated key was not picked up within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_accepted(&app, &old).await;
    // rsa-2 is the `-other` key now; a still-unknown key stays refused.
    assert_refused(&app, &es256("ec-other.pem", Some("ec-2"), &claims("alice"))).await;
}

// ---- global roles and MFA -----------------------------------------------------

#[tokio::test]
async fn the_roles_claim_makes_a_system_admin_or_support_staff() {
    let app = TestApp::spawn_with_users().await;
    let org = app.org_named("Acme").await;
    let path = format!("/v1/organizations/{org}");

    let nobody = UserClaims::new("nobody").token();
    let response = app.get(&path).key(Some(&nobody)).send(404).await;
    assert_eq!(response.code(), "organization_not_found");

    let root = UserClaims::new("root").roles(&["system_admin"]).token();
    app.get(&path).key(Some(&root)).send(200).await;
    let disabled = app
        .patch(&path, &json!({"enabled": false}))
        .key(Some(&root))
        .send(200)
        .await;
    assert_eq!(disabled.body["enabled"], false);

    let support = UserClaims::new("helpdesk").roles(&["support"]).token();
    app.get(&path).key(Some(&support)).send(200).await;
    let refused = app
        .patch(&path, &json!({"name": "Renamed"}))
        .key(Some(&support))
        .send(403)
        .await;
    assert_eq!(refused.code(), "permission_denied");
    let changed = app
        .patch(&path, &json!({"subscription_id": "sub_123"}))
        .key(Some(&support))
        .send(200)
        .await;
    assert_eq!(changed.body["subscription_id"], "sub_123");
    assert_eq!(changed.body["name"], "Acme");

    // An unknown role grants nothing.
    let fake = UserClaims::new("fake").roles(&["superuser"]).token();
    app.get(&path).key(Some(&fake)).send(404).await;
}

#[tokio::test]
async fn roles_may_come_as_a_space_separated_string() {
    let app = TestApp::spawn_with_users().await;
    let org = app.org_named("Acme").await;
    let path = format!("/v1/organizations/{org}");
    let token = hs256_token(&claims_with(
        "helpdesk",
        json!({"roles": "auditor support"}),
    ));
    app.get(&path).key(Some(&token)).send(200).await;
    let token = hs256_token(&claims_with("root", json!({"roles": "system_admin"})));
    app.patch(&path, &json!({"app_ids": ["app_1"]}))
        .key(Some(&token))
        .send(200)
        .await;
}

#[tokio::test]
async fn a_configured_roles_claim_replaces_the_default_one() {
    const CLAIM: &str = "https://orgd.test/roles";
    let app = TestApp::spawn_with(|serve| {
        common::accept_users(serve);
        serve.jwt_roles_claim = CLAIM.into();
    })
    .await;
    let org = app.org_named("Acme").await;
    let path = format!("/v1/organizations/{org}");

    let custom = hs256_token(&claims_with(
        "helpdesk",
        json!({ CLAIM: ["support"], "roles": [] }),
    ));
    app.get(&path).key(Some(&custom)).send(200).await;

    let default_claim = UserClaims::new("helpdesk").roles(&["support"]).token();
    let response = app.get(&path).key(Some(&default_claim)).send(404).await;
    assert_eq!(response.code(), "organization_not_found");
}

/// An org owned by alice with `mfa_required: true`; returns its path.
async fn mfa_org(app: &TestApp) -> String {
    let alice = UserClaims::new("alice").mfa().token();
    let org = app
        .post(
            "/v1/organizations",
            &json!({"name": "Strict", "mfa_required": true}),
        )
        .key(Some(&alice))
        .send(201)
        .await
        .body;
    assert_eq!(org["mfa_required"], true);
    format!("/v1/organizations/{}", org["id"].as_str().unwrap())
}

#[tokio::test]
async fn an_amr_claim_with_mfa_satisfies_an_organization_that_requires_it() {
    let app = TestApp::spawn_with_users().await;
    let path = mfa_org(&app).await;

    let plain = UserClaims::new("alice").token();
    let response = app.get(&path).key(Some(&plain)).send(403).await;
    assert_eq!(response.code(), "mfa_required");
    let response = app
        .patch(&path, &json!({"name": "Renamed"}))
        .key(Some(&plain))
        .send(403)
        .await;
    assert_eq!(response.code(), "mfa_required");

    app.get(&path)
        .key(Some(&UserClaims::new("alice").mfa().token()))
        .send(200)
        .await;
    let as_string = hs256_token(&claims_with("alice", json!({"amr": "pwd mfa"})));
    app.get(&path).key(Some(&as_string)).send(200).await;
    let other_amr = hs256_token(&claims_with("alice", json!({"amr": ["pwd", "otp"]})));
    app.get(&path).key(Some(&other_amr)).send(403).await;
    // Without a configured acr, any acr value means nothing.
    let acr = hs256_token(&claims_with("alice", json!({"acr": "urn:test:mfa"})));
    app.get(&path).key(Some(&acr)).send(403).await;
}

#[tokio::test]
async fn a_configured_acr_value_satisfies_an_organization_that_requires_mfa() {
    let app = TestApp::spawn_with(|serve| {
        common::accept_users(serve);
        serve.jwt_mfa_acr = Some("urn:test:mfa".into());
    })
    .await;
    let path = mfa_org(&app).await;
    let good = hs256_token(&claims_with("alice", json!({"acr": "urn:test:mfa"})));
    app.get(&path).key(Some(&good)).send(200).await;
    let bad = hs256_token(&claims_with("alice", json!({"acr": "urn:test:pwd"})));
    let response = app.get(&path).key(Some(&bad)).send(403).await;
    assert_eq!(response.code(), "mfa_required");
    let response = app
        .req(Method::GET, &format!("{path}/members"))
        .key(Some(&bad))
        .send(403)
        .await;
    assert_eq!(response.code(), "mfa_required");
}

/// Found by the `jwt_token` fuzz target (fuzz/): a correctly signed token whose
/// header carries an unknown member holding bytes that are not UTF-8. jsonwebtoken
/// skips unknown header members without decoding them, so the token is accepted:
/// the signature covers those bytes, and nothing orgd reads comes from them. The
/// same header unsigned, or claiming `none`, is still refused.
#[tokio::test]
async fn a_signed_token_with_non_utf8_bytes_in_an_unknown_header_member_is_judged_by_its_signature()
{
    use hmac::{Hmac, Mac};
    let app = TestApp::spawn_with_users().await;
    let claims = serde_json::to_vec(&claims("alice")).unwrap();
    let token = |header: &[u8], signed: bool| {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(&claims)
        );
        let signature = if signed {
            let mut mac =
                Hmac::<sha2::Sha256>::new_from_slice(common::JWT_SECRET.as_bytes()).unwrap();
            mac.update(input.as_bytes());
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        } else {
            String::new()
        };
        format!("{input}.{signature}")
    };
    // 0x9c alone is not UTF-8.
    let odd = b"{\"alg\":\"HS256\",\"dyp\":\"JW\x9cT\"}";
    assert_accepted(&app, &token(odd, true)).await;
    assert_refused(&app, &token(odd, false)).await;
    assert_refused(
        &app,
        &token(b"{\"alg\":\"none\",\"dyp\":\"JW\x9cT\"}", false),
    )
    .await;
}

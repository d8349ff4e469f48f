//! Operations and the HTTP layer (SPEC §6): health, metrics, the OpenAPI document
//! and docs page, security headers, CORS, request ids, API-key storage and the
//! bootstrap key of a real `orgd serve` process.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use common::process::ServeProcess;
use common::{Hold, TestApp, TestResponse};
use orgd::config::StoreConfig;
use orgd::domain::ids::WebhookId;
use orgd::domain::secrets_key::SecretsKey;
use orgd::{server, store};

const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

fn assert_security_headers(what: &str, response: &TestResponse) {
    let hsts = response.header("strict-transport-security").unwrap_or("");
    assert!(
        hsts.starts_with("max-age="),
        "{what}: HSTS missing ({hsts:?})"
    );
    let max_age: u64 = hsts["max-age=".len()..]
        .split(';')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        max_age >= 15_552_000,
        "{what}: HSTS max-age too short ({hsts})"
    );
    assert!(
        matches!(response.header("x-frame-options"), Some(v) if v.eq_ignore_ascii_case("deny")),
        "{what}: X-Frame-Options missing"
    );
    assert_eq!(
        response.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(
        response.header("referrer-policy"),
        Some("no-referrer"),
        "{what}"
    );
    let csp = response.header("content-security-policy").unwrap_or("");
    assert!(
        csp.contains("frame-ancestors 'none'"),
        "{what}: CSP {csp:?}"
    );
}

fn comma_list(response: &TestResponse, name: &str) -> Vec<String> {
    response
        .headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_ascii_lowercase())
        .collect()
}

// ---- health, readiness, metrics -------------------------------------------------

#[tokio::test]
async fn healthz_answers_200_without_credentials() {
    let app = TestApp::spawn().await;
    let health = app.get("/healthz").key(None).send(200).await;
    assert_eq!(health.body["status"], "ok");
}

#[tokio::test]
async fn readyz_answers_200_when_the_database_answers() {
    let app = TestApp::spawn().await;
    let ready = app.get("/readyz").key(None).send(200).await;
    assert_eq!(ready.body["status"], "ready");
}

#[tokio::test]
async fn metrics_count_requests_by_route_template() {
    let app = TestApp::spawn().await;
    let id = app.org_named("Measured").await;
    app.get(&format!("/v1/organizations/{id}")).send(200).await;
    let metrics = app.get("/metrics").key(None).send(200).await;
    assert!(
        metrics
            .header("content-type")
            .unwrap_or("")
            .starts_with("text/plain"),
        "Prometheus text format"
    );
    let counter_lines: Vec<&str> = metrics
        .text
        .lines()
        .filter(|l| l.starts_with("orgd_http_requests_total{"))
        .collect();
    assert!(
        !counter_lines.is_empty(),
        "no orgd_http_requests_total in:\n{}",
        metrics.text
    );
    assert!(
        counter_lines.iter().any(
            |l| l.contains("route=\"/v1/organizations/{org}\"") && l.contains("method=\"GET\"")
        ),
        "requests are labelled by route template: {counter_lines:?}"
    );
    assert!(
        !metrics.text.contains(&id),
        "organization ids must not become metric labels"
    );
}

/// How often GETs by id were answered from the process's copies, and how often
/// those were all dropped, for operators to see whether the copies work for them.
#[tokio::test]
async fn metrics_report_the_copies_answering_gets_by_id() {
    let app = TestApp::spawn().await;
    let id = app.org_named("Kept").await;
    let value = |text: &str, name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };
    // The create keeps what it committed, so GETs are answered from it while
    // the copies are known to be fresh: on SQLite within 20 ms of the last check
    // of the change counter (a GET later than that has one taken and reads the
    // database itself), on PostgreSQL once the store's listening connection is
    // known to receive (moments after it starts). So GETs go in bursts. The
    // registry is the process's; under `cargo test` other servers' copies count
    // too, and the exported value is the largest any of them reported.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        for _ in 0..5 {
            app.get(&format!("/v1/organizations/{id}")).send(200).await;
        }
        let metrics = app.get("/metrics").key(None).send(200).await;
        value(&metrics.text, "orgd_org_copies_drops_total");
        // Gauges of this server's copies (under `cargo test` another server's
        // scrape may have set them last, so only their presence is checked here;
        // org_copies.rs checks the count).
        value(&metrics.text, "orgd_org_copies_kept");
        value(&metrics.text, "orgd_org_copies_capacity");
        if value(&metrics.text, "orgd_org_copies_hits_total") >= 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no GET was answered from the copies"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_server_keeping_no_copies_answers_every_get_by_id_from_the_database() {
    let app = TestApp::spawn_configured(|store| store.org_copies = 0, |_| {}).await;
    let id = app.org_named("Unkept").await;
    let path = format!("/v1/organizations/{id}");
    for round in 0..3 {
        let got = app.get(&path).send(200).await;
        assert_eq!(got.body["version"], round + 1);
        let etag = got.header("etag").expect("an ETag").to_owned();
        let description = format!("round {round}");
        let patched = app
            .patch(&path, &json!({"description": description}))
            .header("if-match", &etag)
            .send(200)
            .await;
        assert_eq!(patched.body["version"], round + 2);
        let again = app.get(&path).send(200).await;
        assert_eq!(again.body["description"], description.as_str());
        assert_eq!(again.body["version"], round + 2);
    }
    assert_eq!(app.store().org_copies().hits(), 0);
    assert_eq!(app.store().org_copies().capacity(), 0);
}

// ---- OpenAPI and docs -----------------------------------------------------------

#[tokio::test]
async fn the_openapi_document_is_version_3_1_and_lists_every_route_with_problem_errors() {
    let app = TestApp::spawn().await;
    let doc = app.get("/openapi.json").key(None).send(200).await.body;
    let version = doc["openapi"].as_str().expect("an openapi version");
    assert!(version.starts_with("3.1."), "OpenAPI {version}");

    let expected: &[(&str, &[&str])] = &[
        ("/v1/organizations", &["get", "post"]),
        (
            "/v1/organizations/{org}",
            &["get", "patch", "put", "delete"],
        ),
        ("/v1/organizations/{org}/restore", &["post"]),
        ("/v1/organizations/{org}/children", &["get"]),
        ("/v1/organizations/{org}/events", &["get"]),
    ];
    let paths = doc["paths"].as_object().expect("paths");
    for (path, methods) in expected {
        let item = paths
            .get(*path)
            .unwrap_or_else(|| panic!("{path} is missing"));
        for method in *methods {
            let op = &item[*method];
            assert!(op.is_object(), "{method} {path} is missing");
            let responses = op["responses"]
                .as_object()
                .unwrap_or_else(|| panic!("{method} {path} has no responses"));
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{method} {path} documents no success"
            );
            assert!(
                responses.contains_key("401"),
                "{method} {path} does not document 401"
            );
            let errors: Vec<_> = responses
                .iter()
                .filter(|(s, _)| s.starts_with('4') || s.starts_with('5'))
                .collect();
            assert!(!errors.is_empty(), "{method} {path} documents no errors");
            for (status, response) in errors {
                let schema = &response["content"]["application/problem+json"]["schema"]["$ref"];
                assert_eq!(
                    schema, "#/components/schemas/Problem",
                    "{method} {path} {status} is not a problem+json Problem"
                );
            }
        }
    }
    let problem = &doc["components"]["schemas"]["Problem"];
    for field in [
        "type",
        "title",
        "status",
        "detail",
        "code",
        "request_id",
        "errors",
    ] {
        assert!(
            problem["properties"][field].is_object(),
            "Problem lacks {field}"
        );
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

#[tokio::test]
async fn the_docs_page_is_html_whose_scripts_and_styles_are_served_locally() {
    let app = TestApp::spawn().await;
    let page = app.get("/docs/").key(None).send(200).await;
    assert!(page
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/html"));
    assert!(page.text.to_ascii_lowercase().contains("<html"));
    assert_security_headers("/docs/", &page);
    let csp = page.header("content-security-policy").unwrap_or("");
    assert!(
        csp.contains("script-src 'self'"),
        "the docs page may run its own scripts: {csp}"
    );

    // Every src/href the page loads is relative to this server.
    let mut assets = Vec::new();
    for attribute in ["src=\"", "href=\""] {
        for (at, _) in page.text.match_indices(attribute) {
            let rest = &page.text[at + attribute.len()..];
            let value = &rest[..rest.find('"').expect("a closing quote")];
            let lower = value.to_ascii_lowercase();
            assert!(
                !lower.starts_with("http:")
                    && !lower.starts_with("https:")
                    && !lower.starts_with("//"),
                "the docs page loads {value} from elsewhere"
            );
            assets.push(value.trim_start_matches("./").to_owned());
        }
    }
    let scripts: Vec<_> = assets.iter().filter(|a| a.ends_with(".js")).collect();
    let styles: Vec<_> = assets.iter().filter(|a| a.ends_with(".css")).collect();
    assert!(
        !scripts.is_empty() && !styles.is_empty(),
        "assets: {assets:?}"
    );
    for asset in scripts.iter().chain(styles.iter()) {
        let served = app.get(&format!("/docs/{asset}")).key(None).send(200).await;
        assert!(!served.text.is_empty(), "{asset} is empty");
        if asset.contains("initializer") {
            assert!(
                !served.text.contains("http://") && !served.text.contains("https://"),
                "{}",
                served.text
            );
            assert!(
                served.text.contains("/openapi.json"),
                "the docs load this server's document"
            );
        }
    }
}

#[tokio::test]
async fn docs_without_a_trailing_slash_lead_to_the_docs_page() {
    let app = TestApp::spawn().await;
    // The harness's client follows redirects.
    let page = app.get("/docs").key(None).send(200).await;
    assert!(page
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/html"));
}

// ---- security headers and CORS --------------------------------------------------

#[tokio::test]
async fn every_api_response_carries_the_security_headers() {
    let app = TestApp::spawn().await;
    let id = app.org_named("Guarded").await;
    let responses = vec![
        ("healthz", app.get("/healthz").send(200).await),
        ("readyz", app.get("/readyz").send(200).await),
        ("metrics", app.get("/metrics").send(200).await),
        ("openapi", app.get("/openapi.json").send(200).await),
        (
            "created",
            app.post("/v1/organizations", &json!({"name": "New"}))
                .send(201)
                .await,
        ),
        (
            "read",
            app.get(&format!("/v1/organizations/{id}")).send(200).await,
        ),
        ("list", app.get("/v1/organizations").send(200).await),
        (
            "no content",
            app.patch(
                &format!("/v1/organizations/{id}"),
                &json!({"description": "x"}),
            )
            .header("prefer", "return=minimal")
            .send(204)
            .await,
        ),
        (
            "unauthenticated",
            app.get("/v1/organizations").key(None).send(401).await,
        ),
        (
            "not found",
            app.get("/v1/organizations/nobody").send(404).await,
        ),
        ("unknown route", app.get("/nowhere").send(404).await),
        (
            "wrong method",
            app.req(Method::DELETE, "/v1/organizations").send(405).await,
        ),
        (
            "validation",
            app.post("/v1/organizations", &json!({"name": ""}))
                .send(422)
                .await,
        ),
        (
            "bad json",
            app.req(Method::POST, "/v1/organizations")
                .raw("application/json", "{")
                .send(400)
                .await,
        ),
        (
            "preflight",
            app.req(Method::OPTIONS, "/v1/organizations")
                .key(None)
                .header("origin", "https://app.example")
                .header("access-control-request-method", "POST")
                .send_any()
                .await,
        ),
    ];
    for (what, response) in &responses {
        assert_security_headers(what, response);
        assert_eq!(
            response.header("content-security-policy"),
            Some(API_CSP),
            "{what}"
        );
    }
}

#[tokio::test]
async fn a_cors_preflight_for_a_conditional_idempotent_patch_is_allowed() {
    let app = TestApp::spawn().await;
    let preflight = app
        .req(Method::OPTIONS, "/v1/organizations/acme")
        .key(None)
        .header("origin", "https://app.example")
        .header("access-control-request-method", "PATCH")
        .header(
            "access-control-request-headers",
            "authorization, content-type, if-match, idempotency-key, prefer",
        )
        .send_any()
        .await;
    assert!(
        (200..300).contains(&preflight.status),
        "preflight answered {}",
        preflight.status
    );
    let origin = preflight
        .header("access-control-allow-origin")
        .unwrap_or("");
    assert!(
        origin == "*" || origin == "https://app.example",
        "allow-origin {origin:?}"
    );
    let methods = comma_list(&preflight, "access-control-allow-methods");
    assert!(methods.iter().any(|m| m == "patch"), "methods {methods:?}");
    let headers = comma_list(&preflight, "access-control-allow-headers");
    for wanted in [
        "authorization",
        "content-type",
        "if-match",
        "idempotency-key",
        "prefer",
    ] {
        assert!(
            headers.iter().any(|h| h == wanted || h == "*"),
            "{wanted} is not allowed: {headers:?}"
        );
    }
}

#[tokio::test]
async fn cors_responses_expose_etag_and_x_request_id() {
    let app = TestApp::spawn().await;
    let id = app.org_named("Exposed").await;
    let read = app
        .get(&format!("/v1/organizations/{id}"))
        .header("origin", "https://app.example")
        .send(200)
        .await;
    assert!(read.header("access-control-allow-origin").is_some());
    let exposed = comma_list(&read, "access-control-expose-headers");
    for wanted in ["etag", "x-request-id"] {
        assert!(
            exposed.iter().any(|h| h == wanted),
            "{wanted} is not exposed: {exposed:?}"
        );
    }
}

/// A request without `Origin` is not a browser's cross-origin request: it gets no
/// `Access-Control-*` headers, but `Vary: Origin`, so that a cache does not hand its
/// answer to one that is (whose answer has them).
#[tokio::test]
async fn a_request_without_an_origin_gets_vary_origin_and_no_cors_headers() {
    let app = TestApp::spawn().await;
    let id = app.org_named("Same origin").await;
    for path in [format!("/v1/organizations/{id}"), "/healthz".into()] {
        let plain = app.get(&path).send(200).await;
        assert_eq!(plain.header("access-control-allow-origin"), None, "{path}");
        assert_eq!(
            plain.header("access-control-expose-headers"),
            None,
            "{path}"
        );
        let vary = comma_list(&plain, "vary");
        assert!(vary.iter().any(|v| v == "origin"), "{path}: vary {vary:?}");

        let cross = app
            .get(&path)
            .header("origin", "https://app.example")
            .send(200)
            .await;
        assert_eq!(cross.header("access-control-allow-origin"), Some("*"));
        let vary = comma_list(&cross, "vary");
        assert!(vary.iter().any(|v| v == "origin"), "{path}: vary {vary:?}");
        assert_eq!(plain.text, cross.text, "{path}: the same answer otherwise");
    }
}

#[tokio::test]
async fn cors_origins_can_be_limited_to_a_list() {
    let app = TestApp::spawn_in(tempfile::tempdir().unwrap(), |serve| {
        serve.cors_origins = "https://allowed.example, https://other.example".into();
    })
    .await;
    let preflight = |origin: &'static str| {
        app.req(Method::OPTIONS, "/v1/organizations")
            .key(None)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send_any()
    };
    let allowed = preflight("https://allowed.example").await;
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://allowed.example")
    );
    let other = preflight("https://other.example").await;
    assert_eq!(
        other.header("access-control-allow-origin"),
        Some("https://other.example")
    );
    let refused = preflight("https://evil.example").await;
    assert_eq!(refused.header("access-control-allow-origin"), None);
}

// ---- request ids ----------------------------------------------------------------

#[tokio::test]
async fn a_sent_x_request_id_is_echoed_and_used_in_problem_bodies() {
    let app = TestApp::spawn().await;
    let ok = app
        .get("/healthz")
        .header("x-request-id", "client-id-42")
        .send(200)
        .await;
    assert_eq!(ok.header("x-request-id"), Some("client-id-42"));
    let problem = app
        .get("/v1/organizations/nobody")
        .header("x-request-id", "client-id-43")
        .send(404)
        .await;
    assert_eq!(problem.header("x-request-id"), Some("client-id-43"));
    assert_eq!(problem.body["request_id"], "client-id-43");
}

#[tokio::test]
async fn an_x_request_id_is_made_when_none_is_sent() {
    let app = TestApp::spawn().await;
    let a = app.get("/healthz").send(200).await;
    let b = app.get("/healthz").send(200).await;
    let a_id = a.header("x-request-id").expect("an x-request-id");
    let b_id = b.header("x-request-id").expect("an x-request-id");
    assert!(!a_id.is_empty() && a_id.len() <= 128);
    assert_ne!(a_id, b_id, "each request gets its own id");
    let problem = app.get("/nowhere").send(404).await;
    assert_eq!(
        problem.body["request_id"].as_str(),
        problem.header("x-request-id"),
        "the problem body names the request id of its response"
    );
}

#[tokio::test]
async fn an_invalid_x_request_id_is_replaced() {
    let app = TestApp::spawn().await;
    for bad in [
        "x".repeat(300),
        "has spaces in it".to_owned(),
        String::new(),
    ] {
        let response = app
            .get("/healthz")
            .header("x-request-id", &bad)
            .send(200)
            .await;
        let id = response.header("x-request-id").expect("an x-request-id");
        assert_ne!(id, bad);
        assert!(!id.is_empty() && id.len() <= 128, "replacement {id:?}");
        assert!(id.bytes().all(|b| b.is_ascii_graphic()));
    }
}

// ---- API keys -------------------------------------------------------------------

#[tokio::test]
async fn a_revoked_key_gets_401_unauthenticated() {
    let app = TestApp::spawn().await;
    let (id, secret) = app
        .key_with_id(&["organizations:read"], None, Some("short-lived"))
        .await;
    app.get("/v1/organizations")
        .key(Some(&secret))
        .send(200)
        .await;
    assert!(app.revoke_key(&id).await);
    let refused = app
        .get("/v1/organizations")
        .key(Some(&secret))
        .send(401)
        .await;
    assert_eq!(refused.code(), "unauthenticated");
    assert!(refused
        .header("www-authenticate")
        .unwrap_or("")
        .starts_with("Bearer"));
    // Other keys are untouched.
    app.get("/v1/organizations").send(200).await;
}

#[tokio::test]
async fn an_unknown_or_malformed_key_gets_401_with_www_authenticate() {
    let app = TestApp::spawn().await;
    for token in [
        Some("orgd_this-key-was-never-issued-0000"),
        Some("not-an-orgd-key"),
        None,
    ] {
        let refused = app.get("/v1/organizations").key(token).send(401).await;
        assert_eq!(refused.code(), "unauthenticated", "for {token:?}");
        assert!(
            refused.header("www-authenticate").is_some(),
            "for {token:?}"
        );
    }
}

fn read_if_exists(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_default()
}

#[tokio::test]
async fn key_secrets_are_stored_only_as_hashes() {
    // Reads the SQLite files byte by byte, so it always runs on SQLite (both stores
    // store the same hash, made in domain::apikey).
    let app = TestApp::spawn_in(tempfile::tempdir().expect("temp dir"), |_| {}).await;
    let (_, secret) = app
        .key_with_id(&["organizations:read"], None, Some("hashed"))
        .await;
    app.get("/v1/organizations")
        .key(Some(&secret))
        .send(200)
        .await;

    let db = app.data_dir.path().join("orgd.db");
    let mut stored = read_if_exists(&db);
    stored.extend(read_if_exists(&db.with_file_name("orgd.db-wal")));
    assert!(!stored.is_empty(), "the SQLite file was not found");
    let contains = |needle: &[u8]| stored.windows(needle.len()).any(|w| w == needle);
    // The check looks at the right bytes: the key's hash is there...
    let hash = hex::encode(Sha256::digest(secret.as_bytes()));
    assert!(
        contains(hash.as_bytes()),
        "the key's SHA-256 is not in the database files"
    );
    // ...but neither the new secret, nor its random part, nor the bootstrap key is.
    assert!(
        !contains(secret.as_bytes()),
        "a key secret is stored in clear"
    );
    assert!(
        !contains(&secret.as_bytes()["orgd_".len()..]),
        "a key secret is stored in clear"
    );
    assert!(
        !contains(app.admin.as_bytes()),
        "the bootstrap key is stored in clear"
    );
}

/// The store configuration of `app`'s database and data dir (and so its secrets
/// key file), for opening the same store again beside the running server.
fn store_config_of(app: &TestApp) -> StoreConfig {
    let database_url = app.pg_schema_name().map(|schema| {
        let base = std::env::var("ORGD_TEST_DATABASE_URL").expect("on PostgreSQL");
        common::pg_url_with_schema(&base, &schema).into()
    });
    StoreConfig {
        data_dir: app.data_dir.path().to_path_buf(),
        database_url,
        database_pool_size: 2,
        org_copies: orgd::store::org_copies::DEFAULT_CAPACITY,
        secrets_key: None,
        secrets_key_file: None,
    }
}

/// Creates an endpoint and rotates its secret; returns its id and the (old, new) secrets.
async fn endpoint_with_rotated_secret(app: &TestApp) -> (String, String, String) {
    let created = app
        .post(
            "/v1/webhooks",
            &json!({"url": "http://127.0.0.1:9/hook", "event_types": ["*"]}),
        )
        .send(201)
        .await
        .body;
    let id = created["id"].as_str().expect("id").to_owned();
    let rotated = app
        .post(&format!("/v1/webhooks/{id}/rotate-secret"), &json!({}))
        .send(200)
        .await
        .body;
    let old = created["secret"].as_str().expect("secret").to_owned();
    let new = rotated["secret"].as_str().expect("secret").to_owned();
    assert_ne!(old, new);
    (id, old, new)
}

fn key_file_of(app: &TestApp) -> SecretsKey {
    let path = orgd::secrets_key_file::default_path(app.data_dir.path());
    let text = std::fs::read_to_string(&path).expect("the data dir holds secrets.key");
    SecretsKey::parse(&text).expect("secrets.key holds a key")
}

#[tokio::test]
async fn a_start_with_another_secrets_key_is_refused_and_the_same_key_reads_the_same_secrets() {
    let app = TestApp::spawn_with(|s| s.webhooks_allow_private = true).await;
    let (id, old, new) = endpoint_with_rotated_secret(&app).await;
    let ours = key_file_of(&app);

    let other = SecretsKey::generate();
    let mut config = store_config_of(&app);
    config.secrets_key = Some(other.to_base64().into());
    let refused = match server::open_store(&config).await {
        Ok(_) => panic!("a store with another secrets key opened"),
        Err(err) => format!("{err:#}"),
    };
    assert!(refused.contains(ours.key_id()), "{refused}");
    assert!(refused.contains(other.key_id()), "{refused}");
    assert!(refused.contains("same ORGD_SECRETS_KEY"), "{refused}");

    // The data dir's key (no setting), and the same key given explicitly, both read
    // back exactly the secrets the API handed out.
    let mut same = store_config_of(&app);
    for explicit in [false, true] {
        if explicit {
            same.secrets_key = Some(ours.to_base64().into());
        }
        let store = server::open_store(&same).await.expect("the same key opens");
        let endpoint = store
            .find_webhook(&WebhookId::parse(&id).unwrap())
            .await
            .expect("the endpoint decodes")
            .expect("the endpoint exists");
        assert_eq!(endpoint.secret.expose(), new);
        assert_eq!(
            endpoint.previous_secret.as_ref().map(|s| s.expose()),
            Some(old.as_str())
        );
    }
}

#[tokio::test]
async fn after_losing_the_secrets_key_a_reset_gives_unreadable_endpoints_new_secrets() {
    let app = TestApp::spawn_with(|s| s.webhooks_allow_private = true).await;
    let (id, _, new) = endpoint_with_rotated_secret(&app).await;
    let config = store_config_of(&app);
    let lost = key_file_of(&app);
    let replacement = SecretsKey::generate();

    let reset = store::reset_unreadable_webhook_secrets(&config.url(), replacement.clone())
        .await
        .expect("the reset runs");
    assert_eq!(reset, vec![id.clone()]);
    // Nothing is left to reset, and the new key now opens the store.
    let again = store::reset_unreadable_webhook_secrets(&config.url(), replacement.clone())
        .await
        .unwrap();
    assert!(again.is_empty());
    let mut with_replacement = config.clone();
    with_replacement.secrets_key = Some(replacement.to_base64().into());
    let store = server::open_store(&with_replacement).await.expect("opens");
    let endpoint = store
        .find_webhook(&WebhookId::parse(&id).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_ne!(
        endpoint.secret.expose(),
        new,
        "the unreadable secret is replaced"
    );
    assert!(endpoint.previous_secret.is_none());
    // The lost key, were it found again, is now the one refused.
    let mut with_lost = config;
    with_lost.secrets_key = Some(lost.to_base64().into());
    assert!(server::open_store(&with_lost).await.is_err());
}

/// Runs one statement on `app`'s database, outside orgd.
async fn execute_sql(app: &TestApp, sql: &str) {
    use sqlx::Connection;
    let config = store_config_of(app);
    if app.on_postgres() {
        let mut conn = sqlx::PgConnection::connect(&config.url()).await.unwrap();
        sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
    } else {
        let mut conn = sqlx::SqliteConnection::connect(&config.url())
            .await
            .unwrap();
        sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
    }
}

#[tokio::test]
async fn secrets_stored_in_clear_by_an_earlier_version_are_sealed_at_the_next_start() {
    let app = TestApp::spawn_with(|s| s.webhooks_allow_private = true).await;
    let (id, old, new) = endpoint_with_rotated_secret(&app).await;
    // What versions before sealing wrote: the secrets themselves.
    execute_sql(
        &app,
        &format!(
            "UPDATE webhook_endpoints SET secret = '{new}', previous_secret = '{old}' \
             WHERE id = '{id}'"
        ),
    )
    .await;
    // Readable as they are until then.
    let webhook_id = WebhookId::parse(&id).unwrap();
    let before = app
        .store()
        .find_webhook(&webhook_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(before.secret.expose(), new);

    let store = server::open_store(&store_config_of(&app)).await.unwrap();
    let after = store.find_webhook(&webhook_id).await.unwrap().unwrap();
    assert_eq!(after.secret.expose(), new);
    assert_eq!(
        after.previous_secret.as_ref().map(|s| s.expose()),
        Some(old.as_str())
    );
    let listed = app.get(&format!("/v1/webhooks/{id}")).send(200).await;
    assert_eq!(listed.body["id"], id.as_str());
    // The rows hold sealed values now: the running server still reads them (same key).
    let mut config = store_config_of(&app);
    config.secrets_key = Some(SecretsKey::generate().to_base64().into());
    assert!(
        server::open_store(&config).await.is_err(),
        "the resealed rows name the data dir's key"
    );
}

#[tokio::test]
async fn webhook_secrets_are_stored_only_sealed_and_never_logged() {
    // Reads the SQLite files byte by byte, so it always runs on SQLite; a real
    // process, so its log can be read too.
    let data = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let admin = "orgd_sealing-test-admin-key-0123456789";
    let mut serve = ServeProcess::start_with(
        data.path(),
        logs.path(),
        &[
            ("ORGD_BOOTSTRAP_KEY", admin),
            ("ORGD_WEBHOOKS_ALLOW_PRIVATE", "true"),
            ("ORGD_LOG", "debug"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let post = |path: String, body: Value| {
        client
            .post(format!("{}{path}", serve.base))
            .bearer_auth(admin)
            .json(&body)
            .send()
    };
    let created: Value = post(
        "/v1/webhooks".into(),
        json!({"url": "http://127.0.0.1:9/hook", "event_types": ["*"]}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let id = created["id"].as_str().expect("id").to_owned();
    let first = created["secret"].as_str().expect("secret").to_owned();
    let rotated: Value = post(format!("/v1/webhooks/{id}/rotate-secret"), json!({}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let second = rotated["secret"].as_str().expect("secret").to_owned();
    // An event, so the fan-out reads (and opens) the endpoint too.
    let org = post("/v1/organizations".into(), json!({"name": "Sealed"}))
        .await
        .unwrap();
    assert_eq!(org.status().as_u16(), 201);

    let key_file = orgd::secrets_key_file::default_path(data.path());
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file)
            .expect("secrets.key exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the secrets key file is owner-only");
    }

    let db = data.path().join("orgd.db");
    let mut stored = read_if_exists(&db);
    stored.extend(read_if_exists(&db.with_file_name("orgd.db-wal")));
    let contains =
        |haystack: &[u8], needle: &[u8]| haystack.windows(needle.len()).any(|w| w == needle);
    // The check looks at the right bytes: the endpoint's row is there...
    assert!(
        contains(&stored, id.as_bytes()),
        "the endpoint's id is not in the database files"
    );
    // ...but neither secret is, whole or as its base64 part.
    for secret in [&first, &second] {
        assert!(secret.starts_with("whsec_"));
        assert!(
            !contains(&stored, secret.as_bytes()),
            "a webhook secret is stored in clear"
        );
        assert!(
            !contains(&stored, &secret.as_bytes()["whsec_".len()..]),
            "a webhook secret's key is stored in clear"
        );
    }

    assert!(serve.terminate(Duration::from_secs(10)).success());
    let log = serve.log();
    assert!(
        log.contains("secrets.key"),
        "the log names the new secrets key file:\n{log}"
    );
    let key = std::fs::read_to_string(&key_file).unwrap();
    for secret in [first.as_str(), second.as_str(), key.trim()] {
        assert!(!log.contains(secret), "the log contains a secret");
    }
    for secret in [&first, &second] {
        assert!(
            !log.contains(&secret["whsec_".len()..]),
            "the log contains a secret"
        );
    }
}

// ---- a real `orgd serve` process ------------------------------------------------

async fn status_with_key(base: &str, key: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{base}/v1/organizations"))
        .bearer_auth(key)
        .send()
        .await
        .expect("orgd answers")
        .status()
        .as_u16()
}

#[tokio::test]
async fn first_start_writes_an_owner_only_bootstrap_key_that_works_and_is_never_logged() {
    let data = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let mut serve = ServeProcess::start(data.path(), logs.path()).await;

    let key_file = data.path().join("bootstrap-admin.key");
    let metadata = std::fs::metadata(&key_file).expect("bootstrap-admin.key exists");
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            metadata.permissions().mode() & 0o777,
            0o600,
            "the key file is owner-only"
        );
    }
    let key = std::fs::read_to_string(&key_file)
        .unwrap()
        .trim()
        .to_owned();
    assert!(key.starts_with("orgd_"), "the file holds an orgd key");

    assert_eq!(status_with_key(&serve.base, &key).await, 200);
    // An all-scopes key: it can write and read events too.
    let created = reqwest::Client::new()
        .post(format!("{}/v1/organizations", serve.base))
        .bearer_auth(&key)
        .json(&json!({"name": "Bootstrapped"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    let org: Value = created.json().await.unwrap();
    let events = reqwest::Client::new()
        .get(format!(
            "{}/v1/organizations/{}/events",
            serve.base,
            org["id"].as_str().unwrap()
        ))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status().as_u16(), 200);

    let status = serve.terminate(Duration::from_secs(10));
    assert!(status.success(), "orgd exited with {status} after SIGTERM");

    let log = serve.log();
    assert!(
        log.contains("bootstrap-admin.key"),
        "the log names the key file:\n{log}"
    );
    assert!(!log.contains(&key), "the log contains the bootstrap key");
    assert!(
        !log.contains(&key["orgd_".len()..]),
        "the log contains the bootstrap key"
    );
}

#[tokio::test]
async fn a_restart_keeps_the_bootstrap_key_instead_of_writing_a_new_one() {
    let data = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let mut first = ServeProcess::start(data.path(), logs.path()).await;
    let key_file = data.path().join("bootstrap-admin.key");
    let key = std::fs::read_to_string(&key_file)
        .unwrap()
        .trim()
        .to_owned();
    assert!(first.terminate(Duration::from_secs(10)).success());

    let mut second = ServeProcess::start(data.path(), logs.path()).await;
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap().trim(),
        key,
        "the key file is unchanged"
    );
    assert_eq!(status_with_key(&second.base, &key).await, 200);
    // After the exit, so the log is complete.
    assert!(second.terminate(Duration::from_secs(10)).success());
    assert!(
        !second.log().contains("wrote a bootstrap"),
        "no new key is written on restart"
    );
}

#[tokio::test]
async fn sigterm_lets_an_idle_server_exit_zero_promptly() {
    let data = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let mut serve = ServeProcess::start(data.path(), logs.path()).await;
    let started = Instant::now();
    let status = serve.terminate(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(5));
    // After exit nothing listens any more.
    assert!(reqwest::Client::new()
        .get(format!("{}/healthz", serve.base))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .is_err());
}

/// A request in flight when the server starts draining is still answered, and its
/// response says `connection: close`: the client then opens its next request
/// elsewhere instead of sending it down a connection that is about to go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_in_flight_while_draining_says_connection_close() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut app = TestApp::spawn().await;
    let id = app.org_named("Draining").await;
    let hold = Hold::start(&app, std::slice::from_ref(&id)).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let body = r#"{"description":"while draining"}"#;
    let request = format!(
        "PATCH /v1/organizations/{id} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        app.admin,
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // The update waits behind the held write; the server starts draining meanwhile.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server = app.server.take().expect("server running");
    let stopping = tokio::spawn(server.stop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !stopping.is_finished(),
        "the drain did not wait for the request"
    );
    hold.release().await;

    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("the server closed the connection after the response")
        .unwrap();
    let text = String::from_utf8_lossy(&response).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    assert!(text.contains("while draining"), "{text}");
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("the server stopped")
        .unwrap();
}

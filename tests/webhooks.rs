//! Webhooks end to end: endpoints over the API, deliveries to a real receiver on
//! this machine, signatures checked with the test's own HMAC code, retries, order
//! per organization, rotation, filters, and the SSRF refusals.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;
use reqwest::Method;
use serde_json::{json, Value};

use common::receiver::{verify, Receiver};
use common::TestApp;

const WAIT: Duration = Duration::from_secs(20);

/// A server that may deliver to this machine, polls often, and retries quickly.
async fn app_delivering_locally(retry_schedule: &str) -> TestApp {
    let schedule = retry_schedule.to_owned();
    TestApp::spawn_with(move |serve| {
        serve.webhooks_allow_private = true;
        serve.webhook_retry_schedule = Some(schedule);
        serve.webhook_timeout = Duration::from_secs(2);
        serve.events_poll_interval = Duration::from_millis(50);
    })
    .await
}

async fn create_endpoint(app: &TestApp, body: Value) -> Value {
    app.post("/v1/webhooks", &body).send(201).await.body
}

async fn endpoint_for(app: &TestApp, receiver: &Receiver, types: &[&str]) -> (String, String) {
    let created = create_endpoint(app, json!({ "url": receiver.url, "event_types": types })).await;
    (
        created["id"].as_str().expect("id").to_owned(),
        created["secret"].as_str().expect("secret").to_owned(),
    )
}

async fn deliveries(app: &TestApp, endpoint: &str) -> Vec<Value> {
    app.get(&format!("/v1/webhooks/{endpoint}/deliveries"))
        .send(200)
        .await
        .body["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn an_endpoint_is_created_with_a_secret_shown_only_on_create() {
    let app = TestApp::spawn_with(|s| s.webhooks_allow_private = true).await;
    let org = app.org_named("Acme").await;
    let created = app
        .post(
            "/v1/webhooks",
            &json!({
                "url": "http://127.0.0.1:9/hook",
                "event_types": ["organization.updated", "organization.created"],
                "organization_id": org,
                "description": "CRM sync",
            }),
        )
        .send(201)
        .await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("whk_"));
    assert_eq!(
        created.header("location"),
        Some(format!("/v1/webhooks/{id}").as_str())
    );
    let secret = created.body["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"));
    assert_eq!(created.body["status"], "active");
    assert_eq!(created.body["organization_id"], org.as_str());
    assert_eq!(created.body["description"], "CRM sync");

    let fetched = app.get(&format!("/v1/webhooks/{id}")).send(200).await;
    assert!(fetched.body.get("secret").is_none(), "{}", fetched.text);
    assert!(!fetched.text.contains(secret));
    assert_eq!(fetched.body["url"], "http://127.0.0.1:9/hook");

    let list = app.get("/v1/webhooks").send(200).await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(list.body["next_cursor"], Value::Null);
    assert!(!list.text.contains(secret));

    let patched = app
        .patch(
            &format!("/v1/webhooks/{id}"),
            &json!({"event_types": ["*"], "description": null, "organization_id": null}),
        )
        .send(200)
        .await;
    assert_eq!(patched.body["event_types"], json!(["*"]));
    assert_eq!(patched.body["description"], Value::Null);
    assert_eq!(patched.body["organization_id"], Value::Null);

    app.req(Method::DELETE, &format!("/v1/webhooks/{id}"))
        .send(204)
        .await;
    let gone = app.get(&format!("/v1/webhooks/{id}")).send(404).await;
    assert_eq!(gone.code(), "webhook_not_found");
    app.get("/v1/webhooks/whk_nope").send(404).await;
}

#[tokio::test]
async fn every_invalid_field_is_reported_with_its_pointer() {
    let app = TestApp::spawn().await;
    let bad = app
        .post(
            "/v1/webhooks",
            &json!({
                "url": "ftp://example.com/",
                "event_types": ["organization.updated", "nope", 3],
                "organization_id": "org_nope",
                "secret": "whsec_mine",
                "colour": "red",
            }),
        )
        .send(422)
        .await;
    assert_eq!(bad.code(), "validation_error");
    assert_eq!(
        bad.field_errors(),
        [
            ("/colour".to_owned(), "unknown_field".to_owned()),
            ("/event_types/2".to_owned(), "invalid_type".to_owned()),
            ("/organization_id".to_owned(), "invalid_id".to_owned()),
            ("/secret".to_owned(), "read_only".to_owned()),
            ("/url".to_owned(), "invalid_url".to_owned()),
        ]
    );
    let missing = app.post("/v1/webhooks", &json!({})).send(422).await;
    assert_eq!(missing.pointers(), ["/event_types", "/url"]);
    let unknown_type = app
        .post(
            "/v1/webhooks",
            &json!({"url": "https://example.com/", "event_types": ["org.made"]}),
        )
        .send(422)
        .await;
    assert_eq!(
        unknown_type.field_errors(),
        [("/event_types/0".to_owned(), "unknown_event_type".to_owned())]
    );
    let no_such_org = app
        .post(
            "/v1/webhooks",
            &json!({"url": "https://example.com/", "event_types": ["*"],
                    "organization_id": "org_01h455vb4pex5vsknk084sn02q"}),
        )
        .send(422)
        .await;
    assert_eq!(no_such_org.pointers(), ["/organization_id"]);
    app.req(Method::POST, "/v1/webhooks")
        .raw("text/plain", "hi")
        .send(415)
        .await;
}

#[tokio::test]
async fn webhook_routes_need_the_webhooks_manage_scope() {
    let app = TestApp::spawn().await;
    let reader = app.key(&["organizations:write", "events:read"], None).await;
    let denied = app.get("/v1/webhooks").key(Some(&reader)).send(403).await;
    assert_eq!(denied.code(), "permission_denied");
    app.get("/v1/webhooks").key(None).send(401).await;
}

#[tokio::test]
async fn private_loopback_and_link_local_targets_are_refused_by_default() {
    let app = TestApp::spawn().await;
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let mut targets: Vec<String> = [
        "http://127.0.0.1/hook",
        "http://127.1.2.3:8080/hook",
        "http://10.0.0.7/",
        "http://172.16.5.4/",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://0.0.0.0/",
        "http://[::1]/",
        "http://[fe80::1]/",
        "http://[fd00::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://2130706433/",
        "http://localhost:8080/",
        "http://LocalHost./",
        "http://api.localhost/",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // A real name resolving to a private address: this machine's own name, when
    // the resolver maps it to one (as /etc/hosts does on most hosts and containers).
    let own_name_is_private = std::net::ToSocketAddrs::to_socket_addrs(&(hostname.as_str(), 80))
        .map(|mut addrs| {
            addrs.any(|a| match a.ip() {
                std::net::IpAddr::V4(v4) => v4.is_loopback() || v4.is_private(),
                std::net::IpAddr::V6(v6) => v6.is_loopback(),
            })
        })
        .unwrap_or(false);
    if own_name_is_private && !hostname.is_empty() {
        targets.push(format!("http://{hostname}:8080/hook"));
    }
    for target in &targets {
        let refused = app
            .post(
                "/v1/webhooks",
                &json!({"url": target, "event_types": ["*"]}),
            )
            .send(422)
            .await;
        assert_eq!(
            refused.field_errors(),
            [("/url".to_owned(), "forbidden_target".to_owned())],
            "{target}: {}",
            refused.text
        );
    }
    // A PATCH cannot move an endpoint onto a private target either.
    let public = create_endpoint(
        &app,
        json!({"url": "https://8.8.8.8/hook", "event_types": ["*"]}),
    )
    .await;
    let id = public["id"].as_str().unwrap();
    let patched = app
        .patch(
            &format!("/v1/webhooks/{id}"),
            &json!({"url": "http://localhost/"}),
        )
        .send(422)
        .await;
    assert_eq!(patched.pointers(), ["/url"]);
}

#[tokio::test]
async fn a_private_target_is_refused_again_at_delivery_time() {
    // Registered while private targets were allowed, delivered by a server that
    // does not allow them: the attempt is refused before any connection is made.
    let receiver = Receiver::ok().await;
    let app = TestApp::spawn_with(|s| {
        s.webhook_retry_schedule = Some("none".into());
        s.events_poll_interval = Duration::from_millis(50);
    })
    .await;
    let now = orgd::domain::time::now();
    let endpoint = orgd::domain::webhook::Endpoint {
        id: orgd::domain::ids::WebhookId::generate(),
        url: orgd::domain::webhook::WebhookUrl::parse(&receiver.url).unwrap(),
        event_types: orgd::domain::webhook::EventTypes::parse(&["*".into()]).unwrap(),
        org_id: None,
        description: None,
        secret: orgd::domain::webhook::SigningSecret::generate(),
        previous_secret: None,
        previous_expires_at: None,
        status: orgd::domain::webhook::EndpointStatus::Active,
        created_at: now,
        updated_at: now,
    };
    app.store().insert_webhook(&endpoint).await.unwrap();
    app.org_named("Acme").await;
    let id = endpoint.id.to_string();
    let deadline = std::time::Instant::now() + WAIT;
    let attempts = loop {
        let attempts = deliveries(&app, &id).await;
        if !attempts.is_empty() || std::time::Instant::now() > deadline {
            break attempts;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0]["succeeded"], false);
    assert_eq!(attempts[0]["status_code"], Value::Null);
    assert!(
        attempts[0]["error"].as_str().unwrap().contains("loopback"),
        "{attempts:?}"
    );
    assert_eq!(receiver.arrivals(), 0);
    let status = app.get(&format!("/v1/webhooks/{id}")).send(200).await;
    assert_eq!(status.body["status"], "failing");
}

#[tokio::test]
async fn changes_are_delivered_as_signed_standard_webhooks() {
    let receiver = Receiver::ok().await;
    let app = app_delivering_locally("100ms").await;
    let (_, secret) = endpoint_for(&app, &receiver, &["*"]).await;
    let org = app
        .create_org(json!({"name": "Acme", "address": {"city": "Berlin"}}))
        .await;
    let id = org["id"].as_str().unwrap();
    app.patch(
        &format!("/v1/organizations/{id}"),
        &json!({"address": {"city": "Munich"}}),
    )
    .send(200)
    .await;
    let got = receiver.wait_for_deliveries(2, WAIT).await;
    let trail = app.events(id).await;
    for (request, event) in got.iter().zip(&trail) {
        assert!(verify(&secret, request), "signature does not verify");
        assert_eq!(request.header("webhook-id"), event["id"].as_str().unwrap());
        assert_eq!(request.header("content-type"), "application/json");
        assert_eq!(request.json["type"], event["type"]);
        assert_eq!(request.json["organization_id"], id);
        assert_eq!(request.json["version"], event["version"]);
        assert_eq!(request.json["actor"]["type"], "api_key");
    }
    assert_eq!(got[1].json["type"], "organization.updated");
    assert_eq!(
        got[1].json["changes"]["/address/city"],
        json!({"from": "Berlin", "to": "Munich"})
    );
    // A wrong secret does not verify.
    assert!(!verify("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &got[0]));
}

/// The webhook fan-out's cursor and the newest event's position (on SQLite `seq`
/// is the position; PostgreSQL numbers events apart).
async fn webhook_cursor_and_newest_event(url: &str) -> (i64, i64) {
    use sqlx::Connection;
    const CURSOR: &str = "SELECT position FROM outbox_cursors WHERE name = 'webhooks'";
    if url.starts_with("sqlite") {
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        let sql = format!("SELECT ({CURSOR}), (SELECT MAX(seq) FROM events)");
        sqlx::query_as(&sql).fetch_one(&mut conn).await.unwrap()
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        let sql = format!("SELECT ({CURSOR}), (SELECT MAX(feed_pos) FROM event_positions)");
        sqlx::query_as(&sql).fetch_one(&mut conn).await.unwrap()
    }
}

/// An endpoint is owed the events that occur once it exists, not those made while
/// there was none (which the fan-out passes over without reading them).
#[tokio::test]
async fn an_endpoint_gets_the_events_after_it_and_none_from_before() {
    let receiver = Receiver::ok().await;
    let app = app_delivering_locally("100ms").await;
    let before = app.create_org(json!({"name": "Before"})).await;
    let before_id = before["id"].as_str().unwrap();
    app.patch(
        &format!("/v1/organizations/{before_id}"),
        &json!({"description": "still no endpoint"}),
    )
    .send(200)
    .await;
    // Several of the pump's rounds (every 50 ms here) pass with no endpoint.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // With no endpoint the fan-out moves its cursor past every event without
    // reading them (sqlite_outbox::skip_past_committed, PgStore::fan_out).
    let (position, newest) = webhook_cursor_and_newest_event(&app.database_url()).await;
    assert_eq!(position, newest);
    assert!(newest >= 2, "the creation and the update are numbered");

    endpoint_for(&app, &receiver, &["*"]).await;
    app.patch(
        &format!("/v1/organizations/{before_id}"),
        &json!({"description": "now with one"}),
    )
    .send(200)
    .await;
    let after = app.create_org(json!({"name": "After"})).await;
    let got = receiver.wait_for_deliveries(2, WAIT).await;
    // Anything else owed would have come with these two.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all = receiver.received();
    assert_eq!(
        all.len(),
        2,
        "{:?}",
        all.iter().map(|r| &r.json).collect::<Vec<_>>()
    );
    let mut seen: Vec<(String, String)> = got
        .iter()
        .map(|r| {
            (
                r.json["type"].as_str().unwrap().to_owned(),
                r.json["organization_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (
                "organization.created".to_owned(),
                after["id"].as_str().unwrap().to_owned()
            ),
            ("organization.updated".to_owned(), before_id.to_owned()),
        ]
    );
    assert_eq!(
        got.iter()
            .find(|r| r.json["type"] == "organization.updated")
            .unwrap()
            .json["changes"]["/description"]["to"],
        "now with one"
    );
}

#[tokio::test]
async fn failed_attempts_are_retried_until_one_succeeds_and_all_are_listed() {
    // 503, 429, then a connection that answers 200.
    let receiver = Receiver::start(|n, _| match n {
        0 => (503, Duration::ZERO),
        1 => (429, Duration::ZERO),
        _ => (200, Duration::ZERO),
    })
    .await;
    let app = app_delivering_locally("100ms,100ms,100ms").await;
    let (endpoint, secret) = endpoint_for(&app, &receiver, &["organization.created"]).await;
    app.org_named("Acme").await;
    let got = receiver.wait_for_deliveries(1, WAIT).await;
    assert!(verify(&secret, &got[0]));
    let all = receiver.received();
    assert_eq!(all.len(), 3);
    assert!(all
        .iter()
        .all(|r| r.header("webhook-id") == all[0].header("webhook-id")));

    let deadline = std::time::Instant::now() + WAIT;
    let attempts = loop {
        let attempts = deliveries(&app, &endpoint).await;
        if attempts.len() == 3 || std::time::Instant::now() > deadline {
            break attempts;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let summary: Vec<(Value, Value, Value)> = attempts
        .iter()
        .map(|a| {
            (
                a["attempt"].clone(),
                a["status_code"].clone(),
                a["succeeded"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (json!(3), json!(200), json!(true)),
            (json!(2), json!(429), json!(false)),
            (json!(1), json!(503), json!(false)),
        ],
        "newest first"
    );
    for attempt in &attempts {
        assert!(attempt["id"].as_str().unwrap().starts_with("dlv_"));
        assert_eq!(attempt["event_id"], all[0].header("webhook-id"));
        assert!(attempt["duration_ms"].is_u64());
        assert!(attempt["attempted_at"].is_string());
    }
    assert_eq!(
        attempts[1]["error"],
        "the receiver answered 429 Too Many Requests"
    );
    // Paging through the log.
    let first = app
        .get(&format!("/v1/webhooks/{endpoint}/deliveries?limit=2"))
        .send(200)
        .await;
    assert_eq!(first.body["items"].as_array().unwrap().len(), 2);
    let cursor = first.body["next_cursor"].as_str().unwrap();
    let rest = app
        .get(&format!(
            "/v1/webhooks/{endpoint}/deliveries?limit=2&cursor={cursor}"
        ))
        .send(200)
        .await;
    assert_eq!(rest.body["items"][0]["attempt"], 1);
    assert_eq!(rest.body["next_cursor"], Value::Null);
}

#[tokio::test]
async fn a_client_error_is_not_retried_and_exhausted_retries_mark_the_endpoint_failing() {
    let refusing = Receiver::start(|_, _| (410, Duration::ZERO)).await;
    let failing = Receiver::start(|_, _| (500, Duration::ZERO)).await;
    let app = app_delivering_locally("50ms,50ms").await;
    let (refused_id, _) = endpoint_for(&app, &refusing, &["*"]).await;
    let (failing_id, _) = endpoint_for(&app, &failing, &["*"]).await;
    app.org_named("Acme").await;
    failing.wait_until(WAIT, |r| r.len() >= 3).await;
    refusing.wait_until(WAIT, |r| !r.is_empty()).await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let status = app
            .get(&format!("/v1/webhooks/{failing_id}"))
            .send(200)
            .await;
        if status.body["status"] == "failing" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never marked failing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(failing.received().len(), 3, "one attempt and two retries");
    assert_eq!(refusing.received().len(), 1, "a 410 is final");
    let refused = deliveries(&app, &refused_id).await;
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["status_code"], 410);
    assert_eq!(refused[0]["succeeded"], false);
    let status = app
        .get(&format!("/v1/webhooks/{refused_id}"))
        .send(200)
        .await;
    assert_eq!(status.body["status"], "active");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let receiver = Receiver::start(|_, _| (307, Duration::ZERO)).await;
    let app = app_delivering_locally("50ms").await;
    let (endpoint, _) = endpoint_for(&app, &receiver, &["*"]).await;
    app.org_named("Acme").await;
    receiver.wait_until(WAIT, |r| !r.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 1);
    let attempts = deliveries(&app, &endpoint).await;
    assert_eq!(attempts[0]["status_code"], 307);
    assert_eq!(attempts[0]["succeeded"], false);
}

#[tokio::test]
async fn after_a_rotation_both_secrets_sign_until_the_grace_period_ends() {
    let receiver = Receiver::ok().await;
    let app = app_delivering_locally("100ms").await;
    let (endpoint, old_secret) = endpoint_for(&app, &receiver, &["*"]).await;
    let rotated = app
        .post(
            &format!("/v1/webhooks/{endpoint}/rotate-secret"),
            &json!({}),
        )
        .send(200)
        .await;
    let new_secret = rotated.body["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, old_secret);
    assert!(rotated.body["previous_secret_expires_at"].is_string());
    app.org_named("Acme").await;
    let got = receiver.wait_for_deliveries(1, WAIT).await;
    let signatures: Vec<&str> = got[0].header("webhook-signature").split(' ').collect();
    assert_eq!(signatures.len(), 2, "{signatures:?}");
    assert!(signatures.iter().all(|s| s.starts_with("v1,")));
    assert!(verify(&old_secret, &got[0]));
    assert!(verify(&new_secret, &got[0]));
}

#[tokio::test]
async fn the_test_route_sends_a_webhook_test_event() {
    let receiver = Receiver::ok().await;
    let app = app_delivering_locally("100ms").await;
    // Subscribed to nothing that will happen: the test event is sent regardless.
    let (endpoint, secret) = endpoint_for(&app, &receiver, &["member.removed"]).await;
    let queued = app
        .post(&format!("/v1/webhooks/{endpoint}/test"), &json!({}))
        .send(202)
        .await;
    assert_eq!(queued.body["type"], "webhook.test");
    let got = receiver.wait_for_deliveries(1, WAIT).await;
    assert!(verify(&secret, &got[0]));
    assert_eq!(got[0].json["type"], "webhook.test");
    assert_eq!(
        got[0].header("webhook-id"),
        queued.body["id"].as_str().unwrap()
    );
}

#[tokio::test]
async fn endpoints_get_only_their_event_types_and_subtree() {
    let all = Receiver::ok().await;
    let subtree = Receiver::ok().await;
    let updates = Receiver::ok().await;
    let app = app_delivering_locally("100ms").await;
    let parent = app.org_named("Parent").await;
    let other = app.org_named("Other").await;
    endpoint_for(&app, &all, &["*"]).await;
    create_endpoint(
        &app,
        json!({"url": subtree.url, "event_types": ["*"], "organization_id": parent}),
    )
    .await;
    endpoint_for(&app, &updates, &["organization.updated"]).await;
    let child = app
        .create_org(json!({"name": "Child", "parent_id": parent}))
        .await;
    let child_id = child["id"].as_str().unwrap();
    app.patch(
        &format!("/v1/organizations/{other}"),
        &json!({"name": "Other 2"}),
    )
    .send(200)
    .await;
    app.patch(
        &format!("/v1/organizations/{child_id}"),
        &json!({"name": "Child 2"}),
    )
    .send(200)
    .await;
    // Parent and Other were created before the endpoints: three events remain.
    all.wait_for_deliveries(3, WAIT).await;
    let subtree_got = subtree.wait_for_deliveries(2, WAIT).await;
    let update_got = updates.wait_for_deliveries(2, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(all.delivered().len(), 3);
    assert_eq!(subtree.delivered().len(), 2);
    assert!(subtree_got
        .iter()
        .all(|r| r.json["organization_id"] == child_id));
    assert_eq!(updates.delivered().len(), 2);
    assert!(update_got
        .iter()
        .all(|r| r.json["type"] == "organization.updated"));
}

#[tokio::test]
async fn a_subtree_key_manages_only_endpoints_inside_its_subtree() {
    let app = TestApp::spawn_with(|s| s.webhooks_allow_private = true).await;
    let mine = app.org_named("Mine").await;
    let theirs = app.org_named("Theirs").await;
    let key = app.key(&["webhooks:manage"], Some(&mine)).await;
    let outside = create_endpoint(
        &app,
        json!({"url": "http://127.0.0.1:9/", "event_types": ["*"]}),
    )
    .await;
    let created = app
        .post(
            "/v1/webhooks",
            &json!({"url": "http://127.0.0.1:9/", "event_types": ["*"]}),
        )
        .key(Some(&key))
        .send(201)
        .await;
    assert_eq!(created.body["organization_id"], mine.as_str());
    app.post(
        "/v1/webhooks",
        &json!({"url": "http://127.0.0.1:9/", "event_types": ["*"], "organization_id": theirs}),
    )
    .key(Some(&key))
    .send(422)
    .await;
    let list = app.get("/v1/webhooks").key(Some(&key)).send(200).await;
    let ids: Vec<&str> = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [created.body["id"].as_str().unwrap()]);
    app.get(&format!("/v1/webhooks/{}", outside["id"].as_str().unwrap()))
        .key(Some(&key))
        .send(404)
        .await;
}

#[tokio::test]
async fn each_organization_s_events_arrive_in_version_order_under_concurrent_updates() {
    // The receiver fails about one request in four, so retries interleave with new
    // events; order must hold regardless. Only a message's first attempt may fail:
    // failing by arrival count alone let parallel streams fall into lockstep, so one
    // message could land on every failing slot until its retries ran out.
    let attempts = std::sync::Mutex::new(std::collections::HashMap::<String, usize>::new());
    let receiver = Receiver::start(move |n, request| {
        let mut attempts = attempts.lock().unwrap();
        let attempt = attempts
            .entry(request.header("webhook-id").to_owned())
            .or_default();
        *attempt += 1;
        if n % 4 == 1 && *attempt == 1 {
            (503, Duration::ZERO)
        } else {
            (200, Duration::from_millis((n % 3) as u64))
        }
    })
    .await;
    let app = app_delivering_locally("20ms,20ms,20ms,20ms,20ms,20ms,20ms,20ms").await;
    let (_, secret) = endpoint_for(&app, &receiver, &["*"]).await;
    let mut orgs = Vec::new();
    for i in 0..4 {
        orgs.push(app.org_named(&format!("Org {i}")).await);
    }
    const UPDATES: usize = 12;
    let updates = orgs
        .iter()
        .flat_map(|org| (0..UPDATES).map(move |i| (org.clone(), i)));
    let results = join_all(updates.map(|(org, i)| {
        let app = &app;
        async move {
            app.patch(
                &format!("/v1/organizations/{org}"),
                &json!({ "metadata": { format!("k{i}"): i } }),
            )
            .send(200)
            .await
        }
    }))
    .await;
    assert_eq!(results.len(), orgs.len() * UPDATES);
    let expected = orgs.len() * (UPDATES + 1);
    receiver
        .wait_for_deliveries(expected, Duration::from_secs(60))
        .await;
    let mut versions: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for request in receiver.delivered() {
        assert!(verify(&secret, &request));
        versions
            .entry(request.json["organization_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(request.json["version"].as_i64().unwrap());
    }
    for org in &orgs {
        let expected: Vec<i64> = (1..=(UPDATES as i64 + 1)).collect();
        assert_eq!(versions[org], expected, "{org}");
    }
}

//! At least once across a crash: an orgd killed (SIGKILL) while a webhook request
//! is in flight, then started again on the same database, still delivers the event
//! once its lease on the message has expired. Duplicates are allowed; loss is not.

mod common;

use std::time::Duration;

use serde_json::json;

use common::process::ServeProcess;
use common::receiver::{verify, Receiver};
use common::SharedDatabase;

const KEY: &str = "orgd_webhook-crash-key-0123456789";

#[tokio::test]
async fn an_orgd_killed_mid_delivery_delivers_after_a_restart() {
    // The first request hangs far beyond the test; later ones succeed.
    let receiver = Receiver::start(|n, _| {
        if n == 0 {
            (200, Duration::from_secs(60))
        } else {
            (200, Duration::ZERO)
        }
    })
    .await;
    let db = SharedDatabase::new().await;
    let data = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let mut env = vec![
        ("ORGD_BOOTSTRAP_KEY", KEY),
        ("ORGD_WEBHOOKS_ALLOW_PRIVATE", "true"),
        // A 1 s timeout makes a 3 s lease: the restarted process waits that long.
        ("ORGD_WEBHOOK_TIMEOUT", "1s"),
        ("ORGD_WEBHOOK_RETRY_SCHEDULE", "100ms,100ms"),
        ("ORGD_EVENTS_POLL_INTERVAL", "50ms"),
    ];
    if let Some(url) = &db.url {
        env.push(("ORGD_DATABASE_URL", url.as_str()));
    }
    let client = reqwest::Client::new();
    let mut first = ServeProcess::start_with(data.path(), logs.path(), &env).await;
    let created: serde_json::Value = client
        .post(format!("{}/v1/webhooks", first.base))
        .bearer_auth(KEY)
        .json(&json!({"url": receiver.url, "event_types": ["*"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = created["secret"].as_str().expect("a secret").to_owned();
    let org: serde_json::Value = client
        .post(format!("{}/v1/organizations", first.base))
        .bearer_auth(KEY)
        .json(&json!({"name": "Crash Test"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    receiver.wait_for_arrivals(1, Duration::from_secs(15)).await;
    first.child.kill().expect("SIGKILL");
    first.child.wait().expect("the killed process is reaped");

    let _second = ServeProcess::start_with(data.path(), logs.path(), &env).await;
    let delivered = receiver
        .wait_for_deliveries(1, Duration::from_secs(20))
        .await;
    assert_eq!(delivered[0].json["organization_id"], org["id"]);
    assert_eq!(delivered[0].json["type"], "organization.created");
    assert!(verify(&secret, &delivered[0]));
}

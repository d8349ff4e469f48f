//! Webhook delivery figures, printed rather than asserted (ignored by default):
//!
//! ```sh
//! cargo test --release --test webhook_bench -- --ignored --nocapture
//! ORGD_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo test --release --test webhook_bench -- --ignored --nocapture
//! ```
//!
//! - throughput: many orgs updated concurrently; events delivered per second to a
//!   local receiver, from the first receipt to the last (the queue is full then, so
//!   this is the delivery pipeline's rate, not the write rate);
//! - latency: one update at a time; from sending the PATCH (the commit happens
//!   before its answer) to the receiver getting the event, p50 and p99. It is an
//!   upper bound of commit-to-receipt: it includes the PATCH's own time, printed
//!   beside it.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::json;

use common::receiver::Receiver;
use common::TestApp;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run with --ignored --nocapture"]
async fn webhook_delivery_throughput_and_latency() {
    let receiver = Receiver::ok().await;
    let app = TestApp::spawn_with(|s| {
        s.webhooks_allow_private = true;
        s.webhook_retry_schedule = Some("1s".into());
    })
    .await;
    let store = if app.on_postgres() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    app.post(
        "/v1/webhooks",
        &json!({"url": receiver.url, "event_types": ["*"]}),
    )
    .send(201)
    .await;

    // ---- throughput ----
    const ORGS: usize = 50;
    const UPDATES: usize = 20;
    let mut orgs = Vec::new();
    for i in 0..ORGS {
        orgs.push(app.org_named(&format!("Bench {i}")).await);
    }
    receiver
        .wait_for_deliveries(ORGS, Duration::from_secs(60))
        .await;
    let already = receiver.delivered().len();
    let writes_started = Instant::now();
    join_all(orgs.iter().map(|org| {
        let app = &app;
        async move {
            for i in 0..UPDATES {
                app.patch(
                    &format!("/v1/organizations/{org}"),
                    &json!({"metadata": {"i": i}}),
                )
                .send(200)
                .await;
            }
        }
    }))
    .await;
    let writes = writes_started.elapsed();
    let total = ORGS * UPDATES;
    receiver
        .wait_for_deliveries(already + total, Duration::from_secs(300))
        .await;
    let delivered = receiver.delivered();
    let batch = &delivered[already..];
    let first = batch.iter().map(|r| r.at).min().unwrap();
    let last = batch.iter().map(|r| r.at).max().unwrap();
    let span = last - first;
    println!(
        "[{store}] throughput: {total} events ({ORGS} orgs x {UPDATES}) delivered in {span:?} \
         = {:.0} events/s (writes took {writes:?} = {:.0} updates/s)",
        total as f64 / span.as_secs_f64(),
        total as f64 / writes.as_secs_f64()
    );

    // ---- latency ----
    const SAMPLES: usize = 200;
    let org = &orgs[0];
    let mut sent_at: HashMap<i64, Instant> = HashMap::new();
    let mut round_trips = Vec::new();
    let before = receiver.delivered().len();
    for i in 0..SAMPLES {
        let start = Instant::now();
        let response = app
            .patch(
                &format!("/v1/organizations/{org}"),
                &json!({"metadata": {"latency": i}}),
            )
            .send(200)
            .await;
        round_trips.push(start.elapsed());
        sent_at.insert(response.body["version"].as_i64().unwrap(), start);
        // Spaced out, so each event meets an idle pipeline.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    receiver
        .wait_for_deliveries(before + SAMPLES, Duration::from_secs(60))
        .await;
    let mut latencies: Vec<Duration> = receiver
        .delivered()
        .iter()
        .filter(|r| r.json["organization_id"] == org.as_str())
        .filter_map(|r| {
            let version = r.json["version"].as_i64()?;
            Some(r.at.saturating_duration_since(*sent_at.get(&version)?))
        })
        .collect();
    latencies.sort();
    round_trips.sort();
    println!(
        "[{store}] latency (PATCH sent -> receipt), {} samples: p50 {:?}, p99 {:?}, max {:?}; \
         PATCH round trip p50 {:?}",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().unwrap(),
        percentile(&round_trips, 0.5),
    );
}

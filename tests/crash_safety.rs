//! Crash safety: orgd is killed with SIGKILL at random moments under concurrent
//! PATCH load, restarted, and every update it acknowledged must still be there.
//! Each client chains `If-Match` on its own orgs, so an acknowledged version is an
//! exact fact to check. CI runs a few cycles on each store; set
//! `ORGD_CRASH_CYCLES=20` (or more) for the long version.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::Mutex;

use common::process::ServeProcess;
use common::SharedDatabase;

const KEY: &str = "orgd_crash-safety-key-0123456789";
const CLIENTS: usize = 8;

/// What each org's last acknowledged update was: version and the `n` it set.
type Acked = Arc<Mutex<BTreeMap<String, (i64, i64)>>>;

async fn client_loop(base: String, orgs: Vec<String>, acked: Acked, count: Arc<AtomicUsize>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut round: i64 = 0;
    loop {
        round += 1;
        for org in &orgs {
            let version = acked.lock().await.get(org).map_or(1, |(v, _)| *v);
            let result = client
                .patch(format!("{base}/v1/organizations/{org}"))
                .bearer_auth(KEY)
                .header("content-type", "application/json")
                .header("if-match", format!("\"{version}\""))
                .body(json!({ "metadata": { "n": round } }).to_string())
                .send()
                .await;
            let Ok(response) = result else {
                return; // the server is gone: this cycle is over for this client
            };
            if response.status() == 200 {
                let Ok(body) = response.json::<Value>().await else {
                    return;
                };
                let new_version = body["version"].as_i64().unwrap_or(0);
                acked.lock().await.insert(org.clone(), (new_version, round));
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A small deterministic generator, so a failing run can be repeated.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_update_survives_sigkill_and_restart() {
    let cycles: usize = std::env::var("ORGD_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let db = SharedDatabase::new().await;
    let data = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let mut env = vec![("ORGD_BOOTSTRAP_KEY", KEY)];
    if let Some(url) = &db.url {
        env.push(("ORGD_DATABASE_URL", url.as_str()));
    }
    let mut server = ServeProcess::start_with(data.path(), logs.path(), &env).await;
    let http = reqwest::Client::new();
    let mut orgs = Vec::new();
    for i in 0..CLIENTS * 2 {
        let body: Value = http
            .post(format!("{}/v1/organizations", server.base))
            .bearer_auth(KEY)
            .header("content-type", "application/json")
            .body(json!({ "name": format!("Crash {i}") }).to_string())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        orgs.push(body["id"].as_str().unwrap().to_owned());
    }
    let acked: Acked = Arc::default();
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut checked = 0usize;
    for cycle in 0..cycles {
        let clients: Vec<_> = orgs
            .chunks(2)
            .map(|chunk| {
                tokio::spawn(client_loop(
                    server.base.clone(),
                    chunk.to_vec(),
                    acked.clone(),
                    acknowledged.clone(),
                ))
            })
            .collect();
        // Let load build, then kill at a random moment.
        let wait = 150 + next_random(&mut seed) % 500;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        for client in clients {
            client.await.unwrap();
        }
        server = ServeProcess::start_with(data.path(), logs.path(), &env).await;
        let snapshot = acked.lock().await.clone();
        for (org, (version, n)) in &snapshot {
            let body: Value = http
                .get(format!("{}/v1/organizations/{org}", server.base))
                .bearer_auth(KEY)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let stored = body["version"].as_i64().unwrap();
            // A write may have committed without its answer arriving (killed in
            // between), so the stored version can be ahead, never behind.
            assert!(
                stored >= *version,
                "cycle {cycle}: {org} lost acknowledged version {version} (has {stored})"
            );
            if stored == *version {
                assert_eq!(
                    body["metadata"]["n"],
                    json!(n),
                    "cycle {cycle}: {org} lost its acknowledged data"
                );
            }
            // Resume chaining from what is really stored.
            acked.lock().await.insert(
                org.clone(),
                (stored, body["metadata"]["n"].as_i64().unwrap_or(0)),
            );
            checked += 1;
        }
    }
    let total = acknowledged.load(Ordering::Relaxed);
    assert!(total > 0, "the load acknowledged no writes");
    eprintln!(
        "crash safety: {cycles} cycles survived; {total} acknowledged updates, \
         the last of each org checked after every restart ({checked} checks)"
    );
}

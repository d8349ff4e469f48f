//! Several `orgd serve` processes on one database, raced through all of them at
//! once: on PostgreSQL with ORGD_TEST_DATABASE_URL (the case that matters), and on
//! a shared SQLite file otherwise.

mod common;

use std::time::Duration;

use futures::future::join_all;
use serde_json::{json, Value};

use common::process::ServeProcess;
use common::SharedDatabase;

const KEY: &str = "orgd_many-processes-key-0123456789";

struct Cluster {
    nodes: Vec<ServeProcess>,
    client: reqwest::Client,
    _db: SharedDatabase,
    _data: tempfile::TempDir,
    _logs: tempfile::TempDir,
}

impl Cluster {
    async fn start(n: usize) -> Cluster {
        let db = SharedDatabase::new().await;
        let data = tempfile::tempdir().unwrap();
        let logs = tempfile::tempdir().unwrap();
        let mut env = vec![("ORGD_BOOTSTRAP_KEY", KEY)];
        if let Some(url) = &db.url {
            env.push(("ORGD_DATABASE_URL", url.as_str()));
        }
        let mut nodes = Vec::new();
        for _ in 0..n {
            nodes.push(ServeProcess::start_with(data.path(), logs.path(), &env).await);
        }
        Cluster {
            nodes,
            client: reqwest::Client::new(),
            _db: db,
            _data: data,
            _logs: logs,
        }
    }

    /// Node `i % n`'s base URL: requests alternate between processes.
    fn node(&self, i: usize) -> &str {
        &self.nodes[i % self.nodes.len()].base
    }

    /// Lets a GET by id through one process see what another just committed: each
    /// process answers those from its own copies, which on SQLite a reading of the
    /// change counter at most 20 ms old vouches for, and on PostgreSQL the change
    /// notifications keep current, about a millisecond after a commit
    /// (docs/storage.md).
    async fn settle() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    /// The statuses and codes of a batch of answers, for assertion messages.
    fn summary(results: &[(u16, Value)]) -> Vec<String> {
        results
            .iter()
            .map(|(s, b)| format!("{s} {}", b["code"].as_str().unwrap_or("")))
            .collect()
    }

    async fn send(
        &self,
        i: usize,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        if_match: Option<&str>,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.node(i)))
            .bearer_auth(KEY)
            .timeout(Duration::from_secs(30));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        if let Some(v) = if_match {
            request = request.header("if-match", v);
        }
        let response = request.send().await.expect("orgd answers");
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// `PATCH path` with `body` through node `i`.
    async fn patch(
        &self,
        i: usize,
        path: &str,
        body: Value,
        if_match: Option<&str>,
    ) -> (u16, Value) {
        self.send(i, reqwest::Method::PATCH, path, Some(body), if_match)
            .await
    }
}

/// Each process plans an update on its copy of its own last write when it has one
/// (src/http/recent_orgs.rs); after another process wrote, that copy is stale and
/// must never be what an answer or a commit rests on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_update_through_one_process_builds_on_what_another_process_wrote_since() {
    let cluster = Cluster::start(2).await;
    let (status, org) = cluster
        .send(
            0,
            reqwest::Method::POST,
            "/v1/organizations",
            Some(json!({"name": "Stale copies"})),
            None,
        )
        .await;
    assert_eq!(status, 201);
    let path = format!("/v1/organizations/{}", org["id"].as_str().unwrap());

    let (status, _) = cluster
        .patch(0, &path, json!({"name": "First"}), None)
        .await;
    assert_eq!(status, 200); // process 0 now holds version 2
    let (status, _) = cluster
        .patch(1, &path, json!({"description": "from process 1"}), None)
        .await;
    assert_eq!(status, 200); // version 3, unknown to process 0

    let (status, org) = cluster
        .patch(0, &path, json!({"metadata": {"k": 1}}), None)
        .await;
    assert_eq!(status, 200, "{org}");
    assert_eq!(org["version"], json!(4));
    assert_eq!(
        org["description"],
        json!("from process 1"),
        "process 1's change was lost"
    );
    assert_eq!(org["name"], json!("First"));

    // The current ETag is accepted by the process whose copy is older (3)…
    let (status, org) = cluster
        .patch(1, &path, json!({"name": "Second"}), Some("\"4\""))
        .await;
    assert_eq!(status, 200, "{org}");
    assert_eq!(org["version"], json!(5));
    assert_eq!(org["metadata"]["k"], json!(1));
    // What is no change to process 0's copy (version 4, name "First") is a change
    // to the stored row: it is decided there, not answered from the copy.
    let (status, org) = cluster
        .patch(0, &path, json!({"name": "First"}), None)
        .await;
    assert_eq!(status, 200, "{org}");
    assert_eq!(
        org["version"],
        json!(6),
        "answered from a stale copy: {org}"
    );
    assert_eq!(org["name"], json!("First"));
    assert_eq!(org["description"], json!("from process 1"));
    // The ETag of process 1's copy (5) is refused there, because it is stale.
    let (status, problem) = cluster
        .patch(1, &path, json!({"name": "Third"}), Some("\"5\""))
        .await;
    assert_eq!(status, 412, "{problem}");
    // A change to nothing answers the stored organization.
    let (status, org) = cluster
        .patch(1, &path, json!({"name": "First"}), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(org["version"], json!(6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_updates_through_two_processes_lose_no_field_and_count_every_change() {
    let cluster = Cluster::start(2).await;
    let (status, org) = cluster
        .send(
            0,
            reqwest::Method::POST,
            "/v1/organizations",
            Some(json!({"name": "Shared"})),
            None,
        )
        .await;
    assert_eq!(status, 201);
    let path = format!("/v1/organizations/{}", org["id"].as_str().unwrap());
    let writes = 40;
    let results = join_all((0..writes).map(|i| {
        let body = json!({ "metadata": { format!("k{i}"): i } });
        cluster.send(i, reqwest::Method::PATCH, &path, Some(body), None)
    }))
    .await;
    assert!(
        results.iter().all(|(s, _)| *s == 200),
        "{:?}",
        Cluster::summary(&results)
    );
    Cluster::settle().await;
    let (_, org) = cluster
        .send(0, reqwest::Method::GET, &path, None, None)
        .await;
    for i in 0..writes {
        assert_eq!(
            org["metadata"][format!("k{i}")],
            json!(i),
            "metadata k{i} was lost"
        );
    }
    assert_eq!(org["version"], json!(1 + writes as i64));

    // One event per change, in version order, seen the same from both processes.
    let (_, events) = cluster
        .send(
            1,
            reqwest::Method::GET,
            &format!("{path}/events?limit=200"),
            None,
            None,
        )
        .await;
    let versions: Vec<i64> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, (1..=1 + writes as i64).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_if_match_through_two_processes_has_exactly_one_winner() {
    let cluster = Cluster::start(2).await;
    let (_, org) = cluster
        .send(
            0,
            reqwest::Method::POST,
            "/v1/organizations",
            Some(json!({"name": "Contested"})),
            None,
        )
        .await;
    let path = format!("/v1/organizations/{}", org["id"].as_str().unwrap());
    let results = join_all((0..12).map(|i| {
        let body = json!({ "name": format!("Winner {i}") });
        cluster.send(i, reqwest::Method::PATCH, &path, Some(body), Some("\"1\""))
    }))
    .await;
    let wins = results.iter().filter(|(s, _)| *s == 200).count();
    let stale = results
        .iter()
        .filter(|(s, b)| *s == 412 && b["code"] == "version_mismatch")
        .count();
    assert_eq!((wins, stale), (1, 11), "{:?}", Cluster::summary(&results));
    Cluster::settle().await;
    let (_, org) = cluster
        .send(1, reqwest::Method::GET, &path, None, None)
        .await;
    assert_eq!(org["version"], json!(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_slug_or_domain_through_two_processes_has_exactly_one_winner() {
    let cluster = Cluster::start(2).await;
    let slugs = join_all((0..10).map(|i| {
        let body = json!({ "name": format!("Racer {i}"), "slug": "race" });
        cluster.send(
            i,
            reqwest::Method::POST,
            "/v1/organizations",
            Some(body),
            None,
        )
    }))
    .await;
    let created = slugs.iter().filter(|(s, _)| *s == 201).count();
    let taken = slugs
        .iter()
        .filter(|(s, b)| *s == 409 && b["code"] == "slug_taken")
        .count();
    assert_eq!((created, taken), (1, 9), "{:?}", Cluster::summary(&slugs));

    let domains = join_all((0..10).map(|i| {
        let body = json!({ "name": format!("Domain racer {i}"), "domains": ["race.example"] });
        cluster.send(
            i,
            reqwest::Method::POST,
            "/v1/organizations",
            Some(body),
            None,
        )
    }))
    .await;
    let created = domains.iter().filter(|(s, _)| *s == 201).count();
    let taken = domains
        .iter()
        .filter(|(s, b)| *s == 409 && b["code"] == "domain_taken")
        .count();
    assert_eq!((created, taken), (1, 9), "{:?}", Cluster::summary(&domains));
    let (_, list) = cluster
        .send(
            1,
            reqwest::Method::GET,
            "/v1/organizations?domain=race.example",
            None,
            None,
        )
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_moves_through_two_processes_never_build_a_cycle() {
    let cluster = Cluster::start(2).await;
    let mut ids = Vec::new();
    for name in ["Left", "Right"] {
        let (_, org) = cluster
            .send(
                0,
                reqwest::Method::POST,
                "/v1/organizations",
                Some(json!({ "name": name })),
                None,
            )
            .await;
        ids.push(org["id"].as_str().unwrap().to_owned());
    }
    // Left under Right and Right under Left at the same time: at most one may win.
    for round in 0..5 {
        let (a, b) = (&ids[0], &ids[1]);
        let results = join_all([
            cluster.send(
                round,
                reqwest::Method::PATCH,
                &format!("/v1/organizations/{a}"),
                Some(json!({ "parent_id": b })),
                None,
            ),
            cluster.send(
                round + 1,
                reqwest::Method::PATCH,
                &format!("/v1/organizations/{b}"),
                Some(json!({ "parent_id": a })),
                None,
            ),
        ])
        .await;
        Cluster::settle().await;
        let (_, left) = cluster
            .send(
                0,
                reqwest::Method::GET,
                &format!("/v1/organizations/{a}"),
                None,
                None,
            )
            .await;
        let (_, right) = cluster
            .send(
                0,
                reqwest::Method::GET,
                &format!("/v1/organizations/{b}"),
                None,
                None,
            )
            .await;
        let cycle = left["parent_id"] == json!(b) && right["parent_id"] == json!(a);
        assert!(
            !cycle,
            "round {round} built a cycle: {:?}",
            Cluster::summary(&results)
        );
        assert!(
            results.iter().all(|(s, _)| [200, 409].contains(s)),
            "{:?}",
            Cluster::summary(&results)
        );
        // Reset both to roots for the next round.
        for id in &ids {
            cluster
                .send(
                    0,
                    reqwest::Method::PATCH,
                    &format!("/v1/organizations/{id}"),
                    Some(json!({ "parent_id": null })),
                    None,
                )
                .await;
        }
    }
}

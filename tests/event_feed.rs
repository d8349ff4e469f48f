//! `GET /v1/events` and its stream: every org's events in commit order, a cursor
//! that is always returned and resumes exactly after the last event seen, subtree
//! keys, and (on PostgreSQL) an event that commits late is not skipped.

mod common;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::TestApp;

async fn fast_app() -> TestApp {
    TestApp::spawn_with(|s| s.events_poll_interval = Duration::from_millis(50)).await
}

/// Reads the feed from `after` until it has at least `n` events (the feed may lag
/// the commit by one pump round on PostgreSQL).
async fn read_feed(app: &TestApp, after: Option<&str>, n: usize) -> (Vec<Value>, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let path = match after {
            Some(cursor) => format!("/v1/events?limit=200&after={cursor}"),
            None => "/v1/events?limit=200".to_owned(),
        };
        let page = app.get(&path).send(200).await.body;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        let cursor = page["next_cursor"]
            .as_str()
            .expect("always a cursor")
            .to_owned();
        if items.len() >= n || Instant::now() > deadline {
            return (items, cursor);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn the_feed_lists_every_organization_s_events_oldest_first_with_a_cursor_on_every_page() {
    let app = fast_app().await;
    let empty = app.get("/v1/events").send(200).await;
    assert_eq!(empty.body["items"], json!([]));
    let start = empty.body["next_cursor"]
        .as_str()
        .expect("a cursor even when empty");

    let a = app.org_named("A").await;
    let b = app.org_named("B").await;
    app.patch(&format!("/v1/organizations/{a}"), &json!({"name": "A2"}))
        .send(200)
        .await;
    let (items, cursor) = read_feed(&app, Some(start), 3).await;
    let seen: Vec<(&str, &str)> = items
        .iter()
        .map(|e| {
            (
                e["organization_id"].as_str().unwrap(),
                e["type"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (a.as_str(), "organization.created"),
            (b.as_str(), "organization.created"),
            (a.as_str(), "organization.updated"),
        ]
    );
    assert_eq!(
        items[2]["changes"]["/name"],
        json!({"from": "A", "to": "A2"})
    );

    // The last page still says where to resume, and resuming there finds nothing new…
    let again = app
        .get(&format!("/v1/events?after={cursor}"))
        .send(200)
        .await;
    assert_eq!(again.body["items"], json!([]));
    assert_eq!(again.body["next_cursor"], cursor.as_str());
    // …until something happens.
    app.patch(&format!("/v1/organizations/{b}"), &json!({"name": "B2"}))
        .send(200)
        .await;
    let (newer, _) = read_feed(&app, Some(&cursor), 1).await;
    assert_eq!(newer.len(), 1);
    assert_eq!(newer[0]["organization_id"], b.as_str());
}

#[tokio::test]
async fn small_pages_walk_the_feed_without_gaps_or_repeats() {
    let app = fast_app().await;
    for i in 0..7 {
        app.org_named(&format!("Org {i}")).await;
    }
    read_feed(&app, None, 7).await;
    let mut cursor: Option<String> = None;
    let mut names = Vec::new();
    for _ in 0..10 {
        let path = match &cursor {
            Some(c) => format!("/v1/events?limit=3&after={c}"),
            None => "/v1/events?limit=3".to_owned(),
        };
        let page = app.get(&path).send(200).await.body;
        let items = page["items"].as_array().unwrap().clone();
        cursor = Some(page["next_cursor"].as_str().unwrap().to_owned());
        if items.is_empty() {
            break;
        }
        names.extend(items.iter().map(|e| e["changes"]["/name"]["to"].clone()));
    }
    let expected: Vec<Value> = (0..7).map(|i| json!(format!("Org {i}"))).collect();
    assert_eq!(names, expected);
}

#[tokio::test]
async fn bad_parameters_and_missing_scope_are_refused() {
    let app = fast_app().await;
    let bad = app.get("/v1/events?after=nope&limit=0").send(422).await;
    assert_eq!(bad.pointers(), ["/limit", "/after"]);
    // A cursor of another list is not a feed cursor.
    let org = app.org_named("A").await;
    let key = app.key(&["organizations:write"], None).await;
    let denied = app.get("/v1/events").key(Some(&key)).send(403).await;
    assert_eq!(denied.code(), "permission_denied");
    app.get("/v1/events/stream").key(Some(&key)).send(403).await;
    app.get("/v1/events").key(None).send(401).await;
    let _ = org;
}

#[tokio::test]
async fn a_key_bound_to_a_subtree_sees_only_its_subtree_s_events() {
    let app = fast_app().await;
    let parent = app.org_named("Parent").await;
    let other = app.org_named("Other").await;
    let child = app
        .create_org(json!({"name": "Child", "parent_id": parent}))
        .await;
    let child = child["id"].as_str().unwrap().to_owned();
    app.patch(
        &format!("/v1/organizations/{other}"),
        &json!({"name": "Other 2"}),
    )
    .send(200)
    .await;
    read_feed(&app, None, 4).await;
    let key = app.key(&["events:read"], Some(&parent)).await;
    let page = app.get("/v1/events").key(Some(&key)).send(200).await;
    let orgs: Vec<&str> = page.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["organization_id"].as_str().unwrap())
        .collect();
    assert_eq!(orgs, [parent.as_str(), child.as_str()]);
}

/// Reads SSE frames until `n` events arrived; returns `(id, event, data)` of each.
async fn read_sse(mut response: reqwest::Response, n: usize) -> Vec<(String, String, Value)> {
    let mut buffer = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while events.len() < n {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("stream events in time")
            .expect("a readable stream")
            .expect("stream still open");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let (mut id, mut kind, mut data) = (String::new(), String::new(), String::new());
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("event:") {
                    kind = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim());
                }
            }
            if !id.is_empty() {
                events.push((id, kind, serde_json::from_str(&data).expect("JSON data")));
            }
        }
    }
    events
}

#[tokio::test]
async fn the_stream_sends_new_events_as_they_happen_and_resumes_after_last_event_id() {
    let app = fast_app().await;
    let client = reqwest::Client::new();
    let first = app.org_named("Before").await;
    let response = client
        .get(format!("{}/v1/events/stream", app.base))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let reader = tokio::spawn(read_sse(response, 3));
    // Events made while the stream is open arrive on it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = app.org_named("During").await;
    app.patch(
        &format!("/v1/organizations/{second}"),
        &json!({"name": "During 2"}),
    )
    .send(200)
    .await;
    let events = reader.await.unwrap();
    let summary: Vec<(&str, &str)> = events
        .iter()
        .map(|(_, kind, data)| (kind.as_str(), data["organization_id"].as_str().unwrap()))
        .collect();
    assert_eq!(
        summary,
        [
            ("organization.created", first.as_str()),
            ("organization.created", second.as_str()),
            ("organization.updated", second.as_str()),
        ]
    );
    // Each id is a feed cursor: a new stream with Last-Event-ID resumes after it.
    let resumed = client
        .get(format!("{}/v1/events/stream", app.base))
        .bearer_auth(&app.admin)
        .header("last-event-id", events[0].0.as_str())
        .send()
        .await
        .unwrap();
    let again = read_sse(resumed, 2).await;
    assert_eq!(again[0].0, events[1].0);
    assert_eq!(again[1].0, events[2].0);
    // The same cursor works for the paged feed.
    let page = app
        .get(&format!("/v1/events?after={}", events[1].0))
        .send(200)
        .await;
    assert_eq!(page.body["items"][0]["type"], "organization.updated");
    let bad = app
        .get("/v1/events/stream")
        .header("last-event-id", "garbage")
        .send(422)
        .await;
    assert_eq!(bad.pointers(), ["/Last-Event-ID"]);
}

/// On PostgreSQL, sequence values are taken at INSERT but transactions commit in
/// any order. A transaction holding an early `seq` that commits after a later one
/// must still appear after the cursor a reader already holds.
#[tokio::test]
async fn an_event_that_commits_late_is_not_skipped() {
    let app = fast_app().await;
    let Some(url) = std::env::var("ORGD_TEST_DATABASE_URL")
        .ok()
        .filter(|_| app.on_postgres())
    else {
        // On SQLite one writer commits at a time: seq order is commit order.
        return;
    };
    let org = app.org_named("Early").await;
    read_feed(&app, None, 1).await;
    // A slow writer: inserts an event (taking the next seq) and queues it for the
    // sequencer, as orgd's own inserts do, and waits to commit.
    use sqlx::Connection;
    let schema = app.pg_schema_name().expect("on PostgreSQL");
    let mut slow = sqlx::PgConnection::connect(&common::pg_url_with_schema(&url, &schema))
        .await
        .unwrap();
    let mut tx = slow.begin().await.unwrap();
    let late_id = orgd::domain::ids::EventId::generate().to_string();
    let doc = json!({
        "id": late_id, "type": "organization.updated", "organization_id": org,
        "actor": {"type": "api_key", "id": "key_01h455vb4pex5vsknk084sn02q"},
        "changes": {"/name": {"from": "Early", "to": "Late"}}, "version": 2,
        "request_id": "slow", "occurred_at": "2026-01-01T00:00:00.000Z"
    });
    sqlx::query(
        "WITH inserted AS (
             INSERT INTO events (id, org_id, type, version, occurred_at, doc)
             VALUES ($1, $2, 'organization.updated', 2, now(), $3::json)
             RETURNING seq)
         INSERT INTO events_unpositioned (seq) SELECT seq FROM inserted",
    )
    .bind(&late_id)
    .bind(&org)
    .bind(doc.to_string())
    .execute(&mut *tx)
    .await
    .unwrap();
    // Meanwhile a later event commits and a reader moves past it.
    let other = app.org_named("Meanwhile").await;
    let (items, cursor) = read_feed(&app, None, 2).await;
    assert_eq!(items.len(), 2, "the uncommitted event is not visible yet");
    assert_eq!(items[1]["organization_id"], other.as_str());
    // The slow writer commits: the reader, resuming from its cursor, gets it.
    tx.commit().await.unwrap();
    let (late, _) = read_feed(&app, Some(&cursor), 1).await;
    assert_eq!(late.len(), 1, "the late event was skipped");
    assert_eq!(late[0]["id"], late_id.as_str());
}

/// A URL for an empty schema of its own, when the tests run on PostgreSQL (the
/// tests below open the store, or its migrations, directly).
async fn fresh_pg_url() -> Option<String> {
    let url = std::env::var("ORGD_TEST_DATABASE_URL")
        .ok()
        .filter(|u| u.starts_with("postgres"))?;
    let schema = common::fresh_pg_schema(&url).await;
    Some(common::pg_url_with_schema(&url, &schema))
}

/// Migration 0005 moves the positions out of `events` (PostgreSQL): every numbered
/// event keeps its position, an unnumbered one is queued, and the sequencer numbers
/// it next, after the last position.
#[tokio::test]
async fn the_positions_migration_keeps_every_position_and_queues_the_rest() {
    use orgd::store::outbox::OutboxStore;
    use sqlx::Connection;
    let Some(url) = fresh_pg_url().await else {
        return; // SQLite has no feed positions of its own
    };
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let before = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir("migrations/postgres").unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.as_str() < "0005" {
            std::fs::copy(&path, before.path().join(&name)).unwrap();
        }
    }
    sqlx::migrate::Migrator::new(before.path())
        .await
        .unwrap()
        .run(&mut conn)
        .await
        .unwrap();
    let mut seqs = Vec::new();
    for (n, feed_pos) in [(1, Some(1_i64)), (2, Some(2)), (3, None)] {
        let id = orgd::domain::ids::EventId::generate().to_string();
        let doc = json!({
            "id": id, "type": "organization.updated",
            "organization_id": "org_01h455vb4pex5vsknk084sn02q",
            "actor": {"type": "api_key", "id": "key_01h455vb4pex5vsknk084sn02q"},
            "changes": {}, "version": n, "request_id": "migration",
            "occurred_at": "2026-01-01T00:00:00.000Z"
        });
        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO events (id, org_id, type, version, occurred_at, doc, feed_pos)
             VALUES ($1, 'org_01h455vb4pex5vsknk084sn02q', 'organization.updated', $2, now(),
                     $3::json, $4)
             RETURNING seq",
        )
        .bind(&id)
        .bind(n)
        .bind(doc.to_string())
        .bind(feed_pos)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        seqs.push(seq);
    }
    sqlx::query("UPDATE outbox_cursors SET position = 2 WHERE name = 'feed'")
        .execute(&mut conn)
        .await
        .unwrap();

    let store = orgd::store::postgres::PgStore::open(
        &url,
        2,
        orgd::domain::secrets_key::SecretsKey::generate(),
    )
    .await
    .unwrap();
    let positions: Vec<(i64, i64)> =
        sqlx::query_as("SELECT feed_pos, seq FROM event_positions ORDER BY feed_pos")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(positions, vec![(1, seqs[0]), (2, seqs[1])]);
    let queued: Vec<i64> = sqlx::query_scalar("SELECT seq FROM events_unpositioned")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(queued, vec![seqs[2]]);
    let column: Option<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns
          WHERE table_schema = current_schema() AND table_name = 'events'
            AND column_name = 'feed_pos'",
    )
    .fetch_optional(&mut conn)
    .await
    .unwrap();
    assert_eq!(column, None);

    assert_eq!(store.assign_feed_positions(10).await.unwrap(), 1);
    let feed = store.feed(0, 10, None).await.unwrap();
    let positions: Vec<i64> = feed.iter().map(|e| e.position).collect();
    assert_eq!(positions, vec![1, 2, 3]);
    assert_eq!(feed[2].event.version, 3);
}

/// Every event passes through the sequencer's queue table, and each leaves a dead
/// row there; the sequencer vacuums it itself rather than leave those rows to
/// autovacuum's once-a-minute visits while every one of its statements scans them.
#[tokio::test]
async fn the_sequencer_vacuums_its_queue() {
    use orgd::store::outbox::OutboxStore;
    use orgd::store::postgres::FEED_QUEUE_VACUUM_EVERY;
    use sqlx::Connection;
    let Some(url) = fresh_pg_url().await else {
        return; // SQLite has no queue: its `seq` is the feed position
    };
    let store = orgd::store::postgres::PgStore::open(
        &url,
        2,
        orgd::domain::secrets_key::SecretsKey::generate(),
    )
    .await
    .unwrap();
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    // Counts only VACUUMs run by a client, not autovacuum's (kept off the table
    // here, so that it cannot hold the lock the sequencer's VACUUM skips on).
    const VACUUMS: &str = "SELECT vacuum_count FROM pg_stat_user_tables
                            WHERE schemaname = current_schema()
                              AND relname = 'events_unpositioned'";
    sqlx::query("ALTER TABLE events_unpositioned SET (autovacuum_enabled = false)")
        .execute(&mut conn)
        .await
        .unwrap();
    let queued = FEED_QUEUE_VACUUM_EVERY as i64 + 100;
    // Only the queue is read and the positions written: no event rows needed.
    sqlx::query("INSERT INTO events_unpositioned (seq) SELECT generate_series(1, $1)")
        .bind(queued)
        .execute(&mut conn)
        .await
        .unwrap();
    let vacuums: i64 = sqlx::query_scalar(VACUUMS)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(vacuums, 0);
    let mut numbered = 0;
    loop {
        match store.assign_feed_positions(500).await.unwrap() {
            0 => break,
            n => numbered += n as i64,
        }
    }
    assert_eq!(numbered, queued);
    // How many dead rows it removed is not asserted: a VACUUM keeps those that
    // another session's open snapshot may still see, and other tests run
    // beside this one on the same database.
    let vacuums: i64 = sqlx::query_scalar(VACUUMS)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(vacuums, 1);
}

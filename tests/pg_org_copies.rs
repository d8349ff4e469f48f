//! The copies a PostgreSQL-backed process answers reads by id from
//! (src/store/org_copies.rs): its own writes are answered at once, another
//! process's and hand edits once PostgreSQL's notification arrives, and nothing
//! kept is answered while notifications cannot arrive. Two stores on one schema
//! stand for two processes. Needs ORGD_TEST_DATABASE_URL (the tests pass without
//! doing anything otherwise); SQLite's copies are tested in tests/group_commit.rs.

mod common;

use std::sync::Arc;
use std::time::Duration;

use orgd::domain::fields::{OrgName, Slug};
use orgd::domain::ids::OrgId;
use orgd::domain::org::Organization;
use orgd::domain::secrets_key::SecretsKey;
use orgd::domain::time;
use orgd::store::postgres::PgStore;
use orgd::store::{OrgLookup, Store};
use sqlx::Connection;

/// The schema's URL, or `None` when not testing on PostgreSQL.
async fn fresh_schema() -> Option<String> {
    let base = std::env::var("ORGD_TEST_DATABASE_URL").ok()?;
    let schema = common::fresh_pg_schema(&base).await;
    Some(common::pg_url_with_schema(&base, &schema))
}

/// A process's store, once it answers from its copies (its listening connection
/// has heard its own probe).
async fn process(url: &str) -> PgStore {
    let store = PgStore::open(url, 4, SecretsKey::generate()).await.unwrap();
    eventually("the store never listened", || async {
        store.caches_api_keys()
    })
    .await;
    store
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what} in 10 s");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn create(store: &PgStore, slug: &str) -> Organization {
    let org = Organization::new(
        OrgId::generate(),
        Slug::parse(slug).unwrap(),
        OrgName::parse(slug).unwrap(),
        time::now(),
    );
    common::store_created(store, &org).await.unwrap();
    org
}

async fn read(store: &PgStore, id: OrgId) -> Organization {
    let org = store.read_org(&OrgLookup::Id(id)).await.unwrap();
    Organization::clone(&org.expect("the org exists"))
}

async fn read_from_copy(store: &PgStore, id: OrgId) -> Organization {
    common::read_from_copy(store, store.org_copies(), id).await
}

/// What a hand edit does: a new name and the next version, in SQL.
async fn edit_by_hand(url: &str, org: &Organization) -> Organization {
    let mut edited = org.clone();
    edited.version += 1;
    edited.name = OrgName::parse("Edited by hand").unwrap();
    let mut sql = sqlx::PgConnection::connect(url).await.unwrap();
    let updated =
        sqlx::query("UPDATE organizations SET doc = $1::json, version = $2 WHERE id = $3")
            .bind(serde_json::to_string(&edited).unwrap())
            .bind(edited.version)
            .bind(org.id.to_string())
            .execute(&mut sql)
            .await
            .unwrap()
            .rows_affected();
    assert_eq!(updated, 1);
    edited
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_by_id_after_a_write_answers_the_write_from_the_copies() {
    let Some(url) = fresh_schema().await else {
        return;
    };
    let store = process(&url).await;
    let created = create(&store, "copied").await;
    assert_eq!(read_from_copy(&store, created.id).await, created);

    let described = common::describe(&store, &created, 1).await;
    let hits = store.org_copies().hits();
    assert_eq!(read(&store, created.id).await, described);
    assert_eq!(store.org_copies().hits(), hits + 1, "not from the copies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_processes_write_and_a_hand_edit_are_answered_once_notified() {
    let Some(url) = fresh_schema().await else {
        return;
    };
    let (one, two) = (process(&url).await, process(&url).await);
    let org = create(&one, "shared").await;
    read_from_copy(&two, org.id).await;

    let described = common::describe(&one, &org, 1).await;
    eventually("process two never answered process one's write", || async {
        read(&two, org.id).await == described
    })
    .await;
    assert_eq!(read_from_copy(&two, org.id).await, described);

    let edited = edit_by_hand(&url, &described).await;
    eventually("process two never answered the hand edit", || async {
        read(&two, org.id).await == edited
    })
    .await;
    assert_eq!(read_from_copy(&two, org.id).await, edited);
}

/// When the listening connection drops, the notifications sent meanwhile are
/// lost: nothing kept may be answered until listening again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_kept_across_a_lost_listening_connection_are_not_answered() {
    let Some(url) = fresh_schema().await else {
        return;
    };
    // Its own application name tells this store's sessions from those of the
    // tests running beside it (in the same process under `cargo test`), whose
    // listening connections must not be ended.
    let name = format!("orgd-test-{}", OrgId::generate());
    let store = process(&format!("{url}&application_name={name}")).await;
    let org = create(&store, "unheard").await;
    read_from_copy(&store, org.id).await;

    let mut sql = sqlx::PgConnection::connect(&url).await.unwrap();
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE application_name = $1 AND query LIKE 'LISTEN%'",
    )
    .bind(&name)
    .fetch_all(&mut sql)
    .await
    .unwrap();
    assert_eq!(ended, [true], "the store's one listening session");
    eventually("the store never noticed the loss", || async {
        !store.org_copies().is_listening()
    })
    .await;
    let edited = edit_by_hand(&url, &org).await;
    assert_eq!(
        read(&store, org.id).await,
        edited,
        "a copy kept before the loss"
    );
    // Listening again (RELISTEN_AFTER, then a probe), it answers from copies again.
    assert_eq!(read_from_copy(&store, org.id).await, edited);
}

/// Readers racing a writer on one org through one process: no read is older than
/// a write already acknowledged when it began, and no reader sees the version go
/// back, while the process's own notifications arrive in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_racing_writes_never_go_back_and_never_miss_an_acknowledged_write() {
    let Some(url) = fresh_schema().await else {
        return;
    };
    let store = Arc::new(process(&url).await);
    let raced = create(&store, "raced").await;
    common::race_readers_against_writes(store.clone(), raced, 200).await;
    assert!(
        store.org_copies().hits() > 0,
        "the copies answered none of the reads"
    );
}

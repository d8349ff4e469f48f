//! How the PostgreSQL store keeps its documents (migration 0007): as `json`, the
//! text orgd wrote, not JSONB's parsed form; and documents that an earlier JSONB
//! column left in its normalized text (keys reordered, spaces added), which the
//! migration's rewrite keeps, still read and update. Needs ORGD_TEST_DATABASE_URL
//! (the tests pass without doing anything otherwise).

mod common;

use orgd::domain::event::EventType;
use orgd::domain::fields::{OrgName, Slug};
use orgd::domain::ids::OrgId;
use orgd::domain::org::Organization;
use orgd::domain::secrets_key::SecretsKey;
use orgd::domain::time;
use orgd::store::postgres::PgStore;
use orgd::store::{OrgFilter, OrgLookup, Store};
use sqlx::Connection;

/// A store on a fresh schema, with the schema's URL; `None` when not testing on
/// PostgreSQL. No copies are kept, so every read below reads the database.
async fn store() -> Option<(PgStore, String)> {
    let base = std::env::var("ORGD_TEST_DATABASE_URL").ok()?;
    let schema = common::fresh_pg_schema(&base).await;
    let url = common::pg_url_with_schema(&base, &schema);
    let store = PgStore::open_keeping(&url, 4, SecretsKey::generate(), 0)
        .await
        .unwrap();
    Some((store, url))
}

/// A store with one organization created in it, and a plain connection to its
/// schema for looking at what was stored.
async fn created() -> Option<(PgStore, Organization, sqlx::PgConnection)> {
    let (store, url) = store().await?;
    let org = create(&store).await;
    let sql = sqlx::PgConnection::connect(&url).await.unwrap();
    Some((store, org, sql))
}

async fn create(store: &PgStore) -> Organization {
    let mut org = Organization::new(
        OrgId::generate(),
        Slug::parse("kept-as-text").unwrap(),
        OrgName::parse("Kept as text").unwrap(),
        time::now(),
    );
    org.metadata
        .insert("zeta".into(), serde_json::json!({"b": 1, "a": [1, 2]}));
    common::store_created(store, &org).await.unwrap();
    org
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_are_kept_as_the_text_orgd_wrote() {
    let Some((_store, org, mut sql)) = created().await else {
        return;
    };
    let types: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::text, data_type::text FROM information_schema.columns
          WHERE table_schema = current_schema() AND column_name = 'doc' ORDER BY 1",
    )
    .fetch_all(&mut sql)
    .await
    .unwrap();
    let expected = ["events", "memberships", "organizations"].map(|t| (t.into(), "json".into()));
    assert_eq!(types, expected);
    let stored: String = sqlx::query_scalar("SELECT doc::text FROM organizations WHERE id = $1")
        .bind(org.id.to_string())
        .fetch_one(&mut sql)
        .await
        .unwrap();
    assert_eq!(stored, serde_json::to_string(&org).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_in_jsonb_normalized_text_still_read_and_update() {
    let Some((store, org, mut sql)) = created().await else {
        return;
    };
    for table in ["organizations", "events"] {
        sqlx::query(&format!("UPDATE {table} SET doc = doc::jsonb::json"))
            .execute(&mut sql)
            .await
            .unwrap();
    }
    let normalized: String = sqlx::query_scalar("SELECT doc::text FROM organizations")
        .fetch_one(&mut sql)
        .await
        .unwrap();
    assert_ne!(normalized, serde_json::to_string(&org).unwrap());

    let read = store.read_org(&OrgLookup::Id(org.id)).await.unwrap();
    assert_eq!(read.as_deref(), Some(&org));
    let listed = store
        .list_orgs(&OrgFilter::default(), None, 10)
        .await
        .unwrap();
    assert_eq!(listed, vec![org.clone()]);
    let events = store.list_org_events(&org.id, None, 10).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].1.event_type, EventType::OrganizationCreated);

    let described = common::describe(&store, &org, 1).await;
    let read = store.read_org(&OrgLookup::Id(org.id)).await.unwrap();
    assert_eq!(read.as_deref(), Some(&described));
}

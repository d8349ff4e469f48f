//! The store's own guarantees, driven through the `Store` trait directly: the same
//! tests run on SQLite and (with ORGD_TEST_DATABASE_URL) on PostgreSQL.

mod common;

use std::sync::Arc;

use common::TestApp;
use orgd::domain::event::{EventContext, EventType};
use orgd::domain::fields::{DomainName, OrgName, Slug};
use orgd::domain::hierarchy::HierarchyError;
use orgd::domain::ids::OrgId;
use orgd::domain::org::Organization;
use orgd::domain::time;
use orgd::store::{Constraint, IdempotencyRecord, OrgFilter, OrgLookup, StoreError};

fn context() -> EventContext {
    common::key_event_context()
}

fn org(slug: &str, parent: Option<OrgId>) -> Organization {
    let mut org = Organization::new(
        OrgId::generate(),
        Slug::parse(slug).unwrap(),
        OrgName::parse(slug).unwrap(),
        time::now(),
    );
    org.parent_id = parent;
    org
}

async fn insert(app: &TestApp, org: &Organization) -> Result<(), StoreError> {
    common::store_created(app.store().as_ref(), org).await
}

/// Writes `next` over `current` (as stored at `current.version`), with an update event.
async fn write(
    app: &TestApp,
    current: &Organization,
    next: &Organization,
) -> Result<(), StoreError> {
    let event = context().event(
        EventType::OrganizationUpdated,
        next.id,
        next.version,
        Default::default(),
    );
    app.store()
        .write_org(current, Arc::new(next.clone()), &event)
        .await
}

#[tokio::test]
async fn a_write_against_a_stale_version_changes_nothing() {
    let app = TestApp::spawn().await;
    let a = org("alpha", None);
    insert(&app, &a).await.unwrap();
    let mut next = a.clone();
    next.version = 2;
    next.alias_name = None;
    write(&app, &a, &next).await.unwrap();
    let mut stale = a.clone();
    stale.version = 2;
    stale.name = OrgName::parse("Stale").unwrap();
    assert!(matches!(
        write(&app, &a, &stale).await,
        Err(StoreError::VersionMismatch)
    ));
    let stored = app
        .store()
        .find_org(&OrgLookup::Id(a.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.name.as_str(), "alpha");
    assert_eq!(
        app.store()
            .list_org_events(&a.id, None, 10)
            .await
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn slug_and_domain_conflicts_map_to_their_constraints() {
    let app = TestApp::spawn().await;
    let mut a = org("alpha", None);
    a.domains = vec![DomainName::parse("alpha.com").unwrap()];
    insert(&app, &a).await.unwrap();
    assert!(matches!(
        insert(&app, &org("alpha", None)).await,
        Err(StoreError::Conflict(Constraint::SlugTaken))
    ));
    let mut b = org("beta", None);
    b.domains = vec![DomainName::parse("alpha.com").unwrap()];
    assert!(matches!(
        insert(&app, &b).await,
        Err(StoreError::Conflict(Constraint::DomainTaken))
    ));
    // The failed inserts left nothing behind: beta's slug is still free.
    assert!(app
        .store()
        .find_org(&OrgLookup::Slug(Slug::parse("beta").unwrap()))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn hierarchy_rules_are_checked_inside_the_write() {
    let app = TestApp::spawn().await;
    let root = org("root", None);
    insert(&app, &root).await.unwrap();
    let child = org("child", Some(root.id));
    insert(&app, &child).await.unwrap();
    let mut moved = root.clone();
    moved.parent_id = Some(child.id);
    moved.version = 2;
    assert!(matches!(
        write(&app, &root, &moved).await,
        Err(StoreError::Hierarchy(HierarchyError::Cycle))
    ));
    let orphan = org("orphan", Some(OrgId::generate()));
    assert!(matches!(
        insert(&app, &orphan).await,
        Err(StoreError::Hierarchy(HierarchyError::ParentNotFound))
    ));
    // A chain of 8 levels is allowed, a 9th is not.
    let mut parent = child.id;
    for level in 3..=8 {
        let next = org(&format!("level-{level}"), Some(parent));
        insert(&app, &next).await.unwrap();
        parent = next.id;
    }
    assert!(matches!(
        insert(&app, &org("level-9", Some(parent))).await,
        Err(StoreError::Hierarchy(HierarchyError::TooDeep { depth: 9 }))
    ));
}

#[tokio::test]
async fn deleting_a_parent_with_live_children_is_refused() {
    let app = TestApp::spawn().await;
    let root = org("root", None);
    insert(&app, &root).await.unwrap();
    insert(&app, &org("kid", Some(root.id))).await.unwrap();
    let mut deleted = root.clone();
    deleted.deleted_at = Some(time::now());
    deleted.version = 2;
    assert!(matches!(
        write(&app, &root, &deleted).await,
        Err(StoreError::Conflict(Constraint::HasChildren))
    ));
}

#[tokio::test]
async fn a_deleted_orgs_slug_and_domains_are_free_and_restoring_needs_them_back() {
    let app = TestApp::spawn().await;
    let mut a = org("alpha", None);
    a.domains = vec![DomainName::parse("alpha.com").unwrap()];
    insert(&app, &a).await.unwrap();
    let mut deleted = a.clone();
    deleted.deleted_at = Some(time::now());
    deleted.version = 2;
    write(&app, &a, &deleted).await.unwrap();
    let mut b = org("alpha", None);
    b.domains = vec![DomainName::parse("alpha.com").unwrap()];
    insert(&app, &b).await.unwrap();
    let mut restored = deleted.clone();
    restored.deleted_at = None;
    restored.version = 3;
    assert!(matches!(
        write(&app, &deleted, &restored).await,
        Err(StoreError::Conflict(_))
    ));
    // The slug resolves to the live holder.
    let found = app
        .store()
        .find_org(&OrgLookup::Slug(Slug::parse("alpha").unwrap()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, b.id);
}

#[tokio::test]
async fn a_second_idempotency_record_for_one_key_is_refused_with_its_org() {
    let app = TestApp::spawn().await;
    let record = |org: &Organization| IdempotencyRecord {
        principal: "key_x".into(),
        key: "k1".into(),
        fingerprint: "f".into(),
        org_id: org.id,
        response: serde_json::json!({"id": org.id.to_string()}),
        created_at: time::now(),
    };
    let a = org("alpha", None);
    let event = context().event(EventType::OrganizationCreated, a.id, 1, Default::default());
    app.store()
        .create_org(&a, &event, None, Some(&record(&a)))
        .await
        .unwrap();
    let b = org("beta", None);
    let event = context().event(EventType::OrganizationCreated, b.id, 1, Default::default());
    assert!(matches!(
        app.store()
            .create_org(&b, &event, None, Some(&record(&b)))
            .await,
        Err(StoreError::Conflict(Constraint::IdempotencyKey))
    ));
    assert!(app
        .store()
        .find_org(&OrgLookup::Id(b.id))
        .await
        .unwrap()
        .is_none());
    let found = app.store().find_idempotency(
        "key_x",
        "k1",
        time::now() - jiff::SignedDuration::from_hours(24),
    );
    assert_eq!(found.await.unwrap().unwrap().org_id, a.id);
}

#[tokio::test]
async fn lists_are_in_id_order_and_filter_by_subtree() {
    let app = TestApp::spawn().await;
    let root = org("root", None);
    insert(&app, &root).await.unwrap();
    let kid = org("kid", Some(root.id));
    insert(&app, &kid).await.unwrap();
    let other = org("other", None);
    insert(&app, &other).await.unwrap();
    let all = app
        .store()
        .list_orgs(&OrgFilter::default(), None, 10)
        .await
        .unwrap();
    let ids: Vec<OrgId> = all.iter().map(|o| o.id).collect();
    assert_eq!(ids, vec![root.id, kid.id, other.id]);
    let within = OrgFilter {
        within: Some(root.id),
        ..Default::default()
    };
    let subtree = app.store().list_orgs(&within, None, 10).await.unwrap();
    assert_eq!(
        subtree.iter().map(|o| o.id).collect::<Vec<_>>(),
        vec![root.id, kid.id]
    );
    let after = app
        .store()
        .list_orgs(&OrgFilter::default(), Some(&kid.id), 10)
        .await
        .unwrap();
    assert_eq!(
        after.iter().map(|o| o.id).collect::<Vec<_>>(),
        vec![other.id]
    );
    assert_eq!(
        app.store().lineage(&kid.id).await.unwrap(),
        vec![kid.id, root.id]
    );
}

//! Group commit on SQLite: concurrent writes share one transaction and one sync,
//! yet each is answered for itself, a refused write never takes its neighbours down,
//! and nothing acknowledged is missing when the store is reopened. (Killing the
//! process mid-load is `crash_safety.rs`, on both stores.)
//!
//! These tests open the SQLite store directly, whatever ORGD_TEST_DATABASE_URL says:
//! batching is SQLite's alone.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use orgd::domain::access::OrgRole;
use orgd::domain::event::{Actor, ActorKind, EventContext, EventType};
use orgd::domain::fields::{DomainName, OrgName, Slug};
use orgd::domain::hierarchy::HierarchyError;
use orgd::domain::ids::OrgId;
use orgd::domain::members::{MemberRuleError, Membership, UserId};
use orgd::domain::org::Organization;
use orgd::domain::patch;
use orgd::domain::secrets_key::SecretsKey;
use orgd::domain::time;
use orgd::store::sqlite::SqliteStore;
use orgd::store::{Constraint, OrgLookup, Store, StoreError};
use sqlx::Connection;

fn context() -> EventContext {
    EventContext {
        actor: Actor {
            kind: ActorKind::ApiKey,
            id: "key_test".into(),
        },
        request_id: "req-test".into(),
        now: time::now(),
    }
}

fn org(slug: &str) -> Organization {
    Organization::new(
        OrgId::generate(),
        Slug::parse(slug).unwrap(),
        OrgName::parse(slug).unwrap(),
        time::now(),
    )
}

async fn create(store: &SqliteStore, org: &Organization) -> Result<(), StoreError> {
    let event = context().event(
        EventType::OrganizationCreated,
        org.id,
        1,
        patch::creation_changes(org),
    );
    store.create_org(org, &event, None, None).await
}

async fn update(
    store: &SqliteStore,
    current: &Organization,
    next: &Organization,
) -> Result<(), StoreError> {
    let event = context().event(
        EventType::OrganizationUpdated,
        next.id,
        next.version,
        Default::default(),
    );
    store
        .write_org(current, Arc::new(next.clone()), &event)
        .await
}

/// Sets the description to `v{n}` (an update that takes the one-statement path)
/// and returns the org as stored.
async fn describe(store: &SqliteStore, current: &Organization, n: u64) -> Organization {
    common::describe(store, current, n).await
}

fn member(org: &Organization, user: &str, role: OrgRole) -> Membership {
    Membership {
        org_id: org.id,
        user_id: UserId::parse(user).unwrap(),
        role,
        display_name: None,
        external_id: None,
        title: None,
        created_at: time::now(),
        updated_at: time::now(),
    }
}

async fn write_member(
    store: &SqliteStore,
    expected: Option<&Membership>,
    after: Option<&Membership>,
) -> Result<(), StoreError> {
    let m = after.or(expected).expect("a membership");
    let event = context().event(EventType::MemberUpdated, m.org_id, 0, Default::default());
    store
        .write_membership(&m.org_id, &m.user_id, expected, after, &event)
        .await
}

fn db_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("orgd.db").display())
}

/// A store on a new database in `dir`, with a key of its own.
async fn fresh_store(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(&db_url(dir), SecretsKey::generate())
        .await
        .unwrap()
}

/// What each write of the batch is, and what it must come back with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Ok,
    SlugTaken,
    DomainTaken,
    Stale,
    NoParent,
    LastOwner,
}

fn outcome(result: &Result<(), StoreError>) -> Expect {
    match result {
        Ok(()) => Expect::Ok,
        Err(StoreError::Conflict(Constraint::SlugTaken)) => Expect::SlugTaken,
        Err(StoreError::Conflict(Constraint::DomainTaken)) => Expect::DomainTaken,
        Err(StoreError::VersionMismatch) => Expect::Stale,
        Err(StoreError::Hierarchy(HierarchyError::ParentNotFound)) => Expect::NoParent,
        Err(StoreError::Member(MemberRuleError::LastOwner)) => Expect::LastOwner,
        Err(other) => panic!("unexpected error: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_write_in_a_batch_does_not_fail_its_neighbours() {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretsKey::generate();
    let store = Arc::new(SqliteStore::open(&db_url(&dir), key.clone()).await.unwrap());
    let mut taken = org("taken");
    taken.domains = vec![DomainName::parse("taken.example.com").unwrap()];
    create(&store, &taken).await.unwrap();
    let existing = org("existing");
    create(&store, &existing).await.unwrap();
    // Orgs that will try to take the slug "taken" by an update (the one-statement path).
    let mut movers = Vec::new();
    for i in 0..5 {
        let mover = org(&format!("mover-{i}"));
        create(&store, &mover).await.unwrap();
        movers.push(mover);
    }

    // One owner: demoting them is refused (the last owner), adding members is not.
    let owned = org("owned");
    create(&store, &owned).await.unwrap();
    let owner = member(&owned, "owner-1", OrgRole::Owner);
    write_member(&store, None, Some(&owner)).await.unwrap();

    // Another connection holds the write lock, so every write below queues up
    // behind the writer's BEGIN IMMEDIATE and they all commit in one batch or two.
    let mut blocker = sqlx::SqliteConnection::connect(&db_url(&dir))
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut blocker)
        .await
        .unwrap();
    let (commits_before, _) = store.commit_stats().read();

    let mut writes: Vec<(Expect, tokio::task::JoinHandle<Result<(), StoreError>>)> = Vec::new();
    for i in 0..40 {
        let store = store.clone();
        let (expect, task) = match i % 8 {
            3 => (Expect::SlugTaken, {
                tokio::spawn(async move { create(&store, &org("taken")).await })
            }),
            4 => (Expect::SlugTaken, {
                let current = movers[i / 8].clone();
                let mut next = current.clone();
                next.version = 2;
                next.slug = Slug::parse("taken").unwrap();
                tokio::spawn(async move { update(&store, &current, &next).await })
            }),
            5 => (Expect::DomainTaken, {
                let mut o = org(&format!("domain-{i}"));
                o.domains = vec![DomainName::parse("taken.example.com").unwrap()];
                tokio::spawn(async move { create(&store, &o).await })
            }),
            6 => (Expect::NoParent, {
                let mut o = org(&format!("orphan-{i}"));
                o.parent_id = Some(OrgId::generate());
                tokio::spawn(async move { create(&store, &o).await })
            }),
            7 => (Expect::Stale, {
                // A copy of a version the store never had.
                let mut current = existing.clone();
                current.version = 6;
                let mut next = existing.clone();
                next.version = 7;
                tokio::spawn(async move { update(&store, &current, &next).await })
            }),
            _ => (Expect::Ok, {
                let o = org(&format!("fresh-{i}"));
                tokio::spawn(async move { create(&store, &o).await })
            }),
        };
        writes.push((expect, task));
    }
    for i in 0..6 {
        let store = store.clone();
        let (expect, task) = if i % 3 == 0 {
            let demoted = member(&owned, "owner-1", OrgRole::Member);
            let owner = owner.clone();
            (Expect::LastOwner, {
                tokio::spawn(
                    async move { write_member(&store, Some(&owner), Some(&demoted)).await },
                )
            })
        } else {
            let added = member(&owned, &format!("user-{i}"), OrgRole::Member);
            (Expect::Ok, {
                tokio::spawn(async move { write_member(&store, None, Some(&added)).await })
            })
        };
        writes.push((expect, task));
    }
    // Let every write reach the writer's queue, then let the writer in.
    tokio::time::sleep(Duration::from_millis(300)).await;
    sqlx::query("COMMIT").execute(&mut blocker).await.unwrap();

    let mut seen = BTreeMap::new();
    for (expect, task) in writes {
        let result = task.await.unwrap();
        assert_eq!(outcome(&result), expect, "{result:?}");
        *seen.entry(format!("{expect:?}")).or_insert(0) += 1;
    }
    assert_eq!(seen["Ok"], 15 + 4);
    assert_eq!(seen["SlugTaken"], 10);
    assert_eq!(seen["LastOwner"], 2);
    let (commits_after, _) = store.commit_stats().read();
    assert!(
        commits_after - commits_before <= 3,
        "46 queued writes took {} commits",
        commits_after - commits_before
    );
    // The successful neighbours are all there; the refused ones left nothing.
    let live = store
        .list_orgs(&Default::default(), None, 200)
        .await
        .unwrap();
    let slugs: Vec<&str> = live.iter().map(|o| o.slug.as_str()).collect();
    assert_eq!(live.len(), 3 + 5 + 15, "{slugs:?}");
    assert!(slugs
        .iter()
        .all(|s| !s.starts_with("domain-") && !s.starts_with("orphan-")));
    let members = store.list_members(&owned.id, None, 100).await.unwrap();
    assert_eq!(members.len(), 5, "{members:?}");
    assert!(members
        .iter()
        .any(|m| m.user_id.as_str() == "owner-1" && m.role == OrgRole::Owner));
    let stored = store
        .find_org(&OrgLookup::Id(existing.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.version, 1);
    for mover in &movers {
        let stored = store
            .find_org(&OrgLookup::Id(mover.id))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (stored.version, stored.slug.as_str()),
            (1, mover.slug.as_str())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_writes_are_all_acknowledged_and_all_present_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let key = SecretsKey::generate();
    let store = Arc::new(SqliteStore::open(&db_url(&dir), key.clone()).await.unwrap());
    // Half with domains, half without: the in-place path must recognise both lists.
    let orgs: Vec<Organization> = (0..20)
        .map(|i| {
            let mut o = org(&format!("org-{i}"));
            if i % 2 == 0 {
                o.domains = vec![
                    DomainName::parse(&format!("org-{i}.example.com")).unwrap(),
                    DomainName::parse(&format!("b{i}.example.org")).unwrap(),
                ];
            }
            o
        })
        .collect();
    for o in &orgs {
        create(&store, o).await.unwrap();
    }
    // 20 orgs × 10 updates each, all in flight at once; each org's updates chain
    // version by version, so each task waits for its previous write.
    let mut tasks = Vec::new();
    for o in orgs.clone() {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut current = o;
            for n in 0..10 {
                current = describe(&store, &current, n).await;
            }
        }));
    }
    let mut fresh = Vec::new();
    for i in 0..100 {
        let store = store.clone();
        let o = org(&format!("new-{i}"));
        fresh.push(o.id);
        tasks.push(tokio::spawn(
            async move { create(&store, &o).await.unwrap() },
        ));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let (commits, writes) = store.commit_stats().read();
    // The description-only updates all take the one-statement path.
    assert_eq!(store.commit_stats().in_place(), 200);
    assert!(writes >= 320, "{writes} writes committed");
    assert!(
        commits < writes,
        "no batching: {commits} commits for {writes} writes"
    );
    drop(store);

    let reopened = SqliteStore::open(&db_url(&dir), key).await.unwrap();
    for o in &orgs {
        let stored = reopened
            .find_org(&OrgLookup::Id(o.id))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.version, 11);
        assert_eq!(stored.description.unwrap().as_str(), "v9");
        let events = reopened.list_org_events(&o.id, None, 100).await.unwrap();
        assert_eq!(events.len(), 11);
    }
    for id in fresh {
        assert!(reopened
            .find_org(&OrgLookup::Id(id))
            .await
            .unwrap()
            .is_some());
    }
}

/// The writer keeps the one connection while batches keep coming; a write that
/// goes straight to that connection (API keys, webhooks, the outbox) must still get
/// its turn within a bounded time, not only when the stream of batches stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_write_gets_its_turn_while_batches_keep_coming() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(fresh_store(&dir).await);
    let stream_for = Duration::from_secs(3);
    let started = std::time::Instant::now();
    let mut writers = Vec::new();
    for i in 0..64 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let mut current = org(&format!("stream-{i}"));
            create(&store, &current).await.unwrap();
            let mut n = 0u64;
            while started.elapsed() < stream_for {
                current = describe(&store, &current, n).await;
                n += 1;
            }
            n
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut waits = Vec::new();
    for _ in 0..5 {
        let asked = std::time::Instant::now();
        // A revocation of a key that does not exist: a direct write that changes nothing.
        let revoked = store
            .revoke_api_key(&orgd::domain::ids::KeyId::generate(), time::now())
            .await
            .unwrap();
        assert!(!revoked);
        waits.push(asked.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let direct_done = started.elapsed();
    let mut updates = 0;
    for writer in writers {
        updates += writer.await.unwrap();
    }
    assert!(
        direct_done < stream_for,
        "the direct writes finished only after the stream ({direct_done:?}); waits {waits:?}"
    );
    assert!(
        waits.iter().all(|w| *w < Duration::from_secs(1)),
        "a direct write waited too long: {waits:?}"
    );
    assert!(
        updates > 500,
        "the stream was too thin to test: {updates} updates"
    );
}

/// The one-statement update leaves `slug` out of its SET list when it is
/// unchanged (so the slug index is not rewritten) and names it when it changes:
/// a rename must move the index entry, and a taken slug must still be refused.
#[tokio::test]
async fn a_rename_in_place_moves_the_slug_and_a_taken_slug_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_store(&dir).await;
    let first = org("first");
    let second = org("second");
    create(&store, &first).await.unwrap();
    create(&store, &second).await.unwrap();
    let find = |slug: &str| {
        let lookup = OrgLookup::Slug(Slug::parse(slug).unwrap());
        let store = &store;
        async move { store.find_org(&lookup).await.unwrap().map(|o| o.id) }
    };

    let mut renamed = first.clone();
    renamed.version += 1;
    renamed.slug = Slug::parse("first-renamed").unwrap();
    update(&store, &first, &renamed).await.unwrap();
    assert_eq!(find("first-renamed").await, Some(first.id));
    assert_eq!(find("first").await, None);

    // Unchanged slug, other fields changed: the entry stays where it is.
    let mut described = renamed.clone();
    described.version += 1;
    described.name = OrgName::parse("First, described").unwrap();
    update(&store, &renamed, &described).await.unwrap();
    assert_eq!(find("first-renamed").await, Some(first.id));

    // The freed slug can be taken; a taken one is refused and changes nothing.
    let mut takes_freed = second.clone();
    takes_freed.version += 1;
    takes_freed.slug = Slug::parse("first").unwrap();
    update(&store, &second, &takes_freed).await.unwrap();
    let mut takes_taken = takes_freed.clone();
    takes_taken.version += 1;
    takes_taken.slug = Slug::parse("first-renamed").unwrap();
    assert!(matches!(
        update(&store, &takes_freed, &takes_taken).await,
        Err(StoreError::Conflict(Constraint::SlugTaken))
    ));
    assert_eq!(find("first").await, Some(second.id));
    assert_eq!(find("first-renamed").await, Some(first.id));
    assert_eq!(store.commit_stats().in_place(), 3);
}

async fn messages(sql: &mut sqlx::SqliteConnection) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM webhook_messages")
        .fetch_one(sql)
        .await
        .unwrap()
}

/// The webhook fan-out runs as a step of a batch (it shares the batch's commit
/// instead of taking the writer connection for a transaction of its own). A step
/// that fails — here an endpoint whose secret cannot be read — fails alone: the
/// writes queued with it commit, and the fan-out cursor stays where it was, so
/// once the endpoint is readable again every event is fanned out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fan_out_step_fails_no_write_of_its_batch_and_loses_no_event() {
    use orgd::domain::webhook::{EndpointStatus, EventTypes, SigningSecret, WebhookUrl};
    use orgd::store::outbox::OutboxStore;

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(fresh_store(&dir).await);
    let created = time::now() - jiff::SignedDuration::from_secs(1);
    let endpoint = orgd::domain::webhook::Endpoint {
        id: orgd::domain::ids::WebhookId::generate(),
        url: WebhookUrl::parse("https://hooks.example.com/orgd").unwrap(),
        event_types: EventTypes::parse(&["*".into()]).unwrap(),
        org_id: None,
        description: None,
        secret: SigningSecret::generate(),
        previous_secret: None,
        previous_expires_at: None,
        status: EndpointStatus::Active,
        created_at: created,
        updated_at: created,
    };
    store.insert_webhook(&endpoint).await.unwrap();
    let now_ms = || time::now().as_millisecond();
    let mut sql = sqlx::SqliteConnection::connect(&db_url(&dir))
        .await
        .unwrap();

    create(&store, &org("first")).await.unwrap();
    assert_eq!(store.fan_out(500, now_ms()).await.unwrap(), 1);
    assert_eq!(messages(&mut sql).await, 1);

    let sealed: String = sqlx::query_scalar("SELECT secret FROM webhook_endpoints WHERE id = ?1")
        .bind(endpoint.id.to_string())
        .fetch_one(&mut sql)
        .await
        .unwrap();
    sqlx::query("UPDATE webhook_endpoints SET secret = 'not sealed' WHERE id = ?1")
        .bind(endpoint.id.to_string())
        .execute(&mut sql)
        .await
        .unwrap();

    // An event the next step has to cover (the pump looks for one before it queues
    // a step); then hold the write lock so the writes and the step queue into one batch.
    create(&store, &org("second")).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut sql)
        .await
        .unwrap();
    let mut writes = Vec::new();
    for i in 0..10 {
        let store = store.clone();
        writes.push(tokio::spawn(async move {
            create(&store, &org(&format!("before-{i}"))).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let fan_out = {
        let store = store.clone();
        tokio::spawn(async move { store.fan_out(500, now_ms()).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..10 {
        let store = store.clone();
        writes.push(tokio::spawn(async move {
            create(&store, &org(&format!("after-{i}"))).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (commits_before, _) = store.commit_stats().read();
    sqlx::query("COMMIT").execute(&mut sql).await.unwrap();

    let failed = fan_out.await.unwrap();
    assert!(
        matches!(&failed, Err(StoreError::Other(e)) if e.to_string().contains("cannot be read")),
        "{failed:?}"
    );
    for write in writes {
        write.await.unwrap().unwrap();
    }
    let (commits_after, _) = store.commit_stats().read();
    assert!(
        commits_after - commits_before <= 3,
        "21 queued steps took {} commits",
        commits_after - commits_before
    );
    assert_eq!(
        messages(&mut sql).await,
        1,
        "the failed step queued nothing"
    );

    sqlx::query("UPDATE webhook_endpoints SET secret = ?2 WHERE id = ?1")
        .bind(endpoint.id.to_string())
        .bind(&sealed)
        .execute(&mut sql)
        .await
        .unwrap();
    assert_eq!(store.fan_out(500, now_ms()).await.unwrap(), 21);
    assert_eq!(messages(&mut sql).await, 22);
    assert_eq!(store.fan_out(500, now_ms()).await.unwrap(), 0);
}

// ---- the copies reads by id are answered from (store/org_copies.rs) ----------

async fn find(store: &SqliteStore, id: OrgId) -> Organization {
    let org = store
        .read_org(&OrgLookup::Id(id))
        .await
        .unwrap()
        .expect("the org exists");
    Organization::clone(&org)
}

async fn find_from_copy(store: &SqliteStore, id: OrgId) -> Organization {
    common::read_from_copy(store, store.org_copies(), id).await
}

/// What another process or a hand edit does: a new name and version, in SQL.
async fn edit_behind_its_back(dir: &tempfile::TempDir, org: &Organization) -> Organization {
    let mut edited = org.clone();
    edited.version += 1;
    edited.name = OrgName::parse("Edited by hand").unwrap();
    let mut sql = sqlx::SqliteConnection::connect(&db_url(dir)).await.unwrap();
    let updated = sqlx::query("UPDATE organizations SET doc = ?1, version = ?2 WHERE id = ?3")
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
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_store(&dir).await;
    let created = org("copied");
    create(&store, &created).await.unwrap();
    assert_eq!(find_from_copy(&store, created.id).await, created);

    // The writer keeps what it committed before it answers: the next read is a hit
    // and already the new version.
    let described = describe(&store, &created, 1).await;
    let hits = store.org_copies().hits();
    assert_eq!(find(&store, created.id).await, described);
    assert_eq!(store.org_copies().hits(), hits + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_connections_edit_is_answered_after_the_next_batch_or_the_freshness_window() {
    let dir = tempfile::tempdir().unwrap();
    let store = fresh_store(&dir).await;
    let (edited_first, bystander, edited_later) = (org("first"), org("bystander"), org("later"));
    for o in [&edited_first, &bystander, &edited_later] {
        create(&store, o).await.unwrap();
        find_from_copy(&store, o.id).await;
    }

    // Any batch reads the writer's change counter under its write lock, so a
    // commit by another connection is seen before the batch answers.
    let edited = edit_behind_its_back(&dir, &edited_first).await;
    let drops = store.org_copies().drops();
    describe(&store, &bystander, 1).await;
    assert_eq!(
        store.org_copies().drops(),
        drops + 1,
        "the batch did not see the other connection's commit"
    );
    assert_eq!(find(&store, edited_first.id).await, edited);

    // With no write in this process, within 20 ms (the copies' freshness window).
    // What writes plan on (`find_org`) never comes from the copies: at once.
    find_from_copy(&store, edited_later.id).await;
    let edited = edit_behind_its_back(&dir, &edited_later).await;
    let stored = store
        .find_org(&OrgLookup::Id(edited_later.id))
        .await
        .unwrap();
    assert_eq!(stored, Some(edited.clone()));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(find(&store, edited_later.id).await, edited);
}

/// Readers racing a writer on one org: no read is older than a write already
/// acknowledged when it began, and no reader sees the version go back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_racing_writes_never_go_back_and_never_miss_an_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(fresh_store(&dir).await);
    let raced = org("raced");
    create(&store, &raced).await.unwrap();
    common::race_readers_against_writes(store.clone(), raced, 300).await;
    assert!(
        store.org_copies().hits() > 0,
        "the copies answered none of the reads"
    );
}

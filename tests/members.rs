//! Memberships (SPEC §3): `GET /v1/organizations/{org}/members` and
//! `GET|PUT|DELETE /v1/organizations/{org}/members/{user_id}` — who manages whom,
//! the last-owner and member-limit rules (also under concurrency), the audit trail
//! of every change, and how organization roles govern creating and moving orgs.
//! Black-box: a real server, over HTTP, with user tokens and API keys.

mod common;

use std::collections::BTreeMap;

use common::{TestApp, TestResponse, UserClaims};
use futures::future::join_all;
use reqwest::Method;
use serde_json::{json, Value};

// ---- helpers --------------------------------------------------------------------

fn token(sub: &str) -> String {
    UserClaims::new(sub).token()
}

fn org_path(org: &str) -> String {
    format!("/v1/organizations/{org}")
}

fn members_path(org: &str) -> String {
    format!("/v1/organizations/{org}/members")
}

fn member_path(org: &str, user: &str) -> String {
    format!("/v1/organizations/{org}/members/{user}")
}

/// `PUT …/members/{user}` with `body`, as `by` (a token or a key).
async fn put_member(app: &TestApp, by: &str, org: &str, user: &str, body: Value) -> TestResponse {
    app.req(Method::PUT, &member_path(org, user))
        .json(&body)
        .key(Some(by))
        .send_any()
        .await
}

/// `DELETE …/members/{user}`, as `by`.
async fn remove_member(app: &TestApp, by: &str, org: &str, user: &str) -> TestResponse {
    app.req(Method::DELETE, &member_path(org, user))
        .key(Some(by))
        .send_any()
        .await
}

fn expect(response: &TestResponse, status: u16, code: Option<&str>) {
    assert_eq!(response.status, status, "{}", response.text);
    if let Some(code) = code {
        assert_eq!(response.code(), code, "{}", response.text);
        assert_eq!(
            response.header("content-type"),
            Some("application/problem+json")
        );
    }
}

/// An organization created by user `sub` (who becomes its owner); its id.
async fn org_of(app: &TestApp, sub: &str, name: &str) -> String {
    let org = app
        .post("/v1/organizations", &json!({ "name": name }))
        .key(Some(&token(sub)))
        .send(201)
        .await
        .body;
    org["id"].as_str().expect("id").to_owned()
}

/// Every member of the org as `user_id → role`, read with the admin key.
async fn roles(app: &TestApp, org: &str) -> BTreeMap<String, String> {
    let mut all = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("{}?limit=200&cursor={c}", members_path(org)),
            None => format!("{}?limit=200", members_path(org)),
        };
        let page = app.get(&path).send(200).await.body;
        for m in page["items"].as_array().expect("items") {
            all.insert(
                m["user_id"].as_str().unwrap().to_owned(),
                m["role"].as_str().unwrap().to_owned(),
            );
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return all,
        }
    }
}

fn role_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(u, r)| (u.to_string(), r.to_string()))
        .collect()
}

fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// What must stay the same when a request is refused.
struct Snapshot {
    members: BTreeMap<String, String>,
    full_members: Value,
    events: usize,
}

async fn snapshot(app: &TestApp, org: &str) -> Snapshot {
    Snapshot {
        members: roles(app, org).await,
        full_members: app
            .get(&format!("{}?limit=200", members_path(org)))
            .send(200)
            .await
            .body,
        events: app.events(org).await.len(),
    }
}

async fn assert_unchanged(app: &TestApp, org: &str, before: &Snapshot) {
    let now = snapshot(app, org).await;
    assert_eq!(now.members, before.members, "the members changed");
    assert_eq!(
        now.full_members, before.full_members,
        "a membership changed although the request was refused"
    );
    assert_eq!(
        now.events, before.events,
        "an event was recorded although the request was refused"
    );
}

/// An org owned by alice, with bob as admin and carol as member.
async fn team(app: &TestApp) -> String {
    let org = org_of(app, "alice", "Team").await;
    let alice = token("alice");
    expect(
        &put_member(app, &alice, &org, "bob", json!({"role": "admin"})).await,
        201,
        None,
    );
    expect(
        &put_member(app, &alice, &org, "carol", json!({"role": "member"})).await,
        201,
        None,
    );
    org
}

// ---- creation and ownership -------------------------------------------------------

#[tokio::test]
async fn a_user_who_creates_an_organization_becomes_its_owner() {
    let app = TestApp::spawn_with_users().await;
    let org = org_of(&app, "alice", "Acme").await;
    assert_eq!(roles(&app, &org).await, role_map(&[("alice", "owner")]));

    let me = app
        .get(&member_path(&org, "alice"))
        .key(Some(&token("alice")))
        .send(200)
        .await
        .body;
    assert_eq!(me["role"], "owner");
    assert_eq!(me["user_id"], "alice");
    assert_eq!(me["organization_id"], org.as_str());
    assert!(me["created_at"].is_string());

    let events = app.events(&org).await;
    assert_eq!(types(&events), ["organization.created"]);
    assert_eq!(events[0]["actor"], json!({"type": "user", "id": "alice"}));

    // An org created with an API key has no members at all.
    let keyed = app.org_named("Keyed").await;
    assert!(roles(&app, &keyed).await.is_empty());
}

#[tokio::test]
async fn a_child_organization_needs_owner_or_admin_on_the_parent() {
    let app = TestApp::spawn_with_users().await;
    let parent = team(&app).await;
    for (user, status) in [("alice", 201), ("bob", 201)] {
        let response = app
            .post(
                "/v1/organizations",
                &json!({"name": format!("Child of {user}"), "parent_id": parent}),
            )
            .key(Some(&token(user)))
            .send(status)
            .await;
        assert_eq!(response.body["parent_id"], parent.as_str());
        let child = response.body["id"].as_str().unwrap();
        assert_eq!(
            roles(&app, child).await,
            role_map(&[(user, "owner")]),
            "the creator owns the child"
        );
    }
    let refused = app
        .post(
            "/v1/organizations",
            &json!({"name": "Carol's child", "parent_id": parent}),
        )
        .key(Some(&token("carol")))
        .send(403)
        .await;
    assert_eq!(refused.code(), "permission_denied");
    // A stranger cannot even learn the parent exists.
    let stranger = app
        .post(
            "/v1/organizations",
            &json!({"name": "Dave's child", "parent_id": parent}),
        )
        .key(Some(&token("dave")))
        .send(422)
        .await;
    assert_eq!(stranger.pointers(), ["/parent_id"]);
    let children = app
        .get(&format!("{}/children", org_path(&parent)))
        .send(200)
        .await
        .body;
    assert_eq!(children["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn moving_an_organization_needs_owner_on_it_and_owner_or_admin_on_the_new_parent() {
    let app = TestApp::spawn_with_users().await;
    let alice = token("alice");
    let bob = token("bob");
    // alice owns Mover, bob is its admin; bob owns Target.
    let moving = org_of(&app, "alice", "Mover").await;
    let target = org_of(&app, "bob", "Target").await;
    expect(
        &put_member(&app, &alice, &moving, "bob", json!({"role": "admin"})).await,
        201,
        None,
    );
    let move_to_target = json!({"parent_id": target});

    // An admin of the org may not move it, even under a parent they own.
    let response = app
        .patch(&org_path(&moving), &move_to_target)
        .key(Some(&bob))
        .send(403)
        .await;
    assert_eq!(response.code(), "permission_denied");
    // The owner may not move it under an org they cannot see: it is "not found".
    let response = app
        .patch(&org_path(&moving), &move_to_target)
        .key(Some(&alice))
        .send(422)
        .await;
    assert_eq!(response.pointers(), ["/parent_id"]);
    // Nor under one where they are only a member.
    expect(
        &put_member(&app, &bob, &target, "alice", json!({"role": "member"})).await,
        201,
        None,
    );
    let response = app
        .patch(&org_path(&moving), &move_to_target)
        .key(Some(&alice))
        .send(403)
        .await;
    assert_eq!(response.code(), "permission_denied");
    let unchanged = app.get(&org_path(&moving)).send(200).await.body;
    assert_eq!(
        unchanged["parent_id"],
        Value::Null,
        "refused moves change nothing"
    );
    assert_eq!(unchanged["version"], 1);
    // Owner here and admin there: allowed.
    expect(
        &put_member(&app, &bob, &target, "alice", json!({"role": "admin"})).await,
        200,
        None,
    );
    let moved = app
        .patch(&org_path(&moving), &move_to_target)
        .key(Some(&alice))
        .send(200)
        .await;
    assert_eq!(moved.body["parent_id"], target.as_str());
}

// ---- the lifecycle of a membership ------------------------------------------------

#[tokio::test]
async fn an_owner_adds_updates_and_removes_members_each_with_one_event() {
    let app = TestApp::spawn_with_users().await;
    let alice = token("alice");
    let org = org_of(&app, "alice", "Acme").await;

    let bob = put_member(
        &app,
        &alice,
        &org,
        "bob",
        json!({"role": "admin", "display_name": "Bob B."}),
    )
    .await;
    expect(&bob, 201, None);
    assert_eq!(bob.body["role"], "admin");
    assert_eq!(bob.body["user_id"], "bob");
    assert_eq!(bob.body["organization_id"], org.as_str());
    assert_eq!(bob.body["display_name"], "Bob B.");
    assert_eq!(bob.body["title"], Value::Null);

    let carol = put_member(&app, &alice, &org, "carol", json!({})).await;
    expect(&carol, 201, None);
    assert_eq!(carol.body["role"], "member", "the default role");

    let events = app.events(&org).await;
    assert_eq!(
        types(&events),
        ["organization.created", "member.added", "member.added"]
    );
    assert_eq!(
        events[1]["changes"],
        json!({
            "/members/bob/role": {"from": null, "to": "admin"},
            "/members/bob/display_name": {"from": null, "to": "Bob B."},
        })
    );
    assert_eq!(events[1]["actor"], json!({"type": "user", "id": "alice"}));
    assert_eq!(events[1]["organization_id"], org.as_str());
    assert_eq!(
        events[2]["changes"],
        json!({"/members/carol/role": {"from": null, "to": "member"}})
    );

    // An update: only what changed is in the event.
    let updated = put_member(
        &app,
        &alice,
        &org,
        "carol",
        json!({"title": "Group manager"}),
    )
    .await;
    expect(&updated, 200, None);
    assert_eq!(updated.body["title"], "Group manager");
    assert_eq!(updated.body["role"], "member");
    let events = app.events(&org).await;
    assert_eq!(events.len(), 4);
    assert_eq!(events[3]["type"], "member.updated");
    assert_eq!(
        events[3]["changes"],
        json!({"/members/carol/title": {"from": null, "to": "Group manager"}})
    );

    // No-ops answer 200 and record nothing.
    for body in [
        json!({"title": "Group manager"}),
        json!({"role": "member"}),
        json!({}),
    ] {
        let same = put_member(&app, &alice, &org, "carol", body.clone()).await;
        expect(&same, 200, None);
        assert_eq!(same.body["title"], "Group manager", "{body}");
    }
    assert_eq!(app.events(&org).await.len(), 4, "no-ops record no event");

    // `null` clears.
    let cleared = put_member(&app, &alice, &org, "carol", json!({"title": null})).await;
    expect(&cleared, 200, None);
    assert_eq!(cleared.body["title"], Value::Null);

    // Removal.
    let removed = remove_member(&app, &alice, &org, "carol").await;
    expect(&removed, 204, None);
    assert!(removed.text.is_empty());
    let events = app.events(&org).await;
    assert_eq!(events.len(), 6);
    assert_eq!(events[5]["type"], "member.removed");
    assert_eq!(
        events[5]["changes"]["/members/carol/role"],
        json!({"from": "member", "to": null})
    );
    let gone = app.get(&member_path(&org, "carol")).send(404).await;
    assert_eq!(gone.code(), "member_not_found");
    expect(
        &remove_member(&app, &alice, &org, "carol").await,
        404,
        Some("member_not_found"),
    );
    assert_eq!(app.events(&org).await.len(), 6);
    assert_eq!(
        roles(&app, &org).await,
        role_map(&[("alice", "owner"), ("bob", "admin")])
    );
}

#[tokio::test]
async fn member_ids_with_special_characters_are_escaped_in_event_pointers() {
    let app = TestApp::spawn_with_users().await;
    let org = org_of(&app, "alice", "Acme").await;
    // `auth0|a/b`, percent-encoded in the path.
    let response = app
        .req(
            Method::PUT,
            &format!("{}/auth0%7Ca%2Fb", members_path(&org)),
        )
        .json(&json!({"role": "member"}))
        .key(Some(&token("alice")))
        .send(201)
        .await;
    assert_eq!(response.body["user_id"], "auth0|a/b");
    let events = app.events(&org).await;
    assert_eq!(
        events[1]["changes"],
        json!({"/members/auth0|a~1b/role": {"from": null, "to": "member"}})
    );
}

// ---- who may manage whom ------------------------------------------------------

#[tokio::test]
async fn an_admin_manages_members_and_admins_but_not_owners() {
    let app = TestApp::spawn_with_users().await;
    let org = team(&app).await;
    let bob = token("bob");

    expect(
        &put_member(&app, &bob, &org, "dave", json!({"role": "member"})).await,
        201,
        None,
    );
    expect(
        &put_member(&app, &bob, &org, "erin", json!({"role": "admin"})).await,
        201,
        None,
    );
    expect(
        &put_member(&app, &bob, &org, "carol", json!({"role": "admin"})).await,
        200,
        None,
    );
    expect(
        &put_member(&app, &bob, &org, "carol", json!({"role": "member"})).await,
        200,
        None,
    );
    expect(&remove_member(&app, &bob, &org, "erin").await, 204, None);

    let before = snapshot(&app, &org).await;
    for (user, body) in [
        ("frank", json!({"role": "owner"})),
        ("carol", json!({"role": "owner"})),
        ("bob", json!({"role": "owner"})),
        ("alice", json!({"role": "admin"})),
        ("alice", json!({"role": "member"})),
    ] {
        let response = put_member(&app, &bob, &org, user, body.clone()).await;
        expect(&response, 403, Some("permission_denied"));
        assert!(
            response.body["detail"]
                .as_str()
                .unwrap_or("")
                .contains("owner"),
            "{user} {body}: {}",
            response.text
        );
    }
    expect(
        &remove_member(&app, &bob, &org, "alice").await,
        403,
        Some("permission_denied"),
    );
    assert_unchanged(&app, &org, &before).await;
    assert_eq!(
        before.members,
        role_map(&[
            ("alice", "owner"),
            ("bob", "admin"),
            ("carol", "member"),
            ("dave", "member"),
        ])
    );
}

#[tokio::test]
async fn a_member_cannot_manage_members_but_can_read_them() {
    let app = TestApp::spawn_with_users().await;
    let org = team(&app).await;
    let carol = token("carol");
    let before = snapshot(&app, &org).await;

    for (user, body) in [
        ("dave", json!({"role": "member"})),
        ("carol", json!({"role": "admin"})),
        ("carol", json!({"title": "Boss"})),
        ("bob", json!({"role": "member"})),
    ] {
        let response = put_member(&app, &carol, &org, user, body.clone()).await;
        expect(&response, 403, Some("permission_denied"));
    }
    expect(
        &remove_member(&app, &carol, &org, "bob").await,
        403,
        Some("permission_denied"),
    );
    assert_unchanged(&app, &org, &before).await;

    let list = app
        .get(&members_path(&org))
        .key(Some(&carol))
        .send(200)
        .await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 3);
    app.get(&member_path(&org, "alice"))
        .key(Some(&carol))
        .send(200)
        .await;
}

#[tokio::test]
async fn only_owners_grant_and_revoke_owner() {
    let app = TestApp::spawn_with_users().await;
    let org = team(&app).await;
    let alice = token("alice");
    let promoted = put_member(&app, &alice, &org, "bob", json!({"role": "owner"})).await;
    expect(&promoted, 200, None);
    assert_eq!(promoted.body["role"], "owner");
    let added = put_member(&app, &alice, &org, "dave", json!({"role": "owner"})).await;
    expect(&added, 201, None);
    // A co-owner revokes an owner.
    expect(
        &put_member(
            &app,
            &token("bob"),
            &org,
            "alice",
            json!({"role": "member"}),
        )
        .await,
        200,
        None,
    );
    expect(
        &remove_member(&app, &token("dave"), &org, "bob").await,
        204,
        None,
    );
    assert_eq!(
        roles(&app, &org).await,
        role_map(&[("alice", "member"), ("carol", "member"), ("dave", "owner")])
    );
    let events = app.events(&org).await;
    let last = events.last().unwrap();
    assert_eq!(last["type"], "member.removed");
    assert_eq!(last["actor"], json!({"type": "user", "id": "dave"}));
}

#[tokio::test]
async fn the_last_owner_can_be_neither_removed_nor_demoted() {
    let app = TestApp::spawn_with_users().await;
    let org = team(&app).await;
    let alice = token("alice");
    let before = snapshot(&app, &org).await;

    expect(
        &remove_member(&app, &alice, &org, "alice").await,
        409,
        Some("last_owner"),
    );
    for role in ["admin", "member"] {
        expect(
            &put_member(&app, &alice, &org, "alice", json!({"role": role})).await,
            409,
            Some("last_owner"),
        );
    }
    // Not even the system may leave an organization without an owner.
    expect(
        &remove_member(&app, &app.admin, &org, "alice").await,
        409,
        Some("last_owner"),
    );
    expect(
        &put_member(&app, &app.admin, &org, "alice", json!({"role": "admin"})).await,
        409,
        Some("last_owner"),
    );
    assert_unchanged(&app, &org, &before).await;

    // With a second owner, the first may leave.
    expect(
        &put_member(&app, &alice, &org, "bob", json!({"role": "owner"})).await,
        200,
        None,
    );
    expect(&remove_member(&app, &alice, &org, "alice").await, 204, None);
    assert_eq!(
        roles(&app, &org).await,
        role_map(&[("bob", "owner"), ("carol", "member")])
    );
    let response = app.get(&org_path(&org)).key(Some(&alice)).send(404).await;
    assert_eq!(response.code(), "organization_not_found");
    // And now bob is the last one.
    expect(
        &put_member(&app, &token("bob"), &org, "bob", json!({"role": "admin"})).await,
        409,
        Some("last_owner"),
    );
}

#[tokio::test]
async fn anyone_may_remove_themselves() {
    let app = TestApp::spawn_with_users().await;
    let org = team(&app).await;
    expect(
        &remove_member(&app, &token("carol"), &org, "carol").await,
        204,
        None,
    );
    expect(
        &remove_member(&app, &token("bob"), &org, "bob").await,
        204,
        None,
    );
    assert_eq!(roles(&app, &org).await, role_map(&[("alice", "owner")]));
    for user in ["bob", "carol"] {
        let response = app
            .get(&org_path(&org))
            .key(Some(&token(user)))
            .send(404)
            .await;
        assert_eq!(response.code(), "organization_not_found");
    }
    let events = app.events(&org).await;
    let removed: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "member.removed")
        .collect();
    assert_eq!(removed.len(), 2);
    assert_eq!(removed[0]["actor"], json!({"type": "user", "id": "carol"}));
    assert_eq!(removed[1]["actor"], json!({"type": "user", "id": "bob"}));
}

#[tokio::test]
async fn a_non_member_gets_404_for_the_organization_and_its_members() {
    let app = TestApp::spawn_with_users().await;
    let org = team(&app).await;
    let dave = token("dave");
    let before = snapshot(&app, &org).await;
    let responses = [
        app.get(&org_path(&org)).key(Some(&dave)).send_any().await,
        app.get(&members_path(&org))
            .key(Some(&dave))
            .send_any()
            .await,
        app.get(&member_path(&org, "alice"))
            .key(Some(&dave))
            .send_any()
            .await,
        app.get(&member_path(&org, "nobody"))
            .key(Some(&dave))
            .send_any()
            .await,
        put_member(&app, &dave, &org, "dave", json!({"role": "owner"})).await,
        put_member(&app, &dave, &org, "carol", json!({"role": "admin"})).await,
        remove_member(&app, &dave, &org, "carol").await,
    ];
    for response in &responses {
        expect(response, 404, Some("organization_not_found"));
    }
    // An unknown org reads the same.
    let unknown = app
        .get(&members_path("org_00000000000000000000000000"))
        .key(Some(&dave))
        .send_any()
        .await;
    expect(&unknown, 404, Some("organization_not_found"));
    assert_eq!(unknown.body["detail"], responses[1].body["detail"]);
    assert_unchanged(&app, &org, &before).await;
}

// ---- the member limit ---------------------------------------------------------

async fn set_max_members(app: &TestApp, org: &str, max: u64) {
    let response = app
        .patch(
            &org_path(org),
            &json!({"policy": {"name": "team", "limits": {"max_members": max}}}),
        )
        .send(200)
        .await;
    assert_eq!(response.body["policy"]["limits"]["max_members"], max);
}

#[tokio::test]
async fn the_plans_max_members_refuses_new_members_but_not_changes_to_existing_ones() {
    let app = TestApp::spawn_with_users().await;
    let alice = token("alice");
    let org = org_of(&app, "alice", "Small").await;
    set_max_members(&app, &org, 3).await;
    expect(
        &put_member(&app, &alice, &org, "bob", json!({})).await,
        201,
        None,
    );
    expect(
        &put_member(&app, &alice, &org, "carol", json!({})).await,
        201,
        None,
    );

    let before = snapshot(&app, &org).await;
    let full = put_member(&app, &alice, &org, "dave", json!({})).await;
    expect(&full, 409, Some("member_limit_reached"));
    assert!(
        full.body["detail"].as_str().unwrap().contains('3'),
        "{}",
        full.text
    );
    expect(
        &put_member(&app, &app.admin, &org, "dave", json!({})).await,
        409,
        Some("member_limit_reached"),
    );
    assert_unchanged(&app, &org, &before).await;

    expect(
        &put_member(
            &app,
            &alice,
            &org,
            "carol",
            json!({"role": "admin", "title": "Ops"}),
        )
        .await,
        200,
        None,
    );
    expect(&remove_member(&app, &alice, &org, "bob").await, 204, None);
    expect(
        &put_member(&app, &alice, &org, "dave", json!({})).await,
        201,
        None,
    );
    assert_eq!(
        roles(&app, &org).await,
        role_map(&[("alice", "owner"), ("carol", "admin"), ("dave", "member")])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_adds_never_pass_the_member_limit() {
    let app = TestApp::spawn_with_users().await;
    let org = org_of(&app, "alice", "Race").await;
    set_max_members(&app, &org, 5).await;
    let responses = join_all((0..20).map(|i| {
        let app = &app;
        let org = &org;
        async move { put_member(app, &app.admin, org, &format!("user-{i:02}"), json!({})).await }
    }))
    .await;
    let added = responses.iter().filter(|r| r.status == 201).count();
    let refused = responses
        .iter()
        .filter(|r| r.status == 409 && r.code() == "member_limit_reached")
        .count();
    let others: Vec<_> = responses
        .iter()
        .filter(|r| r.status != 201 && r.status != 409)
        .map(|r| (r.status, r.text.clone()))
        .collect();
    assert!(others.is_empty(), "unexpected answers: {others:?}");
    assert_eq!((added, refused), (4, 16));
    let members = roles(&app, &org).await;
    assert_eq!(members.len(), 5, "{members:?}");
    let events = app.events(&org).await;
    assert_eq!(
        events
            .iter()
            .filter(|e| e["type"] == "member.added")
            .count(),
        4,
        "one event per member added, none for refusals"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_owners_demoting_each_other_at_once_never_leave_the_org_without_an_owner() {
    let app = TestApp::spawn_with_users().await;
    let alice = token("alice");
    let bob = token("bob");
    for round in 0..5 {
        let org = org_of(&app, "alice", &format!("Duel {round}")).await;
        expect(
            &put_member(&app, &alice, &org, "bob", json!({"role": "owner"})).await,
            201,
            None,
        );
        let events_before = app.events(&org).await.len();
        let (a, b) = futures::join!(
            put_member(&app, &alice, &org, "bob", json!({"role": "admin"})),
            put_member(&app, &bob, &org, "alice", json!({"role": "admin"})),
        );
        let statuses = [a.status, b.status];
        let wins = statuses.iter().filter(|&&s| s == 200).count();
        assert_eq!(
            wins, 1,
            "round {round}: exactly one demotion wins: {} / {}",
            a.text, b.text
        );
        for r in [&a, &b] {
            assert!(
                r.status == 200
                    || (r.status == 409 && r.code() == "last_owner")
                    || (r.status == 403 && r.code() == "permission_denied"),
                "round {round}: {}",
                r.text
            );
        }
        let owners: Vec<String> = roles(&app, &org)
            .await
            .into_iter()
            .filter(|(_, role)| role == "owner")
            .map(|(user, _)| user)
            .collect();
        assert_eq!(owners.len(), 1, "round {round}: owners {owners:?}");
        assert_eq!(app.events(&org).await.len(), events_before + 1);
    }
}

// ---- bodies -------------------------------------------------------------------

#[tokio::test]
async fn member_bodies_are_strict_and_every_error_is_reported_at_once() {
    let app = TestApp::spawn_with_users().await;
    let org = team(&app).await;
    let alice = token("alice");
    let before = snapshot(&app, &org).await;

    let response = put_member(
        &app,
        &alice,
        &org,
        "dave",
        json!({
            "role": "boss",
            "title": 3,
            "user_id": "dave",
            "created_at": "2020-01-01T00:00:00Z",
            "colour": "red",
            "display_name": "x".repeat(201),
        }),
    )
    .await;
    expect(&response, 422, Some("validation_error"));
    let mut errors = response.field_errors();
    errors.sort();
    let mut want: Vec<(String, String)> = [
        ("/colour", "unknown_field"),
        ("/created_at", "read_only"),
        ("/role", "invalid_role"),
        ("/title", "invalid_type"),
        ("/user_id", "read_only"),
    ]
    .iter()
    .map(|(p, c)| (p.to_string(), c.to_string()))
    .collect();
    let display = errors
        .iter()
        .position(|(p, _)| p == "/display_name")
        .expect("the long display_name is reported");
    errors.remove(display);
    want.sort();
    assert_eq!(errors, want);

    let response = put_member(&app, &alice, &org, "carol", json!({"role": null})).await;
    expect(&response, 422, Some("validation_error"));
    assert_eq!(
        response.field_errors(),
        [("/role".to_owned(), "not_nullable".to_owned())]
    );
    for role in [json!("Owner"), json!(1), json!(["admin"])] {
        let response = put_member(&app, &alice, &org, "carol", json!({ "role": role })).await;
        expect(&response, 422, Some("validation_error"));
        assert_eq!(response.pointers(), ["/role"]);
    }
    let response = app
        .req(Method::PUT, &member_path(&org, "carol"))
        .json(&json!(["admin"]))
        .key(Some(&alice))
        .send(422)
        .await;
    assert_eq!(response.code(), "validation_error");
    let response = app
        .req(Method::PUT, &member_path(&org, "carol"))
        .raw("text/plain", "role=admin")
        .key(Some(&alice))
        .send(415)
        .await;
    assert_eq!(response.code(), "unsupported_media_type");
    let response = app
        .req(Method::PUT, &member_path(&org, "carol"))
        .raw("application/json", "{\"role\": ")
        .key(Some(&alice))
        .send(400)
        .await;
    assert_eq!(response.code(), "invalid_json");
    assert_unchanged(&app, &org, &before).await;

    // merge-patch+json is accepted too.
    app.req(Method::PUT, &member_path(&org, "carol"))
        .raw("application/merge-patch+json", r#"{"title": "Lead"}"#)
        .key(Some(&alice))
        .send(200)
        .await;
}

// ---- lists ----------------------------------------------------------------------

#[tokio::test]
async fn members_are_listed_by_user_id_in_pages_with_a_cursor() {
    let app = TestApp::spawn_with_users().await;
    let org = org_of(&app, "alice", "Many").await;
    for user in ["m5", "m1", "m4", "m2", "m3"] {
        expect(
            &put_member(&app, &app.admin, &org, user, json!({})).await,
            201,
            None,
        );
    }
    let mut seen = Vec::new();
    let mut path = format!("{}?limit=2", members_path(&org));
    let mut pages = 0;
    loop {
        let page = app.get(&path).key(Some(&token("m3"))).send(200).await.body;
        pages += 1;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(
            items
                .iter()
                .map(|m| m["user_id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("{}?limit=2&cursor={cursor}", members_path(&org)),
            None => break,
        }
        assert!(pages < 10, "the cursor does not advance");
    }
    assert_eq!(seen, ["alice", "m1", "m2", "m3", "m4", "m5"]);
    assert_eq!(pages, 3);

    for bad in ["limit=0", "limit=201", "limit=x", "cursor=nonsense"] {
        let response = app
            .get(&format!("{}?{bad}", members_path(&org)))
            .send(422)
            .await;
        assert_eq!(response.code(), "validation_error", "{bad}");
    }
    // A cursor from another list is not a members cursor.
    let orgs = app.get("/v1/organizations?limit=1").send(200).await.body;
    if let Some(org_cursor) = orgs["next_cursor"].as_str() {
        app.get(&format!("{}?cursor={org_cursor}", members_path(&org)))
            .send(422)
            .await;
    }
}

// ---- API keys -------------------------------------------------------------------

#[tokio::test]
async fn api_keys_need_the_members_scopes() {
    let app = TestApp::spawn_with_users().await;
    let org = team(&app).await;
    let orgs_only = app
        .key(&["organizations:read", "organizations:write"], None)
        .await;
    let reader = app.key(&["members:read"], None).await;
    let writer = app.key(&["members:write"], None).await;
    let before = snapshot(&app, &org).await;

    for response in [
        app.get(&members_path(&org))
            .key(Some(&orgs_only))
            .send_any()
            .await,
        app.get(&member_path(&org, "bob"))
            .key(Some(&orgs_only))
            .send_any()
            .await,
        put_member(&app, &orgs_only, &org, "dave", json!({})).await,
        remove_member(&app, &orgs_only, &org, "carol").await,
        put_member(&app, &reader, &org, "dave", json!({})).await,
        remove_member(&app, &reader, &org, "carol").await,
    ] {
        expect(&response, 403, Some("permission_denied"));
    }
    assert_unchanged(&app, &org, &before).await;

    let list = app
        .get(&members_path(&org))
        .key(Some(&reader))
        .send(200)
        .await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 3);
    app.get(&member_path(&org, "bob"))
        .key(Some(&reader))
        .send(200)
        .await;

    // Writing implies reading.
    app.get(&members_path(&org))
        .key(Some(&writer))
        .send(200)
        .await;
    let added = put_member(&app, &writer, &org, "dave", json!({"role": "owner"})).await;
    expect(&added, 201, None);
    expect(
        &put_member(&app, &writer, &org, "alice", json!({"role": "admin"})).await,
        200,
        None,
    );
    expect(
        &remove_member(&app, &writer, &org, "carol").await,
        204,
        None,
    );
    assert_eq!(
        roles(&app, &org).await,
        role_map(&[("alice", "admin"), ("bob", "admin"), ("dave", "owner")])
    );
    let events = app.events(&org).await;
    assert_eq!(events.last().unwrap()["actor"]["type"], "api_key");
}

#[tokio::test]
async fn a_key_bound_to_a_subtree_sees_members_only_inside_it() {
    let app = TestApp::spawn_with_users().await;
    let root = team(&app).await;
    let child = app
        .create_org(json!({"name": "Child", "parent_id": root}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let outside = team(&app).await;
    let bound = app
        .key(&["members:read", "members:write"], Some(&child))
        .await;

    expect(
        &put_member(&app, &bound, &child, "zed", json!({"role": "owner"})).await,
        201,
        None,
    );
    let list = app
        .get(&members_path(&child))
        .key(Some(&bound))
        .send(200)
        .await;
    assert_eq!(list.body["items"][0]["user_id"], "zed");

    let before_root = snapshot(&app, &root).await;
    let before_outside = snapshot(&app, &outside).await;
    for org in [&root, &outside] {
        for response in [
            app.get(&members_path(org))
                .key(Some(&bound))
                .send_any()
                .await,
            app.get(&member_path(org, "alice"))
                .key(Some(&bound))
                .send_any()
                .await,
            put_member(&app, &bound, org, "zed", json!({})).await,
            remove_member(&app, &bound, org, "carol").await,
        ] {
            expect(&response, 404, Some("organization_not_found"));
        }
    }
    assert_unchanged(&app, &root, &before_root).await;
    assert_unchanged(&app, &outside, &before_outside).await;
}

// ---- the organization's state -----------------------------------------------------

#[tokio::test]
async fn a_disabled_organization_refuses_membership_writes_by_its_members_but_not_the_system() {
    let app = TestApp::spawn_with_users().await;
    let org = team(&app).await;
    app.patch(&org_path(&org), &json!({"enabled": false}))
        .send(200)
        .await;
    let before = snapshot(&app, &org).await;
    for response in [
        put_member(&app, &token("alice"), &org, "dave", json!({})).await,
        put_member(&app, &token("bob"), &org, "carol", json!({"role": "admin"})).await,
        remove_member(&app, &token("alice"), &org, "carol").await,
    ] {
        expect(&response, 403, Some("organization_disabled"));
    }
    assert_unchanged(&app, &org, &before).await;
    // Reading is still allowed, and the system still manages members.
    app.get(&members_path(&org))
        .key(Some(&token("carol")))
        .send(200)
        .await;
    let writer = app.key(&["members:write"], None).await;
    expect(
        &put_member(&app, &writer, &org, "dave", json!({})).await,
        201,
        None,
    );
    expect(
        &remove_member(&app, &app.admin, &org, "dave").await,
        204,
        None,
    );
}

#[tokio::test]
async fn an_organization_that_requires_mfa_requires_it_for_membership_changes_too() {
    let app = TestApp::spawn_with_users().await;
    let org = team(&app).await;
    app.patch(&org_path(&org), &json!({"mfa_required": true}))
        .send(200)
        .await;
    let before = snapshot(&app, &org).await;
    let plain = token("alice");
    expect(
        &put_member(&app, &plain, &org, "dave", json!({})).await,
        403,
        Some("mfa_required"),
    );
    expect(
        &remove_member(&app, &plain, &org, "carol").await,
        403,
        Some("mfa_required"),
    );
    let response = app
        .get(&members_path(&org))
        .key(Some(&plain))
        .send(403)
        .await;
    assert_eq!(response.code(), "mfa_required");
    assert_unchanged(&app, &org, &before).await;
    let strong = UserClaims::new("alice").mfa().token();
    expect(
        &put_member(&app, &strong, &org, "dave", json!({})).await,
        201,
        None,
    );
}

#[tokio::test]
async fn a_deleted_organization_has_no_members_to_manage() {
    let app = TestApp::spawn_with_users().await;
    let org = org_of(&app, "alice", "Doomed").await;
    let alice = token("alice");
    app.req(Method::DELETE, &org_path(&org))
        .key(Some(&alice))
        .send(200)
        .await;
    let events = app.events(&org).await.len();
    for response in [
        app.get(&members_path(&org))
            .key(Some(&alice))
            .send_any()
            .await,
        put_member(&app, &alice, &org, "bob", json!({})).await,
        put_member(&app, &app.admin, &org, "bob", json!({})).await,
        remove_member(&app, &app.admin, &org, "alice").await,
    ] {
        expect(&response, 404, Some("organization_not_found"));
    }
    assert_eq!(app.events(&org).await.len(), events);
    // Restored, alice is still its owner.
    app.req(Method::POST, &format!("{}/restore", org_path(&org)))
        .key(Some(&alice))
        .send(200)
        .await;
    assert_eq!(roles(&app, &org).await, role_map(&[("alice", "owner")]));
}

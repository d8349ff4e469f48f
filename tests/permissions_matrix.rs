//! The field permission matrix, end to end: every kind of principal × every
//! writable field × every organization state, each answer checked against one
//! declared expectation, and every refusal checked to have written nothing.

mod common;

use std::collections::BTreeMap;

use serde_json::{json, Value};

use common::{TestApp, UserClaims};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Anonymous,
    NonMember,
    Member,
    Admin,
    Owner,
    OwnerWithMfa,
    Support,
    SystemAdmin,
    ReadKey,
    WriteKey,
    BoundKeyInside,
    BoundKeyOutside,
}

const EVERYONE: [Who; 12] = [
    Who::Anonymous,
    Who::NonMember,
    Who::Member,
    Who::Admin,
    Who::Owner,
    Who::OwnerWithMfa,
    Who::Support,
    Who::SystemAdmin,
    Who::ReadKey,
    Who::WriteKey,
    Who::BoundKeyInside,
    Who::BoundKeyOutside,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Enabled,
    Disabled,
    MfaRequired,
}

/// The minimum role per field, as SPEC §1 states it (written out here on purpose,
/// independently of src/domain/access.rs).
fn minimum(field: &str) -> &'static str {
    match field {
        "domains" | "primary_domain" | "mfa_required" | "parent_id" => "owner",
        "subscription_id" => "support",
        "enabled" | "app_ids" | "policy" => "system",
        _ => "admin",
    }
}

/// The declared answer for one combination: status and problem code.
fn expected(who: Who, field: &str, state: State) -> (u16, &'static str) {
    const OK: (u16, &str) = (200, "");
    const DENIED: (u16, &str) = (403, "permission_denied");
    match who {
        Who::Anonymous => (401, "unauthenticated"),
        Who::NonMember | Who::BoundKeyOutside => (404, "organization_not_found"),
        Who::ReadKey => DENIED,
        Who::WriteKey | Who::BoundKeyInside | Who::SystemAdmin => OK,
        Who::Support => {
            if minimum(field) == "support" {
                OK
            } else {
                DENIED
            }
        }
        Who::Member | Who::Admin | Who::Owner | Who::OwnerWithMfa => {
            if state == State::Disabled {
                return (403, "organization_disabled");
            }
            if state == State::MfaRequired && who != Who::OwnerWithMfa {
                return (403, "mfa_required");
            }
            let allowed = match who {
                Who::Member => false,
                Who::Admin => minimum(field) == "admin",
                _ => matches!(minimum(field), "admin" | "owner"),
            };
            if allowed {
                OK
            } else {
                DENIED
            }
        }
    }
}

struct Fixture {
    app: TestApp,
    credentials: BTreeMap<&'static str, Option<String>>,
    orgs: BTreeMap<&'static str, String>,
    root: String,
    new_parent: String,
}

fn state_name(state: State) -> &'static str {
    match state {
        State::Enabled => "enabled",
        State::Disabled => "disabled",
        State::MfaRequired => "mfa",
    }
}

fn who_name(who: Who) -> &'static str {
    match who {
        Who::Anonymous => "anonymous",
        Who::NonMember => "non-member",
        Who::Member => "member",
        Who::Admin => "admin",
        Who::Owner => "owner",
        Who::OwnerWithMfa => "owner+mfa",
        Who::Support => "support",
        Who::SystemAdmin => "system-admin",
        Who::ReadKey => "read-key",
        Who::WriteKey => "write-key",
        Who::BoundKeyInside => "bound-key-inside",
        Who::BoundKeyOutside => "bound-key-outside",
    }
}

/// (baseline, changed) values per field for the org of `state`.
fn values(field: &str, state: State, fx: &Fixture) -> (Value, Value) {
    let s = state_name(state);
    let domain = format!("{s}.matrix.test");
    match field {
        "slug" => (json!(format!("matrix-{s}")), json!(format!("matrix-{s}-x"))),
        "name" => (json!("Base"), json!("Changed")),
        "alias_name" => (Value::Null, json!("Alias")),
        "description" => (Value::Null, json!("About")),
        "enabled" => {
            let base = state != State::Disabled;
            (json!(base), json!(!base))
        }
        "domains" => (
            json!([domain]),
            json!([domain, format!("{s}2.matrix.test")]),
        ),
        "primary_domain" => (Value::Null, json!(domain)),
        "logo_url" => (Value::Null, json!("https://cdn.test/logo.png")),
        "website" => (Value::Null, json!("https://acme.test/")),
        "phone" => (Value::Null, json!("+14155552671")),
        "address" => (Value::Null, json!({"city": "Berlin"})),
        "is_business" => (json!(false), json!(true)),
        "mfa_required" => {
            let base = state == State::MfaRequired;
            (json!(base), json!(!base))
        }
        "time_zone" => (Value::Null, json!("Europe/Berlin")),
        "parent_id" => (json!(fx.root), json!(fx.new_parent)),
        "subscription_id" => (Value::Null, json!("sub_123")),
        "app_ids" => (json!([]), json!(["app-1"])),
        "policy" => (Value::Null, json!({"name": "team", "limits": {}})),
        "metadata" => (json!({"k": null}), json!({"k": "v"})),
        other => panic!("no values for {other}"),
    }
}

const FIELDS: [&str; 19] = [
    "slug",
    "name",
    "alias_name",
    "description",
    "enabled",
    "domains",
    "primary_domain",
    "logo_url",
    "website",
    "phone",
    "address",
    "is_business",
    "mfa_required",
    "time_zone",
    "parent_id",
    "subscription_id",
    "app_ids",
    "policy",
    "metadata",
];

async fn fixture() -> Fixture {
    let app = TestApp::spawn_with_users().await;
    let root = app
        .create_org(json!({"name": "Matrix root", "slug": "matrix-root"}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let elsewhere = app.org_named("Elsewhere").await;
    let new_parent = app
        .create_org(json!({"name": "New parent", "parent_id": root}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut orgs = BTreeMap::new();
    for state in [State::Enabled, State::Disabled, State::MfaRequired] {
        let s = state_name(state);
        let org = app
            .create_org(json!({
                "name": "Base",
                "slug": format!("matrix-{s}"),
                "parent_id": root,
                "domains": [format!("{s}.matrix.test")],
                "enabled": state != State::Disabled,
                "mfa_required": state == State::MfaRequired,
            }))
            .await;
        orgs.insert(s, org["id"].as_str().unwrap().to_owned());
    }
    // The same people hold the same roles in every org of the matrix and in the new parent.
    for org in orgs.values().chain([&new_parent]) {
        for (user, role) in [("alice", "owner"), ("bob", "admin"), ("carol", "member")] {
            app.req(
                reqwest::Method::PUT,
                &format!("/v1/organizations/{org}/members/{user}"),
            )
            .json(&json!({ "role": role }))
            .send_any()
            .await;
        }
    }
    let mut credentials = BTreeMap::new();
    credentials.insert(who_name(Who::Anonymous), None);
    credentials.insert(
        who_name(Who::NonMember),
        Some(UserClaims::new("dave").token()),
    );
    credentials.insert(
        who_name(Who::Member),
        Some(UserClaims::new("carol").token()),
    );
    credentials.insert(who_name(Who::Admin), Some(UserClaims::new("bob").token()));
    credentials.insert(who_name(Who::Owner), Some(UserClaims::new("alice").token()));
    credentials.insert(
        who_name(Who::OwnerWithMfa),
        Some(UserClaims::new("alice").mfa().token()),
    );
    credentials.insert(
        who_name(Who::Support),
        Some(UserClaims::new("sam").roles(&["support"]).token()),
    );
    credentials.insert(
        who_name(Who::SystemAdmin),
        Some(UserClaims::new("root").roles(&["system_admin"]).token()),
    );
    credentials.insert(
        who_name(Who::ReadKey),
        Some(app.key(&["organizations:read"], None).await),
    );
    credentials.insert(
        who_name(Who::WriteKey),
        Some(app.key(&["organizations:write"], None).await),
    );
    credentials.insert(
        who_name(Who::BoundKeyInside),
        Some(app.key(&["organizations:write"], Some(&root)).await),
    );
    credentials.insert(
        who_name(Who::BoundKeyOutside),
        Some(app.key(&["organizations:write"], Some(&elsewhere)).await),
    );
    Fixture {
        app,
        credentials,
        orgs,
        root,
        new_parent,
    }
}

async fn version_and_events(fx: &Fixture, org: &str) -> (i64, usize) {
    let body = fx
        .app
        .get(&format!("/v1/organizations/{org}"))
        .send(200)
        .await
        .body;
    (
        body["version"].as_i64().unwrap(),
        fx.app.events(org).await.len(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_principal_field_and_state_gets_exactly_the_declared_answer() {
    let fx = fixture().await;
    let mut mismatches = Vec::new();
    let mut checked = 0;
    for state in [State::Enabled, State::Disabled, State::MfaRequired] {
        let org = fx.orgs[state_name(state)].clone();
        for field in FIELDS {
            let (baseline, changed) = values(field, state, &fx);
            for who in EVERYONE {
                let before = version_and_events(&fx, &org).await;
                let response = fx
                    .app
                    .patch(
                        &format!("/v1/organizations/{org}"),
                        &json!({ field: changed }),
                    )
                    .key(fx.credentials[who_name(who)].as_deref())
                    .send_any()
                    .await;
                checked += 1;
                let (status, code) = expected(who, field, state);
                let got_code = if response.status == 200 {
                    ""
                } else {
                    response.code()
                };
                if (response.status, got_code) != (status, code) {
                    mismatches.push(format!(
                        "{} {field} on {}: expected {status} {code}, got {} {got_code}",
                        who_name(who),
                        state_name(state),
                        response.status
                    ));
                }
                if response.status == 200 {
                    // Put the field back, as the system, for the next principal.
                    fx.app
                        .patch(
                            &format!("/v1/organizations/{org}"),
                            &json!({ field: baseline }),
                        )
                        .send(200)
                        .await;
                } else {
                    let after = version_and_events(&fx, &org).await;
                    if after != before {
                        mismatches.push(format!(
                            "{} {field} on {}: a refused request changed the org or its events",
                            who_name(who),
                            state_name(state)
                        ));
                    }
                }
                if status == 403
                    && code == "permission_denied"
                    && matches!(
                        who,
                        Who::Member | Who::Admin | Who::Owner | Who::OwnerWithMfa | Who::Support
                    )
                {
                    // Field refusals name the field by pointer.
                    if response.pointers() != vec![format!("/{field}")] {
                        mismatches.push(format!(
                            "{} {field} on {}: refusal names {:?}",
                            who_name(who),
                            state_name(state),
                            response.pointers()
                        ));
                    }
                }
            }
        }
    }
    assert_eq!(checked, 3 * FIELDS.len() * EVERYONE.len());
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[tokio::test]
async fn a_refusal_names_every_refused_field_at_once() {
    let fx = fixture().await;
    let org = &fx.orgs["enabled"];
    let response = fx
        .app
        .patch(
            &format!("/v1/organizations/{org}"),
            &json!({"name": "Fine", "domains": [], "enabled": false, "subscription_id": "x"}),
        )
        .key(fx.credentials["admin"].as_deref())
        .send(403)
        .await;
    assert_eq!(response.code(), "permission_denied");
    assert_eq!(
        response.pointers(),
        ["/domains", "/enabled", "/subscription_id"]
    );
}

#[tokio::test]
async fn moving_needs_owner_or_admin_on_the_new_parent_too() {
    let fx = fixture().await;
    let org = &fx.orgs["enabled"];
    // Alice owns the org but is not a member of `Elsewhere`.
    let elsewhere = fx.app.org_named("Outside parent").await;
    let response = fx
        .app
        .patch(
            &format!("/v1/organizations/{org}"),
            &json!({ "parent_id": elsewhere }),
        )
        .key(fx.credentials["owner"].as_deref())
        .send(422)
        .await;
    assert_eq!(
        response.field_errors(),
        [("/parent_id".to_owned(), "parent_not_found".to_owned())]
    );
    // As a plain member of the new parent, still refused.
    fx.app
        .req(
            reqwest::Method::PUT,
            &format!("/v1/organizations/{elsewhere}/members/alice"),
        )
        .json(&json!({"role": "member"}))
        .send(201)
        .await;
    let response = fx
        .app
        .patch(
            &format!("/v1/organizations/{org}"),
            &json!({ "parent_id": elsewhere }),
        )
        .key(fx.credentials["owner"].as_deref())
        .send(403)
        .await;
    assert_eq!(response.code(), "permission_denied");
    // As an admin there, allowed.
    fx.app
        .req(
            reqwest::Method::PUT,
            &format!("/v1/organizations/{elsewhere}/members/alice"),
        )
        .json(&json!({"role": "admin"}))
        .send(200)
        .await;
    fx.app
        .patch(
            &format!("/v1/organizations/{org}"),
            &json!({ "parent_id": elsewhere }),
        )
        .key(fx.credentials["owner"].as_deref())
        .send(200)
        .await;
}

#[tokio::test]
async fn users_see_only_their_organizations_and_staff_see_all() {
    let fx = fixture().await;
    let list = |who: &'static str| {
        let fx = &fx;
        async move {
            fx.app
                .get("/v1/organizations?limit=200")
                .key(fx.credentials[who].as_deref())
                .send(200)
                .await
                .body["items"]
                .as_array()
                .unwrap()
                .len()
        }
    };
    assert_eq!(list("non-member").await, 0);
    assert_eq!(
        list("member").await,
        4,
        "the three matrix orgs and the new parent"
    );
    assert_eq!(list("support").await, 6);
    assert_eq!(list("system-admin").await, 6);
}

#[tokio::test]
async fn a_user_who_creates_an_organization_owns_it_and_needs_admin_on_a_parent() {
    let fx = fixture().await;
    let dave = fx.credentials["non-member"].clone();
    let created = fx
        .app
        .post("/v1/organizations", &json!({"name": "Dave's"}))
        .key(dave.as_deref())
        .send(201)
        .await
        .body;
    let id = created["id"].as_str().unwrap();
    let member = fx
        .app
        .get(&format!("/v1/organizations/{id}/members/dave"))
        .send(200)
        .await
        .body;
    assert_eq!(member["role"], "owner");
    // System fields are not the creator's to set.
    let response = fx
        .app
        .post(
            "/v1/organizations",
            &json!({"name": "Dave's plan", "policy": {"name": "free"}}),
        )
        .key(dave.as_deref())
        .send(403)
        .await;
    assert_eq!(response.pointers(), ["/policy"]);
    // A member (not admin) of a parent cannot create under it; an admin can.
    let root = &fx.root;
    let carol = fx.credentials["member"].clone();
    fx.app
        .req(
            reqwest::Method::PUT,
            &format!("/v1/organizations/{root}/members/carol"),
        )
        .json(&json!({"role": "member"}))
        .send(201)
        .await;
    let response = fx
        .app
        .post(
            "/v1/organizations",
            &json!({"name": "Child", "parent_id": root}),
        )
        .key(carol.as_deref())
        .send(403)
        .await;
    assert_eq!(response.code(), "permission_denied");
    fx.app
        .req(
            reqwest::Method::PUT,
            &format!("/v1/organizations/{root}/members/carol"),
        )
        .json(&json!({"role": "admin"}))
        .send(200)
        .await;
    fx.app
        .post(
            "/v1/organizations",
            &json!({"name": "Child", "parent_id": root}),
        )
        .key(carol.as_deref())
        .send(201)
        .await;
}

#[tokio::test]
async fn only_owners_delete_and_restore() {
    let fx = fixture().await;
    let org = fx
        .app
        .create_org(json!({"name": "Short-lived", "slug": "short-lived"}))
        .await;
    let id = org["id"].as_str().unwrap();
    for (user, role) in [("alice", "owner"), ("bob", "admin")] {
        fx.app
            .req(
                reqwest::Method::PUT,
                &format!("/v1/organizations/{id}/members/{user}"),
            )
            .json(&json!({ "role": role }))
            .send(201)
            .await;
    }
    let response = fx
        .app
        .req(reqwest::Method::DELETE, &format!("/v1/organizations/{id}"))
        .key(fx.credentials["admin"].as_deref())
        .send(403)
        .await;
    assert_eq!(response.code(), "permission_denied");
    fx.app
        .req(reqwest::Method::DELETE, &format!("/v1/organizations/{id}"))
        .key(fx.credentials["owner"].as_deref())
        .send(200)
        .await;
    fx.app
        .req(
            reqwest::Method::POST,
            &format!("/v1/organizations/{id}/restore"),
        )
        .key(fx.credentials["admin"].as_deref())
        .send(403)
        .await;
    fx.app
        .req(
            reqwest::Method::POST,
            &format!("/v1/organizations/{id}/restore"),
        )
        .key(fx.credentials["owner"].as_deref())
        .send(200)
        .await;
}

//! Authorization audit (OWASP API1/API3): every route of the OpenAPI document ×
//! every kind of principal, each answer checked against one declared table. A route
//! added to the API without a row here fails this test.

mod common;

use reqwest::Method;
use serde_json::{json, Value};

use common::{TestApp, UserClaims};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Anonymous,
    Outsider,
    Member,
    Admin,
    Owner,
    Support,
    SystemAdmin,
    OrgsRead,
    OrgsWrite,
    MembersRead,
    MembersWrite,
    EventsRead,
    WebhooksManage,
    NoUsefulScope,
    OtherSubtree,
}

const EVERYONE: [Who; 15] = [
    Who::Anonymous,
    Who::Outsider,
    Who::Member,
    Who::Admin,
    Who::Owner,
    Who::Support,
    Who::SystemAdmin,
    Who::OrgsRead,
    Who::OrgsWrite,
    Who::MembersRead,
    Who::MembersWrite,
    Who::EventsRead,
    Who::WebhooksManage,
    Who::NoUsefulScope,
    Who::OtherSubtree,
];

/// What a principal gets on a route of the audited org.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Allowed,
    Unauthenticated,
    Forbidden,
    Hidden,
}

use Answer::*;

/// The declared table: one row per route (method and OpenAPI path).
fn declared(route: &str, who: Who) -> Answer {
    if who == Who::Anonymous {
        return Unauthenticated;
    }
    let is_key = matches!(
        who,
        Who::OrgsRead
            | Who::OrgsWrite
            | Who::MembersRead
            | Who::MembersWrite
            | Who::EventsRead
            | Who::WebhooksManage
            | Who::NoUsefulScope
            | Who::OtherSubtree
    );
    // Routes on one org: outsiders and keys bound elsewhere do not learn it exists.
    let on_org = route.contains("{org}");
    if on_org && matches!(who, Who::Outsider | Who::OtherSubtree) {
        return Hidden;
    }
    let key_needs = |allowed: &[Who]| {
        if allowed.contains(&who) {
            Allowed
        } else {
            Forbidden
        }
    };
    match route {
        "GET /v1/organizations"
        | "GET /v1/organizations/{org}"
        | "GET /v1/organizations/{org}/children" => {
            if is_key {
                key_needs(&[Who::OrgsRead, Who::OrgsWrite, Who::OtherSubtree])
            } else {
                Allowed
            }
        }
        // Any user may create a root org (and owns it); a key bound to a subtree may
        // create only under a parent inside it, so a root is refused.
        "POST /v1/organizations" => {
            if is_key {
                key_needs(&[Who::OrgsWrite])
            } else {
                Allowed
            }
        }
        "PATCH /v1/organizations/{org}" | "PUT /v1/organizations/{org}" => match who {
            _ if is_key => key_needs(&[Who::OrgsWrite]),
            Who::Admin | Who::Owner | Who::SystemAdmin => Allowed,
            _ => Forbidden, // members and support may not set `name`
        },
        "DELETE /v1/organizations/{org}" | "POST /v1/organizations/{org}/restore" => match who {
            _ if is_key => key_needs(&[Who::OrgsWrite]),
            Who::Owner | Who::SystemAdmin => Allowed,
            _ => Forbidden,
        },
        "GET /v1/organizations/{org}/events" => {
            if is_key {
                key_needs(&[Who::EventsRead])
            } else {
                Allowed
            }
        }
        "GET /v1/organizations/{org}/members" | "GET /v1/organizations/{org}/members/{user_id}" => {
            if is_key {
                key_needs(&[Who::MembersRead, Who::MembersWrite])
            } else {
                Allowed
            }
        }
        "PUT /v1/organizations/{org}/members/{user_id}"
        | "DELETE /v1/organizations/{org}/members/{user_id}" => match who {
            _ if is_key => key_needs(&[Who::MembersWrite]),
            Who::Admin | Who::Owner | Who::SystemAdmin => Allowed,
            _ => Forbidden,
        },
        // Deployment-wide: webhook endpoints (keys with webhooks:manage, system
        // admins) and the global event feed (keys with events:read, staff).
        _ if route.starts_with("POST /v1/webhooks")
            || route.starts_with("GET /v1/webhooks")
            || route.starts_with("PATCH /v1/webhooks")
            || route.starts_with("DELETE /v1/webhooks") =>
        {
            match who {
                _ if is_key => key_needs(&[Who::WebhooksManage]),
                Who::SystemAdmin => Allowed,
                _ => Forbidden,
            }
        }
        "GET /v1/events" | "GET /v1/events/stream" => match who {
            _ if is_key => key_needs(&[Who::EventsRead]),
            Who::SystemAdmin | Who::Support => Allowed,
            _ => Forbidden,
        },
        other => panic!("route `{other}` has no row in the authorization table"),
    }
}

fn expected_status(answer: Answer) -> &'static [u16] {
    match answer {
        Allowed => &[200, 201, 202, 204],
        Unauthenticated => &[401],
        Forbidden => &[403],
        Hidden => &[404],
    }
}

/// A fresh org with alice (owner), bob (admin), carol (member) and zed (member, the
/// target of member routes); returns its id.
async fn audited_org(app: &TestApp, n: usize) -> String {
    let org = app
        .create_org(json!({"name": format!("Audited {n}")}))
        .await;
    let id = org["id"].as_str().unwrap().to_owned();
    for (user, role) in [
        ("alice", "owner"),
        ("bob", "admin"),
        ("carol", "member"),
        ("zed", "member"),
    ] {
        app.req(
            Method::PUT,
            &format!("/v1/organizations/{id}/members/{user}"),
        )
        .json(&json!({ "role": role }))
        .send(201)
        .await;
    }
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_every_principal_as_the_table_declares() {
    let app = TestApp::spawn_with_users().await;
    let elsewhere = app.org_named("Elsewhere").await;
    let credential = |who: Who| -> Option<String> {
        match who {
            Who::Anonymous => None,
            Who::Outsider => Some(UserClaims::new("mallory").token()),
            Who::Member => Some(UserClaims::new("carol").token()),
            Who::Admin => Some(UserClaims::new("bob").token()),
            Who::Owner => Some(UserClaims::new("alice").token()),
            Who::Support => Some(UserClaims::new("sam").roles(&["support"]).token()),
            Who::SystemAdmin => Some(UserClaims::new("root").roles(&["system_admin"]).token()),
            _ => None,
        }
    };
    let mut keys = std::collections::BTreeMap::new();
    for (who, scopes, bound) in [
        (Who::OrgsRead, vec!["organizations:read"], None),
        (Who::OrgsWrite, vec!["organizations:write"], None),
        (Who::MembersRead, vec!["members:read"], None),
        (Who::MembersWrite, vec!["members:write"], None),
        (Who::EventsRead, vec!["events:read"], None),
        (Who::WebhooksManage, vec!["webhooks:manage"], None),
        (Who::NoUsefulScope, vec!["keys:manage"], None),
        (
            Who::OtherSubtree,
            vec!["organizations:write"],
            Some(elsewhere.as_str()),
        ),
    ] {
        keys.insert(format!("{who:?}"), app.key(&scopes, bound).await);
    }

    let doc = app.get("/openapi.json").key(None).send(200).await.body;
    let mut routes = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            routes.push((method.to_uppercase(), path.clone()));
        }
    }
    assert!(routes.len() >= 13, "the document lists the API's routes");

    let mut mismatches = Vec::new();
    let mut n = 0;
    for (method, path) in &routes {
        let route = format!("{method} {path}");
        for who in EVERYONE {
            n += 1;
            let org = audited_org(&app, n).await;
            let webhook = app
                .post(
                    "/v1/webhooks",
                    // Limited to another subtree, so the audit's own writes do not
                    // fan out to hundreds of endpoints.
                    &json!({"url": "https://hooks.example.invalid/orgd", "event_types": ["*"], "organization_id": elsewhere}),
                )
                .send(201)
                .await
                .body["id"]
                .as_str()
                .unwrap()
                .to_owned();
            let url = path
                .replace("{org}", &org)
                .replace("{user_id}", "zed")
                .replace("{id}", &webhook);
            let body: Option<Value> = match (method.as_str(), path.as_str()) {
                ("POST", "/v1/organizations") => Some(json!({"name": format!("Made {n}")})),
                ("POST", "/v1/webhooks") => {
                    Some(json!({"url": "https://hooks.example.invalid/x", "event_types": ["*"]}))
                }
                ("PATCH", "/v1/webhooks/{id}") => Some(json!({"description": "Audited"})),
                ("PATCH" | "PUT", "/v1/organizations/{org}") => Some(json!({"name": "Renamed"})),
                ("PUT", _) => Some(json!({"title": "Audited"})),
                _ => None,
            };
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let mut request = app.req(method, &url);
            if let Some(body) = &body {
                request = request.json(body);
            }
            let token = credential(who).or_else(|| keys.get(&format!("{who:?}")).cloned());
            // The event stream never ends: judge it by its status line alone.
            let status = if path.ends_with("/stream") {
                request.key(token.as_deref()).status_only().await
            } else {
                request.key(token.as_deref()).send_any().await.status
            };
            let answer = declared(&route, who);
            if !expected_status(answer).contains(&status) {
                mismatches.push(format!(
                    "{route} as {who:?}: declared {answer:?}, got {status}"
                ));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

//! The organization resource apart from updates: create (with idempotency), read,
//! list, children, delete, restore, and each organization's audit trail.

mod common;

use std::collections::HashSet;

use reqwest::Method;
use serde_json::{json, Value};

use common::{TestApp, TestResponse};

// ---- helpers --------------------------------------------------------------------

/// The TypeID alphabet (Crockford base32, lower case).
const BASE32: &str = "0123456789abcdefghjkmnpqrstvwxyz";

fn assert_org_id(id: &str) {
    let rest = id
        .strip_prefix("org_")
        .unwrap_or_else(|| panic!("{id} lacks the org_ prefix"));
    assert_eq!(rest.len(), 26, "{id} must carry 26 base32 characters");
    assert!(
        rest.chars().all(|c| BASE32.contains(c)),
        "{id} is not lowercase base32"
    );
    // 26 base32 characters hold 130 bits; a 128-bit UUID leaves the first at most 7.
    assert!(rest.as_bytes()[0] <= b'7', "{id} overflows 128 bits");
}

/// RFC 3339, UTC (`Z`), with exactly three fractional digits.
fn assert_timestamp(value: &Value) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is not a string"));
    assert!(
        text.parse::<jiff::Timestamp>().is_ok(),
        "{text} is not RFC 3339"
    );
    assert_eq!(
        text.len(),
        "2026-01-01T00:00:00.000Z".len(),
        "{text} is not in the millisecond form"
    );
    assert!(text.ends_with('Z'), "{text} is not UTC");
    assert_eq!(&text[19..20], ".", "{text} has no fractional seconds");
    assert!(
        text[20..23].chars().all(|c| c.is_ascii_digit()),
        "{text} lacks milliseconds"
    );
}

fn id_of(org: &Value) -> String {
    org["id"].as_str().expect("an id").to_owned()
}

fn ids(list: &TestResponse) -> Vec<String> {
    list.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(id_of)
        .collect()
}

/// Every id a list yields, following `next_cursor` to the end.
async fn walk(app: &TestApp, path: &str, limit: u32) -> (Vec<String>, usize) {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut all = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            None => format!("{path}{sep}limit={limit}"),
            Some(c) => format!("{path}{sep}limit={limit}&cursor={c}"),
        };
        let page = app.get(&url).send(200).await;
        pages += 1;
        let items = ids(&page);
        assert!(
            items.len() <= limit as usize,
            "a page is longer than its limit"
        );
        all.extend(items);
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => {
                assert!(
                    page.body["next_cursor"].is_null(),
                    "next_cursor must be null at the end"
                );
                break;
            }
        }
        assert!(pages < 100, "pagination does not end");
    }
    (all, pages)
}

async fn event_types(app: &TestApp, org: &str) -> Vec<String> {
    app.events(org)
        .await
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("").to_owned())
        .collect()
}

async fn count_orgs(app: &TestApp) -> usize {
    app.get("/v1/organizations?limit=200").send(200).await.body["items"]
        .as_array()
        .expect("items")
        .len()
}

// ---- create ---------------------------------------------------------------------

#[tokio::test]
async fn creating_an_organization_answers_201_with_location_etag_and_the_documented_defaults() {
    let app = TestApp::spawn().await;
    let created = app
        .post("/v1/organizations", &json!({"name": "Acme Ltd."}))
        .send(201)
        .await;
    let org = &created.body;

    let id = id_of(org);
    assert_org_id(&id);
    assert_eq!(
        created.header("location"),
        Some(format!("/v1/organizations/{id}").as_str())
    );
    assert_eq!(created.header("etag"), Some("\"1\""));

    assert_eq!(org["name"], "Acme Ltd.");
    assert_eq!(org["slug"], "acme-ltd");
    assert_eq!(org["enabled"], true);
    assert_eq!(org["is_business"], false);
    assert_eq!(org["mfa_required"], false);
    assert_eq!(org["managed"], false);
    assert_eq!(org["parent_id"], Value::Null);
    assert_eq!(org["domains"], json!([]));
    assert_eq!(org["app_ids"], json!([]));
    assert_eq!(org["metadata"], json!({}));
    assert_eq!(org["version"], 1);
    assert_timestamp(&org["created_at"]);
    assert_timestamp(&org["updated_at"]);
    assert_eq!(org["created_at"], org["updated_at"]);
    assert_eq!(org["deleted_at"], Value::Null);

    // The Location names the organization just made.
    let fetched = app.get(created.header("location").unwrap()).send(200).await;
    assert_eq!(fetched.body, created.body);
}

#[tokio::test]
async fn ids_of_successive_organizations_differ_and_sort_by_creation() {
    let app = TestApp::spawn().await;
    let mut made = Vec::new();
    for n in 0..5 {
        made.push(app.org_named(&format!("Org {n}")).await);
    }
    made.iter().for_each(|id| assert_org_id(id));
    let mut sorted = made.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, made, "ids are unique and sort in creation order");
}

#[tokio::test]
async fn creating_records_an_organization_created_event() {
    let app = TestApp::spawn().await;
    let id = app.org_named("Evented").await;
    let events = app.events(&id).await;
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!(event["type"], "organization.created");
    assert_eq!(event["organization_id"], id.as_str());
    assert_eq!(event["version"], 1);
    assert!(event["id"].as_str().unwrap().starts_with("evt_"));
    assert_eq!(event["actor"]["type"], "api_key");
    assert_timestamp(&event["occurred_at"]);
}

#[tokio::test]
async fn a_slug_is_made_from_the_name_when_absent() {
    let app = TestApp::spawn().await;
    let org = app.create_org(json!({"name": "Acme Ltd."})).await;
    assert_eq!(org["slug"], "acme-ltd");
    let org = app
        .create_org(json!({"name": "  Big   Blue Widgets!  "}))
        .await;
    assert_eq!(org["slug"], "big-blue-widgets");
}

#[tokio::test]
async fn an_explicit_slug_is_kept() {
    let app = TestApp::spawn().await;
    let org = app
        .create_org(json!({"name": "Acme Ltd.", "slug": "acme"}))
        .await;
    assert_eq!(org["slug"], "acme");
}

#[tokio::test]
async fn a_made_slug_that_collides_gets_a_suffix() {
    let app = TestApp::spawn().await;
    let first = app.create_org(json!({"name": "Acme Ltd."})).await;
    let second = app.create_org(json!({"name": "Acme Ltd."})).await;
    let third = app.create_org(json!({"name": "Acme Ltd."})).await;
    assert_eq!(first["slug"], "acme-ltd");
    for other in [&second, &third] {
        let slug = other["slug"].as_str().unwrap();
        assert!(
            slug.starts_with("acme-ltd-"),
            "{slug} is not acme-ltd with a suffix"
        );
        assert!(slug.len() > "acme-ltd-".len());
    }
    assert_ne!(second["slug"], third["slug"]);
    assert_eq!(count_orgs(&app).await, 3);
}

#[tokio::test]
async fn an_explicit_slug_that_is_taken_is_409_slug_taken_and_creates_nothing() {
    let app = TestApp::spawn().await;
    app.create_org(json!({"name": "Acme Ltd."})).await;
    let refused = app
        .post(
            "/v1/organizations",
            &json!({"name": "Other", "slug": "acme-ltd"}),
        )
        .send(409)
        .await;
    assert_eq!(refused.code(), "slug_taken");
    assert_eq!(
        refused.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(count_orgs(&app).await, 1);
}

#[tokio::test]
async fn a_domain_taken_by_another_live_org_is_409_domain_taken_on_create() {
    let app = TestApp::spawn().await;
    app.create_org(json!({"name": "Acme", "domains": ["acme.com"]}))
        .await;
    let refused = app
        .post(
            "/v1/organizations",
            &json!({"name": "Copycat", "domains": ["ACME.com"]}),
        )
        .send(409)
        .await;
    assert_eq!(refused.code(), "domain_taken");
    assert_eq!(count_orgs(&app).await, 1);
}

#[tokio::test]
async fn a_name_is_required_on_create() {
    let app = TestApp::spawn().await;
    for body in [json!({"description": "no name"}), json!({})] {
        let refused = app.post("/v1/organizations", &body).send(422).await;
        assert_eq!(refused.code(), "validation_error", "for {body}");
        assert!(
            refused
                .field_errors()
                .contains(&("/name".to_owned(), "required".to_owned())),
            "for {body}: {:?}",
            refused.field_errors()
        );
    }
    assert_eq!(count_orgs(&app).await, 0);
}

#[tokio::test]
async fn a_key_without_write_scope_cannot_create() {
    let app = TestApp::spawn().await;
    let reader = app.key(&["organizations:read"], None).await;
    let refused = app
        .post("/v1/organizations", &json!({"name": "Nope"}))
        .key(Some(&reader))
        .send(403)
        .await;
    assert_eq!(refused.code(), "permission_denied");
    assert_eq!(count_orgs(&app).await, 0);
}

// ---- idempotency ----------------------------------------------------------------

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_and_body_returns_the_first_organization() {
    let app = TestApp::spawn().await;
    let body = json!({"name": "Once Only", "description": "made once"});
    let first = app
        .post("/v1/organizations", &body)
        .header("idempotency-key", "create-once-1")
        .send(201)
        .await;
    assert_eq!(first.header("idempotent-replayed"), None);
    let retry = app
        .post("/v1/organizations", &body)
        .header("idempotency-key", "create-once-1")
        .send(201)
        .await;
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(retry.body, first.body);
    assert_eq!(retry.header("location"), first.header("location"));
    assert_eq!(retry.header("etag"), first.header("etag"));

    assert_eq!(count_orgs(&app).await, 1);
    assert_eq!(
        event_types(&app, &id_of(&first.body)).await,
        ["organization.created"]
    );
}

#[tokio::test]
async fn a_replay_returns_the_first_answer_even_after_the_organization_changed() {
    let app = TestApp::spawn().await;
    let body = json!({"name": "Replayed"});
    let first = app
        .post("/v1/organizations", &body)
        .header("idempotency-key", "k-replay")
        .send(201)
        .await;
    let id = id_of(&first.body);
    app.patch(
        &format!("/v1/organizations/{id}"),
        &json!({"description": "changed"}),
    )
    .send(200)
    .await;
    let retry = app
        .post("/v1/organizations", &body)
        .header("idempotency-key", "k-replay")
        .send(201)
        .await;
    assert_eq!(id_of(&retry.body), id);
    assert_eq!(count_orgs(&app).await, 1);
}

#[tokio::test]
async fn the_same_idempotency_key_with_a_different_body_is_422_idempotency_key_reused() {
    let app = TestApp::spawn().await;
    app.post("/v1/organizations", &json!({"name": "First"}))
        .header("idempotency-key", "k-1")
        .send(201)
        .await;
    let refused = app
        .post("/v1/organizations", &json!({"name": "Second"}))
        .header("idempotency-key", "k-1")
        .send(422)
        .await;
    assert_eq!(refused.code(), "idempotency_key_reused");
    assert_eq!(count_orgs(&app).await, 1);
}

#[tokio::test]
async fn different_idempotency_keys_make_different_organizations() {
    let app = TestApp::spawn().await;
    let body = json!({"name": "Twin"});
    let a = app
        .post("/v1/organizations", &body)
        .header("idempotency-key", "k-a")
        .send(201)
        .await;
    let b = app
        .post("/v1/organizations", &body)
        .header("idempotency-key", "k-b")
        .send(201)
        .await;
    assert_ne!(id_of(&a.body), id_of(&b.body));
    assert_eq!(b.header("idempotent-replayed"), None);
    assert_eq!(count_orgs(&app).await, 2);
}

#[tokio::test]
async fn idempotency_keys_of_different_principals_do_not_collide() {
    let app = TestApp::spawn().await;
    let other = app.key(&["organizations:write"], None).await;
    let body = json!({"name": "Shared Key Name"});
    let a = app
        .post("/v1/organizations", &body)
        .header("idempotency-key", "same")
        .send(201)
        .await;
    let b = app
        .post("/v1/organizations", &body)
        .header("idempotency-key", "same")
        .key(Some(&other))
        .send(201)
        .await;
    assert_ne!(id_of(&a.body), id_of(&b.body));
    assert_eq!(count_orgs(&app).await, 2);
}

#[tokio::test]
async fn concurrent_retries_with_one_idempotency_key_make_exactly_one_organization() {
    let app = TestApp::spawn().await;
    let body = json!({"name": "Raced", "domains": ["raced.example"]});
    let attempts = (0..10).map(|_| {
        app.post("/v1/organizations", &body)
            .header("idempotency-key", "race-1")
            .send_any()
    });
    let answers = futures::future::join_all(attempts).await;
    let mut ids = HashSet::new();
    for answer in &answers {
        assert_eq!(answer.status, 201, "body: {}", answer.text);
        ids.insert(id_of(&answer.body));
    }
    assert_eq!(ids.len(), 1, "every retry names the same organization");
    let replayed = answers
        .iter()
        .filter(|a| a.header("idempotent-replayed") == Some("true"))
        .count();
    assert_eq!(replayed, 9, "exactly one attempt made the organization");
    assert_eq!(count_orgs(&app).await, 1);
    let id = ids.into_iter().next().unwrap();
    assert_eq!(event_types(&app, &id).await, ["organization.created"]);
}

// ---- read -----------------------------------------------------------------------

#[tokio::test]
async fn an_organization_is_found_by_id_and_by_slug() {
    let app = TestApp::spawn().await;
    let org = app
        .create_org(json!({"name": "Findable", "slug": "findable"}))
        .await;
    let id = id_of(&org);
    let by_id = app.get(&format!("/v1/organizations/{id}")).send(200).await;
    let by_slug = app.get("/v1/organizations/findable").send(200).await;
    assert_eq!(by_id.body, org);
    assert_eq!(by_slug.body, org);
    assert_eq!(by_id.header("etag"), Some("\"1\""));
    assert_eq!(by_slug.header("etag"), Some("\"1\""));
}

#[tokio::test]
async fn an_unknown_organization_is_404_organization_not_found() {
    let app = TestApp::spawn().await;
    for path in [
        "/v1/organizations/org_01h455vb4pex5vsknk084sn02q",
        "/v1/organizations/no-such-slug",
        "/v1/organizations/NOT_A_VALID_REF",
    ] {
        let missing = app.get(path).send(404).await;
        assert_eq!(missing.code(), "organization_not_found", "for {path}");
    }
}

#[tokio::test]
async fn a_deleted_organization_is_404_on_get_and_patch() {
    let app = TestApp::spawn().await;
    let org = app
        .create_org(json!({"name": "Gone", "slug": "gone"}))
        .await;
    let id = id_of(&org);
    app.req(Method::DELETE, &format!("/v1/organizations/{id}"))
        .send(200)
        .await;
    for path in [
        format!("/v1/organizations/{id}"),
        "/v1/organizations/gone".to_owned(),
    ] {
        assert_eq!(
            app.get(&path).send(404).await.code(),
            "organization_not_found"
        );
        let patched = app
            .patch(&path, &json!({"description": "zombie"}))
            .send(404)
            .await;
        assert_eq!(patched.code(), "organization_not_found");
    }
    assert_eq!(
        event_types(&app, &id).await,
        ["organization.created", "organization.deleted"]
    );
}

/// While updates commit one after another, every GET answers a body whose
/// `version` is the one its `ETag` names and whose fields are that version's, never
/// an older version than one already answered or acknowledged. GETs are answered
/// from the store's kept copies and their renderings (`http/rendered_orgs.rs`), so
/// this is what a rendering kept past its copy would break.
#[tokio::test]
async fn gets_racing_updates_answer_each_version_whole_and_never_go_back() {
    use std::sync::atomic::{AtomicI64, Ordering};

    const UPDATES: i64 = 60;
    let app = TestApp::spawn().await;
    let id = id_of(&app.create_org(json!({"name": "Raced"})).await);
    let path = format!("/v1/organizations/{id}");
    let acknowledged = AtomicI64::new(1);
    let done = std::sync::atomic::AtomicBool::new(false);
    let writer = async {
        for n in 1..=UPDATES {
            let updated = app
                .patch(&path, &json!({"description": format!("after update {n}")}))
                .send(200)
                .await;
            assert_eq!(updated.body["version"], n + 1);
            acknowledged.store(n + 1, Ordering::Release);
        }
        done.store(true, Ordering::Release);
    };
    let reader = || async {
        let mut last = 0;
        loop {
            // The read after the writer finished must see its last update.
            let finished = done.load(Ordering::Acquire);
            let floor = acknowledged.load(Ordering::Acquire);
            let got = app.get(&path).send(200).await;
            let version = got.body["version"].as_i64().expect("a version");
            assert_eq!(got.header("etag"), Some(format!("\"{version}\"").as_str()));
            let description = got.body["description"].as_str();
            if version == 1 {
                assert_eq!(description, None);
            } else {
                let expected = format!("after update {}", version - 1);
                assert_eq!(description, Some(expected.as_str()), "at v{version}");
            }
            assert!(
                version >= floor,
                "read v{version} after v{floor} was acknowledged"
            );
            assert!(version >= last, "read v{version} after reading v{last}");
            last = version;
            if finished {
                return last;
            }
        }
    };
    let ((), a, b) = tokio::join!(writer, reader(), reader());
    assert_eq!(
        (a, b),
        (UPDATES + 1, UPDATES + 1),
        "the last reads see the last update"
    );
}

// ---- list -----------------------------------------------------------------------

#[tokio::test]
async fn keyset_pagination_walks_every_organization_once_and_ends_with_a_null_cursor() {
    let app = TestApp::spawn().await;
    let mut made = Vec::new();
    for n in 0..23 {
        made.push(app.org_named(&format!("Paged {n:02}")).await);
    }
    let (seen, pages) = walk(&app, "/v1/organizations", 5).await;
    assert_eq!(pages, 5, "23 orgs make 5 pages of 5");
    assert_eq!(
        seen, made,
        "every org once, in creation order, no gaps or duplicates"
    );
}

#[tokio::test]
async fn an_exactly_full_last_page_still_ends_the_walk() {
    let app = TestApp::spawn().await;
    let mut made = Vec::new();
    for n in 0..10 {
        made.push(app.org_named(&format!("Even {n}")).await);
    }
    let (seen, _) = walk(&app, "/v1/organizations", 5).await;
    assert_eq!(seen, made);
}

#[tokio::test]
async fn pagination_skips_organizations_deleted_between_pages() {
    let app = TestApp::spawn().await;
    let mut made = Vec::new();
    for n in 0..6 {
        made.push(app.org_named(&format!("Shifting {n}")).await);
    }
    let first = app.get("/v1/organizations?limit=3").send(200).await;
    assert_eq!(ids(&first), made[..3]);
    app.req(Method::DELETE, &format!("/v1/organizations/{}", made[3]))
        .send(200)
        .await;
    let cursor = first.body["next_cursor"].as_str().expect("a cursor");
    let second = app
        .get(&format!("/v1/organizations?limit=3&cursor={cursor}"))
        .send(200)
        .await;
    assert_eq!(ids(&second), made[4..]);
    assert!(second.body["next_cursor"].is_null());
}

#[tokio::test]
async fn the_default_page_size_is_50() {
    let app = TestApp::spawn().await;
    for n in 0..51 {
        app.org_named(&format!("Many {n}")).await;
    }
    let page = app.get("/v1/organizations").send(200).await;
    assert_eq!(ids(&page).len(), 50);
    assert!(page.body["next_cursor"].is_string());
}

#[tokio::test]
async fn a_limit_outside_1_to_200_is_422() {
    let app = TestApp::spawn().await;
    for limit in ["0", "201", "-1", "ten"] {
        let refused = app
            .get(&format!("/v1/organizations?limit={limit}"))
            .send(422)
            .await;
        assert_eq!(refused.pointers(), ["/limit"], "for limit={limit}");
    }
    app.get("/v1/organizations?limit=200").send(200).await;
    app.get("/v1/organizations?limit=1").send(200).await;
}

#[tokio::test]
async fn a_forged_cursor_is_422() {
    let app = TestApp::spawn().await;
    let refused = app
        .get("/v1/organizations?cursor=not-a-cursor")
        .send(422)
        .await;
    assert_eq!(refused.pointers(), ["/cursor"]);
}

#[tokio::test]
async fn the_list_filters_by_parent_id() {
    let app = TestApp::spawn().await;
    let parent = app.org_named("Parent").await;
    let other = app.org_named("Other Parent").await;
    let a = id_of(
        &app.create_org(json!({"name": "Child A", "parent_id": parent}))
            .await,
    );
    let b = id_of(
        &app.create_org(json!({"name": "Child B", "parent_id": parent}))
            .await,
    );
    app.create_org(json!({"name": "Cousin", "parent_id": other}))
        .await;
    app.create_org(json!({"name": "Grandchild", "parent_id": a}))
        .await;
    let listed = app
        .get(&format!("/v1/organizations?parent_id={parent}"))
        .send(200)
        .await;
    assert_eq!(ids(&listed), [a, b]);
}

#[tokio::test]
async fn the_list_filters_by_enabled() {
    let app = TestApp::spawn().await;
    let on = app.org_named("Switched On").await;
    let off = app.org_named("Switched Off").await;
    app.patch(
        &format!("/v1/organizations/{off}"),
        &json!({"enabled": false}),
    )
    .send(200)
    .await;
    let enabled = app.get("/v1/organizations?enabled=true").send(200).await;
    assert_eq!(ids(&enabled), [on]);
    let disabled = app.get("/v1/organizations?enabled=false").send(200).await;
    assert_eq!(ids(&disabled), [off]);
    let refused = app.get("/v1/organizations?enabled=maybe").send(422).await;
    assert_eq!(refused.pointers(), ["/enabled"]);
}

#[tokio::test]
async fn the_domain_filter_is_normalized_before_matching() {
    let app = TestApp::spawn().await;
    let acme = id_of(
        &app.create_org(json!({"name": "Acme", "domains": ["acme.com", "acme.io"]}))
            .await,
    );
    app.create_org(json!({"name": "Globex", "domains": ["globex.com"]}))
        .await;
    for query in ["acme.com", "Acme.COM", "acme.io"] {
        let listed = app
            .get(&format!("/v1/organizations?domain={query}"))
            .send(200)
            .await;
        assert_eq!(ids(&listed), [acme.as_str()], "for domain={query}");
    }
    let none = app
        .get("/v1/organizations?domain=initech.com")
        .send(200)
        .await;
    assert!(ids(&none).is_empty());
}

#[tokio::test]
async fn q_matches_a_case_insensitive_substring_of_the_name() {
    let app = TestApp::spawn().await;
    let acme = app.org_named("Acme Corporation").await;
    let acme_labs = app.org_named("ACME Labs").await;
    app.org_named("Globex").await;
    let listed = app.get("/v1/organizations?q=aCmE").send(200).await;
    assert_eq!(ids(&listed), [acme, acme_labs.clone()]);
    let listed = app.get("/v1/organizations?q=labs").send(200).await;
    assert_eq!(ids(&listed), [acme_labs]);
}

#[tokio::test]
async fn q_treats_percent_and_underscore_literally() {
    let app = TestApp::spawn().await;
    let percent = app.org_named("100% Real").await;
    app.org_named("100 Real").await;
    let underscore = app.org_named("snake_case").await;
    app.org_named("snakeXcase").await;
    let listed = app.get("/v1/organizations?q=%25").send(200).await;
    assert_eq!(ids(&listed), [percent]);
    let listed = app.get("/v1/organizations?q=_").send(200).await;
    assert_eq!(ids(&listed), [underscore.as_str()]);
    let listed = app.get("/v1/organizations?q=e_c").send(200).await;
    assert_eq!(ids(&listed), [underscore]);
}

#[tokio::test]
async fn filters_combine() {
    let app = TestApp::spawn().await;
    let parent = app.org_named("Holding").await;
    let keep = id_of(
        &app.create_org(json!({"name": "Alpha Team", "parent_id": parent}))
            .await,
    );
    let off = id_of(
        &app.create_org(json!({"name": "Alpha Disabled", "parent_id": parent}))
            .await,
    );
    app.create_org(json!({"name": "Beta Team", "parent_id": parent}))
        .await;
    app.org_named("Alpha Root").await;
    app.patch(
        &format!("/v1/organizations/{off}"),
        &json!({"enabled": false}),
    )
    .send(200)
    .await;
    let listed = app
        .get(&format!(
            "/v1/organizations?parent_id={parent}&enabled=true&q=alpha"
        ))
        .send(200)
        .await;
    assert_eq!(ids(&listed), [keep]);
}

#[tokio::test]
async fn deleted_organizations_are_left_out_of_lists() {
    let app = TestApp::spawn().await;
    let kept = app.org_named("Kept Co").await;
    let gone = id_of(
        &app.create_org(json!({"name": "Gone Co", "domains": ["gone.example"]}))
            .await,
    );
    app.req(Method::DELETE, &format!("/v1/organizations/{gone}"))
        .send(200)
        .await;
    assert_eq!(ids(&app.get("/v1/organizations").send(200).await), [kept]);
    assert!(ids(&app.get("/v1/organizations?q=gone").send(200).await).is_empty());
    assert!(ids(&app
        .get("/v1/organizations?domain=gone.example")
        .send(200)
        .await)
    .is_empty());
}

#[tokio::test]
async fn children_lists_only_live_direct_children() {
    let app = TestApp::spawn().await;
    let parent = id_of(
        &app.create_org(json!({"name": "Family", "slug": "family"}))
            .await,
    );
    let a = id_of(
        &app.create_org(json!({"name": "Kid A", "parent_id": parent}))
            .await,
    );
    let b = id_of(
        &app.create_org(json!({"name": "Kid B", "parent_id": parent}))
            .await,
    );
    let c = id_of(
        &app.create_org(json!({"name": "Kid C", "parent_id": parent}))
            .await,
    );
    app.create_org(json!({"name": "Grandkid", "parent_id": a}))
        .await;
    app.org_named("Stranger").await;
    app.req(Method::DELETE, &format!("/v1/organizations/{c}"))
        .send(200)
        .await;

    let by_id = app
        .get(&format!("/v1/organizations/{parent}/children"))
        .send(200)
        .await;
    assert_eq!(ids(&by_id), [a.clone(), b.clone()]);
    let by_slug = app.get("/v1/organizations/family/children").send(200).await;
    assert_eq!(ids(&by_slug), [a.clone(), b.clone()]);
    for child in by_id.body["items"].as_array().unwrap() {
        assert_eq!(child["parent_id"], parent.as_str());
        assert_eq!(child["managed"], true);
    }
    let (paged, _) = walk(&app, &format!("/v1/organizations/{parent}/children"), 1).await;
    assert_eq!(paged, [a, b]);
}

#[tokio::test]
async fn children_of_an_unknown_or_deleted_organization_is_404() {
    let app = TestApp::spawn().await;
    let gone = app.org_named("Gone Parent").await;
    app.req(Method::DELETE, &format!("/v1/organizations/{gone}"))
        .send(200)
        .await;
    for path in [
        format!("/v1/organizations/{gone}/children"),
        "/v1/organizations/nobody/children".to_owned(),
    ] {
        assert_eq!(
            app.get(&path).send(404).await.code(),
            "organization_not_found"
        );
    }
}

// ---- delete and restore ---------------------------------------------------------

#[tokio::test]
async fn deleting_answers_200_with_deleted_at_and_records_an_event() {
    let app = TestApp::spawn().await;
    let id = app.org_named("Doomed").await;
    let deleted = app
        .req(Method::DELETE, &format!("/v1/organizations/{id}"))
        .send(200)
        .await;
    assert_eq!(id_of(&deleted.body), id);
    assert_timestamp(&deleted.body["deleted_at"]);
    assert_eq!(deleted.body["version"], 2);
    assert_eq!(deleted.header("etag"), Some("\"2\""));

    let events = app.events(&id).await;
    let last = events.last().unwrap();
    assert_eq!(last["type"], "organization.deleted");
    assert_eq!(last["version"], 2);
    assert_eq!(last["changes"]["/deleted_at"]["from"], Value::Null);
    assert_eq!(
        last["changes"]["/deleted_at"]["to"],
        deleted.body["deleted_at"]
    );
}

#[tokio::test]
async fn deleting_twice_is_404_the_second_time() {
    let app = TestApp::spawn().await;
    let id = app.org_named("Once").await;
    app.req(Method::DELETE, &format!("/v1/organizations/{id}"))
        .send(200)
        .await;
    let again = app
        .req(Method::DELETE, &format!("/v1/organizations/{id}"))
        .send(404)
        .await;
    assert_eq!(again.code(), "organization_not_found");
    assert_eq!(
        event_types(&app, &id).await,
        ["organization.created", "organization.deleted"]
    );
}

#[tokio::test]
async fn deleting_an_organization_with_live_children_is_409_has_children_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let parent = app.org_named("Busy Parent").await;
    let child = id_of(
        &app.create_org(json!({"name": "Kid", "parent_id": parent}))
            .await,
    );
    let refused = app
        .req(Method::DELETE, &format!("/v1/organizations/{parent}"))
        .send(409)
        .await;
    assert_eq!(refused.code(), "has_children");

    let still = app
        .get(&format!("/v1/organizations/{parent}"))
        .send(200)
        .await;
    assert_eq!(still.body["version"], 1);
    assert_eq!(still.body["deleted_at"], Value::Null);
    assert_eq!(event_types(&app, &parent).await, ["organization.created"]);

    // Once the child is gone, the parent may go.
    app.req(Method::DELETE, &format!("/v1/organizations/{child}"))
        .send(200)
        .await;
    app.req(Method::DELETE, &format!("/v1/organizations/{parent}"))
        .send(200)
        .await;
}

#[tokio::test]
async fn restoring_brings_the_organization_back_with_a_new_version_and_an_event() {
    let app = TestApp::spawn().await;
    let org = app
        .create_org(json!({"name": "Phoenix", "slug": "phoenix", "domains": ["phoenix.example"]}))
        .await;
    let id = id_of(&org);
    let deleted = app
        .req(Method::DELETE, &format!("/v1/organizations/{id}"))
        .send(200)
        .await;
    let restored = app
        .req(Method::POST, &format!("/v1/organizations/{id}/restore"))
        .send(200)
        .await;
    assert_eq!(restored.body["deleted_at"], Value::Null);
    assert_eq!(
        restored.body["version"],
        deleted.body["version"].as_i64().unwrap() + 1
    );
    assert_eq!(restored.header("etag"), Some("\"3\""));
    assert_eq!(restored.body["slug"], "phoenix");
    assert_eq!(restored.body["domains"], json!(["phoenix.example"]));

    let fetched = app.get("/v1/organizations/phoenix").send(200).await;
    assert_eq!(fetched.body, restored.body);
    let listed = app
        .get("/v1/organizations?domain=phoenix.example")
        .send(200)
        .await;
    assert_eq!(ids(&listed), [id.as_str()]);

    let events = app.events(&id).await;
    let last = events.last().unwrap();
    assert_eq!(last["type"], "organization.restored");
    assert_eq!(last["version"], 3);
    assert_eq!(last["changes"]["/deleted_at"]["to"], Value::Null);
}

#[tokio::test]
async fn restoring_a_live_organization_returns_it_unchanged_without_an_event() {
    let app = TestApp::spawn().await;
    let org = app.create_org(json!({"name": "Alive"})).await;
    let id = id_of(&org);
    let restored = app
        .req(Method::POST, &format!("/v1/organizations/{id}/restore"))
        .send(200)
        .await;
    assert_eq!(restored.body, org);
    assert_eq!(restored.header("etag"), Some("\"1\""));
    assert_eq!(event_types(&app, &id).await, ["organization.created"]);
}

#[tokio::test]
async fn restoring_when_the_slug_is_now_taken_is_409_slug_taken() {
    let app = TestApp::spawn().await;
    let old = id_of(
        &app.create_org(json!({"name": "Old Acme", "slug": "acme"}))
            .await,
    );
    app.req(Method::DELETE, &format!("/v1/organizations/{old}"))
        .send(200)
        .await;
    let new = id_of(
        &app.create_org(json!({"name": "New Acme", "slug": "acme"}))
            .await,
    );

    let refused = app
        .req(Method::POST, &format!("/v1/organizations/{old}/restore"))
        .send(409)
        .await;
    assert_eq!(refused.code(), "slug_taken");
    assert_eq!(
        app.get(&format!("/v1/organizations/{old}"))
            .send(404)
            .await
            .code(),
        "organization_not_found"
    );
    assert_eq!(
        id_of(&app.get("/v1/organizations/acme").send(200).await.body),
        new
    );
    assert_eq!(
        event_types(&app, &old).await,
        ["organization.created", "organization.deleted"]
    );
}

#[tokio::test]
async fn restoring_when_a_domain_is_now_taken_is_409_domain_taken() {
    let app = TestApp::spawn().await;
    let old = id_of(
        &app.create_org(json!({"name": "Old", "domains": ["shared.example", "old.example"]}))
            .await,
    );
    app.req(Method::DELETE, &format!("/v1/organizations/{old}"))
        .send(200)
        .await;
    let new = id_of(
        &app.create_org(json!({"name": "New", "domains": ["shared.example"]}))
            .await,
    );

    let refused = app
        .req(Method::POST, &format!("/v1/organizations/{old}/restore"))
        .send(409)
        .await;
    assert_eq!(refused.code(), "domain_taken");
    app.get(&format!("/v1/organizations/{old}")).send(404).await;
    let listed = app
        .get("/v1/organizations?domain=shared.example")
        .send(200)
        .await;
    assert_eq!(ids(&listed), [new]);
    // The failed restore put none of the old org's domains back.
    assert!(ids(&app
        .get("/v1/organizations?domain=old.example")
        .send(200)
        .await)
    .is_empty());
    assert_eq!(
        event_types(&app, &old).await,
        ["organization.created", "organization.deleted"]
    );
}

#[tokio::test]
async fn restoring_a_child_whose_parent_is_deleted_is_409_parent_deleted() {
    let app = TestApp::spawn().await;
    let parent = app.org_named("Gone Parent").await;
    let child = id_of(
        &app.create_org(json!({"name": "Orphan", "parent_id": parent}))
            .await,
    );
    app.req(Method::DELETE, &format!("/v1/organizations/{child}"))
        .send(200)
        .await;
    app.req(Method::DELETE, &format!("/v1/organizations/{parent}"))
        .send(200)
        .await;

    let refused = app
        .req(Method::POST, &format!("/v1/organizations/{child}/restore"))
        .send(409)
        .await;
    assert_eq!(refused.code(), "parent_deleted");
    app.get(&format!("/v1/organizations/{child}"))
        .send(404)
        .await;

    // Restoring the parent first makes the child restorable.
    app.req(Method::POST, &format!("/v1/organizations/{parent}/restore"))
        .send(200)
        .await;
    let restored = app
        .req(Method::POST, &format!("/v1/organizations/{child}/restore"))
        .send(200)
        .await;
    assert_eq!(restored.body["parent_id"], parent.as_str());
}

#[tokio::test]
async fn restoring_an_unknown_organization_is_404() {
    let app = TestApp::spawn().await;
    let missing = app
        .req(
            Method::POST,
            "/v1/organizations/org_01h455vb4pex5vsknk084sn02q/restore",
        )
        .send(404)
        .await;
    assert_eq!(missing.code(), "organization_not_found");
}

// ---- events ---------------------------------------------------------------------

#[tokio::test]
async fn an_organizations_events_are_listed_oldest_first() {
    let app = TestApp::spawn().await;
    let id = app.org_named("Chronicle").await;
    for n in 1..=3 {
        app.patch(
            &format!("/v1/organizations/{id}"),
            &json!({"description": format!("v{n}")}),
        )
        .send(200)
        .await;
    }
    let events = app.events(&id).await;
    let versions: Vec<i64> = events
        .iter()
        .map(|e| e["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2, 3, 4]);
    assert_eq!(
        event_types(&app, &id).await,
        [
            "organization.created",
            "organization.updated",
            "organization.updated",
            "organization.updated"
        ]
    );
    assert_eq!(events[3]["changes"]["/description"]["from"], "v2");
    assert_eq!(events[3]["changes"]["/description"]["to"], "v3");
    let stamps: Vec<&str> = events
        .iter()
        .map(|e| e["occurred_at"].as_str().unwrap())
        .collect();
    let mut sorted = stamps.clone();
    sorted.sort();
    assert_eq!(stamps, sorted);
}

#[tokio::test]
async fn events_are_paginated_with_a_cursor() {
    let app = TestApp::spawn().await;
    let id = app.org_named("Long Story").await;
    for n in 1..=6 {
        app.patch(
            &format!("/v1/organizations/{id}"),
            &json!({"description": format!("v{n}")}),
        )
        .send(200)
        .await;
    }
    let mut versions = Vec::new();
    let mut event_ids = HashSet::new();
    let mut url = format!("/v1/organizations/{id}/events?limit=3");
    let mut pages = 0;
    loop {
        let page = app.get(&url).send(200).await;
        pages += 1;
        for event in page.body["items"].as_array().unwrap() {
            versions.push(event["version"].as_i64().unwrap());
            assert!(
                event_ids.insert(event["id"].as_str().unwrap().to_owned()),
                "an event came twice"
            );
        }
        match page.body["next_cursor"].as_str() {
            Some(c) => url = format!("/v1/organizations/{id}/events?limit=3&cursor={c}"),
            None => break,
        }
        assert!(pages < 10);
    }
    assert_eq!(versions, (1..=7).collect::<Vec<_>>());
    assert_eq!(pages, 3);
}

#[tokio::test]
async fn events_only_list_the_organizations_own_events() {
    let app = TestApp::spawn().await;
    let a = app.org_named("A").await;
    let b = app.org_named("B").await;
    app.patch(
        &format!("/v1/organizations/{b}"),
        &json!({"description": "b"}),
    )
    .send(200)
    .await;
    let events = app.events(&a).await;
    assert_eq!(events.len(), 1);
    assert!(events.iter().all(|e| e["organization_id"] == a.as_str()));
}

#[tokio::test]
async fn reading_events_needs_the_events_read_scope() {
    let app = TestApp::spawn().await;
    let id = app.org_named("Private Past").await;
    let reader = app
        .key(&["organizations:read", "organizations:write"], None)
        .await;
    let refused = app
        .get(&format!("/v1/organizations/{id}/events"))
        .key(Some(&reader))
        .send(403)
        .await;
    assert_eq!(refused.code(), "permission_denied");

    let auditor = app.key(&["events:read"], None).await;
    let allowed = app
        .get(&format!("/v1/organizations/{id}/events"))
        .key(Some(&auditor))
        .send(200)
        .await;
    assert_eq!(allowed.body["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn events_of_a_deleted_organization_are_still_listed() {
    let app = TestApp::spawn().await;
    let id = app
        .create_org(json!({"name": "History", "slug": "history"}))
        .await;
    let id = id_of(&id);
    app.req(Method::DELETE, &format!("/v1/organizations/{id}"))
        .send(200)
        .await;
    assert_eq!(
        event_types(&app, &id).await,
        ["organization.created", "organization.deleted"]
    );
    let by_slug = app.get("/v1/organizations/history/events").send(200).await;
    assert_eq!(by_slug.body["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn an_event_carries_the_request_id_of_the_request_that_made_it() {
    let app = TestApp::spawn().await;
    let created = app
        .post("/v1/organizations", &json!({"name": "Traced"}))
        .header("x-request-id", "trace-me-123")
        .send(201)
        .await;
    let events = app.events(&id_of(&created.body)).await;
    assert_eq!(events[0]["request_id"], "trace-me-123");
}

// ---- keys bound to a subtree ----------------------------------------------------

#[tokio::test]
async fn a_key_bound_to_a_subtree_lists_and_reads_only_that_subtree() {
    let app = TestApp::spawn().await;
    let root = app.org_named("Tenant Root").await;
    let child = id_of(
        &app.create_org(json!({"name": "Tenant Child", "parent_id": root}))
            .await,
    );
    let grandchild = id_of(
        &app.create_org(json!({"name": "Tenant Grandchild", "parent_id": child}))
            .await,
    );
    let outsider = app.org_named("Outsider").await;
    let outsider_child = id_of(
        &app.create_org(json!({"name": "Outsider Child", "parent_id": outsider}))
            .await,
    );

    let bound = app.key(&["organizations:read"], Some(&child)).await;
    let listed = app
        .get("/v1/organizations")
        .key(Some(&bound))
        .send(200)
        .await;
    assert_eq!(ids(&listed), [child.clone(), grandchild.clone()]);

    app.get(&format!("/v1/organizations/{grandchild}"))
        .key(Some(&bound))
        .send(200)
        .await;
    for hidden in [&root, &outsider, &outsider_child] {
        let refused = app
            .get(&format!("/v1/organizations/{hidden}"))
            .key(Some(&bound))
            .send(404)
            .await;
        assert_eq!(refused.code(), "organization_not_found");
    }
    let children = app
        .get(&format!("/v1/organizations/{root}/children"))
        .key(Some(&bound))
        .send(404)
        .await;
    assert_eq!(children.code(), "organization_not_found");
}

#[tokio::test]
async fn a_key_bound_to_a_subtree_creates_only_under_a_parent_inside_it() {
    let app = TestApp::spawn().await;
    let root = app.org_named("Tenant").await;
    let outsider = app.org_named("Elsewhere").await;
    let bound = app.key(&["organizations:write"], Some(&root)).await;

    let no_parent = app
        .post("/v1/organizations", &json!({"name": "Loose"}))
        .key(Some(&bound))
        .send(403)
        .await;
    assert_eq!(no_parent.code(), "permission_denied");

    let outside = app
        .post(
            "/v1/organizations",
            &json!({"name": "Escapee", "parent_id": outsider}),
        )
        .key(Some(&bound))
        .send(422)
        .await;
    assert_eq!(
        outside.pointers(),
        ["/parent_id"],
        "an outside parent is reported as not found"
    );
    assert_eq!(count_orgs(&app).await, 2);

    let inside = app
        .post(
            "/v1/organizations",
            &json!({"name": "Inside", "parent_id": root}),
        )
        .key(Some(&bound))
        .send(201)
        .await;
    let deeper = app
        .post(
            "/v1/organizations",
            &json!({"name": "Deeper", "parent_id": id_of(&inside.body)}),
        )
        .key(Some(&bound))
        .send(201)
        .await;
    assert_eq!(deeper.body["parent_id"], inside.body["id"]);
    assert_eq!(count_orgs(&app).await, 4);
}

#[tokio::test]
async fn a_key_bound_to_a_subtree_cannot_read_events_of_or_delete_or_restore_outside_it() {
    let app = TestApp::spawn().await;
    let tenant = app.org_named("Tenant").await;
    let outsider = app.org_named("Outsider").await;
    let gone = app.org_named("Deleted Outsider").await;
    app.req(Method::DELETE, &format!("/v1/organizations/{gone}"))
        .send(200)
        .await;
    let bound = app
        .key(&["organizations:write", "events:read"], Some(&tenant))
        .await;

    let events = app
        .get(&format!("/v1/organizations/{outsider}/events"))
        .key(Some(&bound))
        .send(404)
        .await;
    assert_eq!(events.code(), "organization_not_found");
    let deleted = app
        .req(Method::DELETE, &format!("/v1/organizations/{outsider}"))
        .key(Some(&bound))
        .send(404)
        .await;
    assert_eq!(deleted.code(), "organization_not_found");
    let restored = app
        .req(Method::POST, &format!("/v1/organizations/{gone}/restore"))
        .key(Some(&bound))
        .send(404)
        .await;
    assert_eq!(restored.code(), "organization_not_found");

    app.get(&format!("/v1/organizations/{outsider}"))
        .send(200)
        .await;
    app.get(&format!("/v1/organizations/{gone}"))
        .send(404)
        .await;
    // Its own org's trail is readable.
    app.get(&format!("/v1/organizations/{tenant}/events"))
        .key(Some(&bound))
        .send(200)
        .await;
}

// ---- further decisions of docs/API-DESIGN.md --------------------------------------

#[tokio::test]
async fn a_slug_names_the_live_org_before_a_deleted_one_and_otherwise_the_latest_deleted() {
    let app = TestApp::spawn().await;
    let first = id_of(
        &app.create_org(json!({"name": "First", "slug": "reused"}))
            .await,
    );
    app.req(Method::DELETE, "/v1/organizations/reused")
        .send(200)
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let second = id_of(
        &app.create_org(json!({"name": "Second", "slug": "reused"}))
            .await,
    );
    assert_eq!(
        id_of(&app.get("/v1/organizations/reused").send(200).await.body),
        second
    );

    // Restoring by slug while a live org holds it answers the live one unchanged.
    let live = app
        .req(Method::POST, "/v1/organizations/reused/restore")
        .send(200)
        .await;
    assert_eq!(id_of(&live.body), second);
    assert_eq!(live.body["version"], 1);

    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    app.req(Method::DELETE, "/v1/organizations/reused")
        .send(200)
        .await;
    let restored = app
        .req(Method::POST, "/v1/organizations/reused/restore")
        .send(200)
        .await;
    assert_eq!(
        id_of(&restored.body),
        second,
        "the most recently deleted org comes back"
    );
    app.get(&format!("/v1/organizations/{first}"))
        .send(404)
        .await;
}

#[tokio::test]
async fn a_cursor_from_one_list_is_refused_by_another() {
    let app = TestApp::spawn().await;
    let id = app.org_named("Cursors").await;
    for n in 0..2 {
        app.patch(
            &format!("/v1/organizations/{id}"),
            &json!({"description": format!("d{n}")}),
        )
        .send(200)
        .await;
    }
    app.org_named("Another").await;
    let events = app
        .get(&format!("/v1/organizations/{id}/events?limit=1"))
        .send(200)
        .await;
    let event_cursor = events.body["next_cursor"]
        .as_str()
        .expect("an events cursor");
    let refused = app
        .get(&format!("/v1/organizations?cursor={event_cursor}"))
        .send(422)
        .await;
    assert_eq!(refused.pointers(), ["/cursor"]);

    let orgs = app.get("/v1/organizations?limit=1").send(200).await;
    let org_cursor = orgs.body["next_cursor"].as_str().expect("an orgs cursor");
    let refused = app
        .get(&format!(
            "/v1/organizations/{id}/events?cursor={org_cursor}"
        ))
        .send(422)
        .await;
    assert_eq!(refused.pointers(), ["/cursor"]);
}

#[tokio::test]
async fn a_failed_create_stores_nothing_so_a_corrected_retry_may_reuse_the_idempotency_key() {
    let app = TestApp::spawn().await;
    app.post("/v1/organizations", &json!({"name": ""}))
        .header("idempotency-key", "fix-and-retry")
        .send(422)
        .await;
    let fixed = app
        .post("/v1/organizations", &json!({"name": "Fixed"}))
        .header("idempotency-key", "fix-and-retry")
        .send(201)
        .await;
    assert_eq!(fixed.header("idempotent-replayed"), None);
    assert_eq!(fixed.body["name"], "Fixed");
}

#[tokio::test]
async fn a_retry_listing_the_same_fields_in_another_order_is_a_replay() {
    let app = TestApp::spawn().await;
    let first = app
        .req(Method::POST, "/v1/organizations")
        .raw(
            "application/json",
            r#"{"name": "Ordered", "description": "d", "is_business": true}"#,
        )
        .header("idempotency-key", "ordered")
        .send(201)
        .await;
    let retry = app
        .req(Method::POST, "/v1/organizations")
        .raw(
            "application/json",
            r#"{"is_business": true, "description": "d", "name": "Ordered"}"#,
        )
        .header("idempotency-key", "ordered")
        .send(201)
        .await;
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(id_of(&retry.body), id_of(&first.body));
}

#[tokio::test]
async fn a_malformed_idempotency_key_is_400_and_creates_nothing() {
    let app = TestApp::spawn().await;
    for key in ["k".repeat(256), "has space".to_owned()] {
        let refused = app
            .post("/v1/organizations", &json!({"name": "Keyed"}))
            .header("idempotency-key", &key)
            .send(400)
            .await;
        assert_eq!(refused.code(), "invalid_header");
    }
    assert_eq!(count_orgs(&app).await, 0);
}

#[tokio::test]
async fn deleting_with_a_stale_if_match_is_412_and_keeps_the_organization() {
    let app = TestApp::spawn().await;
    let id = app.org_named("Guarded Delete").await;
    app.patch(
        &format!("/v1/organizations/{id}"),
        &json!({"description": "v2"}),
    )
    .send(200)
    .await;
    let refused = app
        .req(Method::DELETE, &format!("/v1/organizations/{id}"))
        .header("if-match", "\"1\"")
        .send(412)
        .await;
    assert_eq!(refused.code(), "version_mismatch");
    app.get(&format!("/v1/organizations/{id}")).send(200).await;
    let deleted = app
        .req(Method::DELETE, &format!("/v1/organizations/{id}"))
        .header("if-match", "\"2\"")
        .header("prefer", "return=minimal")
        .send(204)
        .await;
    assert!(deleted.text.is_empty());
    assert_eq!(deleted.header("etag"), Some("\"3\""));
    app.get(&format!("/v1/organizations/{id}")).send(404).await;
}

#[tokio::test]
async fn a_made_slug_stays_within_63_characters_and_the_slug_rule() {
    let app = TestApp::spawn().await;
    let long = "Extraordinarily Long Organization Name ".repeat(5);
    for _ in 0..2 {
        let org = app.create_org(json!({"name": long.trim()})).await;
        let slug = org["slug"].as_str().unwrap();
        assert!(
            (1..=63).contains(&slug.len()),
            "{slug} is {} long",
            slug.len()
        );
        assert!(!slug.starts_with('-') && !slug.ends_with('-'), "{slug}");
        assert!(
            slug.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "{slug}"
        );
    }
    let org = app.create_org(json!({"name": "Société Générale"})).await;
    assert_eq!(org["slug"], "societe-generale");
}

#[tokio::test]
async fn a_name_that_makes_no_slug_gets_a_distinct_valid_fallback_slug() {
    let app = TestApp::spawn().await;
    let a = app.create_org(json!({"name": "!!!"})).await;
    let b = app.create_org(json!({"name": "!!!"})).await;
    for org in [&a, &b] {
        let slug = org["slug"].as_str().unwrap();
        assert!(slug.starts_with("org-") && slug.len() > 4, "{slug}");
        assert!(
            slug.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "{slug}"
        );
    }
    assert_ne!(a["slug"], b["slug"]);
}

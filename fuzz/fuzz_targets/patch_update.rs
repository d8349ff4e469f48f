//! PATCH bodies against a fully populated organization: parsing and planning never
//! panic, and an accepted patch obeys the invariants the store and the audit rely on.
#![no_main]

use std::sync::OnceLock;

use jiff::Timestamp;
use libfuzzer_sys::fuzz_target;
use orgd::domain::ids::OrgId;
use orgd::domain::org::Organization;
use orgd::domain::patch::{self, Outcome};
use serde_json::{json, Map, Value};

fn current() -> &'static Organization {
    static ORG: OnceLock<Organization> = OnceLock::new();
    ORG.get_or_init(|| {
        let body = json!({
            "name": "Acme Corporation",
            "slug": "acme",
            "alias_name": "Acme",
            "description": "Makers of everything",
            "domains": ["acme.example", "acme.test"],
            "primary_domain": "acme.example",
            "website": "https://acme.example/",
            "phone": "+14155550100",
            "address": {"line1": "1 Main St", "city": "Springfield", "country": "US"},
            "time_zone": "Europe/Paris",
            "metadata": {"tier": "gold", "nested": {"a": 1, "b": [1, 2]}}
        });
        let Value::Object(body) = body else {
            unreachable!()
        };
        let parsed = patch::parse_create(&body);
        let id = OrgId::parse("org_01jd8c0v7qf3x9y2k5m6n8p4rs").expect("a valid id");
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().expect("a timestamp");
        let (org, _) = patch::plan_create(&parsed, id, now).expect("the fixture is valid");
        org
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<Map<String, Value>>(data) else {
        return;
    };
    let before = current();
    let now: Timestamp = "2026-06-01T00:00:00Z".parse().expect("a timestamp");
    let parsed = patch::parse(&body);
    match parsed.plan(before, now) {
        Err(errors) => {
            assert!(!errors.is_empty(), "a refusal names its errors");
            for e in &errors {
                assert!(e.pointer.starts_with('/'), "pointer {:?}", e.pointer);
            }
        }
        Ok(Outcome::Unchanged) => {}
        Ok(Outcome::Changed { org, changes }) => {
            assert!(!changes.is_empty());
            assert_eq!(org.version, before.version + 1);
            assert_eq!(org.updated_at, now);
            assert_eq!((org.id, org.created_at), (before.id, before.created_at));
            // The audit's diff is exactly what the plan reported.
            assert_eq!(patch::diff(before, &org), changes);
            // The stored document reads back as the same organization.
            let doc = serde_json::to_string(&*org).expect("serializes");
            let back: Organization = serde_json::from_str(&doc).expect("reads back");
            assert_eq!(&back, &*org);
            // PATCH is idempotent: the same body again changes nothing.
            match parsed.plan(&org, now) {
                Ok(Outcome::Unchanged) => {}
                other => panic!("re-applying the patch gave {other:?}"),
            }
        }
    }
});

//! Create bodies: parsing and planning never panic; an accepted body makes a valid,
//! storable organization at version 1 whose creation event covers every field set.
#![no_main]

use jiff::Timestamp;
use libfuzzer_sys::fuzz_target;
use orgd::domain::fields::Slug;
use orgd::domain::ids::OrgId;
use orgd::domain::org::Organization;
use orgd::domain::patch::{self, Outcome};
use serde_json::{Map, Value};

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<Map<String, Value>>(data) else {
        return;
    };
    let parsed = patch::parse_create(&body);
    let id = OrgId::parse("org_01jd8c0v7qf3x9y2k5m6n8p4rs").expect("a valid id");
    let now: Timestamp = "2026-01-01T00:00:00Z".parse().expect("a timestamp");
    let Ok((org, _)) = patch::plan_create(&parsed, id, now) else {
        return;
    };
    assert!(parsed.errors.is_empty());
    assert_eq!(org.version, 1);
    assert_eq!(
        Slug::parse(org.slug.as_str()).ok().as_ref(),
        Some(&org.slug)
    );
    let doc = serde_json::to_string(&org).expect("serializes");
    let back: Organization = serde_json::from_str(&doc).expect("reads back");
    assert_eq!(back, org);
    // Re-sending the create body as a patch of the new org changes nothing.
    match parsed.plan(&org, now) {
        Ok(Outcome::Unchanged) => {}
        other => panic!("the create body as a patch gave {other:?}"),
    }
    // The creation event records every field that differs from an empty value.
    let changes = patch::creation_changes(&org);
    assert!(changes.contains_key("/name") && changes.contains_key("/slug"));
});

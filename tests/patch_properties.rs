//! Property tests of the typed patch (SPEC §1–§2) against the public domain API:
//! `patch::parse`, `ParsedPatch::plan`, `OrgPatch::apply`, `patch::diff` and
//! `patch::creation_changes`.
//!
//! Valid organizations are grown the way the service grows them: `Organization::new`
//! and then a generated valid body planned onto it. Valid values come in pairs: what
//! a client may send (`"Example.COM"`, `"+1 (415) 555-2671"`) and the canonical form
//! the organization must hold (`"example.com"`, `"+14155552671"`), so one property
//! can compare the planned organization with an independent model: the canonical
//! body merged onto the old organization's JSON.

use std::collections::BTreeSet;

use jiff::Timestamp;
use proptest::collection::{btree_map, btree_set, vec};
use proptest::prelude::*;
use proptest::sample::{select, subsequence};
use serde_json::{json, Map, Value};

use orgd::domain::fields::{OrgName, Slug};
use orgd::domain::ids::OrgId;
use orgd::domain::org::{Field, Organization};
use orgd::domain::patch::{self, Outcome};

// ---- fixtures -------------------------------------------------------------------

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(seconds).expect("a valid timestamp")
}

/// When the generated organizations were created, grown, and then patched.
fn created() -> Timestamp {
    at(1_700_000_000)
}
fn grown() -> Timestamp {
    at(1_700_000_100)
}
fn patched() -> Timestamp {
    at(1_700_000_200)
}

fn seed_org() -> Organization {
    Organization::new(
        OrgId::parse("org_01h455vb4pex5vsknk084sn02q").expect("a valid id"),
        Slug::parse("seed").expect("a valid slug"),
        OrgName::parse("Seed").expect("a valid name"),
        created(),
    )
}

/// A body as sent, and the same body with every value in the form the org stores.
#[derive(Debug, Clone, Default)]
struct Body {
    raw: Map<String, Value>,
    canonical: Map<String, Value>,
}

impl Body {
    fn set(&mut self, key: &str, raw: Value, canonical: Value) {
        self.raw.insert(key.to_owned(), raw);
        self.canonical.insert(key.to_owned(), canonical);
    }
}

/// A value as sent and as stored.
type Pair = (Value, Value);

fn same(value: Value) -> Pair {
    (value.clone(), value)
}

// ---- JSON Pointer helpers ----------------------------------------------------------

fn tokens(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .skip(1)
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// The value at `pointer` (RFC 6901), or `None` when some step is missing.
fn lookup<'a>(root: &'a Value, pointer: &str) -> Option<&'a Value> {
    if pointer.is_empty() {
        return Some(root);
    }
    tokens(pointer)
        .iter()
        .try_fold(root, |value, token| match value {
            Value::Object(map) => map.get(token),
            Value::Array(items) => token.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        })
}

/// The value at `pointer`, a missing key counting as `null`.
fn resolve(root: &Value, pointer: &str) -> Value {
    lookup(root, pointer).cloned().unwrap_or(Value::Null)
}

fn parent(pointer: &str) -> &str {
    pointer.rfind('/').map_or("", |i| &pointer[..i])
}

/// `pointer` equals `/field` or lies below it.
fn is_inside(pointer: &str, field: &str) -> bool {
    let top = format!("/{field}");
    pointer == top || pointer.starts_with(&format!("{top}/"))
}

// ---- a reference merge ------------------------------------------------------------

/// RFC 7396 §2, as written.
fn rfc7396_merge(target: &Value, patch: &Value) -> Value {
    match patch {
        Value::Object(members) => {
            let mut out = match target {
                Value::Object(map) => map.clone(),
                _ => Map::new(),
            };
            for (name, value) in members {
                if value.is_null() {
                    out.remove(name);
                } else {
                    let current = out.get(name).cloned().unwrap_or(Value::Null);
                    out.insert(name.clone(), rfc7396_merge(&current, value));
                }
            }
            Value::Object(out)
        }
        _ => patch.clone(),
    }
}

fn writable_json(org: &Organization) -> Map<String, Value> {
    org.writable_values()
        .into_iter()
        .map(|(field, value)| (field.name().to_owned(), value))
        .collect()
}

/// What the organization's writable fields must be after the canonical body is
/// merged in, computed without the crate: fields replace whole, `address` merges
/// key by key (and an address with no line left is `null`), `metadata` merges as
/// RFC 7396 says.
fn model_merge(before: &Organization, canonical: &Map<String, Value>) -> Map<String, Value> {
    let mut out = writable_json(before);
    for (key, value) in canonical {
        let merged = match key.as_str() {
            "metadata" => rfc7396_merge(&out["metadata"], value),
            "address" => match value {
                Value::Null => Value::Null,
                Value::Object(lines) => {
                    let mut address = match &out["address"] {
                        Value::Object(map) => map.clone(),
                        _ => ["line1", "line2", "city", "region", "postal_code", "country"]
                            .iter()
                            .map(|k| ((*k).to_owned(), Value::Null))
                            .collect(),
                    };
                    for (line, v) in lines {
                        address.insert(line.clone(), v.clone());
                    }
                    if address.values().all(Value::is_null) {
                        Value::Null
                    } else {
                        Value::Object(address)
                    }
                }
                other => panic!("the generator made a non-object address: {other}"),
            },
            _ => value.clone(),
        };
        out.insert(key.clone(), merged);
    }
    out
}

// ---- strategies for valid values -----------------------------------------------------

fn nullable(values: impl Strategy<Value = Pair> + 'static) -> BoxedStrategy<Pair> {
    prop_oneof![1 => Just(same(Value::Null)), 4 => values].boxed()
}

fn slug() -> impl Strategy<Value = Pair> {
    "[a-z0-9]{1,4}(-[a-z0-9]{1,4}){0,2}".prop_map(|s| same(Value::String(s)))
}

fn name() -> impl Strategy<Value = Pair> {
    let plain = ("[A-Z][a-z]{0,8}( [A-Z][a-z]{0,8}){0,2}", " {0,2}", " {0,2}")
        .prop_map(|(base, before, after)| (json!(format!("{before}{base}{after}")), json!(base)));
    let unicode = select(vec![
        "Société Générale",
        "東京株式会社",
        "Ærø Ølstue",
        "Zoë & Co.",
    ])
    .prop_map(|s| same(json!(s)));
    prop_oneof![4 => plain, 1 => unicode]
}

/// Free text: anything but NUL is allowed, control characters included.
fn text(max: usize) -> impl Strategy<Value = Pair> {
    prop_oneof![
        proptest::string::string_regex(&format!("\\PC{{0,{}}}", max.min(24)))
            .expect("a valid pattern")
            .prop_map(|s| same(json!(s))),
        select(vec![
            "",
            " ",
            "line\nbreak",
            "tab\there",
            "~/slashes/and~tildes~1"
        ])
        .prop_map(|s| same(json!(s))),
    ]
}

/// Domains as sent, and as stored (IDNA, lower case, no trailing dot).
const DOMAINS: [(&str, &str); 6] = [
    ("acme.com", "acme.com"),
    ("ACME.io", "acme.io"),
    ("bücher.example", "xn--bcher-kva.example"),
    ("Example.ORG.", "example.org"),
    ("sub.acme.com", "sub.acme.com"),
    ("tenant-1.example.net", "tenant-1.example.net"),
];

fn domain() -> impl Strategy<Value = Pair> {
    select(DOMAINS.to_vec()).prop_map(|(raw, canonical)| (json!(raw), json!(canonical)))
}

fn domains() -> impl Strategy<Value = Pair> {
    subsequence(DOMAINS.to_vec(), 0..=4)
        .prop_shuffle()
        .prop_map(|list| {
            let raw: Vec<&str> = list.iter().map(|(r, _)| *r).collect();
            let canonical: Vec<&str> = list.iter().map(|(_, c)| *c).collect();
            (json!(raw), json!(canonical))
        })
}

fn logo_url() -> impl Strategy<Value = Pair> {
    select(vec![
        ("https://acme.com/logo.png", "https://acme.com/logo.png"),
        (
            "https://CDN.Acme.com/a b.png",
            "https://cdn.acme.com/a%20b.png",
        ),
        ("https://example.org", "https://example.org/"),
    ])
    .prop_map(|(raw, canonical)| (json!(raw), json!(canonical)))
}

fn website() -> impl Strategy<Value = Pair> {
    select(vec![
        ("http://acme.com", "http://acme.com/"),
        (
            "https://www.acme.com/about?x=1",
            "https://www.acme.com/about?x=1",
        ),
        ("HTTPS://Example.org/Path", "https://example.org/Path"),
    ])
    .prop_map(|(raw, canonical)| (json!(raw), json!(canonical)))
}

fn phone() -> impl Strategy<Value = Pair> {
    select(vec![
        ("+1 (415) 555-2671", "+14155552671"),
        ("+44 20 7946 0958", "+442079460958"),
        ("+14155552671", "+14155552671"),
        ("+33 1 42 68 53 00", "+33142685300"),
    ])
    .prop_map(|(raw, canonical)| (json!(raw), json!(canonical)))
}

fn country() -> impl Strategy<Value = Pair> {
    select(vec![("us", "US"), ("DE", "DE"), ("gb", "GB"), ("Fr", "FR")])
        .prop_map(|(raw, canonical)| (json!(raw), json!(canonical)))
}

const ADDRESS_KEYS: [&str; 6] = ["line1", "line2", "city", "region", "postal_code", "country"];

/// An address merge document: some keys, each set or cleared.
fn address() -> impl Strategy<Value = Pair> {
    let line = || nullable(text(40));
    (
        proptest::option::of(line()),
        proptest::option::of(line()),
        proptest::option::of(line()),
        proptest::option::of(line()),
        proptest::option::of(line()),
        proptest::option::of(nullable(country())),
    )
        .prop_map(|(a, b, c, d, e, f)| {
            let (mut raw, mut canonical) = (Map::new(), Map::new());
            for (key, pair) in ADDRESS_KEYS.iter().zip([a, b, c, d, e, f]) {
                if let Some((r, c)) = pair {
                    raw.insert((*key).to_owned(), r);
                    canonical.insert((*key).to_owned(), c);
                }
            }
            (Value::Object(raw), Value::Object(canonical))
        })
}

fn time_zone() -> impl Strategy<Value = Pair> {
    select(vec![
        "Europe/Berlin",
        "America/New_York",
        "UTC",
        "Asia/Tokyo",
        "Australia/Sydney",
    ])
    .prop_map(|s| same(json!(s)))
}

fn parent_id() -> impl Strategy<Value = Pair> {
    "org_[0-7][0-9a-hjkmnp-tv-z]{25}".prop_map(|s| same(json!(s)))
}

fn subscription_id() -> impl Strategy<Value = Pair> {
    "[ -~]{1,40}".prop_map(|s| same(json!(s)))
}

fn app_ids() -> impl Strategy<Value = Pair> {
    btree_set("[a-z][a-z0-9_.-]{0,10}", 0..4)
        .prop_map(|set| set.into_iter().collect::<Vec<_>>())
        .prop_shuffle()
        .prop_map(|list| same(json!(list)))
}

fn limit_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        select(vec![0.5, 1.25, -3.75, 1e10]).prop_map(Value::from),
        "[a-z ]{0,10}".prop_map(Value::String),
    ]
}

fn policy() -> impl Strategy<Value = Pair> {
    (
        "[A-Za-z][A-Za-z0-9 ]{0,12}",
        proptest::option::of(btree_map("[a-z][a-z_]{0,9}", limit_value(), 0..5)),
        proptest::option::of(0u64..10_000),
    )
        .prop_map(|(name, limits, max_members)| {
            let mut limits: Option<Map<String, Value>> = limits.map(|l| l.into_iter().collect());
            if let Some(max) = max_members {
                limits
                    .get_or_insert_with(Map::new)
                    .insert("max_members".into(), json!(max));
            }
            let mut raw = json!({ "name": name });
            if let Some(limits) = &limits {
                raw["limits"] = Value::Object(limits.clone());
            }
            let canonical = json!({ "name": name, "limits": limits.unwrap_or_default() });
            (raw, canonical)
        })
}

/// Keys that collide often, including ones a pointer must escape.
const METADATA_KEYS: [&str; 8] = ["plan", "tier", "crm", "a/b", "x~y", "~1", "nested", "n"];

fn metadata_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(Value::from),
        select(vec![0.5, -2.25, 1e-3]).prop_map(Value::from),
        "\\PC{0,8}".prop_map(Value::String),
    ]
}

/// A metadata value in a merge document: `null` removes, objects merge, the rest replaces.
fn metadata_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![1 => Just(Value::Null), 4 => metadata_leaf()];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..3).prop_map(Value::Array),
            btree_map(select(METADATA_KEYS.to_vec()), inner, 0..4).prop_map(|m| Value::Object(
                m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
            )),
        ]
    })
}

fn metadata_doc() -> impl Strategy<Value = Map<String, Value>> {
    btree_map(select(METADATA_KEYS.to_vec()), metadata_value(), 0..5)
        .prop_map(|m| m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

fn metadata() -> impl Strategy<Value = Pair> {
    metadata_doc().prop_map(|m| same(Value::Object(m)))
}

/// Every writable field with a strategy of valid values for it.
fn field_values() -> Vec<(&'static str, BoxedStrategy<Pair>)> {
    vec![
        ("slug", slug().boxed()),
        ("name", name().boxed()),
        ("alias_name", nullable(text(200))),
        ("description", nullable(text(2000))),
        (
            "enabled",
            any::<bool>().prop_map(|b| same(json!(b))).boxed(),
        ),
        ("domains", domains().boxed()),
        ("primary_domain", nullable(domain())),
        ("logo_url", nullable(logo_url())),
        ("website", nullable(website())),
        ("phone", nullable(phone())),
        ("address", nullable(address())),
        (
            "is_business",
            any::<bool>().prop_map(|b| same(json!(b))).boxed(),
        ),
        (
            "mfa_required",
            any::<bool>().prop_map(|b| same(json!(b))).boxed(),
        ),
        ("time_zone", nullable(time_zone())),
        ("parent_id", nullable(parent_id())),
        ("subscription_id", nullable(subscription_id())),
        ("app_ids", app_ids().boxed()),
        ("policy", nullable(policy())),
        ("metadata", metadata().boxed()),
    ]
}

/// A body naming each writable field with probability `p`, every value valid on
/// its own (the cross-field rule on `primary_domain` is settled by `consistent`).
fn body(p: f64) -> impl Strategy<Value = Body> {
    let fields: Vec<BoxedStrategy<Option<(&'static str, Pair)>>> = field_values()
        .into_iter()
        .map(|(key, values)| {
            proptest::option::weighted(p, values.prop_map(move |pair| (key, pair))).boxed()
        })
        .collect();
    fields.prop_map(|entries| {
        let mut body = Body::default();
        for (key, (raw, canonical)) in entries.into_iter().flatten() {
            body.set(key, raw, canonical);
        }
        body
    })
}

/// Settles `primary_domain ∈ domains` for a body planned onto `current`: a primary
/// domain that the result would not list is sent as `null` instead.
fn consistent(current: &Organization, mut body: Body) -> Body {
    let domains: Vec<String> = match body.canonical.get("domains") {
        Some(list) => serde_json::from_value(list.clone()).expect("a list of strings"),
        None => current
            .domains
            .iter()
            .map(|d| d.as_str().to_owned())
            .collect(),
    };
    let primary = match body.canonical.get("primary_domain") {
        Some(value) => value.as_str().map(str::to_owned),
        None => current
            .primary_domain
            .as_ref()
            .map(|d| d.as_str().to_owned()),
    };
    if primary.is_some_and(|p| !domains.contains(&p)) {
        body.set("primary_domain", Value::Null, Value::Null);
    }
    body
}

/// A valid organization: `Organization::new`, then a generated valid body planned onto it.
fn organization() -> impl Strategy<Value = Organization> {
    body(0.6).prop_map(|body| {
        let seed = seed_org();
        let body = consistent(&seed, body);
        match patch::parse(&body.raw).plan(&seed, grown()) {
            Ok(Outcome::Changed { org, .. }) => *org,
            Ok(Outcome::Unchanged) => seed,
            Err(errors) => panic!(
                "a generated valid body was refused: {errors:?}\nbody: {:?}",
                body.raw
            ),
        }
    })
}

/// An organization and a valid patch for it.
fn org_and_patch() -> impl Strategy<Value = (Organization, Body)> {
    (organization(), body(0.25)).prop_map(|(org, body)| {
        let body = consistent(&org, body);
        (org, body)
    })
}

fn touched_names(body: &Body) -> BTreeSet<String> {
    body.raw.keys().cloned().collect()
}

/// Plans a body that must be valid and returns the organization afterwards and the diff.
fn plan_valid(org: &Organization, body: &Body) -> (Organization, patch::Changes, bool) {
    match patch::parse(&body.raw).plan(org, patched()) {
        Ok(Outcome::Changed { org, changes }) => (*org, changes, true),
        Ok(Outcome::Unchanged) => (org.clone(), patch::Changes::new(), false),
        Err(errors) => panic!(
            "a valid patch was refused: {errors:?}\nbody: {:?}",
            body.raw
        ),
    }
}

// ---- strategies for arbitrary JSON -------------------------------------------------------

/// Keys that reach every branch of the parser, and keys that reach none.
fn any_key() -> impl Strategy<Value = String> {
    let known: Vec<&'static str> = Field::ALL
        .iter()
        .map(|f| f.name())
        .chain(Field::READ_ONLY)
        .chain(ADDRESS_KEYS)
        .chain([
            "name",
            "limits",
            "max_members",
            "",
            "~",
            "/",
            "a/b~c",
            "~01",
        ])
        .collect();
    prop_oneof![
        3 => select(known).prop_map(str::to_owned),
        1 => vec(any::<char>(), 0..8).prop_map(|c| c.into_iter().collect()),
    ]
}

fn any_string() -> impl Strategy<Value = String> {
    let raw_values: Vec<&'static str> = DOMAINS
        .iter()
        .map(|(raw, _)| *raw)
        .chain([
            "+1 (415) 555-2671",
            "https://acme.com/logo.png",
            "http://acme.com",
            "Europe/Berlin",
            "org_01h455vb4pex5vsknk084sn02q",
            "us",
            "1.2.3.4",
            "localhost",
            "",
            " ",
            "\u{0}",
        ])
        .collect();
    prop_oneof![
        2 => vec(any::<char>(), 0..16).prop_map(|c| c.into_iter().collect()),
        1 => select(raw_values).prop_map(str::to_owned),
        1 => "[a-zA-Z0-9.+()/:_ -]{0,24}",
        1 => "\\+?[0-9 ()-]{0,20}",
    ]
}

fn any_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
    ]
}

/// Any JSON value, at most four levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any_number(),
        any_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(any_key(), inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn any_object() -> impl Strategy<Value = Map<String, Value>> {
    btree_map(any_key(), any_json(), 0..8).prop_map(|m| m.into_iter().collect())
}

// ---- properties ---------------------------------------------------------------------------

proptest! {
    #[test]
    fn a_valid_patch_is_accepted_and_its_diff_stays_inside_the_fields_it_touched(
        (org, body) in org_and_patch()
    ) {
        let parsed = patch::parse(&body.raw);
        prop_assert!(parsed.errors.is_empty(), "errors: {:?}", parsed.errors);
        let touched = touched_names(&body);
        let parsed_touched: BTreeSet<String> = parsed.touched.iter().map(|f| f.name().to_owned()).collect();
        prop_assert_eq!(&parsed_touched, &touched);

        let (after, changes, changed) = plan_valid(&org, &body);
        prop_assert_eq!(&changes, &patch::diff(&org, &after));
        for pointer in changes.keys() {
            prop_assert!(
                touched.iter().any(|f| is_inside(pointer, f)),
                "{} changed but the patch touched only {:?}", pointer, touched
            );
        }
        let (old, new) = (org.writable_values(), after.writable_values());
        for field in Field::ALL {
            if old[&field] != new[&field] {
                prop_assert!(touched.contains(field.name()), "{} changed without being touched", field);
                prop_assert!(
                    changes.keys().any(|p| is_inside(p, field.name())),
                    "{} changed from {} to {} but the diff has no pointer in it", field, old[&field], new[&field]
                );
            }
        }
        prop_assert_eq!(changed, old != new);
    }

    #[test]
    fn applying_the_same_patch_twice_changes_nothing_the_second_time((org, body) in org_and_patch()) {
        let (after, _, _) = plan_valid(&org, &body);
        let again = patch::parse(&body.raw).plan(&after, at(1_700_000_300));
        prop_assert!(matches!(again, Ok(Outcome::Unchanged)), "second plan: {:?}", again);
        prop_assert_eq!(patch::parse(&body.raw).patch.apply(&after), after);
    }

    #[test]
    fn a_change_bumps_the_version_by_exactly_one_and_stamps_the_update(
        (org, body) in org_and_patch()
    ) {
        match patch::parse(&body.raw).plan(&org, patched()) {
            Ok(Outcome::Changed { org: after, changes }) => {
                prop_assert!(!changes.is_empty());
                prop_assert_eq!(after.version, org.version + 1);
                prop_assert_eq!(after.updated_at, patched());
                prop_assert_eq!(after.id, org.id);
                prop_assert_eq!(after.created_at, org.created_at);
                prop_assert_eq!(after.deleted_at, org.deleted_at);
            }
            Ok(Outcome::Unchanged) => {
                prop_assert_eq!(writable_json(&patch::parse(&body.raw).patch.apply(&org)), writable_json(&org));
            }
            Err(errors) => prop_assert!(false, "a valid patch was refused: {:?}", errors),
        }
    }

    #[test]
    fn a_patch_that_restates_current_values_is_unchanged_and_keeps_the_version(
        org in organization(),
        fields in subsequence(Field::ALL.to_vec(), 0..=Field::ALL.len()),
    ) {
        let current = writable_json(&org);
        let body: Map<String, Value> = fields.iter().map(|f| (f.name().to_owned(), current[f.name()].clone())).collect();
        let outcome = patch::parse(&body).plan(&org, patched());
        prop_assert!(matches!(outcome, Ok(Outcome::Unchanged)), "restating {:?} gave {:?}", body, outcome);
    }

    #[test]
    fn the_diff_reports_the_old_values_as_from_and_the_new_values_as_to(
        (org, body) in org_and_patch()
    ) {
        let (after, changes, _) = plan_valid(&org, &body);
        let (old, new) = (serde_json::to_value(&org).unwrap(), serde_json::to_value(&after).unwrap());
        for (pointer, change) in &changes {
            prop_assert_eq!(&change.from, &resolve(&old, pointer), "from at {}", pointer);
            prop_assert_eq!(&change.to, &resolve(&new, pointer), "to at {}", pointer);
            prop_assert_ne!(&change.from, &change.to, "a no-op change at {}", pointer);
        }
    }

    #[test]
    fn a_patched_organization_equals_the_canonical_body_merged_onto_the_old_one(
        (org, body) in org_and_patch()
    ) {
        let (after, _, _) = plan_valid(&org, &body);
        prop_assert_eq!(writable_json(&after), model_merge(&org, &body.canonical));
    }

    #[test]
    fn metadata_merges_exactly_as_rfc_7396_says(
        org in organization(),
        doc in metadata_doc(),
    ) {
        let body: Map<String, Value> = [("metadata".to_owned(), Value::Object(doc.clone()))].into_iter().collect();
        let expected = rfc7396_merge(&Value::Object(org.metadata.clone()), &Value::Object(doc.clone()));
        let applied = patch::parse(&body).patch.apply(&org);
        prop_assert_eq!(&Value::Object(applied.metadata.clone()), &expected);
        let (after, changes, changed) = plan_valid(&org, &Body { raw: body.clone(), canonical: body });
        prop_assert_eq!(Value::Object(after.metadata), expected);
        prop_assert!(changes.keys().all(|p| is_inside(p, "metadata")));
        prop_assert_eq!(changed, !changes.is_empty());
    }

    #[test]
    fn an_address_with_every_key_removed_becomes_null(
        org in organization(),
        lines in address(),
        clear_all_six in any::<bool>(),
    ) {
        // First give the org an address with at least one line.
        let mut set: Map<String, Value> = Map::new();
        set.insert("address".into(), lines.0.clone());
        set.entry("address").or_insert_with(|| json!({}))["city"] = json!("Paris");
        let (with_address, _, _) = plan_valid(&org, &Body { raw: set.clone(), canonical: set });
        let address = serde_json::to_value(&with_address.address).unwrap();
        prop_assert!(address.is_object(), "the address was not kept: {}", address);

        // Then remove every line it has, one key at a time.
        let keys: Vec<&str> = if clear_all_six {
            ADDRESS_KEYS.to_vec()
        } else {
            ADDRESS_KEYS.iter().copied().filter(|k| !address[*k].is_null()).collect()
        };
        let clear: Map<String, Value> = keys.iter().map(|k| ((*k).to_owned(), Value::Null)).collect();
        let body: Map<String, Value> = [("address".to_owned(), Value::Object(clear))].into_iter().collect();
        let (cleared, changes, changed) = plan_valid(&with_address, &Body { raw: body.clone(), canonical: body });
        prop_assert!(changed);
        prop_assert_eq!(&cleared.address, &None);
        prop_assert_eq!(serde_json::to_value(&cleared).unwrap()["address"].clone(), Value::Null);
        prop_assert_eq!(changes.keys().cloned().collect::<Vec<_>>(), vec!["/address".to_owned()]);
        prop_assert_eq!(&changes["/address"].to, &Value::Null);
    }

    #[test]
    fn creation_changes_record_every_set_field_from_null(org in organization()) {
        let changes = patch::creation_changes(&org);
        let json = serde_json::to_value(&org).unwrap();
        for (pointer, change) in &changes {
            prop_assert_eq!(&change.from, &Value::Null, "from at {}", pointer);
            prop_assert_eq!(&change.to, &resolve(&json, pointer), "to at {}", pointer);
            prop_assert!(Field::ALL.iter().any(|f| is_inside(pointer, f.name())));
        }
        for (field, value) in org.writable_values() {
            prop_assert_eq!(
                changes.keys().any(|p| is_inside(p, field.name())),
                !value.is_null(),
                "{} = {}", field, value
            );
        }
    }

    #[test]
    fn parsing_survives_any_json_object_and_points_only_at_what_was_sent(body in any_object()) {
        let parsed = patch::parse(&body);
        let sent = Value::Object(body.clone());
        for error in &parsed.errors {
            prop_assert!(error.pointer.starts_with('/'), "pointer {:?}", error.pointer);
            let first = tokens(&error.pointer).into_iter().next().unwrap_or_default();
            prop_assert!(body.contains_key(&first), "{:?} names no key of the body", error.pointer);
            let found = lookup(&sent, &error.pointer).is_some()
                || (error.code == "required" && lookup(&sent, parent(&error.pointer)).is_some());
            prop_assert!(found, "{:?} ({}) points at nothing that was sent", error.pointer, error.code);
        }
        let known: BTreeSet<String> = body.keys().filter(|k| Field::from_name(k).is_some()).cloned().collect();
        let touched: BTreeSet<String> = parsed.touched.iter().map(|f| f.name().to_owned()).collect();
        prop_assert_eq!(touched, known);

        // Planning must not panic either, and keeps every parse error.
        match parsed.plan(&seed_org(), patched()) {
            Ok(_) => prop_assert!(parsed.errors.is_empty()),
            Err(errors) => {
                for error in &parsed.errors {
                    prop_assert!(errors.contains(error), "plan dropped {:?}", error);
                }
            }
        }
    }

    #[test]
    fn every_field_parser_survives_arbitrary_strings(
        key in select(
            Field::ALL.iter().map(|f| f.name())
                .chain(ADDRESS_KEYS)
                .chain(["policy"])
                .collect::<Vec<&'static str>>()
        ),
        text in any_string(),
        as_list in any::<bool>(),
    ) {
        let value = if as_list { json!([text]) } else { json!(text) };
        let body = match key {
            k if ADDRESS_KEYS.contains(&k) && Field::from_name(k).is_none() => json!({ "address": { k: value } }),
            "policy" => json!({ "policy": { "name": value, "limits": { "x": value } } }),
            k => json!({ k: value }),
        };
        let body = body.as_object().unwrap().clone();
        let parsed = patch::parse(&body);
        let sent = Value::Object(body);
        for error in &parsed.errors {
            prop_assert!(lookup(&sent, &error.pointer).is_some(), "{:?} points at nothing", error.pointer);
        }
        let _ = parsed.plan(&seed_org(), patched());
    }
}

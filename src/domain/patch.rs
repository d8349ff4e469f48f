//! A typed patch read from a JSON body, applied to an organization, and the diff
//! it makes, keyed by JSON Pointer.
//!
//! Parsing never stops at the first problem: it walks the whole body and returns
//! every error with its pointer, together with the fields the body touched (even
//! the malformed ones), so authorization can judge the request as sent.
//!
//! Merge semantics are RFC 7396's, applied to typed fields rather than to raw JSON:
//! `null` clears a nullable field, `address` merges key by key, arrays replace whole,
//! and `metadata` (free JSON) is merged as RFC 7396 says, recursively.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::fields::{
    check_json_text, AppId, CountryCode, DomainName, OrgName, Phone, Slug, SubscriptionId, Text,
    TimeZoneName, WebUrl,
};
use super::ids::OrgId;
use super::org::{Address, Field, Organization, Policy, PolicyLimit};
use super::problems::{pointer, FieldError, Invalid};

/// What a body says about a field that may be `null`.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Nullable<T> {
    #[default]
    Absent,
    Null,
    Set(T),
}

impl<T: Clone> Nullable<T> {
    fn apply_to(&self, target: &mut Option<T>) {
        match self {
            Nullable::Absent => {}
            Nullable::Null => *target = None,
            Nullable::Set(v) => *target = Some(v.clone()),
        }
    }
}

/// The typed content of an update (or create) body; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrgPatch {
    pub slug: Option<Slug>,
    pub name: Option<OrgName>,
    pub alias_name: Nullable<Text>,
    pub description: Nullable<Text>,
    pub enabled: Option<bool>,
    pub domains: Option<Vec<DomainName>>,
    pub primary_domain: Nullable<DomainName>,
    pub logo_url: Nullable<WebUrl>,
    pub website: Nullable<WebUrl>,
    pub phone: Nullable<Phone>,
    pub address: Nullable<AddressPatch>,
    pub is_business: Option<bool>,
    pub mfa_required: Option<bool>,
    pub time_zone: Nullable<TimeZoneName>,
    pub parent_id: Nullable<OrgId>,
    pub subscription_id: Nullable<SubscriptionId>,
    pub app_ids: Option<Vec<AppId>>,
    pub policy: Nullable<Policy>,
    /// An RFC 7396 merge document for the metadata object.
    pub metadata: Option<Map<String, Value>>,
}

/// Key-by-key changes to an address.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AddressPatch {
    pub line1: Nullable<Text>,
    pub line2: Nullable<Text>,
    pub city: Nullable<Text>,
    pub region: Nullable<Text>,
    pub postal_code: Nullable<Text>,
    pub country: Nullable<CountryCode>,
}

/// Limits on sizes that the SPEC sets.
pub mod limits {
    pub const NAME_LIKE: usize = 200;
    pub const DESCRIPTION: usize = 2000;
    pub const LIST_ITEMS: usize = 100;
    pub const METADATA_BYTES: usize = 16 * 1024;
    pub const METADATA_KEYS: usize = 50;
    /// How deeply `metadata` may nest (the object itself is level 1). Events and
    /// responses wrap it in a few more levels, and everything orgd writes must stay
    /// readable under serde_json's (and most clients') 128-level limit.
    pub const METADATA_DEPTH: usize = 32;
}

/// A parsed body: the patch, what it touched, and everything wrong with it.
#[derive(Debug, Clone, Default)]
pub struct ParsedPatch {
    pub patch: OrgPatch,
    /// Every writable field the body named, valid or not.
    pub touched: BTreeSet<Field>,
    /// Type and rule errors, and unknown or read-only fields.
    pub errors: Vec<FieldError>,
    /// Fields that had an error, so cross-field rules that depend on them stay quiet.
    errored: BTreeSet<Field>,
}

/// The change a patch makes to an organization.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Nothing would change: no new version, no event.
    Unchanged,
    Changed {
        org: Box<Organization>,
        changes: Changes,
    },
}

/// One changed value, before and after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    pub from: Value,
    pub to: Value,
}

/// Changes keyed by JSON Pointer into the organization (`/address/city`).
pub type Changes = BTreeMap<String, FieldChange>;

/// Reads an update body.
pub fn parse(body: &Map<String, Value>) -> ParsedPatch {
    let mut parsed = ParsedPatch::default();
    for (key, value) in body {
        match Field::from_name(key) {
            Some(field) => {
                parsed.touched.insert(field);
                let before = parsed.errors.len();
                parse_field(&mut parsed, field, value);
                if parsed.errors.len() > before {
                    parsed.errored.insert(field);
                }
            }
            None if Field::READ_ONLY.contains(&key.as_str()) => {
                parsed.errors.push(FieldError::new(
                    pointer("", key),
                    "read_only",
                    format!("`{key}` is set by the server and cannot be written"),
                ))
            }
            None => parsed.errors.push(FieldError::new(
                pointer("", key),
                "unknown_field",
                format!("`{key}` is not a field of an organization"),
            )),
        }
    }
    parsed
}

/// Builds a new organization from a parsed create body: SPEC defaults, then the
/// body; the slug is made from the name when the body has none. Also says whether
/// the slug was made here (and so may be adjusted if another org holds it).
pub fn plan_create(
    parsed: &ParsedPatch,
    id: OrgId,
    now: Timestamp,
) -> Result<(Organization, bool), Vec<FieldError>> {
    let Some(name) = parsed.patch.name.clone() else {
        return Err(parsed.errors.clone());
    };
    let (slug, made) = match &parsed.patch.slug {
        Some(slug) => (slug.clone(), false),
        None => {
            let id_text = id.to_string();
            let fallback = format!("org-{}", &id_text[id_text.len() - 10..]);
            match Slug::from_name(name.as_str()).or_else(|| Slug::from_name(&fallback)) {
                Some(slug) => (slug, true),
                None => {
                    let mut errors = parsed.errors.clone();
                    errors.push(FieldError::new(
                        "/slug",
                        "required",
                        "no slug can be made from the name; send one",
                    ));
                    return Err(errors);
                }
            }
        }
    };
    let org = parsed.patch.apply(&Organization::new(id, slug, name, now));
    let mut errors = parsed.errors.clone();
    errors.extend(validate_merged(&org, &parsed.errored));
    if errors.is_empty() {
        Ok((org, made))
    } else {
        Err(errors)
    }
}

/// Reads a create body: the same fields, and `name` is required.
pub fn parse_create(body: &Map<String, Value>) -> ParsedPatch {
    let mut parsed = parse(body);
    if !parsed.touched.contains(&Field::Name) {
        parsed
            .errors
            .push(FieldError::new("/name", "required", "is required"));
        parsed.errored.insert(Field::Name);
    }
    parsed
}

impl ParsedPatch {
    /// Applies the patch to `current` and says what changed, or every error found:
    /// the parse errors together with the rules that span fields (checked on the
    /// merged result, skipping rules whose inputs were already in error).
    pub fn plan(&self, current: &Organization, now: Timestamp) -> Result<Outcome, Vec<FieldError>> {
        let merged = self.patch.apply(current);
        let mut errors = self.errors.clone();
        errors.extend(validate_merged(&merged, &self.errored));
        if !errors.is_empty() {
            return Err(errors);
        }
        let changes = diff(current, &merged);
        if changes.is_empty() {
            return Ok(Outcome::Unchanged);
        }
        let mut org = merged;
        org.version = current.version + 1;
        org.updated_at = now;
        Ok(Outcome::Changed {
            org: Box::new(org),
            changes,
        })
    }
}

impl OrgPatch {
    /// The organization with this patch merged in; no rule across fields is checked here.
    pub fn apply(&self, current: &Organization) -> Organization {
        let mut org = current.clone();
        if let Some(v) = &self.slug {
            org.slug = v.clone();
        }
        if let Some(v) = &self.name {
            org.name = v.clone();
        }
        self.alias_name.apply_to(&mut org.alias_name);
        self.description.apply_to(&mut org.description);
        if let Some(v) = self.enabled {
            org.enabled = v;
        }
        if let Some(v) = &self.domains {
            org.domains = v.clone();
        }
        self.primary_domain.apply_to(&mut org.primary_domain);
        self.logo_url.apply_to(&mut org.logo_url);
        self.website.apply_to(&mut org.website);
        self.phone.apply_to(&mut org.phone);
        match &self.address {
            Nullable::Absent => {}
            Nullable::Null => org.address = None,
            Nullable::Set(patch) => {
                let mut address = org.address.take().unwrap_or_default();
                patch.apply(&mut address);
                org.address = (!address.is_empty()).then_some(address);
            }
        }
        if let Some(v) = self.is_business {
            org.is_business = v;
        }
        if let Some(v) = self.mfa_required {
            org.mfa_required = v;
        }
        self.time_zone.apply_to(&mut org.time_zone);
        self.parent_id.apply_to(&mut org.parent_id);
        self.subscription_id.apply_to(&mut org.subscription_id);
        if let Some(v) = &self.app_ids {
            org.app_ids = v.clone();
        }
        self.policy.apply_to(&mut org.policy);
        if let Some(merge) = &self.metadata {
            let mut doc = Value::Object(std::mem::take(&mut org.metadata));
            json_patch::merge(&mut doc, &Value::Object(merge.clone()));
            if let Value::Object(map) = doc {
                org.metadata = map;
            }
        }
        org
    }
}

impl AddressPatch {
    fn apply(&self, address: &mut Address) {
        self.line1.apply_to(&mut address.line1);
        self.line2.apply_to(&mut address.line2);
        self.city.apply_to(&mut address.city);
        self.region.apply_to(&mut address.region);
        self.postal_code.apply_to(&mut address.postal_code);
        self.country.apply_to(&mut address.country);
    }
}

/// Rules that look at more than one field, or at a merged whole.
fn validate_merged(org: &Organization, errored: &BTreeSet<Field>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let quiet = |fields: &[Field]| fields.iter().any(|f| errored.contains(f));
    if let Some(primary) = &org.primary_domain {
        if !quiet(&[Field::Domains, Field::PrimaryDomain]) && !org.domains.contains(primary) {
            errors.push(FieldError::new(
                "/primary_domain",
                "not_in_domains",
                format!("`{primary}` must be one of `domains`"),
            ));
        }
    }
    if !quiet(&[Field::Metadata]) {
        if org.metadata.len() > limits::METADATA_KEYS {
            errors.push(FieldError::new(
                "/metadata",
                "too_many_keys",
                format!("must have at most {} top-level keys", limits::METADATA_KEYS),
            ));
        }
        let size = serde_json::to_string(&org.metadata).map_or(usize::MAX, |s| s.len());
        if size > limits::METADATA_BYTES {
            errors.push(FieldError::new(
                "/metadata",
                "too_large",
                format!("must serialize to at most {} bytes", limits::METADATA_BYTES),
            ));
        }
    }
    errors
}

/// Every value that differs between two organizations' writable fields, keyed by
/// pointer; objects are compared key by key, anything else as a whole.
pub fn diff(before: &Organization, after: &Organization) -> Changes {
    let mut changes = Changes::new();
    for field in Field::ALL {
        if !before.same_value(after, field) {
            diff_value(
                &field.pointer(),
                &before.writable_value(field),
                &after.writable_value(field),
                &mut changes,
            );
        }
    }
    changes
}

/// The changes that creating `org` records: every writable field from `null`.
pub fn creation_changes(org: &Organization) -> Changes {
    let mut changes = Changes::new();
    for (field, value) in org.writable_values() {
        diff_value(&field.pointer(), &Value::Null, &value, &mut changes);
    }
    changes
}

fn diff_value(at: &str, from: &Value, to: &Value, out: &mut Changes) {
    if from == to {
        return;
    }
    match (from, to) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let x = a.get(key).unwrap_or(&Value::Null);
                let y = b.get(key).unwrap_or(&Value::Null);
                diff_value(&pointer(at, key), x, y, out);
            }
        }
        _ => {
            out.insert(
                at.to_owned(),
                FieldChange {
                    from: from.clone(),
                    to: to.clone(),
                },
            );
        }
    }
}

// ---- parsing one field ----------------------------------------------------------

fn parse_field(parsed: &mut ParsedPatch, field: Field, value: &Value) {
    let at = field.pointer();
    let errors = &mut parsed.errors;
    let p = &mut parsed.patch;
    let text = |max: usize| move |s: &str| Text::parse(s, max);
    match field {
        Field::Slug => p.slug = required(errors, &at, value, |v| with_str(v, Slug::parse)),
        Field::Name => p.name = required(errors, &at, value, |v| with_str(v, OrgName::parse)),
        Field::AliasName => {
            p.alias_name = nullable(errors, &at, value, |v| with_str(v, text(limits::NAME_LIKE)))
        }
        Field::Description => {
            p.description = nullable(errors, &at, value, |v| {
                with_str(v, text(limits::DESCRIPTION))
            })
        }
        Field::Enabled => p.enabled = required(errors, &at, value, as_bool),
        Field::IsBusiness => p.is_business = required(errors, &at, value, as_bool),
        Field::MfaRequired => p.mfa_required = required(errors, &at, value, as_bool),
        Field::Domains => p.domains = list(errors, &at, value, DomainName::parse, true),
        Field::PrimaryDomain => {
            p.primary_domain = nullable(errors, &at, value, |v| with_str(v, DomainName::parse))
        }
        Field::LogoUrl => {
            p.logo_url = nullable(errors, &at, value, |v| with_str(v, WebUrl::parse_https))
        }
        Field::Website => {
            p.website = nullable(errors, &at, value, |v| with_str(v, WebUrl::parse_web))
        }
        Field::Phone => p.phone = nullable(errors, &at, value, |v| with_str(v, Phone::parse)),
        Field::TimeZone => {
            p.time_zone = nullable(errors, &at, value, |v| with_str(v, TimeZoneName::parse))
        }
        Field::ParentId => {
            p.parent_id = nullable(errors, &at, value, |v| {
                with_str(v, |s| {
                    OrgId::parse(s).map_err(|_| {
                        Invalid::new("invalid_id", "must be an organization id (org_…)")
                    })
                })
            })
        }
        Field::SubscriptionId => {
            p.subscription_id = nullable(errors, &at, value, |v| with_str(v, SubscriptionId::parse))
        }
        Field::AppIds => p.app_ids = list(errors, &at, value, AppId::parse, true),
        Field::Address => p.address = parse_address(errors, value),
        Field::Policy => p.policy = parse_policy(errors, value),
        Field::Metadata => p.metadata = parse_metadata(errors, value),
    }
}

fn type_error(expected: &str) -> Invalid {
    Invalid::new("invalid_type", format!("must be {expected}"))
}

fn with_str<T>(
    value: &Value,
    parse: impl FnOnce(&str) -> Result<T, Invalid>,
) -> Result<T, Invalid> {
    value
        .as_str()
        .ok_or_else(|| type_error("a string"))
        .and_then(parse)
}

fn as_bool(value: &Value) -> Result<bool, Invalid> {
    value.as_bool().ok_or_else(|| type_error("a boolean"))
}

fn required<T>(
    errors: &mut Vec<FieldError>,
    at: &str,
    value: &Value,
    parse: impl FnOnce(&Value) -> Result<T, Invalid>,
) -> Option<T> {
    if value.is_null() {
        errors.push(FieldError::new(at, "not_nullable", "cannot be null"));
        return None;
    }
    parse(value).map_err(|e| errors.push(e.at(at))).ok()
}

fn nullable<T>(
    errors: &mut Vec<FieldError>,
    at: &str,
    value: &Value,
    parse: impl FnOnce(&Value) -> Result<T, Invalid>,
) -> Nullable<T> {
    if value.is_null() {
        return Nullable::Null;
    }
    match parse(value) {
        Ok(v) => Nullable::Set(v),
        Err(e) => {
            errors.push(e.at(at));
            Nullable::Absent
        }
    }
}

/// An array of strings, each parsed, at most 100, optionally without duplicates
/// (compared after normalization, so `A.com` and `a.com` are the same domain).
fn list<T: PartialEq>(
    errors: &mut Vec<FieldError>,
    at: &str,
    value: &Value,
    parse: impl Fn(&str) -> Result<T, Invalid>,
    unique: bool,
) -> Option<Vec<T>> {
    let items = match value {
        Value::Null => {
            errors.push(FieldError::new(
                at,
                "not_nullable",
                "cannot be null; send [] to clear",
            ));
            return None;
        }
        Value::Array(items) => items,
        _ => {
            errors.push(type_error("an array of strings").at(at));
            return None;
        }
    };
    let before = errors.len();
    if items.len() > limits::LIST_ITEMS {
        errors.push(FieldError::new(
            at,
            "too_many_items",
            format!("must have at most {} items", limits::LIST_ITEMS),
        ));
        return None;
    }
    let mut out: Vec<T> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let item_at = format!("{at}/{i}");
        match with_str(item, &parse) {
            Ok(v) if unique && out.contains(&v) => errors.push(FieldError::new(
                item_at,
                "duplicate",
                "appears more than once",
            )),
            Ok(v) => out.push(v),
            Err(e) => errors.push(e.at(item_at)),
        }
    }
    (errors.len() == before).then_some(out)
}

fn parse_address(errors: &mut Vec<FieldError>, value: &Value) -> Nullable<AddressPatch> {
    let map = match value {
        Value::Null => return Nullable::Null,
        Value::Object(map) => map,
        _ => {
            errors.push(type_error("an object").at("/address"));
            return Nullable::Absent;
        }
    };
    let before = errors.len();
    let mut patch = AddressPatch::default();
    for (key, value) in map {
        let at = pointer("/address", key);
        let line = |errors: &mut Vec<FieldError>| {
            nullable(errors, &at, value, |v| {
                with_str(v, |s| Text::parse(s, limits::NAME_LIKE))
            })
        };
        match key.as_str() {
            "line1" => patch.line1 = line(errors),
            "line2" => patch.line2 = line(errors),
            "city" => patch.city = line(errors),
            "region" => patch.region = line(errors),
            "postal_code" => patch.postal_code = line(errors),
            "country" => {
                patch.country = nullable(errors, &at, value, |v| with_str(v, CountryCode::parse))
            }
            _ => errors.push(FieldError::new(
                at,
                "unknown_field",
                format!(
                    "`{key}` is not an address field ({})",
                    Address::KEYS.join(", ")
                ),
            )),
        }
    }
    if errors.len() > before {
        return Nullable::Absent;
    }
    Nullable::Set(patch)
}

fn parse_policy(errors: &mut Vec<FieldError>, value: &Value) -> Nullable<Policy> {
    let map = match value {
        Value::Null => return Nullable::Null,
        Value::Object(map) => map,
        _ => {
            errors.push(type_error("an object").at("/policy"));
            return Nullable::Absent;
        }
    };
    let before = errors.len();
    for key in map
        .keys()
        .filter(|k| !matches!(k.as_str(), "name" | "limits"))
    {
        errors.push(FieldError::new(
            pointer("/policy", key),
            "unknown_field",
            format!("`{key}` is not a policy field (name, limits)"),
        ));
    }
    let name = match map.get("name") {
        None => {
            errors.push(FieldError::new("/policy/name", "required", "is required"));
            None
        }
        Some(v) => required(errors, "/policy/name", v, |v| {
            with_str(v, |s| {
                if s.trim().is_empty() {
                    return Err(Invalid::new("too_short", "must not be empty"));
                }
                Text::parse(s, limits::NAME_LIKE)
            })
        }),
    };
    let mut limits_out = BTreeMap::new();
    match map.get("limits") {
        None => {}
        Some(Value::Object(items)) => {
            if items.len() > Policy::MAX_LIMITS {
                errors.push(FieldError::new(
                    "/policy/limits",
                    "too_many_items",
                    format!("must have at most {} limits", Policy::MAX_LIMITS),
                ));
            }
            for (key, v) in items {
                let at = pointer("/policy/limits", key);
                if key.is_empty() || key.len() > 64 || key.contains('\0') {
                    errors.push(FieldError::new(
                        &at,
                        "invalid_key",
                        "limit names must be 1-64 characters",
                    ));
                    continue;
                }
                let limit = match v {
                    Value::Bool(b) => PolicyLimit::Bool(*b),
                    Value::Number(n) => PolicyLimit::Number(n.clone()),
                    Value::String(s) => match Text::parse(s, limits::NAME_LIKE) {
                        Ok(_) => PolicyLimit::String(s.clone()),
                        Err(e) => {
                            errors.push(e.at(&at));
                            continue;
                        }
                    },
                    _ => {
                        errors.push(type_error("a number, string or boolean").at(&at));
                        continue;
                    }
                };
                if key == Policy::MAX_MEMBERS
                    && !matches!(&limit, PolicyLimit::Number(n) if n.is_u64())
                {
                    errors.push(FieldError::new(
                        &at,
                        "invalid_value",
                        "must be a non-negative integer",
                    ));
                    continue;
                }
                limits_out.insert(key.clone(), limit);
            }
        }
        Some(_) => errors.push(type_error("an object").at("/policy/limits")),
    }
    match name {
        Some(name) if errors.len() == before => Nullable::Set(Policy {
            name,
            limits: limits_out,
        }),
        _ => Nullable::Absent,
    }
}

fn parse_metadata(errors: &mut Vec<FieldError>, value: &Value) -> Option<Map<String, Value>> {
    match value {
        Value::Null => {
            errors.push(FieldError::new(
                "/metadata",
                "not_nullable",
                "cannot be null; set keys to null to remove them",
            ));
            None
        }
        Value::Object(map) => match check_json_text(value) {
            Ok(()) if json_depth(value) > limits::METADATA_DEPTH => {
                errors.push(FieldError::new(
                    "/metadata",
                    "too_deep",
                    format!("must nest at most {} levels deep", limits::METADATA_DEPTH),
                ));
                None
            }
            Ok(()) => Some(map.clone()),
            Err(e) => {
                errors.push(e.at("/metadata"));
                None
            }
        },
        _ => {
            errors.push(type_error("an object").at("/metadata"));
            None
        }
    }
}

/// How deeply a JSON value nests: a scalar is 0, `{}` and `[]` are 1.
fn json_depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(json_depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(json_depth).max().unwrap_or(0),
        _ => 0,
    }
}

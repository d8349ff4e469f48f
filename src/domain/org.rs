//! The organization: its fields, its defaults, and the names of the fields a client
//! may write.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::fields::{
    AppId, CountryCode, DomainName, OrgName, Phone, Slug, SubscriptionId, Text, TimeZoneName,
    WebUrl,
};
use super::ids::OrgId;

/// A tenant: a customer organization of the deployment's product.
///
/// This is also the stored document: the store keeps it as JSON beside the columns
/// it indexes, so adding a field needs no schema change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Organization {
    pub id: OrgId,
    pub slug: Slug,
    pub name: OrgName,
    pub alias_name: Option<Text>,
    pub description: Option<Text>,
    pub enabled: bool,
    pub domains: Vec<DomainName>,
    pub primary_domain: Option<DomainName>,
    pub logo_url: Option<WebUrl>,
    pub website: Option<WebUrl>,
    pub phone: Option<Phone>,
    pub address: Option<Address>,
    pub is_business: bool,
    pub mfa_required: bool,
    pub time_zone: Option<TimeZoneName>,
    pub parent_id: Option<OrgId>,
    pub subscription_id: Option<SubscriptionId>,
    pub app_ids: Vec<AppId>,
    pub policy: Option<Policy>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub version: i64,
    #[serde(with = "super::time")]
    pub created_at: Timestamp,
    #[serde(with = "super::time")]
    pub updated_at: Timestamp,
    #[serde(with = "super::time::option")]
    pub deleted_at: Option<Timestamp>,
}

impl Organization {
    /// A new organization with every default of SPEC §1, before the create body applies.
    pub fn new(id: OrgId, slug: Slug, name: OrgName, now: Timestamp) -> Self {
        Self {
            id,
            slug,
            name,
            alias_name: None,
            description: None,
            enabled: true,
            domains: Vec::new(),
            primary_domain: None,
            logo_url: None,
            website: None,
            phone: None,
            address: None,
            is_business: false,
            mfa_required: false,
            time_zone: None,
            parent_id: None,
            subscription_id: None,
            app_ids: Vec::new(),
            policy: None,
            metadata: serde_json::Map::new(),
            version: 1,
            created_at: now,
            updated_at: now,
            deleted_at: None,
        }
    }

    /// Derived, never stored: an org under a parent is managed by it.
    pub fn managed(&self) -> bool {
        self.parent_id.is_some()
    }

    pub fn is_live(&self) -> bool {
        self.deleted_at.is_none()
    }

    /// Whether changing this org into `next` concerns no other row: both live,
    /// under the same parent, with the same domains — no placement in the tree to
    /// check, no child to look for, no domain to claim or give back. Most updates
    /// are such, and the stores write them with one guarded statement.
    pub fn changes_only_its_row(&self, next: &Organization) -> bool {
        self.is_live()
            && next.is_live()
            && self.parent_id == next.parent_id
            && self.domains == next.domains
    }

    /// The writable fields as JSON, keyed by field name.
    pub fn writable_values(&self) -> BTreeMap<Field, serde_json::Value> {
        Field::ALL
            .iter()
            .map(|&field| (field, self.writable_value(field)))
            .collect()
    }

    /// One writable field as JSON: what diffs compare and events record.
    pub fn writable_value(&self, field: Field) -> serde_json::Value {
        fn json<T: Serialize>(value: &T) -> serde_json::Value {
            // Plain data structs with string keys always serialize.
            serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
        }
        match field {
            Field::Slug => json(&self.slug),
            Field::Name => json(&self.name),
            Field::AliasName => json(&self.alias_name),
            Field::Description => json(&self.description),
            Field::Enabled => json(&self.enabled),
            Field::Domains => json(&self.domains),
            Field::PrimaryDomain => json(&self.primary_domain),
            Field::LogoUrl => json(&self.logo_url),
            Field::Website => json(&self.website),
            Field::Phone => json(&self.phone),
            Field::Address => json(&self.address),
            Field::IsBusiness => json(&self.is_business),
            Field::MfaRequired => json(&self.mfa_required),
            Field::TimeZone => json(&self.time_zone),
            Field::ParentId => json(&self.parent_id),
            Field::SubscriptionId => json(&self.subscription_id),
            Field::AppIds => json(&self.app_ids),
            Field::Policy => json(&self.policy),
            Field::Metadata => json(&self.metadata),
        }
    }

    /// Whether `other` holds the same value in `field`: lets a diff skip turning
    /// unchanged fields into JSON, which was most of its cost (bench/README.md,
    /// session 7).
    pub fn same_value(&self, other: &Self, field: Field) -> bool {
        match field {
            Field::Slug => self.slug == other.slug,
            Field::Name => self.name == other.name,
            Field::AliasName => self.alias_name == other.alias_name,
            Field::Description => self.description == other.description,
            Field::Enabled => self.enabled == other.enabled,
            Field::Domains => self.domains == other.domains,
            Field::PrimaryDomain => self.primary_domain == other.primary_domain,
            Field::LogoUrl => self.logo_url == other.logo_url,
            Field::Website => self.website == other.website,
            Field::Phone => self.phone == other.phone,
            Field::Address => self.address == other.address,
            Field::IsBusiness => self.is_business == other.is_business,
            Field::MfaRequired => self.mfa_required == other.mfa_required,
            Field::TimeZone => self.time_zone == other.time_zone,
            Field::ParentId => self.parent_id == other.parent_id,
            Field::SubscriptionId => self.subscription_id == other.subscription_id,
            Field::AppIds => self.app_ids == other.app_ids,
            Field::Policy => self.policy == other.policy,
            Field::Metadata => self.metadata == other.metadata,
        }
    }
}

/// A postal address; every line optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub line1: Option<Text>,
    pub line2: Option<Text>,
    pub city: Option<Text>,
    pub region: Option<Text>,
    pub postal_code: Option<Text>,
    pub country: Option<CountryCode>,
}

impl Address {
    pub const KEYS: [&'static str; 6] =
        ["line1", "line2", "city", "region", "postal_code", "country"];

    /// An address with no line set is no address: stored and shown as `null`, so
    /// clearing its last key and clearing it whole read the same.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The plan the system assigned: a name and typed limits, some enforced by orgd.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub name: Text,
    pub limits: BTreeMap<String, PolicyLimit>,
}

impl Policy {
    pub const MAX_LIMITS: usize = 50;
    /// Enforced when a member is added.
    pub const MAX_MEMBERS: &'static str = "max_members";

    pub fn max_members(&self) -> Option<u64> {
        match self.limits.get(Self::MAX_MEMBERS) {
            Some(PolicyLimit::Number(n)) => n.as_u64(),
            _ => None,
        }
    }
}

/// One limit's value: a number, a string or a boolean, nothing nested.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PolicyLimit {
    Bool(bool),
    Number(serde_json::Number),
    String(String),
}

/// The fields a request body may set. Read-only fields are listed apart so a body
/// naming one gets `read_only` rather than `unknown_field`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    Slug,
    Name,
    AliasName,
    Description,
    Enabled,
    Domains,
    PrimaryDomain,
    LogoUrl,
    Website,
    Phone,
    Address,
    IsBusiness,
    MfaRequired,
    TimeZone,
    ParentId,
    SubscriptionId,
    AppIds,
    Policy,
    Metadata,
}

impl Field {
    pub const ALL: [Field; 19] = [
        Field::Slug,
        Field::Name,
        Field::AliasName,
        Field::Description,
        Field::Enabled,
        Field::Domains,
        Field::PrimaryDomain,
        Field::LogoUrl,
        Field::Website,
        Field::Phone,
        Field::Address,
        Field::IsBusiness,
        Field::MfaRequired,
        Field::TimeZone,
        Field::ParentId,
        Field::SubscriptionId,
        Field::AppIds,
        Field::Policy,
        Field::Metadata,
    ];

    /// Fields the server owns; naming one in a body is `read_only`.
    pub const READ_ONLY: [&'static str; 6] = [
        "id",
        "managed",
        "version",
        "created_at",
        "updated_at",
        "deleted_at",
    ];

    pub fn name(self) -> &'static str {
        match self {
            Field::Slug => "slug",
            Field::Name => "name",
            Field::AliasName => "alias_name",
            Field::Description => "description",
            Field::Enabled => "enabled",
            Field::Domains => "domains",
            Field::PrimaryDomain => "primary_domain",
            Field::LogoUrl => "logo_url",
            Field::Website => "website",
            Field::Phone => "phone",
            Field::Address => "address",
            Field::IsBusiness => "is_business",
            Field::MfaRequired => "mfa_required",
            Field::TimeZone => "time_zone",
            Field::ParentId => "parent_id",
            Field::SubscriptionId => "subscription_id",
            Field::AppIds => "app_ids",
            Field::Policy => "policy",
            Field::Metadata => "metadata",
        }
    }

    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }

    /// `/name`: where this field sits in a body.
    pub fn pointer(self) -> String {
        format!("/{}", self.name())
    }
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fields::{DomainName, Text};

    fn org() -> Organization {
        Organization::new(
            OrgId::generate(),
            Slug::parse("acme").expect("a slug"),
            OrgName::parse("Acme").expect("a name"),
            crate::domain::time::now(),
        )
    }

    #[test]
    fn only_changes_that_leave_place_domains_and_life_alone_concern_one_row() {
        let current = org();
        let mut described = current.clone();
        described.description = Some(Text::parse("new", 100).expect("text"));
        described.slug = Slug::parse("acme-renamed").expect("a slug");
        assert!(current.changes_only_its_row(&described));

        let mut moved = current.clone();
        moved.parent_id = Some(OrgId::generate());
        assert!(!current.changes_only_its_row(&moved));

        let mut with_domain = current.clone();
        with_domain.domains = vec![DomainName::parse("acme.com").expect("a domain")];
        assert!(!current.changes_only_its_row(&with_domain));
        assert!(!with_domain.changes_only_its_row(&current));

        let mut deleted = current.clone();
        deleted.deleted_at = Some(crate::domain::time::now());
        assert!(!current.changes_only_its_row(&deleted));
        assert!(!deleted.changes_only_its_row(&current));
        let mut deleted_again = deleted.clone();
        deleted_again.description = Some(Text::parse("gone", 100).expect("text"));
        assert!(!deleted.changes_only_its_row(&deleted_again));
    }
}

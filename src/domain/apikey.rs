//! API keys: the management app's admin tokens. A key is an opaque secret shown
//! once; orgd keeps only its SHA-256 (the secret has 256 bits of entropy, so a fast
//! hash is enough: there is nothing to brute-force) and checks it in constant time.

use std::collections::BTreeSet;
use std::fmt;

use jiff::Timestamp;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ids::{KeyId, OrgId};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scope {
    #[serde(rename = "organizations:read")]
    OrganizationsRead,
    #[serde(rename = "organizations:write")]
    OrganizationsWrite,
    #[serde(rename = "members:read")]
    MembersRead,
    #[serde(rename = "members:write")]
    MembersWrite,
    #[serde(rename = "events:read")]
    EventsRead,
    #[serde(rename = "webhooks:manage")]
    WebhooksManage,
    #[serde(rename = "keys:manage")]
    KeysManage,
}

impl Scope {
    pub const ALL: [Scope; 7] = [
        Scope::OrganizationsRead,
        Scope::OrganizationsWrite,
        Scope::MembersRead,
        Scope::MembersWrite,
        Scope::EventsRead,
        Scope::WebhooksManage,
        Scope::KeysManage,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::OrganizationsRead => "organizations:read",
            Scope::OrganizationsWrite => "organizations:write",
            Scope::MembersRead => "members:read",
            Scope::MembersWrite => "members:write",
            Scope::EventsRead => "events:read",
            Scope::WebhooksManage => "webhooks:manage",
            Scope::KeysManage => "keys:manage",
        }
    }

    /// Accepts the canonical names and the seeds' aliases for organization writes.
    pub fn parse(text: &str) -> Option<Scope> {
        match text {
            "organizations:edit" | "orgs:edit" => Some(Scope::OrganizationsWrite),
            _ => Scope::ALL.into_iter().find(|s| s.as_str() == text),
        }
    }

    /// Writing a resource implies reading it.
    fn implied_by(self) -> Option<Scope> {
        match self {
            Scope::OrganizationsRead => Some(Scope::OrganizationsWrite),
            Scope::MembersRead => Some(Scope::MembersWrite),
            _ => None,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key's scopes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ScopeSet(BTreeSet<Scope>);

impl ScopeSet {
    pub fn all() -> Self {
        Self(Scope::ALL.into_iter().collect())
    }

    pub fn allows(&self, scope: Scope) -> bool {
        self.0.contains(&scope) || scope.implied_by().is_some_and(|s| self.0.contains(&s))
    }

    pub fn iter(&self) -> impl Iterator<Item = Scope> + '_ {
        self.0.iter().copied()
    }
}

impl FromIterator<Scope> for ScopeSet {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

/// A key as stored (without its secret).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    pub id: KeyId,
    pub name: Option<String>,
    pub scopes: ScopeSet,
    /// When set, the key sees and changes only this organization and its descendants.
    pub org_id: Option<OrgId>,
    pub secret_hash: SecretHash,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// A key's secret, `orgd_` followed by 43 base64url characters (256 random bits).
/// Never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub const PREFIX: &'static str = "orgd_";

    pub fn generate() -> Self {
        use base64::Engine;
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(format!(
            "{}{}",
            Self::PREFIX,
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        ))
    }

    /// A secret given from outside (the bootstrap key), which must carry the prefix.
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix(Self::PREFIX)?;
        (rest.len() >= 16 && rest.len() <= 256 && rest.bytes().all(|b| b.is_ascii_graphic()))
            .then(|| Self(text.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> SecretHash {
        // The digest's own `LowerHex` writes the 64 digits at once; `hex::encode`
        // collected them into a `String` one `char` at a time, ~5% of the
        // instructions of a GET by id (every request hashes its key).
        SecretHash(format!("{:x}", Sha256::digest(self.0.as_bytes())))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The hex SHA-256 of a secret: what the store keeps and looks keys up by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretHash(pub String);

impl SecretHash {
    /// Constant-time equality, so comparing a presented secret's hash with a stored
    /// one leaks nothing about where they first differ.
    pub fn matches(&self, other: &SecretHash) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_hashes_to_the_lowercase_hex_sha256_that_stored_keys_use() {
        let secret = Secret::parse("orgd_0123456789abcdef").expect("a valid secret");
        assert_eq!(
            secret.hash().0,
            "5ddd43edf5912344f4c9076853dca3bec5b4640a75db50fd8e3197e949b937cd"
        );
    }

    #[test]
    fn secrets_are_prefixed_random_and_redacted() {
        let a = Secret::generate();
        let b = Secret::generate();
        assert!(a.expose().starts_with("orgd_"));
        assert_ne!(a, b);
        assert!(!format!("{a:?}").contains(&a.expose()[5..]));
        assert!(a.hash().matches(&Secret::parse(a.expose()).unwrap().hash()));
        assert!(!a.hash().matches(&b.hash()));
    }

    #[test]
    fn aliases_and_implied_scopes() {
        assert_eq!(Scope::parse("orgs:edit"), Some(Scope::OrganizationsWrite));
        assert_eq!(
            Scope::parse("organizations:edit"),
            Some(Scope::OrganizationsWrite)
        );
        assert_eq!(Scope::parse("nope"), None);
        let set: ScopeSet = [Scope::OrganizationsWrite].into_iter().collect();
        assert!(set.allows(Scope::OrganizationsRead));
        assert!(!set.allows(Scope::EventsRead));
    }

    #[test]
    fn outside_secrets_need_the_prefix() {
        assert!(Secret::parse("orgd_0123456789abcdef").is_some());
        assert!(Secret::parse("0123456789abcdef0123").is_none());
        assert!(Secret::parse("orgd_short").is_none());
    }
}

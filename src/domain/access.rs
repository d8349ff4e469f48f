//! Who is asking, and what they may do: the one place where permissions are decided.
//!
//! The field matrix is SPEC §1's last column. Handlers never compare roles
//! themselves; they ask this module and turn its answer into a response.

use std::collections::BTreeSet;

use super::apikey::{Scope, ScopeSet};
use super::event::{Actor, ActorKind};
use super::ids::{KeyId, OrgId};
use super::org::{Field, Organization};

/// The authenticated caller of one request.
#[derive(Debug, Clone)]
pub enum Principal {
    /// A management app's key: acts as the system, within its scopes and subtree.
    ApiKey {
        id: KeyId,
        scopes: ScopeSet,
        /// The subtree the key is bound to, if any.
        root: Option<OrgId>,
    },
}

impl Principal {
    pub fn actor(&self) -> Actor {
        match self {
            Principal::ApiKey { id, .. } => Actor {
                kind: ActorKind::ApiKey,
                id: id.to_string(),
            },
        }
    }

    /// A stable key for per-principal state (idempotency records, rate limits).
    pub fn key(&self) -> String {
        match self {
            Principal::ApiKey { id, .. } => id.to_string(),
        }
    }

    pub fn has_scope(&self, scope: Scope) -> bool {
        match self {
            Principal::ApiKey { scopes, .. } => scopes.allows(scope),
        }
    }

    /// The subtree this principal is confined to, if any.
    pub fn root(&self) -> Option<OrgId> {
        match self {
            Principal::ApiKey { root, .. } => *root,
        }
    }

    /// Whether the organization whose lineage (itself, then its ancestors) is given
    /// exists for this principal at all; outside it, the org is "not found".
    pub fn can_see(&self, lineage: &[OrgId]) -> bool {
        match self.root() {
            None => true,
            Some(root) => lineage.contains(&root),
        }
    }

    /// What this principal is in one organization.
    pub fn authority(&self) -> Authority {
        match self {
            Principal::ApiKey { scopes, .. } => Authority {
                system: scopes.allows(Scope::OrganizationsWrite),
                support: false,
                role: None,
            },
        }
    }
}

/// A member's role inside an organization; each includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum OrgRole {
    Member,
    Admin,
    Owner,
}

/// Everything that decides what a principal may write in one organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authority {
    /// A system administrator, or a key with write scope.
    pub system: bool,
    /// Global support staff.
    pub support: bool,
    /// Membership role in this organization.
    pub role: Option<OrgRole>,
}

/// The least one must be to set a field (SPEC §1, "who may set it on update").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    Admin,
    Owner,
    /// Support staff or the system, not org members.
    Support,
    System,
}

/// The field permission matrix.
pub fn requirement(field: Field) -> Requirement {
    match field {
        Field::Slug
        | Field::Name
        | Field::AliasName
        | Field::Description
        | Field::LogoUrl
        | Field::Website
        | Field::Phone
        | Field::Address
        | Field::IsBusiness
        | Field::TimeZone
        | Field::Metadata => Requirement::Admin,
        Field::Domains | Field::PrimaryDomain | Field::MfaRequired | Field::ParentId => {
            Requirement::Owner
        }
        Field::SubscriptionId => Requirement::Support,
        Field::Enabled | Field::AppIds | Field::Policy => Requirement::System,
    }
}

impl Authority {
    pub fn meets(&self, requirement: Requirement) -> bool {
        if self.system {
            return true;
        }
        match requirement {
            Requirement::Admin => self.role >= Some(OrgRole::Admin),
            Requirement::Owner => self.role == Some(OrgRole::Owner),
            Requirement::Support => self.support,
            Requirement::System => false,
        }
    }
}

/// Why a write was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// The key lacks the scope the operation needs.
    MissingScope(Scope),
    /// The caller may not set these fields.
    Fields(Vec<Field>),
    /// Members cannot write to a disabled organization.
    OrganizationDisabled,
}

/// Decides an update: the scope, the organization's state, then every touched
/// field against the matrix, refusing the whole request and naming every field.
pub fn authorize_update(
    principal: &Principal,
    org: &Organization,
    touched: &BTreeSet<Field>,
) -> Result<(), Denied> {
    if !principal.has_scope(Scope::OrganizationsWrite) {
        return Err(Denied::MissingScope(Scope::OrganizationsWrite));
    }
    let authority = principal.authority();
    if !org.enabled && !authority.system {
        return Err(Denied::OrganizationDisabled);
    }
    let refused: Vec<Field> = touched
        .iter()
        .copied()
        .filter(|&f| !authority.meets(requirement(f)))
        .collect();
    if refused.is_empty() {
        Ok(())
    } else {
        Err(Denied::Fields(refused))
    }
}

/// Decides a write that is not a field update (create, delete, restore).
pub fn authorize_write(principal: &Principal) -> Result<(), Denied> {
    if principal.has_scope(Scope::OrganizationsWrite) {
        Ok(())
    } else {
        Err(Denied::MissingScope(Scope::OrganizationsWrite))
    }
}

/// Decides a read that needs `scope`.
pub fn authorize_read(principal: &Principal, scope: Scope) -> Result<(), Denied> {
    if principal.has_scope(scope) {
        Ok(())
    } else {
        Err(Denied::MissingScope(scope))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authority(role: Option<OrgRole>, support: bool, system: bool) -> Authority {
        Authority {
            system,
            support,
            role,
        }
    }

    #[test]
    fn owners_include_admins_and_only_the_system_sets_system_fields() {
        let owner = authority(Some(OrgRole::Owner), false, false);
        let admin = authority(Some(OrgRole::Admin), false, false);
        let member = authority(Some(OrgRole::Member), false, false);
        let support = authority(None, true, false);
        let system = authority(None, false, true);
        assert!(owner.meets(requirement(Field::Name)));
        assert!(owner.meets(requirement(Field::Domains)));
        assert!(admin.meets(requirement(Field::Name)));
        assert!(!admin.meets(requirement(Field::Domains)));
        assert!(!member.meets(requirement(Field::Name)));
        assert!(support.meets(requirement(Field::SubscriptionId)));
        assert!(!support.meets(requirement(Field::Name)));
        assert!(!owner.meets(requirement(Field::SubscriptionId)));
        assert!(!owner.meets(requirement(Field::Enabled)));
        for field in Field::ALL {
            assert!(system.meets(requirement(field)), "{field}");
        }
    }

    #[test]
    fn read_keys_cannot_write_and_bound_keys_see_only_their_subtree() {
        let root = OrgId::generate();
        let key = Principal::ApiKey {
            id: KeyId::generate(),
            scopes: [Scope::OrganizationsRead].into_iter().collect(),
            root: Some(root),
        };
        assert_eq!(
            authorize_write(&key),
            Err(Denied::MissingScope(Scope::OrganizationsWrite))
        );
        assert!(key.can_see(&[OrgId::generate(), root]));
        assert!(!key.can_see(&[OrgId::generate()]));
    }
}

//! Who is asking, and what they may do: the one place where permissions are decided.
//!
//! The field matrix is SPEC §1's last column. Handlers never compare roles
//! themselves; they ask this module and turn its answer into a response.

use std::collections::BTreeSet;

use super::apikey::{Scope, ScopeSet};
use super::event::{Actor, ActorKind};
use serde::{Deserialize, Serialize};

use super::ids::{KeyId, OrgId};
use super::members::UserId;
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
    /// A person, from the deployment's identity provider.
    User(User),
}

/// A verified user token's facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The token's `sub`.
    pub id: UserId,
    /// Global role `system_admin`: acts as the system everywhere.
    pub system_admin: bool,
    /// Global role `support`: reads everything, writes only `subscription_id`.
    pub support: bool,
    /// The token shows multi-factor authentication (`amr` has `mfa`, or the configured `acr`).
    pub mfa: bool,
}

impl Principal {
    pub fn actor(&self) -> Actor {
        match self {
            Principal::ApiKey { id, .. } => Actor {
                kind: ActorKind::ApiKey,
                id: id.to_string(),
            },
            Principal::User(user) => Actor {
                kind: ActorKind::User,
                id: user.id.to_string(),
            },
        }
    }

    /// A stable key for per-principal state (idempotency records, rate limits).
    pub fn key(&self) -> String {
        match self {
            Principal::ApiKey { id, .. } => id.to_string(),
            Principal::User(user) => format!("user:{}", user.id),
        }
    }

    /// Keys carry scopes; a user's rights come from roles instead, so every
    /// scope check passes for users and the role checks decide.
    pub fn has_scope(&self, scope: Scope) -> bool {
        match self {
            Principal::ApiKey { scopes, .. } => scopes.allows(scope),
            Principal::User(_) => true,
        }
    }

    /// The subtree a key is confined to, if any.
    pub fn root(&self) -> Option<OrgId> {
        match self {
            Principal::ApiKey { root, .. } => *root,
            Principal::User(_) => None,
        }
    }

    pub fn user(&self) -> Option<&User> {
        match self {
            Principal::User(user) => Some(user),
            Principal::ApiKey { .. } => None,
        }
    }

    /// Whether this principal sees every organization it can reach without a
    /// membership (keys within their subtree, system admins, support staff).
    pub fn is_global(&self) -> bool {
        match self {
            Principal::ApiKey { .. } => true,
            Principal::User(user) => user.system_admin || user.support,
        }
    }

    /// Whether the organization exists for this principal at all; outside what it
    /// may see, an org is "not found" (existence is not leaked). `lineage` is the
    /// org and its ancestors; `membership` the caller's role in it.
    pub fn can_see(&self, lineage: &[OrgId], membership: Option<OrgRole>) -> bool {
        match self {
            Principal::ApiKey { root: None, .. } => true,
            Principal::ApiKey {
                root: Some(root), ..
            } => lineage.contains(root),
            Principal::User(_) => self.is_global() || membership.is_some(),
        }
    }

    /// What this principal is in one organization, given its membership role there.
    pub fn authority(&self, membership: Option<OrgRole>) -> Authority {
        match self {
            Principal::ApiKey { scopes, .. } => Authority {
                system: scopes.allows(Scope::OrganizationsWrite),
                support: false,
                role: None,
            },
            Principal::User(user) => Authority {
                system: user.system_admin,
                support: user.support,
                role: membership,
            },
        }
    }
}

/// A member's role inside an organization; each includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrgRole {
    Member,
    Admin,
    Owner,
}

impl OrgRole {
    pub fn as_str(self) -> &'static str {
        match self {
            OrgRole::Member => "member",
            OrgRole::Admin => "admin",
            OrgRole::Owner => "owner",
        }
    }

    pub fn parse(text: &str) -> Option<OrgRole> {
        [OrgRole::Member, OrgRole::Admin, OrgRole::Owner]
            .into_iter()
            .find(|r| r.as_str() == text)
    }
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

/// The matrix as the Markdown table of docs/permissions.md, so the document is
/// generated from this code (and a test fails when the two drift apart).
pub fn matrix_markdown() -> String {
    let mut out = String::from("| field | minimum |\n|---|---|\n");
    for (requirement, label) in [
        (Requirement::Admin, "admin"),
        (Requirement::Owner, "owner"),
        (Requirement::Support, "support or system"),
        (Requirement::System, "system"),
    ] {
        let fields: Vec<String> = Field::ALL
            .iter()
            .filter(|&&f| self::requirement(f) == requirement)
            .map(|f| format!("`{}`", f.name()))
            .collect();
        out.push_str(&format!("| {} | {label} |\n", fields.join(", ")));
    }
    let read_only: Vec<String> = Field::READ_ONLY.iter().map(|f| format!("`{f}`")).collect();
    out.push_str(&format!(
        "| {} | nobody (`read_only`) |\n",
        read_only.join(", ")
    ));
    out
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

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// The key lacks the scope the operation needs.
    MissingScope(Scope),
    /// The caller may not set these fields.
    Fields(Vec<Field>),
    /// The caller's role is too low for this operation.
    Role(&'static str),
    /// Members cannot write to a disabled organization.
    OrganizationDisabled,
    /// The organization requires MFA and the user's token does not show it.
    MfaRequired,
}

/// A member's user token must show MFA in an organization that requires it. Staff
/// with global roles are governed by their own identity provider's policy.
pub fn check_mfa(
    principal: &Principal,
    org: &Organization,
    authority: &Authority,
) -> Result<(), Denied> {
    match principal.user() {
        Some(user) if org.mfa_required && !user.mfa && !authority.system && !authority.support => {
            Err(Denied::MfaRequired)
        }
        _ => Ok(()),
    }
}

/// Writes by members are refused while the organization is disabled.
fn check_enabled(org: &Organization, authority: &Authority) -> Result<(), Denied> {
    if org.enabled || authority.system || authority.support {
        Ok(())
    } else {
        Err(Denied::OrganizationDisabled)
    }
}

/// Decides an update: the scope, the organization's state, then every touched
/// field against the matrix, refusing the whole request and naming every field.
pub fn authorize_update(
    principal: &Principal,
    authority: &Authority,
    org: &Organization,
    touched: &BTreeSet<Field>,
) -> Result<(), Denied> {
    if !principal.has_scope(Scope::OrganizationsWrite) {
        return Err(Denied::MissingScope(Scope::OrganizationsWrite));
    }
    check_enabled(org, authority)?;
    check_mfa(principal, org, authority)?;
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

/// Decides creating an organization with the touched fields: the creator becomes
/// its owner, so owners' fields are allowed and system fields are not (unless the
/// caller is the system). `parent_authority` is the caller's authority on the
/// parent, when the new org has one: creating a child needs owner or admin there.
pub fn authorize_create(
    principal: &Principal,
    touched: &BTreeSet<Field>,
    parent_authority: Option<&Authority>,
) -> Result<(), Denied> {
    if !principal.has_scope(Scope::OrganizationsWrite) {
        return Err(Denied::MissingScope(Scope::OrganizationsWrite));
    }
    let creator = principal.authority(Some(OrgRole::Owner));
    if let Some(parent) = parent_authority {
        if !parent.meets(Requirement::Admin) {
            return Err(Denied::Role(
                "creating a child organization needs owner or admin on the parent",
            ));
        }
    }
    let refused: Vec<Field> = touched
        .iter()
        .copied()
        .filter(|&f| !creator.meets(requirement(f)))
        .collect();
    if refused.is_empty() {
        Ok(())
    } else {
        Err(Denied::Fields(refused))
    }
}

/// Moving an org under a new parent also needs owner or admin on that parent.
pub fn authorize_new_parent(parent_authority: &Authority) -> Result<(), Denied> {
    if parent_authority.meets(Requirement::Admin) {
        Ok(())
    } else {
        Err(Denied::Role(
            "moving an organization needs owner or admin on the new parent",
        ))
    }
}

/// Deleting or restoring an organization: the system, or its owner.
pub fn authorize_lifecycle(
    principal: &Principal,
    authority: &Authority,
    org: &Organization,
) -> Result<(), Denied> {
    if !principal.has_scope(Scope::OrganizationsWrite) {
        return Err(Denied::MissingScope(Scope::OrganizationsWrite));
    }
    check_enabled(org, authority)?;
    check_mfa(principal, org, authority)?;
    if authority.meets(Requirement::Owner) {
        Ok(())
    } else {
        Err(Denied::Role(
            "only an owner may delete or restore an organization",
        ))
    }
}

/// Decides a read that needs `scope` (keys), before any organization is involved
/// (lists).
pub fn authorize_read(principal: &Principal, scope: Scope) -> Result<(), Denied> {
    if principal.has_scope(scope) {
        Ok(())
    } else {
        Err(Denied::MissingScope(scope))
    }
}

/// Decides an operation over the whole deployment rather than one organization
/// (webhook endpoints, the global event feed): keys need `scope`; among users, system
/// administrators may, and support staff may when it only reads.
pub fn authorize_deployment(
    principal: &Principal,
    scope: Scope,
    writes: bool,
) -> Result<(), Denied> {
    match principal {
        Principal::ApiKey { .. } => authorize_read(principal, scope),
        Principal::User(user) if user.system_admin || (user.support && !writes) => Ok(()),
        Principal::User(_) => Err(Denied::Role(
            "this needs a system administrator or an API key",
        )),
    }
}

/// Decides a read of one organization's data: the scope, and MFA where the org
/// requires it.
pub fn authorize_org_read(
    principal: &Principal,
    authority: &Authority,
    org: &Organization,
    scope: Scope,
) -> Result<(), Denied> {
    authorize_read(principal, scope)?;
    check_mfa(principal, org, authority)
}

/// Decides a membership change: owners and admins manage members, only owners grant
/// or take `owner` (`from` is the member's current role, `to` the new one; `None`
/// for "not a member").
pub fn authorize_member_change(
    principal: &Principal,
    authority: &Authority,
    org: &Organization,
    target: &UserId,
    from: Option<OrgRole>,
    to: Option<OrgRole>,
) -> Result<(), Denied> {
    if !principal.has_scope(Scope::MembersWrite) {
        return Err(Denied::MissingScope(Scope::MembersWrite));
    }
    // A key's `members:write` is its authority over memberships, as
    // `organizations:write` is over the organization itself.
    let authority = &Authority {
        system: authority.system || matches!(principal, Principal::ApiKey { .. }),
        ..*authority
    };
    check_enabled(org, authority)?;
    check_mfa(principal, org, authority)?;
    // Anyone may leave an organization (the last-owner rule still applies).
    if to.is_none() && principal.user().is_some_and(|u| &u.id == target) {
        return Ok(());
    }
    let touches_owner = from == Some(OrgRole::Owner) || to == Some(OrgRole::Owner);
    let needed = if touches_owner {
        Requirement::Owner
    } else {
        Requirement::Admin
    };
    if authority.meets(needed) {
        Ok(())
    } else if touches_owner {
        Err(Denied::Role(
            "only an owner may grant or take the owner role",
        ))
    } else {
        Err(Denied::Role("only owners and admins manage members"))
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
    fn the_permissions_document_shows_the_matrix_in_this_code() {
        let doc = include_str!("../../docs/permissions.md");
        let table = matrix_markdown();
        assert!(
            doc.contains(&table),
            "docs/permissions.md is out of date; its table must read:\n{table}"
        );
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
            authorize_create(&key, &BTreeSet::new(), None),
            Err(Denied::MissingScope(Scope::OrganizationsWrite))
        );
        assert!(key.can_see(&[OrgId::generate(), root], None));
        assert!(!key.can_see(&[OrgId::generate()], None));
    }
}

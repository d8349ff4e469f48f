//! Memberships: who belongs to an organization, with which role, and the rules
//! that keep an organization governable (a last owner stays; a plan's member limit
//! holds). Seed 004's group managers are members with a `title`; seed 002's users
//! are members.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::access::OrgRole;
use super::fields::Text;
use super::ids::OrgId;
use super::org::Policy;
use super::patch::{limits, Changes, FieldChange, Nullable};
use super::problems::{escape_token, pointer, FieldError, Invalid};

/// A user's id as the identity provider gives it (the token's `sub`): 1–255
/// characters without control characters (`auth0|123`, an email, a UUID…).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        if text.is_empty() || text.chars().count() > 255 {
            return Err(Invalid::new("invalid_user_id", "must be 1-255 characters"));
        }
        if text.chars().any(char::is_control) {
            return Err(Invalid::new(
                "invalid_user_id",
                "must not contain control characters",
            ));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One user's membership in one organization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Membership {
    pub org_id: OrgId,
    pub user_id: UserId,
    pub role: OrgRole,
    pub display_name: Option<Text>,
    pub external_id: Option<Text>,
    pub title: Option<Text>,
    #[serde(with = "super::time")]
    pub created_at: Timestamp,
    #[serde(with = "super::time")]
    pub updated_at: Timestamp,
}

/// What a `PUT …/members/{user_id}` body says; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemberPatch {
    pub role: Option<OrgRole>,
    pub display_name: Nullable<Text>,
    pub external_id: Nullable<Text>,
    pub title: Nullable<Text>,
}

const READ_ONLY: [&str; 4] = ["user_id", "org_id", "created_at", "updated_at"];

/// Reads a membership body, reporting every problem at once.
pub fn parse_member(body: &Map<String, Value>) -> Result<MemberPatch, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut patch = MemberPatch::default();
    let text = |errors: &mut Vec<FieldError>, key: &str, value: &Value| -> Nullable<Text> {
        match value {
            Value::Null => Nullable::Null,
            Value::String(s) => match Text::parse(s, limits::NAME_LIKE) {
                Ok(t) => Nullable::Set(t),
                Err(e) => {
                    errors.push(e.at(pointer("", key)));
                    Nullable::Absent
                }
            },
            _ => {
                errors.push(FieldError::new(
                    pointer("", key),
                    "invalid_type",
                    "must be a string",
                ));
                Nullable::Absent
            }
        }
    };
    for (key, value) in body {
        match key.as_str() {
            "role" => match value.as_str().map(OrgRole::parse) {
                Some(Some(role)) => patch.role = Some(role),
                _ if value.is_null() => errors.push(FieldError::new("/role", "not_nullable", "cannot be null")),
                _ => errors.push(FieldError::new("/role", "invalid_role", "must be owner, admin or member")),
            },
            "display_name" => patch.display_name = text(&mut errors, key, value),
            "external_id" => patch.external_id = text(&mut errors, key, value),
            "title" => patch.title = text(&mut errors, key, value),
            _ if READ_ONLY.contains(&key.as_str()) => errors.push(FieldError::new(
                pointer("", key),
                "read_only",
                format!("`{key}` is set by the server and cannot be written"),
            )),
            _ => errors.push(FieldError::new(
                pointer("", key),
                "unknown_field",
                format!("`{key}` is not a field of a membership (role, display_name, external_id, title)"),
            )),
        }
    }
    if errors.is_empty() {
        Ok(patch)
    } else {
        Err(errors)
    }
}

impl MemberPatch {
    /// The membership after this patch: a new one (role defaults to `member`) or
    /// the current one changed.
    pub fn apply(
        &self,
        current: Option<&Membership>,
        org_id: OrgId,
        user_id: &UserId,
        now: Timestamp,
    ) -> Membership {
        let mut member = current.cloned().unwrap_or_else(|| Membership {
            org_id,
            user_id: user_id.clone(),
            role: OrgRole::Member,
            display_name: None,
            external_id: None,
            title: None,
            created_at: now,
            updated_at: now,
        });
        if let Some(role) = self.role {
            member.role = role;
        }
        for (patch, field) in [
            (&self.display_name, &mut member.display_name),
            (&self.external_id, &mut member.external_id),
            (&self.title, &mut member.title),
        ] {
            match patch {
                Nullable::Absent => {}
                Nullable::Null => *field = None,
                Nullable::Set(v) => *field = Some(v.clone()),
            }
        }
        if current.is_some_and(|c| !same_fields(c, &member)) {
            member.updated_at = now;
        }
        member
    }
}

fn same_fields(a: &Membership, b: &Membership) -> bool {
    a.role == b.role
        && a.display_name == b.display_name
        && a.external_id == b.external_id
        && a.title == b.title
}

/// Whether a write would change anything.
pub fn is_unchanged(before: Option<&Membership>, after: Option<&Membership>) -> bool {
    match (before, after) {
        (Some(a), Some(b)) => same_fields(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// The audit changes of a membership write, keyed `/members/<user_id>/<field>`.
pub fn member_changes(
    user_id: &UserId,
    before: Option<&Membership>,
    after: Option<&Membership>,
) -> Changes {
    let fields = |m: Option<&Membership>| -> BTreeMap<&'static str, Value> {
        let text = |t: &Option<Text>| {
            t.as_ref()
                .map_or(Value::Null, |t| Value::String(t.to_string()))
        };
        BTreeMap::from([
            (
                "role",
                m.map_or(Value::Null, |m| Value::String(m.role.as_str().into())),
            ),
            (
                "display_name",
                m.map_or(Value::Null, |m| text(&m.display_name)),
            ),
            (
                "external_id",
                m.map_or(Value::Null, |m| text(&m.external_id)),
            ),
            ("title", m.map_or(Value::Null, |m| text(&m.title))),
        ])
    };
    let (old, new) = (fields(before), fields(after));
    let base = format!("/members/{}", escape_token(user_id.as_str()));
    old.iter()
        .filter(|(k, v)| new.get(*k) != Some(*v))
        .map(|(k, v)| {
            (
                pointer(&base, k),
                FieldChange {
                    from: v.clone(),
                    to: new.get(k).cloned().unwrap_or(Value::Null),
                },
            )
        })
        .collect()
}

/// A rule that keeps an organization governable was about to break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MemberRuleError {
    #[error("an organization must keep at least one owner")]
    LastOwner,
    #[error("the organization's plan allows at most {limit} members")]
    LimitReached { limit: u64 },
}

/// Checks a membership write against the facts the store read inside its
/// transaction: how many owners and members the org has, and its policy.
pub fn check_member_rules(
    before: Option<&Membership>,
    after: Option<&Membership>,
    owners: u64,
    members: u64,
    policy: Option<&Policy>,
) -> Result<(), MemberRuleError> {
    let was_owner = before.is_some_and(|m| m.role == OrgRole::Owner);
    let stays_owner = after.is_some_and(|m| m.role == OrgRole::Owner);
    if was_owner && !stays_owner && owners <= 1 {
        return Err(MemberRuleError::LastOwner);
    }
    if before.is_none() && after.is_some() {
        if let Some(limit) = policy.and_then(Policy::max_members) {
            if members >= limit {
                return Err(MemberRuleError::LimitReached { limit });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn member(role: OrgRole) -> Membership {
        MemberPatch {
            role: Some(role),
            ..Default::default()
        }
        .apply(
            None,
            OrgId::generate(),
            &UserId::parse("u1").unwrap(),
            Timestamp::UNIX_EPOCH,
        )
    }

    #[test]
    fn the_last_owner_can_be_neither_removed_nor_demoted() {
        let owner = member(OrgRole::Owner);
        let admin = member(OrgRole::Admin);
        assert_eq!(
            check_member_rules(Some(&owner), None, 1, 3, None),
            Err(MemberRuleError::LastOwner)
        );
        assert_eq!(
            check_member_rules(Some(&owner), Some(&admin), 1, 3, None),
            Err(MemberRuleError::LastOwner)
        );
        assert_eq!(check_member_rules(Some(&owner), None, 2, 3, None), Ok(()));
    }

    #[test]
    fn the_member_limit_counts_only_new_members() {
        let policy: Policy =
            serde_json::from_value(json!({"name": "team", "limits": {"max_members": 2}})).unwrap();
        let m = member(OrgRole::Member);
        assert_eq!(
            check_member_rules(None, Some(&m), 0, 2, Some(&policy)),
            Err(MemberRuleError::LimitReached { limit: 2 })
        );
        assert_eq!(
            check_member_rules(Some(&m), Some(&m), 0, 2, Some(&policy)),
            Ok(())
        );
        assert_eq!(
            check_member_rules(None, Some(&m), 0, 1, Some(&policy)),
            Ok(())
        );
    }

    #[test]
    fn bodies_are_strict_and_every_error_is_reported() {
        let body = json!({"role": "boss", "title": 3, "user_id": "x", "colour": "red"});
        let errors = parse_member(body.as_object().unwrap()).unwrap_err();
        let codes: Vec<&str> = errors.iter().map(|e| e.code).collect();
        assert_eq!(
            codes,
            ["unknown_field", "invalid_role", "invalid_type", "read_only"]
        );
    }

    #[test]
    fn changes_are_keyed_by_member_pointer() {
        let id = UserId::parse("auth0|a/b").unwrap();
        let after = member(OrgRole::Admin);
        let changes = member_changes(&id, None, Some(&after));
        assert_eq!(changes["/members/auth0|a~1b/role"].to, json!("admin"));
        assert!(!changes.contains_key("/members/auth0|a~1b/title"));
    }
}

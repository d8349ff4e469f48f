//! Audit events: what changed, who changed it, and the version it made. One is
//! written in the same transaction as every change, and it is also what webhooks
//! and the event feed deliver.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::ids::{EventId, OrgId};
use super::patch::Changes;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "organization.created")]
    OrganizationCreated,
    #[serde(rename = "organization.updated")]
    OrganizationUpdated,
    #[serde(rename = "organization.deleted")]
    OrganizationDeleted,
    #[serde(rename = "organization.restored")]
    OrganizationRestored,
    #[serde(rename = "member.added")]
    MemberAdded,
    #[serde(rename = "member.updated")]
    MemberUpdated,
    #[serde(rename = "member.removed")]
    MemberRemoved,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::OrganizationCreated => "organization.created",
            EventType::OrganizationUpdated => "organization.updated",
            EventType::OrganizationDeleted => "organization.deleted",
            EventType::OrganizationRestored => "organization.restored",
            EventType::MemberAdded => "member.added",
            EventType::MemberUpdated => "member.updated",
            EventType::MemberRemoved => "member.removed",
        }
    }
}

/// Who made a change, as recorded in the trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    #[serde(rename = "type")]
    pub kind: ActorKind,
    pub id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    ApiKey,
    User,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::ApiKey => "api_key",
            ActorKind::User => "user",
        }
    }
}

/// One entry of the audit trail, in the shape of SPEC §5.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: EventId,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub organization_id: OrgId,
    pub actor: Actor,
    pub changes: Changes,
    /// The organization's version after this change.
    pub version: i64,
    pub request_id: String,
    #[serde(with = "super::time")]
    pub occurred_at: Timestamp,
}

/// Who and when, shared by every event one request makes.
#[derive(Debug, Clone)]
pub struct EventContext {
    pub actor: Actor,
    pub request_id: String,
    pub now: Timestamp,
}

impl EventContext {
    pub fn event(
        &self,
        event_type: EventType,
        org: OrgId,
        version: i64,
        changes: Changes,
    ) -> Event {
        Event {
            id: EventId::generate(),
            event_type,
            organization_id: org,
            actor: self.actor.clone(),
            changes,
            version,
            request_id: self.request_id.clone(),
            occurred_at: self.now,
        }
    }
}

//! The organizations this process last created or updated, by id: a starting
//! point for the next update of the same organization that saves reading it back.
//!
//! An update must be planned on the stored row, so every update used to read it
//! first; on PostgreSQL that read was one of the two statements of a PATCH. An
//! update planned on a copy kept here commits only if the row still has the copy's
//! version — the store's guarded write checks exactly that, as it does for every
//! update — and the version changes with every change to an organization (the
//! `ETag` contract rests on it). So a stale copy (another process wrote since, or
//! this one was refused) costs a refused write and the update is done again on a
//! fresh read; it is never committed, and nothing read here is ever answered
//! without such a commit.
//!
//! Bounded least-recently-used map (hashlink's, the one sqlx and rusqlite use).

use std::sync::{Arc, Mutex, PoisonError};

use hashlink::LruCache;

use crate::domain::ids::OrgId;
use crate::domain::org::Organization;

/// Organizations kept at most (a few MB at this size).
const CAPACITY: usize = 10_000;

pub struct RecentOrgs {
    orgs: Mutex<LruCache<OrgId, Arc<Organization>>>,
}

impl Default for RecentOrgs {
    fn default() -> Self {
        Self {
            orgs: Mutex::new(LruCache::new(CAPACITY)),
        }
    }
}

impl RecentOrgs {
    pub fn get(&self, id: &OrgId) -> Option<Arc<Organization>> {
        self.lock().get(id).cloned()
    }

    /// Keeps the state this process just committed.
    pub fn committed(&self, org: Arc<Organization>) {
        self.lock().insert(org.id, org);
    }

    pub fn forget(&self, id: &OrgId) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<OrgId, Arc<Organization>>> {
        self.orgs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

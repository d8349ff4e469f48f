//! Valid API keys kept in memory, for a store that can tell when they change.
//!
//! Every request looks its API key up, and keys change rarely (created, revoked).
//! The store decides when the cache may be used and empties it when keys change:
//! PostgreSQL by LISTEN/NOTIFY (`pg_changes`), SQLite by a change counter it reads
//! at most every few milliseconds (`sqlite_key_cache`). This module is the part both
//! share: the entries, and the generation ticket that keeps a lookup racing an
//! invalidation from storing what the change replaced.
//!
//! Written here rather than taken from a caching crate because the part that
//! matters is that invalidation protocol, not the map.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use crate::domain::apikey::{ApiKey, SecretHash};

/// Longest an entry is trusted even with no change seen (a safety net only).
const MAX_AGE: Duration = Duration::from_secs(30);
/// Keys kept at most; past it the cache starts over (it holds only valid keys,
/// so this is reached only by deployments with that many active keys).
const CAPACITY: usize = 10_000;

#[derive(Default)]
pub(super) struct KeyCache {
    keys: RwLock<HashMap<String, (ApiKey, Instant)>>,
    /// Bumped by every invalidation: a lookup that started before one must not
    /// store what it read (it may be the state the change replaced).
    generation: AtomicU64,
    /// Whether entries may be served: on only while the store's way of hearing
    /// about key changes works.
    enabled: AtomicBool,
}

/// Read before looking a key up in the database; hand back to [`KeyCache::store`].
pub(super) struct Ticket(u64);

impl KeyCache {
    pub(super) fn get(&self, hash: &SecretHash) -> Option<ApiKey> {
        if !self.enabled.load(Ordering::Acquire) {
            return None;
        }
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        keys.get(&hash.0)
            .filter(|(_, at)| at.elapsed() < MAX_AGE)
            .map(|(key, _)| key.clone())
    }

    pub(super) fn ticket(&self) -> Ticket {
        Ticket(self.generation.load(Ordering::Acquire))
    }

    /// Keeps a key read from the database, unless an invalidation came since the
    /// ticket was taken. Revoked keys are not kept (their refusal stays a lookup).
    pub(super) fn store(&self, ticket: Ticket, key: &ApiKey) {
        if key.revoked_at.is_some() || !self.enabled.load(Ordering::Acquire) {
            return;
        }
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        // Checked under the write lock, which `invalidate` also takes: either the
        // invalidation sees this entry and removes it, or this sees its generation.
        if self.generation.load(Ordering::Acquire) != ticket.0 {
            return;
        }
        if keys.len() >= CAPACITY {
            keys.clear();
        }
        keys.insert(key.secret_hash.0.clone(), (key.clone(), Instant::now()));
    }

    pub(super) fn invalidate(&self) {
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        keys.clear();
    }

    pub(super) fn set_enabled(&self, on: bool) {
        // Whatever was cached may have missed changes either way.
        self.invalidate();
        self.enabled.store(on, Ordering::Release);
    }

    pub(super) fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::domain::apikey::{ScopeSet, Secret};
    use crate::domain::ids::KeyId;

    /// A valid key with every scope, for the caches' tests.
    pub(in crate::store) fn key() -> ApiKey {
        ApiKey {
            id: KeyId::generate(),
            name: None,
            scopes: ScopeSet::all(),
            org_id: None,
            secret_hash: Secret::generate().hash(),
            created_at: jiff::Timestamp::now(),
            revoked_at: None,
        }
    }

    fn enabled() -> KeyCache {
        let cache = KeyCache::default();
        cache.set_enabled(true);
        cache
    }

    #[test]
    fn a_stored_key_is_served_until_an_invalidation() {
        let cache = enabled();
        let key = key();
        cache.store(cache.ticket(), &key);
        assert_eq!(cache.get(&key.secret_hash), Some(key.clone()));
        cache.invalidate();
        assert_eq!(cache.get(&key.secret_hash), None);
    }

    #[test]
    fn a_read_that_started_before_an_invalidation_is_not_kept() {
        let cache = enabled();
        let key = key();
        let ticket = cache.ticket();
        // The notification of a revocation arrives while the lookup is in flight.
        cache.invalidate();
        cache.store(ticket, &key);
        assert_eq!(cache.get(&key.secret_hash), None);
    }

    #[test]
    fn nothing_is_cached_or_served_while_disabled() {
        let cache = enabled();
        let key = key();
        cache.store(cache.ticket(), &key);
        cache.set_enabled(false);
        assert_eq!(cache.get(&key.secret_hash), None);
        cache.store(cache.ticket(), &key);
        cache.set_enabled(true);
        assert_eq!(cache.get(&key.secret_hash), None);
    }

    #[test]
    fn revoked_keys_are_not_kept() {
        let cache = enabled();
        let mut key = key();
        key.revoked_at = Some(jiff::Timestamp::now());
        cache.store(cache.ticket(), &key);
        assert_eq!(cache.get(&key.secret_hash), None);
    }
}

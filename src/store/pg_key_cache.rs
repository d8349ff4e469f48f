//! API keys found on PostgreSQL, kept in memory while PostgreSQL can tell us when
//! they change.
//!
//! Every request looks its API key up; on PostgreSQL that lookup is a round trip
//! and a backend's CPU, which under load was a third of a PATCH's statements and
//! half of a GET's. Keys change rarely (created, revoked), and a trigger on
//! `api_keys` (migration 0004) sends a notification in the committing
//! transaction. This process listens; every notification empties the cache. The
//! cache is used only while the listening connection is up: when it drops (the
//! notifications sent meanwhile are lost), the cache is emptied and every lookup
//! goes to the database until listening again. A revocation by any process (the
//! CLI, another orgd, plain SQL) so takes effect here as soon as PostgreSQL
//! delivers the notification — a millisecond on a healthy server — and within
//! [`MAX_AGE`] in any case. Caching starts only once a probe notification this
//! process sends comes back to it, and stops when one does not within
//! [`PROBE_TIMEOUT`] (probes every [`PROBE_EVERY`]).
//!
//! Written here rather than taken from a caching crate because the part that
//! matters is the invalidation protocol (generation check, listening state), not
//! the map.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgListener, PgPool};

use crate::domain::apikey::{ApiKey, SecretHash};

/// The channel migration 0004's trigger notifies.
pub(super) const CHANNEL: &str = "orgd_api_keys";
/// Longest an entry is trusted even with no notification (a safety net only).
const MAX_AGE: Duration = Duration::from_secs(30);
/// Keys kept at most; past it the cache starts over (it holds only valid keys,
/// so this is reached only by deployments with that many active keys).
const CAPACITY: usize = 10_000;
/// Wait before listening again after the connection dropped.
const RELISTEN_AFTER: Duration = Duration::from_secs(1);
/// How often this process checks that its own notifications reach it, and how
/// long one may take before the cache is switched off.
const PROBE_EVERY: Duration = Duration::from_secs(10);
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Payload of a probe (the trigger's notifications carry an empty payload).
const PROBE_PREFIX: &str = "probe:";

#[derive(Default)]
pub(super) struct KeyCache {
    keys: RwLock<HashMap<String, (ApiKey, Instant)>>,
    /// Bumped by every invalidation: a lookup that started before one must not
    /// store what it read (it may be the state the notification replaced).
    generation: AtomicU64,
    listening: AtomicBool,
}

/// Read before looking a key up in the database; hand back to [`KeyCache::store`].
pub(super) struct Ticket(u64);

impl KeyCache {
    pub(super) fn get(&self, hash: &SecretHash) -> Option<ApiKey> {
        if !self.listening.load(Ordering::Acquire) {
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
        if key.revoked_at.is_some() || !self.listening.load(Ordering::Acquire) {
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

    fn set_listening(&self, on: bool) {
        // Whatever was cached may have missed notifications either way.
        self.invalidate();
        self.listening.store(on, Ordering::Release);
    }

    pub(super) fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }
}

/// Listens for key changes until the cache is dropped (the store closed).
pub(super) async fn listen(pool: PgPool, cache: Weak<KeyCache>) {
    loop {
        if let Err(err) = listen_once(&pool, &cache).await {
            tracing::warn!(error = %err, "API key change notifications are not arriving; looking every key up until they do");
        }
        match cache.upgrade() {
            Some(live) => live.set_listening(false),
            None => return,
        }
        tokio::time::sleep(RELISTEN_AFTER).await;
    }
}

/// One listening connection: caching is on from the first probe that comes back
/// until the connection drops or a probe does not come back in time.
///
/// The probes are what make "listening" mean "receiving": a LISTEN that succeeds
/// but whose notifications never arrive (through PgBouncer in transaction mode, for
/// one) would otherwise leave revoked keys cached.
async fn listen_once(pool: &PgPool, cache: &Weak<KeyCache>) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    let mut probes = tokio::time::interval(PROBE_EVERY);
    // The probe sent and not yet seen, with when it is given up on.
    let mut waiting: Option<(String, tokio::time::Instant)> = None;
    loop {
        let deadline = waiting.as_ref().map(|(_, until)| *until);
        tokio::select! {
            _ = probes.tick(), if waiting.is_none() => {
                let payload = format!("{PROBE_PREFIX}{}", uuid::Uuid::now_v7());
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(CHANNEL)
                    .bind(&payload)
                    .execute(pool)
                    .await?;
                waiting = Some((payload, tokio::time::Instant::now() + PROBE_TIMEOUT));
            }
            _ = sleep_until(deadline) => {
                return Err(sqlx::Error::Protocol("a probe notification did not come back".into()));
            }
            received = listener.try_recv() => {
                // `None`: the connection was lost, and notifications with it.
                let Some(notification) = received? else {
                    return Err(sqlx::Error::Protocol("listening connection lost".into()));
                };
                let Some(live) = cache.upgrade() else { return Ok(()) };
                let payload = notification.payload();
                if waiting.as_ref().is_some_and(|(sent, _)| sent == payload) {
                    waiting = None;
                    if !live.is_listening() {
                        live.set_listening(true);
                    }
                } else if !payload.starts_with(PROBE_PREFIX) {
                    live.invalidate();
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Starts listening; the task ends once the returned cache is dropped and the
/// next notification or reconnect notices.
pub(super) fn start(pool: PgPool) -> (Arc<KeyCache>, tokio::task::JoinHandle<()>) {
    let cache = Arc::new(KeyCache::default());
    let task = tokio::spawn(listen(pool, Arc::downgrade(&cache)));
    (cache, task)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::apikey::{ScopeSet, Secret};
    use crate::domain::ids::KeyId;

    fn key() -> ApiKey {
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

    fn listening() -> KeyCache {
        let cache = KeyCache::default();
        cache.set_listening(true);
        cache
    }

    #[test]
    fn a_stored_key_is_served_until_an_invalidation() {
        let cache = listening();
        let key = key();
        cache.store(cache.ticket(), &key);
        assert_eq!(cache.get(&key.secret_hash), Some(key.clone()));
        cache.invalidate();
        assert_eq!(cache.get(&key.secret_hash), None);
    }

    #[test]
    fn a_read_that_started_before_an_invalidation_is_not_kept() {
        let cache = listening();
        let key = key();
        let ticket = cache.ticket();
        // The notification of a revocation arrives while the lookup is in flight.
        cache.invalidate();
        cache.store(ticket, &key);
        assert_eq!(cache.get(&key.secret_hash), None);
    }

    #[test]
    fn nothing_is_cached_or_served_while_not_listening() {
        let cache = listening();
        let key = key();
        cache.store(cache.ticket(), &key);
        cache.set_listening(false);
        assert_eq!(cache.get(&key.secret_hash), None);
        cache.store(cache.ticket(), &key);
        cache.set_listening(true);
        assert_eq!(cache.get(&key.secret_hash), None);
    }

    #[test]
    fn revoked_keys_are_not_kept() {
        let cache = listening();
        let mut key = key();
        key.revoked_at = Some(jiff::Timestamp::now());
        cache.store(cache.ticket(), &key);
        assert_eq!(cache.get(&key.secret_hash), None);
    }
}

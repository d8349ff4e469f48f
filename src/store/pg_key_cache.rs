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
//! 30 s in any case. Caching starts only once a probe notification this
//! process sends comes back to it, and stops when one does not within
//! [`PROBE_TIMEOUT`] (probes every [`PROBE_EVERY`]).

use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};

use super::key_cache::KeyCache;

/// The channel migration 0004's trigger notifies.
pub(super) const CHANNEL: &str = "orgd_api_keys";
/// Wait before listening again after the connection dropped.
const RELISTEN_AFTER: Duration = Duration::from_secs(1);
/// How often this process checks that its own notifications reach it, and how
/// long one may take before the cache is switched off.
const PROBE_EVERY: Duration = Duration::from_secs(10);
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Payload of a probe (the trigger's notifications carry an empty payload).
const PROBE_PREFIX: &str = "probe:";

/// Listens for key changes until the cache is dropped (the store closed).
pub(super) async fn listen(pool: PgPool, cache: Weak<KeyCache>) {
    loop {
        if let Err(err) = listen_once(&pool, &cache).await {
            tracing::warn!(error = %err, "API key change notifications are not arriving; looking every key up until they do");
        }
        match cache.upgrade() {
            Some(live) => live.set_enabled(false),
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
                    if !live.is_enabled() {
                        live.set_enabled(true);
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

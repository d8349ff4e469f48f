//! What PostgreSQL tells this process about changes other processes make, for the
//! two things it keeps in memory: valid API keys and copies of organizations.
//!
//! Every request looks its API key up; on PostgreSQL that lookup is a round trip
//! and a backend's CPU, which under load was a third of a PATCH's statements and
//! half of a GET's. Keys change rarely (created, revoked), and a trigger on
//! `api_keys` (migration 0004) sends a notification in the committing
//! transaction; every one empties the key cache. Likewise a trigger on
//! `organizations` (migration 0006) names the rows each statement changed, and
//! the copies reads by id are answered from drop what it makes stale
//! (`org_copies.rs`).
//!
//! Both are used only while the listening connection is up: when it drops (the
//! notifications sent meanwhile are lost), both are emptied and every lookup and
//! read goes to the database until listening again. A revocation or an update by
//! any process (the CLI, another orgd, plain SQL) so takes effect here as soon as
//! PostgreSQL delivers the notification — a millisecond on a healthy server — and
//! for keys within 30 s in any case. Caching starts only once a probe
//! notification this process sends comes back to it, and stops when one does not
//! within [`PROBE_TIMEOUT`] (probes every [`PROBE_EVERY`]).

use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};

use super::key_cache::KeyCache;
use super::org_copies::OrgCopies;

/// The channels migrations 0004 and 0006's triggers notify.
const KEYS_CHANNEL: &str = "orgd_api_keys";
const ORGS_CHANNEL: &str = "orgd_orgs";
/// Wait before listening again after the connection dropped.
const RELISTEN_AFTER: Duration = Duration::from_secs(1);
/// How often this process checks that its own notifications reach it, and how
/// long one may take before the caches are switched off.
const PROBE_EVERY: Duration = Duration::from_secs(10);
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Payload of a probe, sent on the keys channel (the trigger's notifications
/// there carry an empty payload).
const PROBE_PREFIX: &str = "probe:";

/// What is kept in memory on what PostgreSQL tells; the listener ends once the
/// store has dropped them.
struct Kept {
    keys: Weak<KeyCache>,
    orgs: Weak<OrgCopies>,
}

impl Kept {
    /// Both, or `None` once the store is gone.
    fn upgrade(&self) -> Option<(Arc<KeyCache>, Arc<OrgCopies>)> {
        Some((self.keys.upgrade()?, self.orgs.upgrade()?))
    }
}

/// Listens for changes until the store is dropped.
async fn listen(pool: PgPool, kept: Kept) {
    loop {
        if let Err(err) = listen_once(&pool, &kept).await {
            tracing::warn!(error = %err, "change notifications are not arriving; looking every key and organization up until they do");
        }
        match kept.upgrade() {
            Some((keys, orgs)) => {
                keys.set_enabled(false);
                orgs.set_listening(false);
            }
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
/// one) would otherwise leave revoked keys and changed organizations cached.
async fn listen_once(pool: &PgPool, kept: &Kept) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen_all([KEYS_CHANNEL, ORGS_CHANNEL]).await?;
    let mut probes = tokio::time::interval(PROBE_EVERY);
    // The probe sent and not yet seen, with when it is given up on.
    let mut waiting: Option<(String, tokio::time::Instant)> = None;
    loop {
        let deadline = waiting.as_ref().map(|(_, until)| *until);
        tokio::select! {
            _ = probes.tick(), if waiting.is_none() => {
                let payload = format!("{PROBE_PREFIX}{}", uuid::Uuid::now_v7());
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(KEYS_CHANNEL)
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
                let Some((keys, orgs)) = kept.upgrade() else { return Ok(()) };
                let payload = notification.payload();
                if notification.channel() == ORGS_CHANNEL {
                    orgs.notified(payload);
                } else if waiting.as_ref().is_some_and(|(sent, _)| sent == payload) {
                    waiting = None;
                    if !keys.is_enabled() {
                        keys.set_enabled(true);
                        orgs.set_listening(true);
                    }
                } else if !payload.starts_with(PROBE_PREFIX) {
                    keys.invalidate();
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

/// Starts listening; the task ends once the store has dropped `keys` and `orgs`
/// and the next notification or reconnect notices.
pub(super) fn start(
    pool: PgPool,
    keys: &Arc<KeyCache>,
    orgs: &Arc<OrgCopies>,
) -> tokio::task::JoinHandle<()> {
    let kept = Kept {
        keys: Arc::downgrade(keys),
        orgs: Arc::downgrade(orgs),
    };
    tokio::spawn(listen(pool, kept))
}

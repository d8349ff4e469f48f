//! Organizations as this process last committed or read them on SQLite, so a read
//! by id can skip SQLite's read transaction.
//!
//! The SQLite read was a third of a `GET /v1/organizations/{id}` (starting and
//! ending the read transaction, the B-tree search, decoding the document; bench/
//! README.md, session 12). Unlike the copies an update is planned on
//! (`http/recent_orgs.rs`, which the version guard of the write checks), what is
//! kept here is answered as it is, so it must be what is stored:
//!
//! - Every write to `organizations` in this process goes through the group
//!   committer. Before a batch runs, the organizations it writes are dropped from
//!   here ([`OrgCopies::writing`]), and after its COMMIT, before it answers, they
//!   are put back as written ([`OrgCopies::committed`]): a read that follows a
//!   write sees it, and reads between the COMMIT and the put-back go to the
//!   database, so no read answers an older version after another answered the new.
//! - Writes by another process (or plain SQL) are seen through the writer
//!   connection's `PRAGMA data_version`, which changes only when *another*
//!   connection commits: the writer reads it at the start of every batch, and a
//!   read that finds the last reading older than [`FRESH_FOR`] has one taken in
//!   the background and reads the database meanwhile. When it moved, everything
//!   kept is dropped. So another process's change is answered within
//!   [`FRESH_FOR`] of its commit, like a key revoked by another process
//!   (`sqlite_key_cache.rs`).
//! - A read that missed puts what it read here only if no batch ran and nothing
//!   was dropped between the start of its read and now, and no batch is running
//!   ([`Ticket`]): otherwise it might put back a version older than one committed
//!   meanwhile.
//! - And only if the same organization missed a little earlier too
//!   ([`OrgCopies::worth_keeping`]): with many more organizations read than kept,
//!   keeping every read evicts a copy per read for almost no hits.
//!
//! Bounded least-recently-used map (hashlink's, as in `http/recent_orgs.rs`).

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hashlink::LruCache;

use crate::domain::ids::OrgId;
use crate::domain::org::Organization;

/// How long a reading of the change counter vouches for what is kept: the
/// longest another process's commit can go unseen.
pub(super) const FRESH_FOR: Duration = Duration::from_millis(20);

/// Organizations kept at most: ~15–18 MB at this size (the benchmark's peak RSS
/// rose from ~86 to 101–104 MB with its 10,000 organizations all read,
/// bench/README.md session 12).
const CAPACITY: usize = 10_000;

/// Reads that missed are remembered this many at a time (one id hash per slot,
/// 128 KiB), for [`OrgCopies::worth_keeping`].
const MISSES_REMEMBERED: usize = 16_384;

pub struct OrgCopies {
    state: Mutex<State>,
    /// When the counter last vouched, in µs since `epoch` (0: never); read without
    /// the lock on every read.
    checked_at: AtomicU64,
    /// A background reading of the counter is under way.
    checking: AtomicBool,
    epoch: Instant,
    hits: AtomicU64,
    drops: AtomicU64,
    /// Hashes of ids whose read missed lately, one per slot (0: empty).
    missed: Box<[AtomicU64]>,
    spread: RandomState,
}

struct State {
    orgs: LruCache<OrgId, Arc<Organization>>,
    /// Moves with every batch (before and after) and every drop.
    generation: u64,
    /// A batch is running: between [`OrgCopies::writing`] and
    /// [`OrgCopies::committed`].
    batch_running: bool,
    /// The writer connection's `data_version` as last read.
    seen: Option<i64>,
}

/// Taken before a database read; the copy it read may be kept only if nothing
/// was committed or dropped since.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ticket(u64);

impl Default for OrgCopies {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                orgs: LruCache::new(CAPACITY),
                generation: 0,
                batch_running: false,
                seen: None,
            }),
            checked_at: AtomicU64::new(0),
            checking: AtomicBool::new(false),
            epoch: Instant::now(),
            hits: AtomicU64::new(0),
            drops: AtomicU64::new(0),
            missed: (0..MISSES_REMEMBERED).map(|_| AtomicU64::new(0)).collect(),
            spread: RandomState::new(),
        }
    }
}

impl OrgCopies {
    /// The organization as stored, if it is kept and the counter vouched for it
    /// within [`FRESH_FOR`].
    pub(super) fn get(&self, id: &OrgId) -> Option<Arc<Organization>> {
        if !self.fresh() {
            return None;
        }
        let org = self.lock().orgs.get(id).cloned();
        if org.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        org
    }

    /// Reads answered from here, for tests and benchmarks.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Times everything was dropped because another connection committed (or on
    /// the first reading), for tests and benchmarks.
    pub fn drops(&self) -> u64 {
        self.drops.load(Ordering::Relaxed)
    }

    pub(super) fn ticket(&self) -> Ticket {
        Ticket(self.lock().generation)
    }

    /// Whether a read of `id` that missed should keep what it read: only when `id`
    /// missed once before and is still remembered (the doorkeeper of TinyLFU,
    /// in its simplest form). An organization read again soon is kept at its
    /// second read; with a million read at random, 10,000 kept and every read
    /// kept, each read evicted a copy for a ~1% hit rate, and GET by id ran
    /// ~6–15% slower than with no copies at all (bench/README.md, session 13).
    /// Lock-free: a lost race between two reads costs one fill, or one miss.
    pub(super) fn worth_keeping(&self, id: &OrgId) -> bool {
        let hash = self.spread.hash_one(id) | 1;
        let slot = &self.missed[hash as usize % MISSES_REMEMBERED];
        if slot.load(Ordering::Relaxed) == hash {
            slot.store(0, Ordering::Relaxed);
            true
        } else {
            slot.store(hash, Ordering::Relaxed);
            false
        }
    }

    /// Keeps what a read found, unless a batch ran or runs, or everything was
    /// dropped, since `ticket` was taken.
    pub(super) fn fill(&self, ticket: Ticket, org: Arc<Organization>) {
        let mut state = self.lock();
        if state.generation == ticket.0 && !state.batch_running {
            state.orgs.insert(org.id, org);
        }
    }

    /// A batch that writes these organizations is about to run: reads of them go
    /// to the database until [`Self::committed`].
    pub(super) fn writing<'a>(&self, ids: impl IntoIterator<Item = &'a OrgId>) {
        let mut state = self.lock();
        state.generation += 1;
        state.batch_running = true;
        for id in ids {
            state.orgs.remove(id);
        }
    }

    /// The batch ended: keeps what it committed (nothing if it failed). Called
    /// before its writes are answered.
    pub(super) fn committed(&self, orgs: impl IntoIterator<Item = Arc<Organization>>) {
        let mut state = self.lock();
        state.generation += 1;
        state.batch_running = false;
        for org in orgs {
            state.orgs.insert(org.id, org);
        }
    }

    /// Takes a reading of the writer connection's `data_version`, made after
    /// `read_at` ([`Self::now`]): drops everything when another connection
    /// committed since the last reading, and vouches until `read_at` +
    /// [`FRESH_FOR`] otherwise.
    pub(super) fn confirm(&self, data_version: i64, read_at: u64) {
        let mut state = self.lock();
        match state.seen {
            // The counter only grows: an older reading that arrives late (two
            // readers in turn on the one connection) says nothing new.
            Some(seen) if data_version < seen => return,
            Some(seen) if data_version == seen => {}
            _ => {
                state.orgs.clear();
                state.generation += 1;
                state.seen = Some(data_version);
                self.drops.fetch_add(1, Ordering::Relaxed);
            }
        }
        drop(state);
        self.checked_at.fetch_max(read_at, Ordering::AcqRel);
    }

    /// Whether a reading of the counter should be taken now: the last is older
    /// than [`FRESH_FOR`] and none is under way. The caller that gets `true`
    /// takes it and then calls [`Self::check_done`].
    pub(super) fn claim_check(&self) -> bool {
        !self.fresh() && !self.checking.swap(true, Ordering::AcqRel)
    }

    pub(super) fn check_done(&self) {
        self.checking.store(false, Ordering::Release);
    }

    /// Now, in µs since this map was made (+1, so 0 keeps meaning "never").
    pub(super) fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX) + 1
    }

    fn fresh(&self) -> bool {
        let checked = self.checked_at.load(Ordering::Acquire);
        checked != 0 && self.now().saturating_sub(checked) < FRESH_FOR.as_micros() as u64
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fields::{OrgName, Slug};
    use crate::domain::time;

    fn org(version: i64) -> Arc<Organization> {
        let mut org = Organization::new(
            OrgId::generate(),
            Slug::parse("kept").unwrap(),
            OrgName::parse("Kept").unwrap(),
            time::now(),
        );
        org.version = version;
        Arc::new(org)
    }

    fn vouched() -> OrgCopies {
        let copies = OrgCopies::default();
        copies.confirm(1, copies.now());
        copies
    }

    #[test]
    fn nothing_is_answered_before_a_reading_vouches_or_after_it_lapsed() {
        let copies = OrgCopies::default();
        let kept = org(1);
        copies.committed([kept.clone()]);
        assert!(copies.get(&kept.id).is_none(), "never vouched");
        copies.confirm(7, copies.now());
        copies.committed([kept.clone()]);
        assert_eq!(copies.get(&kept.id), Some(kept.clone()));
        // A reading taken long ago vouches for nothing now.
        let lapsed = OrgCopies::default();
        lapsed.confirm(7, 1);
        std::thread::sleep(FRESH_FOR);
        lapsed.committed([kept.clone()]);
        assert!(lapsed.get(&kept.id).is_none());
        assert!(lapsed.claim_check(), "a lapsed reading asks for a new one");
        assert!(!lapsed.claim_check(), "one reading at a time");
        lapsed.check_done();
        assert!(lapsed.claim_check());
    }

    #[test]
    fn another_connections_commit_drops_everything_and_a_late_older_reading_does_not() {
        let copies = vouched();
        let kept = org(1);
        copies.committed([kept.clone()]);
        copies.confirm(1, copies.now());
        assert_eq!((copies.get(&kept.id).is_some(), copies.drops()), (true, 1));
        copies.confirm(2, copies.now());
        assert_eq!((copies.get(&kept.id), copies.drops()), (None, 2));
        copies.committed([kept.clone()]);
        copies.confirm(1, copies.now());
        assert!(
            copies.get(&kept.id).is_some(),
            "an older reading is ignored"
        );
    }

    #[test]
    fn a_read_keeps_what_it_found_only_if_no_batch_ran_or_runs_since_its_ticket() {
        let copies = vouched();
        let (old, new) = (org(1), org(2));
        let new = Arc::new(Organization {
            id: old.id,
            ..(*new).clone()
        });

        let ticket = copies.ticket();
        copies.fill(ticket, old.clone());
        assert_eq!(copies.get(&old.id), Some(old.clone()));

        // A read that began before a batch may hold the version the batch replaces.
        let before = copies.ticket();
        copies.writing([&old.id]);
        assert!(
            copies.get(&old.id).is_none(),
            "the batch's orgs are read from the database"
        );
        let during = copies.ticket();
        copies.fill(during, old.clone());
        assert!(copies.get(&old.id).is_none(), "no fill while a batch runs");
        copies.committed([new.clone()]);
        copies.fill(before, old.clone());
        copies.fill(during, old.clone());
        assert_eq!(copies.get(&old.id), Some(new.clone()));

        // A drop refuses reads that began before it too.
        let before = copies.ticket();
        copies.confirm(2, copies.now());
        copies.fill(before, old.clone());
        assert!(copies.get(&old.id).is_none());
    }

    #[test]
    fn a_read_is_worth_keeping_only_when_its_org_missed_before() {
        let copies = vouched();
        let (a, b) = (org(1), org(1));
        assert!(
            !copies.worth_keeping(&a.id),
            "a first miss is only remembered"
        );
        assert!(copies.worth_keeping(&a.id), "the second is kept");
        assert!(!copies.worth_keeping(&a.id), "and forgotten once kept");
        // Many other misses push it out of the memory of misses.
        assert!(!copies.worth_keeping(&b.id));
        for _ in 0..20 * MISSES_REMEMBERED {
            copies.worth_keeping(&OrgId::generate());
        }
        assert!(!copies.worth_keeping(&b.id), "b was forgotten");
    }
}

//! Organizations as this process last committed or read them, so a read by id can
//! skip the database.
//!
//! The read was a third of a `GET /v1/organizations/{id}` on SQLite (its read
//! transaction, the B-tree search, decoding the document; bench/README.md, session
//! 12), and on PostgreSQL a round trip and a backend's work (session 14). Unlike
//! the copies an update is planned on (`http/recent_orgs.rs`, which the version
//! guard of the write checks), what is kept here is answered as it is, so it must
//! be what is stored:
//!
//! - Every write to `organizations` by this process drops the organizations it
//!   writes before it runs ([`OrgCopies::writing`]) and, after its COMMIT and
//!   before it answers, puts them back as written ([`Writing::committed`]): a read
//!   that follows a write sees it, and reads between the COMMIT and the put-back go
//!   to the database, so no read answers an older version after another answered
//!   the new. (SQLite: once per batch of the group committer; PostgreSQL: once per
//!   write, several at a time.)
//! - Writes by another process (or plain SQL) are learnt of in a way each store
//!   has, and only while it works are the copies answered ([`OrgCopies::get`]):
//!   - SQLite: the writer connection's `PRAGMA data_version`, which changes only
//!     when *another* connection commits. The writer reads it at the start of
//!     every batch, and a read that finds the last reading older than
//!     [`FRESH_FOR`] has one taken in the background and reads the database
//!     meanwhile. When it moved, everything kept is dropped. So another process's
//!     change is answered within [`FRESH_FOR`] of its commit, like a key revoked
//!     by another process (`sqlite_key_cache.rs`).
//!   - PostgreSQL: a trigger notifies every change with the ids and versions of
//!     the rows (migration 0006); this process listens (`pg_changes.rs`) and drops
//!     a copy older than the version notified ([`OrgCopies::notified`]). Copies are
//!     answered only while the listening connection is known to receive
//!     ([`OrgCopies::set_listening`]), so another process's change is answered as
//!     soon as PostgreSQL delivers its notification, a millisecond or so after its
//!     commit.
//! - A read that missed puts what it read here only if no write ran and nothing
//!   was dropped or notified between the start of its read and now, and no write
//!   is running ([`Ticket`]): otherwise it might put back a version older than one
//!   committed meanwhile.
//! - And only if the same organization missed a little earlier too
//!   ([`OrgCopies::worth_keeping`]): with many more organizations read than kept,
//!   keeping every read evicts a copy per read for almost no hits.
//!
//! Bounded least-recently-used map (hashlink's, as in `http/recent_orgs.rs`).

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hashlink::LruCache;

use super::StoreResult;
use crate::domain::ids::OrgId;
use crate::domain::org::Organization;

/// How long a reading of the change counter vouches for what is kept: the
/// longest another process's commit can go unseen.
pub(super) const FRESH_FOR: Duration = Duration::from_millis(20);

/// Organizations kept at most unless configured (`ORGD_ORG_COPIES`): ~15–18 MB
/// at this size (the benchmark's peak RSS rose from ~86 to 101–104 MB with its
/// 10,000 organizations all read, bench/README.md session 12).
pub const DEFAULT_CAPACITY: usize = 10_000;

/// The most `ORGD_ORG_COPIES` accepts: ~25 GB of copies at the benchmark's
/// ~2.5 KB each.
pub const MAX_CAPACITY: usize = 10_000_000;

/// Reads that missed are remembered at least this many at a time, and twice as
/// many as are kept up to [`MISSES_REMEMBERED_AT_MOST`] (one id hash per slot, 8
/// bytes), for [`OrgCopies::worth_keeping`].
const MISSES_REMEMBERED: usize = 16_384;
/// 32 MiB of slots; with more copies than half this, an org must miss twice
/// within fewer other misses to be kept.
const MISSES_REMEMBERED_AT_MOST: usize = 1 << 22;

pub struct OrgCopies {
    state: Mutex<State>,
    /// 0: nothing is kept (the map takes nothing), and reads skip the lock.
    capacity: usize,
    /// When the counter last vouched, in µs since `epoch` (0: never); read without
    /// the lock on every read.
    checked_at: AtomicU64,
    /// A background reading of the counter is under way.
    checking: AtomicBool,
    /// PostgreSQL: change notifications are known to arrive, so copies are
    /// answered without a reading of a counter.
    listening: AtomicBool,
    epoch: Instant,
    hits: AtomicU64,
    drops: AtomicU64,
    /// Hashes of ids whose read missed lately, one per slot (0: empty).
    missed: Box<[AtomicU64]>,
    spread: RandomState,
}

struct State {
    orgs: LruCache<OrgId, Arc<Organization>>,
    /// Moves with every write (before and after), every drop and every
    /// notification.
    generation: u64,
    /// Writes running: between [`OrgCopies::writing`] and the end of its
    /// [`Writing`].
    writes_running: usize,
    /// The organizations those writes write, with the newest version a
    /// notification named for each meanwhile (0: none): a write that ends with an
    /// older version than that must not be kept.
    being_written: HashMap<OrgId, BeingWritten>,
    /// The writer connection's `data_version` as last read.
    seen: Option<i64>,
}

#[derive(Debug, Default, Clone, Copy)]
struct BeingWritten {
    writes: usize,
    notified: i64,
}

/// A write of some organizations under way; ends with [`Writing::committed`], or
/// with nothing kept when dropped (the write failed, or its caller went).
#[must_use]
pub(super) struct Writing<'a> {
    copies: &'a OrgCopies,
    ids: Vec<OrgId>,
    ended: bool,
}

/// Taken before a database read; the copy it read may be kept only if nothing
/// was committed or dropped since.
#[derive(Debug, Clone, Copy)]
struct Ticket(u64);

impl Default for OrgCopies {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl OrgCopies {
    /// Keeps at most `capacity` organizations (0: none).
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            state: Mutex::new(State {
                orgs: LruCache::new(capacity),
                generation: 0,
                writes_running: 0,
                being_written: HashMap::new(),
                seen: None,
            }),
            checked_at: AtomicU64::new(0),
            checking: AtomicBool::new(false),
            listening: AtomicBool::new(false),
            epoch: Instant::now(),
            hits: AtomicU64::new(0),
            drops: AtomicU64::new(0),
            missed: (0..capacity
                .saturating_mul(2)
                .clamp(MISSES_REMEMBERED, MISSES_REMEMBERED_AT_MOST))
                .map(|_| AtomicU64::new(0))
                .collect(),
            spread: RandomState::new(),
        }
    }

    /// Organizations kept at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The organization as stored, if it is kept and changes by other processes
    /// are being learnt of (a reading of the counter within [`FRESH_FOR`], or
    /// notifications).
    fn get(&self, id: &OrgId) -> Option<Arc<Organization>> {
        if self.capacity == 0 || !self.fresh() {
            return None;
        }
        let org = self.lock().orgs.get(id).cloned();
        if org.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        org
    }

    /// A read by id: the kept copy, or else what `read` (the database) finds,
    /// kept when worth keeping ([`Self::worth_keeping`]) and nothing changed
    /// since the read began ([`Self::fill`]). `read` runs only on a miss, after
    /// the ticket is taken.
    pub(super) async fn read_through(
        &self,
        id: &OrgId,
        read: impl Future<Output = StoreResult<Option<Organization>>>,
    ) -> StoreResult<Option<Arc<Organization>>> {
        if let Some(org) = self.get(id) {
            return Ok(Some(org));
        }
        let ticket = self.ticket();
        let org = read.await?.map(Arc::new);
        if let Some(org) = org.as_ref().filter(|o| self.worth_keeping(&o.id)) {
            self.fill(ticket, Arc::clone(org));
        }
        Ok(org)
    }

    /// Organizations kept now (`/metrics`: `orgd_org_copies_kept`, beside
    /// `orgd_org_copies_capacity`): a store whose copies stay full while few GETs
    /// come from them reads over more organizations than it keeps.
    pub fn kept(&self) -> usize {
        self.lock().orgs.len()
    }

    /// Reads answered from here (`/metrics`: `orgd_org_copies_hits_total`).
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Times everything was dropped because another connection committed (or on
    /// the first reading, or as a notification or the listening connection said;
    /// `/metrics`: `orgd_org_copies_drops_total`).
    pub fn drops(&self) -> u64 {
        self.drops.load(Ordering::Relaxed)
    }

    /// PostgreSQL: whether change notifications are known to arrive, for tests.
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    fn ticket(&self) -> Ticket {
        Ticket(self.lock().generation)
    }

    /// Whether a read of `id` that missed should keep what it read: only when `id`
    /// missed once before and is still remembered (the doorkeeper of TinyLFU,
    /// in its simplest form). An organization read again soon is kept at its
    /// second read; with a million read at random, 10,000 kept and every read
    /// kept, each read evicted a copy for a ~1% hit rate, and GET by id ran
    /// ~6–15% slower than with no copies at all (bench/README.md, session 13).
    /// Lock-free: a lost race between two reads costs one fill, or one miss.
    fn worth_keeping(&self, id: &OrgId) -> bool {
        let hash = self.spread.hash_one(id) | 1;
        let slot = &self.missed[hash as usize % self.missed.len()];
        if slot.load(Ordering::Relaxed) == hash {
            slot.store(0, Ordering::Relaxed);
            true
        } else {
            slot.store(hash, Ordering::Relaxed);
            false
        }
    }

    /// Keeps what a read found, unless a write ran or runs, or anything was
    /// dropped or notified, since `ticket` was taken.
    fn fill(&self, ticket: Ticket, org: Arc<Organization>) {
        let mut state = self.lock();
        if state.generation == ticket.0 && state.writes_running == 0 {
            state.orgs.insert(org.id, org);
        }
    }

    /// A write of these organizations is about to run: reads of them go to the
    /// database until it ends.
    pub(super) fn writing<'i>(&self, ids: impl IntoIterator<Item = &'i OrgId>) -> Writing<'_> {
        let ids: Vec<OrgId> = ids.into_iter().copied().collect();
        let mut state = self.lock();
        state.generation += 1;
        state.writes_running += 1;
        for id in &ids {
            state.orgs.remove(id);
            state.being_written.entry(*id).or_default().writes += 1;
        }
        Writing {
            copies: self,
            ids,
            ended: false,
        }
    }

    /// Another process (or this one) committed these versions of these
    /// organizations (PostgreSQL's notifications, `pg_changes.rs`): drops each copy
    /// older than its version, or every copy for a payload of `*` or one that does
    /// not parse. Payload: `id:version,…`, with an empty version for a deleted row
    /// (migration 0006).
    pub(super) fn notified(&self, payload: &str) {
        let changes: Option<Vec<(OrgId, i64)>> = payload
            .split(',')
            .map(|change| {
                let (id, version) = change.split_once(':')?;
                let version = if version.is_empty() {
                    i64::MAX
                } else {
                    version.parse().ok()?
                };
                Some((id.parse().ok()?, version))
            })
            .collect();
        let mut state = self.lock();
        state.generation += 1;
        let Some(changes) = changes else {
            if payload != "*" {
                tracing::warn!(
                    payload,
                    "unreadable organization change notification; dropping every copy"
                );
            }
            self.drop_all(&mut state);
            return;
        };
        for (id, version) in changes {
            if state
                .orgs
                .peek(&id)
                .is_some_and(|kept| kept.version < version)
            {
                state.orgs.remove(&id);
            }
            if let Some(written) = state.being_written.get_mut(&id) {
                written.notified = written.notified.max(version);
            }
        }
    }

    /// PostgreSQL: whether change notifications are known to arrive. Either way
    /// what is kept may have missed changes, so it is dropped.
    pub(super) fn set_listening(&self, on: bool) {
        let mut state = self.lock();
        state.generation += 1;
        self.drop_all(&mut state);
        self.listening.store(on, Ordering::Release);
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
                state.generation += 1;
                state.seen = Some(data_version);
                self.drop_all(&mut state);
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
        if self.listening.load(Ordering::Acquire) {
            return true;
        }
        let checked = self.checked_at.load(Ordering::Acquire);
        checked != 0 && self.now().saturating_sub(checked) < FRESH_FOR.as_micros() as u64
    }

    fn drop_all(&self, state: &mut State) {
        state.orgs.clear();
        self.drops.fetch_add(1, Ordering::Relaxed);
    }

    /// Ends a write: keeps what it committed (nothing if it failed), unless a
    /// notification named a newer version of it meanwhile.
    fn write_ended(&self, ids: &[OrgId], committed: Vec<Arc<Organization>>) {
        let mut state = self.lock();
        state.generation += 1;
        state.writes_running -= 1;
        for org in committed {
            let newer = state
                .being_written
                .get(&org.id)
                .is_some_and(|written| written.notified > org.version);
            if !newer {
                state.orgs.insert(org.id, org);
            }
        }
        for id in ids {
            if let Some(written) = state.being_written.get_mut(id) {
                written.writes -= 1;
                if written.writes == 0 {
                    state.being_written.remove(id);
                }
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Writing<'_> {
    /// The write committed these organizations: they are kept. Called before the
    /// write is answered.
    pub(super) fn committed(mut self, orgs: impl IntoIterator<Item = Arc<Organization>>) {
        self.ended = true;
        self.copies
            .write_ended(&self.ids, orgs.into_iter().collect());
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.copies.write_ended(&self.ids, Vec::new());
        }
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

    /// What a write of `org` leaves.
    fn keep(copies: &OrgCopies, org: &Arc<Organization>) {
        copies.writing([&org.id]).committed([org.clone()]);
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
        keep(&copies, &kept);
        assert!(copies.get(&kept.id).is_none(), "never vouched");
        copies.confirm(7, copies.now());
        keep(&copies, &kept);
        assert_eq!(copies.get(&kept.id), Some(kept.clone()));
        // A reading taken long ago vouches for nothing now.
        let lapsed = OrgCopies::default();
        lapsed.confirm(7, 1);
        std::thread::sleep(FRESH_FOR);
        keep(&lapsed, &kept);
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
        keep(&copies, &kept);
        copies.confirm(1, copies.now());
        assert_eq!((copies.get(&kept.id).is_some(), copies.drops()), (true, 1));
        assert_eq!(copies.kept(), 1);
        copies.confirm(2, copies.now());
        assert_eq!((copies.get(&kept.id), copies.drops()), (None, 2));
        assert_eq!(copies.kept(), 0, "dropped, not just hidden");
        keep(&copies, &kept);
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
        let batch = copies.writing([&old.id]);
        assert!(
            copies.get(&old.id).is_none(),
            "the batch's orgs are read from the database"
        );
        let during = copies.ticket();
        copies.fill(during, old.clone());
        assert!(copies.get(&old.id).is_none(), "no fill while a batch runs");
        batch.committed([new.clone()]);
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

    #[test]
    fn the_configured_capacity_bounds_the_copies_and_sizes_the_memory_of_misses() {
        let copies = OrgCopies::new(3);
        copies.confirm(1, copies.now());
        let orgs: Vec<_> = (0..4).map(|_| org(1)).collect();
        for kept in &orgs {
            keep(&copies, kept);
        }
        assert!(copies.get(&orgs[0].id).is_none(), "the oldest went");
        assert_eq!(copies.kept(), 3);
        for kept in &orgs[1..] {
            assert_eq!(copies.get(&kept.id), Some(kept.clone()));
        }
        assert_eq!(OrgCopies::new(3).missed.len(), MISSES_REMEMBERED);
        assert_eq!(OrgCopies::new(100_000).missed.len(), 200_000);
        assert_eq!(
            OrgCopies::new(MAX_CAPACITY).missed.len(),
            MISSES_REMEMBERED_AT_MOST
        );
    }

    #[tokio::test]
    async fn with_no_capacity_every_read_goes_to_the_database() {
        let copies = OrgCopies::new(0);
        copies.confirm(1, copies.now());
        let kept = org(1);
        keep(&copies, &kept);
        assert!(copies.get(&kept.id).is_none(), "a write keeps nothing");
        for _ in 0..3 {
            let mut read = false;
            let found = copies
                .read_through(&kept.id, async {
                    read = true;
                    Ok(Some((*kept).clone()))
                })
                .await
                .unwrap();
            assert!(read, "every read reads the database");
            assert_eq!(found.map(|o| o.version), Some(1));
        }
        assert_eq!(copies.hits(), 0);
    }

    fn listening() -> OrgCopies {
        let copies = OrgCopies::default();
        copies.set_listening(true);
        copies
    }

    fn with_id(id: OrgId, version: i64) -> Arc<Organization> {
        Arc::new(Organization {
            id,
            ..(*org(version)).clone()
        })
    }

    #[test]
    fn listening_vouches_and_either_change_of_it_drops_everything() {
        let copies = OrgCopies::default();
        let kept = org(1);
        keep(&copies, &kept);
        assert!(
            copies.get(&kept.id).is_none(),
            "not listening, never vouched"
        );
        copies.set_listening(true);
        keep(&copies, &kept);
        assert_eq!(copies.get(&kept.id), Some(kept.clone()));
        // Notifications may have been lost while the connection was down.
        let ticket = copies.ticket();
        copies.set_listening(false);
        copies.set_listening(true);
        copies.fill(ticket, kept.clone());
        assert!(copies.get(&kept.id).is_none());
    }

    #[test]
    fn a_notification_drops_the_copies_older_than_the_versions_it_names() {
        let copies = listening();
        let (a, b, c) = (org(3), org(3), org(3));
        for o in [&a, &b, &c] {
            keep(&copies, o);
        }
        copies.notified(&format!("{}:3,{}:2,{}:4", a.id, b.id, c.id));
        assert!(copies.get(&a.id).is_some(), "the version kept");
        assert!(
            copies.get(&b.id).is_some(),
            "an older version, notified late"
        );
        assert!(copies.get(&c.id).is_none(), "a newer version");
        // A deleted row (no version) is always dropped.
        copies.notified(&format!("{}:", a.id));
        assert!(copies.get(&a.id).is_none());
        // `*`, or anything unreadable, drops everything.
        for payload in ["*", "garbage", "org_x:1", ""] {
            keep(&copies, &b);
            copies.notified(payload);
            assert!(copies.get(&b.id).is_none(), "{payload:?}");
        }
        // A read that began before a notification keeps nothing.
        let ticket = copies.ticket();
        copies.notified(&format!("{}:1", org(1).id));
        copies.fill(ticket, b.clone());
        assert!(copies.get(&b.id).is_none());
    }

    #[test]
    fn a_write_keeps_what_it_committed_unless_a_newer_version_was_notified_meanwhile() {
        let copies = listening();
        let first = org(1);
        let id = first.id;
        let writing = copies.writing([&id]);
        // Another process committed version 3 on top of this write's 2, and its
        // notification came before this write ended.
        copies.notified(&format!("{id}:3"));
        writing.committed([with_id(id, 2)]);
        assert!(copies.get(&id).is_none(), "version 2 is already stale");
        // Its own notification (the same version) does not drop what it kept.
        let writing = copies.writing([&id]);
        copies.notified(&format!("{id}:4"));
        writing.committed([with_id(id, 4)]);
        assert_eq!(copies.get(&id).map(|o| o.version), Some(4));
        // Nor does a notification of a write that has ended mark the next one.
        let writing = copies.writing([&id]);
        writing.committed([with_id(id, 5)]);
        assert_eq!(copies.get(&id).map(|o| o.version), Some(5));
    }

    #[test]
    fn reads_are_not_kept_while_any_write_runs_and_a_failed_write_keeps_nothing() {
        let copies = listening();
        let (a, b) = (org(1), org(1));
        let (writing_a, writing_b) = (copies.writing([&a.id]), copies.writing([&b.id]));
        writing_a.committed([a.clone()]);
        let during = copies.ticket();
        copies.fill(during, b.clone());
        assert!(copies.get(&b.id).is_none(), "b's write still runs");
        drop(writing_b); // failed, or its caller went away
        assert!(copies.get(&b.id).is_none());
        let after = copies.ticket();
        copies.fill(after, b.clone());
        assert_eq!(copies.get(&b.id), Some(b.clone()), "no write runs any more");
        assert_eq!(copies.get(&a.id), Some(a.clone()));
    }
}

//! API keys found on SQLite, kept in memory and checked against a change counter.
//!
//! Looking the key up was a third of a GET's SQLite work (its own read transaction
//! and B-tree search). Migration 0004's triggers bump `api_key_changes.generation`
//! in every transaction that changes `api_keys`, whoever commits it; this cache
//! reads that one row at most every [`RECHECK_AFTER`] and empties itself when the
//! value moved. A key revoked through this process stops working at once (the
//! store invalidates directly); one revoked by another process or by plain SQL
//! stops within [`RECHECK_AFTER`]. When the counter cannot be read, every lookup
//! goes to the database.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::key_cache::KeyCache;
use super::sqlite_point_reads::PointReads;

/// How stale this process's view of other processes' key changes may get.
pub(super) const RECHECK_AFTER: Duration = Duration::from_millis(20);

pub(super) struct SqliteKeyCache {
    pub(super) keys: KeyCache,
    /// When the counter was last read, in microseconds since `epoch` (0: never);
    /// read without a lock on every request.
    checked_at: AtomicU64,
    /// The counter as last read; held while reading it, so one thread reads.
    seen: Mutex<Option<i64>>,
    epoch: Instant,
}

impl SqliteKeyCache {
    pub(super) fn new() -> Self {
        let keys = KeyCache::default();
        keys.set_enabled(true);
        Self {
            keys,
            checked_at: AtomicU64::new(0),
            seen: Mutex::new(None),
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        // +1 so that 0 keeps meaning "never".
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX) + 1
    }

    /// Whether the cache may answer now: the counter was read within
    /// [`RECHECK_AFTER`], or is read here (emptying the cache if it moved). `false`
    /// when another thread is reading it or it cannot be read: the caller then
    /// looks the key up in the database.
    pub(super) fn fresh(&self, point: &PointReads) -> bool {
        let limit = RECHECK_AFTER.as_micros() as u64;
        let checked = self.checked_at.load(Ordering::Acquire);
        if checked != 0 && self.now().saturating_sub(checked) < limit {
            return true;
        }
        let Ok(mut seen) = self.seen.try_lock() else {
            return false;
        };
        // Taken before the read: a change committed during it is seen next time.
        let at = self.now();
        match point.optional_integer("SELECT generation FROM api_key_changes WHERE id = 1") {
            Ok(Some(generation)) => {
                if *seen != Some(generation) {
                    self.keys.invalidate();
                    *seen = Some(generation);
                }
                self.checked_at.store(at, Ordering::Release);
                true
            }
            Ok(None) | Err(_) => {
                self.keys.invalidate();
                *seen = None;
                self.checked_at.store(0, Ordering::Release);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::key_cache::tests::key;

    fn database(with_counter: bool) -> (tempfile::TempDir, rusqlite::Connection, PointReads) {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("keys.db");
        let writer = rusqlite::Connection::open(&path).expect("open");
        writer
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE other (x INTEGER);")
            .expect("schema");
        if with_counter {
            writer
                .execute_batch(
                    "CREATE TABLE api_key_changes (id INTEGER PRIMARY KEY, generation INTEGER NOT NULL);
                     INSERT INTO api_key_changes VALUES (1, 0);",
                )
                .expect("counter");
        }
        let point = PointReads::open(&path, 2).expect("readers");
        (dir, writer, point)
    }

    #[test]
    fn a_moved_counter_empties_the_cache_once_it_is_read_again() {
        let (_dir, writer, point) = database(true);
        let cache = SqliteKeyCache::new();
        let key = key();
        assert!(cache.fresh(&point));
        cache.keys.store(cache.keys.ticket(), &key);
        assert_eq!(cache.keys.get(&key.secret_hash), Some(key.clone()));

        // Another process changes a key: within RECHECK_AFTER the entry may still
        // be served; after it, the next request reads the counter and drops it.
        writer
            .execute("UPDATE api_key_changes SET generation = generation + 1", [])
            .expect("bump");
        std::thread::sleep(RECHECK_AFTER * 2);
        assert!(cache.fresh(&point));
        assert_eq!(cache.keys.get(&key.secret_hash), None);

        // An unchanged counter keeps what is cached.
        cache.keys.store(cache.keys.ticket(), &key);
        std::thread::sleep(RECHECK_AFTER * 2);
        assert!(cache.fresh(&point));
        assert_eq!(cache.keys.get(&key.secret_hash), Some(key));
    }

    #[test]
    fn without_a_readable_counter_the_cache_is_not_used() {
        let (_dir, _writer, point) = database(false);
        let cache = SqliteKeyCache::new();
        assert!(!cache.fresh(&point));
        assert!(!cache.fresh(&point), "and it keeps trying");
    }
}

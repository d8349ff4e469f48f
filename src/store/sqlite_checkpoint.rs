//! Checkpoints of the SQLite write-ahead log, off the group committer's path.
//!
//! By default SQLite checkpoints inside the commit that takes the WAL past 1,000
//! pages: that commit copies the pages back into the database file and syncs it
//! (tens of milliseconds) while the single writer, and every write queued behind
//! it, waits. Under PATCH load that was about half of the writer's COMMIT time
//! (bench/README.md, session 5). So the writer connection does not checkpoint
//! (`wal_autocheckpoint=0`, set where it is opened); a thread of its own runs
//! PASSIVE checkpoints, which wait for no reader and no writer, soon after commits.
//!
//! One thing that thread cannot do is restart the log: SQLite starts writing the
//! WAL from its beginning again only when a write transaction begins with every
//! frame already copied back, and under a steady stream of batches the background
//! checkpoint is always a little behind. So when the WAL has grown past
//! [`FINISH_AT`] frames, the writer itself finishes the copy between two batches
//! ([`Checkpoints::after_batch`]), and its next batch starts the log over instead
//! of growing the file. It does so right after the thread has caught up, when
//! only the last batch or two are left to copy: finishing whenever it noticed the
//! long WAL left it 200–500 frames and a sync of the database file to do, 4–18 ms
//! with every write waiting (bench/README.md, session 6).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// Commits are left to gather this long before a checkpoint copies them, so one
/// checkpoint (and its sync of the database file) covers many batches.
const GATHER: Duration = Duration::from_millis(25);
/// With no commit in this process, checkpoints still run this often: other
/// processes (a second `orgd`, `orgd keys`) write to the same WAL.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// WAL frames (pages) past which the writer finishes the copy itself (16 MiB of
/// 4 KiB pages: the file stays about this size).
pub(super) const FINISH_AT: i64 = 4096;

/// The checkpoint thread's doorbell and what it last saw; the thread ends when
/// every clone is dropped.
#[derive(Clone)]
pub(super) struct Checkpoints {
    doorbell: SyncSender<()>,
    /// Frames in the WAL at the last checkpoint, by either side.
    wal_frames: Arc<AtomicI64>,
    /// The thread's last checkpoint of a WAL past [`FINISH_AT`] copied every frame:
    /// the writer's finishing pass now has only what was committed since.
    caught_up: Arc<AtomicBool>,
}

impl Checkpoints {
    /// Starts the checkpoint thread on its own connection to the (already
    /// migrated) database file.
    pub(super) fn start(path: &Path) -> anyhow::Result<Self> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // A checkpoint syncs the WAL before copying and the database file after,
        // as the writer's own would (the default, stated).
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(Duration::from_millis(100))?;
        let (doorbell, rings) = mpsc::sync_channel(1);
        let wal_frames = Arc::new(AtomicI64::new(0));
        let caught_up = Arc::new(AtomicBool::new(false));
        let (seen, told) = (wal_frames.clone(), caught_up.clone());
        std::thread::Builder::new()
            .name("orgd-sqlite-checkpoint".into())
            .spawn(move || loop {
                match rings.recv_timeout(IDLE_POLL) {
                    // Past the mark, copy at once: the writer is waiting to finish.
                    Ok(()) if seen.load(Ordering::Relaxed) < FINISH_AT => {
                        std::thread::sleep(GATHER)
                    }
                    Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
                // Commits during the gathering rang again: this checkpoint covers them.
                let _ = rings.try_recv();
                if let Some((frames, copied)) = checkpoint(&conn) {
                    seen.store(frames, Ordering::Relaxed);
                    if frames >= FINISH_AT && frames == copied {
                        told.store(true, Ordering::Relaxed);
                    }
                }
            })?;
        Ok(Self {
            doorbell,
            wal_frames,
            caught_up,
        })
    }

    /// Called by the writer after each committed batch, with the batch's
    /// connection: wakes the checkpoint thread, and finishes the copy when the WAL
    /// has grown long.
    pub(super) fn after_batch(&self, writer: &Connection) {
        // Full: already rung and not yet answered. Disconnected: the thread stopped
        // (only a panic does that); the WAL still works, it only grows.
        let _ = self.doorbell.try_send(());
        let frames = self.wal_frames.load(Ordering::Relaxed);
        if frames < FINISH_AT {
            return;
        }
        // Right after the thread caught up; past twice the mark regardless, so the
        // WAL stays bounded even if the thread never catches up.
        if !self.caught_up.swap(false, Ordering::Relaxed) && frames < 2 * FINISH_AT {
            return;
        }
        match checkpoint(writer) {
            // All copied: the next batch restarts the log.
            Some((frames, copied)) if frames == copied => {
                self.wal_frames.store(0, Ordering::Relaxed);
                self.caught_up.store(false, Ordering::Relaxed);
            }
            Some((frames, _)) => self.wal_frames.store(frames, Ordering::Relaxed),
            None => {}
        }
    }
}

/// A PASSIVE checkpoint: (frames in the WAL, frames copied back), if it ran. It
/// fails only in rare cases (another checkpoint running, an I/O error); the next
/// one tries again, and SQLite's WAL stays correct meanwhile, only longer.
fn checkpoint(conn: &Connection) -> Option<(i64, i64)> {
    let counts = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok((row.get::<_, i64>(0)?, row.get(1)?, row.get(2)?))
    });
    match counts {
        // busy = 1: another connection held the checkpoint lock; nothing was done.
        Ok((0, frames, copied)) => Some((frames, copied)),
        Ok(_) => None,
        Err(err) => {
            tracing::warn!(error = %err, "SQLite WAL checkpoint failed; retrying later");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database(dir: &Path) -> Connection {
        let conn = Connection::open(dir.join("db")).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
             CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB NOT NULL);",
        )
        .unwrap();
        conn
    }

    fn write_pages(conn: &Connection, rows: i64) {
        let tx = conn.unchecked_transaction().unwrap();
        for i in 0..rows {
            tx.execute(
                "INSERT OR REPLACE INTO t (id, v) VALUES (?1, zeroblob(3000))",
                [i],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }

    fn wal_len(dir: &Path) -> u64 {
        std::fs::metadata(dir.join("db-wal")).map_or(0, |m| m.len())
    }

    #[test]
    fn without_checkpoints_the_wal_only_grows() {
        let dir = tempfile::tempdir().unwrap();
        let writer = database(dir.path());
        for _ in 0..30 {
            write_pages(&writer, 200);
        }
        assert!(wal_len(dir.path()) > 6000 * 4096, "{}", wal_len(dir.path()));
    }

    #[test]
    fn the_writer_finishing_the_copy_keeps_the_wal_from_growing() {
        let dir = tempfile::tempdir().unwrap();
        let writer = database(dir.path());
        let checkpoints = Checkpoints::start(&dir.path().join("db")).unwrap();
        for _ in 0..100 {
            write_pages(&writer, 200);
            checkpoints.after_batch(&writer);
        }
        // ~20,000 frames were written; the log restarted before reaching three
        // times the threshold (the writer finishes after the thread caught up, or
        // past twice the threshold, plus what the thread had not yet seen).
        let len = wal_len(dir.path());
        assert!(len < 3 * FINISH_AT as u64 * 4120, "WAL grew to {len} bytes");
        let rows: i64 = writer
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 200);
    }

    /// The writer's side alone (no thread: its doorbell goes nowhere), with the
    /// thread's findings set by hand.
    fn writer_side(frames: i64, caught_up: bool) -> Checkpoints {
        Checkpoints {
            doorbell: mpsc::sync_channel(1).0,
            wal_frames: Arc::new(AtomicI64::new(frames)),
            caught_up: Arc::new(AtomicBool::new(caught_up)),
        }
    }

    #[test]
    fn past_the_mark_the_writer_finishes_once_the_thread_caught_up_or_past_twice_it() {
        let dir = tempfile::tempdir().unwrap();
        let writer = database(dir.path());
        let db_len = || std::fs::metadata(dir.path().join("db")).unwrap().len();
        write_pages(&writer, 50);
        let empty = db_len();

        // Past the mark, but the thread has not caught up: the writer waits.
        let waiting = writer_side(FINISH_AT + 10, false);
        waiting.after_batch(&writer);
        assert_eq!(waiting.wal_frames.load(Ordering::Relaxed), FINISH_AT + 10);
        assert_eq!(
            db_len(),
            empty,
            "the writer copied before the thread caught up"
        );

        // Caught up: the writer copies the rest, and the log can start over.
        let ready = writer_side(FINISH_AT + 10, true);
        ready.after_batch(&writer);
        assert_eq!(ready.wal_frames.load(Ordering::Relaxed), 0);
        assert!(!ready.caught_up.load(Ordering::Relaxed));
        assert!(db_len() >= 50 * 3000, "nothing was copied");

        // Past twice the mark the writer finishes without waiting for the thread.
        write_pages(&writer, 50);
        let bound = writer_side(2 * FINISH_AT, false);
        bound.after_batch(&writer);
        assert_eq!(bound.wal_frames.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_thread_copies_commits_back_after_they_ring() {
        let dir = tempfile::tempdir().unwrap();
        let writer = database(dir.path());
        let checkpoints = Checkpoints::start(&dir.path().join("db")).unwrap();
        write_pages(&writer, 50);
        // Below FINISH_AT the writer copies nothing itself: only the thread can.
        checkpoints.after_batch(&writer);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let db = dir.path().join("db");
        // The file grows during the copy; the thread records the WAL's length
        // after it, so both are waited for.
        while std::fs::metadata(&db).unwrap().len() < 50 * 3000
            || checkpoints.wal_frames.load(Ordering::Relaxed) < 50
        {
            assert!(std::time::Instant::now() < deadline, "no checkpoint ran");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

//! Point reads on SQLite — one row, or a short bounded walk, found by key — run on
//! the thread that asks for them.
//!
//! sqlx-sqlite gives each connection its own worker thread and passes every
//! statement to it and every row back through channels. A lookup by primary key in
//! SQLite's page cache takes microseconds; the two thread hand-offs and the
//! wake-ups behind them took more, and they were the largest cost in the profile
//! of `GET /v1/organizations/{id}` (which makes two such reads: the API key and the
//! organization). rusqlite calls the same libsqlite3 directly, so these reads run
//! inline on the tokio worker. Only reads whose cost does not depend on the amount
//! of data come here; lists and scans stay on the sqlx pool, so a long one never
//! holds a runtime thread.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::{StoreError, StoreResult};

pub(super) struct PointReads {
    conns: Box<[Mutex<Connection>]>,
    next: AtomicUsize,
}

impl PointReads {
    /// Opens `count` read-only connections to the (already migrated) database file.
    pub(super) fn open(path: &Path, count: usize) -> anyhow::Result<Self> {
        let conns = (0..count.max(1))
            .map(|_| {
                let conn = Connection::open_with_flags(
                    path,
                    // NO_MUTEX: each connection is used under its own Mutex below.
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                // A WAL reader waits only in rare cases (another connection
                // recovering the WAL index); a short bound keeps a runtime thread
                // from being held long, and the request then answers 503.
                conn.busy_timeout(Duration::from_millis(500))?;
                conn.set_prepared_statement_cache_capacity(32);
                Ok(Mutex::new(conn))
            })
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Self {
            conns: conns.into_boxed_slice(),
            next: AtomicUsize::new(0),
        })
    }

    /// Runs `read` on a free connection. Reads hold a connection for microseconds
    /// and never across an `.await`, so when every one is taken (more threads than
    /// connections) waiting for one is brief.
    fn with_conn<T>(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> StoreResult<T> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.conns.len();
        let guard = (0..n)
            .find_map(|i| self.conns[(start + i) % n].try_lock().ok())
            .unwrap_or_else(|| {
                self.conns[start % n]
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
            });
        read(&guard).map_err(sqlite_error)
    }

    /// The first column of the one row `sql` finds, if any.
    pub(super) fn optional_text(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> StoreResult<Option<String>> {
        self.with_conn(|conn| optional_text(conn, sql, params))
    }

    /// The integer in the first column of the one row `sql` finds, if any.
    pub(super) fn optional_integer(&self, sql: &str) -> StoreResult<Option<i64>> {
        self.with_conn(|conn| {
            conn.prepare_cached(sql)?
                .query_row([], |row| row.get(0))
                .optional()
        })
    }

    /// The one row `sql` finds, if any, as `map` reads it.
    pub(super) fn optional_row<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        map: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> StoreResult<Option<T>> {
        self.with_conn(|conn| conn.prepare_cached(sql)?.query_row(params, map).optional())
    }

    /// The first column of every row `sql` finds (for bounded walks only).
    pub(super) fn texts(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> StoreResult<Vec<String>> {
        self.with_conn(|conn| texts(conn, sql, params))
    }
}

/// The first column of the one row `sql` finds on `conn`, if any (also used by the
/// group committer on the writer's handle).
pub(super) fn optional_text(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached(sql)?
        .query_row(params, |row| row.get(0))
        .optional()
}

/// The first column of every row `sql` finds on `conn`.
pub(super) fn texts(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<Vec<String>> {
    conn.prepare_cached(sql)?
        .query_map(params, |row| row.get(0))?
        .collect()
}

/// Sorts a rusqlite error as [`super::sqlite::db_error`] sorts sqlx's.
pub(super) fn sqlite_error(err: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match err.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            StoreError::Unavailable(err.into())
        }
        _ => StoreError::Other(err.into()),
    }
}

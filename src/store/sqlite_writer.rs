//! Group commit for the SQLite store: one task takes every organization and
//! membership write that is waiting and commits them in one transaction, so one
//! durable sync (`synchronous=FULL`) covers the whole batch instead of one per write.
//!
//! Each write runs under its own SAVEPOINT: a write refused by its own checks (a
//! stale version, a slug taken, a hierarchy or membership rule) is rolled back alone
//! and its neighbours commit. Every caller is answered only after the COMMIT that
//! carries its write, so an acknowledged write is on disk. Readers use their own
//! connections and never wait for the writer (WAL).
//!
//! A thread of its own ([`run`]) borrows the store's single writer connection while
//! batches keep coming, so the rarer writes that go straight to that pool (API keys,
//! webhook endpoints, the outbox workers) take turns with batches instead of needing
//! a path of their own. Batches run through rusqlite on that connection's handle
//! ([`hold`]; the statements are in [`super::sqlite_writes`]). The outbox's webhook
//! fan-out step is queued here too ([`FanOut`]) and runs inside a batch.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{SqliteConnection, SqlitePool};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

use super::org_copies::OrgCopies;
use super::sqlite::{self, db_error};
use super::sqlite_checkpoint::Checkpoints;
use super::sqlite_outbox;
use super::sqlite_point_reads::sqlite_error;
use super::sqlite_writes;
use super::{IdempotencyRecord, StoreError, StoreResult};
use crate::domain::event::Event;
use crate::domain::ids::OrgId;
use crate::domain::members::{Membership, UserId};
use crate::domain::org::Organization;
use crate::domain::secrets_key::SecretsKey;
use crate::domain::time;

/// Most writes in one transaction: enough to absorb a burst from every connection
/// of a busy server, small enough that one batch holds the lock for milliseconds.
const MAX_BATCH: usize = 128;
/// Writes waiting for the writer beyond this make their callers wait to enqueue.
const QUEUE_DEPTH: usize = 1024;
/// The longest the writer keeps the connection while batches keep coming; then a
/// direct write waiting for it gets it (the pool serves waiters in order).
const HOLD_AT_MOST: Duration = Duration::from_millis(20);
/// How long the writer keeps the connection, with the queue empty, for the next write.
const LINGER: Duration = Duration::from_millis(2);

/// A write the group committer runs. The payloads are owned (and documents are
/// serialized by the caller, on its own task) so the single writer spends its time
/// only on SQL.
pub(super) enum WriteOp {
    CreateOrg(Box<CreateOrg>),
    WriteOrg(Box<WriteOrg>),
    WriteMembership(Box<WriteMembership>),
    FanOut(Box<FanOut>),
}

pub(super) struct CreateOrg {
    pub org: Arc<Organization>,
    pub doc: String,
    pub event: EncodedEvent,
    pub owner: Option<Membership>,
    /// The record and its encoded response.
    pub idempotency: Option<(IdempotencyRecord, String)>,
}

pub(super) struct WriteOrg {
    pub expected_version: i64,
    pub org: Arc<Organization>,
    pub columns: OrgColumns,
    /// The change concerns no other row ([`Organization::changes_only_its_row`]):
    /// it may be the one guarded UPDATE.
    pub in_place: bool,
    /// The slug changes.
    pub renames: bool,
    pub event: EncodedEvent,
}

/// An organization's columns that are not its fields' own text: made on the
/// request's thread, so the one writer thread, which every write waits for, only
/// binds them.
pub(super) struct OrgColumns {
    pub id: String,
    pub parent_id: Option<String>,
    pub updated_at: String,
    pub deleted_at: Option<String>,
    pub doc: String,
}

impl OrgColumns {
    pub fn new(org: &Organization) -> StoreResult<Self> {
        Ok(Self {
            id: org.id.to_string(),
            parent_id: org.parent_id.map(|p| p.to_string()),
            updated_at: time::format(org.updated_at),
            deleted_at: org.deleted_at.map(time::format),
            doc: sqlite::encode(org)?,
        })
    }
}

pub(super) struct WriteMembership {
    pub org_id: OrgId,
    pub user_id: UserId,
    pub expected: Option<Membership>,
    pub after: Option<Membership>,
    pub event: EncodedEvent,
}

/// The webhook fan-out's step (events past the cursor become messages), run in a
/// batch like any write rather than as a transaction of its own: on its own it
/// took the one writer connection from the group committer about 40 times a
/// second under write load, with a commit and a sync each, and the committer
/// spent ~18% of its time waiting for the connection to come back (bench/README.md,
/// session 6). In the batch it shares the batch's commit.
pub(super) struct FanOut {
    pub secrets_key: SecretsKey,
    pub limit: u32,
    pub now_ms: i64,
    /// How many events the step covered, once its batch committed.
    pub covered: Arc<AtomicU64>,
}

/// An event as the columns of its row, made on the request's thread (see
/// [`OrgColumns`]).
pub(super) struct EncodedEvent {
    pub id: String,
    pub org_id: String,
    pub event_type: &'static str,
    pub version: i64,
    pub occurred_at: String,
    pub doc: String,
}

impl EncodedEvent {
    pub fn new(event: &Event) -> StoreResult<Self> {
        Ok(Self {
            id: event.id.to_string(),
            org_id: event.organization_id.to_string(),
            event_type: event.event_type.as_str(),
            version: event.version,
            occurred_at: time::format(event.occurred_at),
            doc: sqlite::encode(event)?,
        })
    }
}

/// Batches and writes committed so far, for tests and benchmarks.
#[derive(Debug, Default)]
pub struct CommitStats {
    commits: AtomicU64,
    writes: AtomicU64,
    in_place: AtomicU64,
}

impl CommitStats {
    fn record(&self, writes: usize) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.writes.fetch_add(writes as u64, Ordering::Relaxed);
    }

    /// Updates that took the one-statement path (no savepoint, no read).
    pub fn in_place(&self) -> u64 {
        self.in_place.load(Ordering::Relaxed)
    }

    /// (transactions committed, writes they carried)
    pub fn read(&self) -> (u64, u64) {
        (
            self.commits.load(Ordering::Relaxed),
            self.writes.load(Ordering::Relaxed),
        )
    }
}

struct WriteRequest {
    op: WriteOp,
    reply: oneshot::Sender<StoreResult<()>>,
}

impl WriteOp {
    /// The organization this write stores, as stored.
    fn org(&self) -> Option<&Arc<Organization>> {
        match self {
            WriteOp::CreateOrg(op) => Some(&op.org),
            WriteOp::WriteOrg(op) => Some(&op.org),
            WriteOp::WriteMembership(_) | WriteOp::FanOut(_) => None,
        }
    }
}

/// The handle the store keeps; the task ends when it is dropped.
pub(super) struct GroupCommit {
    queue: mpsc::Sender<WriteRequest>,
    pub stats: Arc<CommitStats>,
}

impl GroupCommit {
    /// Starts the writer thread; it ends when the handle is dropped. Must be called
    /// within a tokio runtime, whose handle the thread uses for the pool.
    pub fn start(
        writer: SqlitePool,
        checkpoints: Checkpoints,
        copies: Arc<OrgCopies>,
    ) -> anyhow::Result<Self> {
        let (queue, requests) = mpsc::channel(QUEUE_DEPTH);
        let stats = Arc::new(CommitStats::default());
        let runtime = Handle::current();
        let thread_stats = stats.clone();
        std::thread::Builder::new()
            .name("orgd-sqlite-writer".into())
            .spawn(move || {
                run(
                    &runtime,
                    &writer,
                    requests,
                    &thread_stats,
                    &checkpoints,
                    &copies,
                )
            })?;
        Ok(Self { queue, stats })
    }

    /// Queues a write and waits for the commit of the batch that carries it.
    pub async fn submit(&self, op: WriteOp) -> StoreResult<()> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Unavailable(anyhow::anyhow!("the SQLite writer has stopped"));
        self.queue
            .send(WriteRequest { op, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The writer thread: takes what is queued, commits it, and again.
///
/// A thread of its own rather than a task that hands each batch to
/// `spawn_blocking`: under load the task's wake-up after each batch waited behind
/// the request handlers on the runtime's busy threads (about a quarter of the
/// writer's time, measured in bench/README.md, session 5), and every batch paid a
/// pool round trip for the connection. The thread keeps the connection while
/// batches keep coming and hands it back when the queue is empty or after
/// [`HOLD_AT_MOST`], so the direct writes (webhook workers, API keys) take turns.
fn run(
    runtime: &Handle,
    writer: &SqlitePool,
    mut requests: mpsc::Receiver<WriteRequest>,
    stats: &CommitStats,
    checkpoints: &Checkpoints,
    copies: &OrgCopies,
) {
    while let Some(first) = requests.blocking_recv() {
        let mut conn = match runtime.block_on(writer.acquire()) {
            Ok(conn) => conn,
            Err(err) => {
                fail_all(gather(first, &mut requests), &db_error(err));
                continue;
            }
        };
        // A batch guards itself (see `hold`); this guards the rest of the cycle —
        // gathering, lingering — where a panic would otherwise end the thread and
        // fail every later write (session 6 found one: a timer made outside the
        // runtime). The unwinding stops here, before the connection is dropped
        // outside the runtime.
        let held = std::panic::catch_unwind(AssertUnwindSafe(|| {
            hold(
                runtime,
                &mut conn,
                first,
                &mut requests,
                stats,
                checkpoints,
                copies,
            )
        }));
        if held.is_err() {
            tracing::error!("the SQLite writer panicked between batches; it goes on");
        }
        // sqlx hands the connection back to the pool on a runtime task.
        let _runtime = runtime.enter();
        drop(conn);
    }
}

/// The next write, if one is queued or comes within [`LINGER`].
///
/// Handing the connection back the moment the queue is empty, and taking it again
/// for the next write, cost about a millisecond each time (sqlx returns a
/// connection to its pool on a runtime task, which waits behind the request
/// handlers): under PATCH load the queue empties between most batches, and this
/// was ~8% of the writer's time (bench/README.md, session 6); lingering gave +2–3%
/// PATCH/s in three alternating pairs.
fn next_soon(
    runtime: &Handle,
    requests: &mut mpsc::Receiver<WriteRequest>,
) -> Option<WriteRequest> {
    match requests.try_recv() {
        Ok(next) => Some(next),
        Err(_) => runtime
            // The timer is made inside `block_on`, which gives it the runtime.
            .block_on(async { tokio::time::timeout(LINGER, requests.recv()).await })
            .ok()
            .flatten(),
    }
}

/// `first` and whatever else is queued, up to [`MAX_BATCH`].
fn gather(first: WriteRequest, requests: &mut mpsc::Receiver<WriteRequest>) -> Vec<WriteRequest> {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    batch.push(first);
    while batch.len() < MAX_BATCH {
        match requests.try_recv() {
            Ok(request) => batch.push(request),
            Err(_) => break,
        }
    }
    batch
}

/// Commits batches on the connection's own SQLite handle until the queue is empty
/// or the connection has been held [`HOLD_AT_MOST`].
///
/// sqlx-sqlite would send each statement to the connection's worker thread and wait
/// for the answer: two thread hand-offs per statement, several statements per write,
/// all on the one connection every write waits for. Locking the handle (sqlx's
/// `lock_handle`, which parks its worker) and driving it through rusqlite runs each
/// batch — BEGIN, every write, COMMIT — without a hand-off. The handle stays locked
/// from batch to batch: locking it is itself a hand-off to the worker (~5% of the
/// writer's time when it was taken per batch, bench/README.md, session 6).
fn hold(
    runtime: &Handle,
    conn: &mut SqliteConnection,
    first: WriteRequest,
    requests: &mut mpsc::Receiver<WriteRequest>,
    stats: &CommitStats,
    checkpoints: &Checkpoints,
    copies: &OrgCopies,
) {
    let since = Instant::now();
    let mut batch = gather(first, requests);
    let mut locked = match runtime.block_on(conn.lock_handle()) {
        Ok(locked) => locked,
        Err(err) => return fail_all(batch, &db_error(err)),
    };
    // SAFETY: the handle stays open and unused by sqlx while `locked` lives, and
    // `db` (which does not close a handle it was given) is dropped before it.
    let db = match unsafe { rusqlite::Connection::from_handle(locked.as_raw_handle().as_ptr()) } {
        Ok(db) => db,
        Err(err) => return fail_all(batch, &sqlite_error(err)),
    };
    loop {
        let committed = std::panic::catch_unwind(AssertUnwindSafe(|| {
            // Leaves no transaction open behind sqlx's back, even on a panic.
            let guard = RollbackOnExit(&db);
            commit_batch(&db, batch, stats, copies);
            drop(guard);
            checkpoints.after_batch(&db);
        }));
        if committed.is_err() {
            // A panic in one batch must not stop every later write: its callers see
            // their reply dropped (an error), its transaction was rolled back, the
            // connection goes back to the pool and the thread goes on.
            tracing::error!(
                "the SQLite writer panicked in a batch; none of its writes were acknowledged"
            );
            break;
        }
        if since.elapsed() >= HOLD_AT_MOST {
            break;
        }
        match next_soon(runtime, requests) {
            Some(next) => batch = gather(next, requests),
            None => break,
        }
    }
    drop(db);
    drop(locked);
}

struct RollbackOnExit<'a>(&'a rusqlite::Connection);

impl Drop for RollbackOnExit<'_> {
    fn drop(&mut self) {
        if !self.0.is_autocommit() {
            let _ = self.0.execute_batch("ROLLBACK");
        }
    }
}

fn fail_all(batch: Vec<WriteRequest>, err: &StoreError) {
    tracing::warn!(error = %err, writes = batch.len(), "SQLite batch failed; none of its writes committed");
    for request in batch {
        let _ = request.reply.send(Err(err.copied()));
    }
}

/// Commits a batch and answers each request after the commit. A write that fails
/// for a reason other than its own checks may have broken the transaction (an I/O
/// error, a full disk): it is answered with its error and the rest of the batch
/// runs again in a fresh transaction, so its neighbours are not failed with it.
///
/// The process's copies of the organizations the batch writes are dropped before
/// it runs and the committed ones kept before anyone is answered
/// (`org_copies.rs`).
fn commit_batch(
    db: &rusqlite::Connection,
    mut batch: Vec<WriteRequest>,
    stats: &CommitStats,
    copies: &OrgCopies,
) {
    while !batch.is_empty() {
        let writing = copies.writing(batch.iter().filter_map(|r| r.op.org()).map(|org| &org.id));
        let ran = run_batch(db, &batch, stats, copies);
        let committed = match &ran {
            Ok(outcomes) => batch
                .iter()
                .zip(outcomes)
                .filter(|(_, outcome)| outcome.is_ok())
                .filter_map(|(request, _)| request.op.org().cloned())
                .collect(),
            Err(_) => Vec::new(),
        };
        writing.committed(committed);
        match ran {
            Ok(outcomes) => {
                stats.record(batch.len());
                for (request, outcome) in batch.into_iter().zip(outcomes) {
                    // The caller may have gone (client disconnected); its write stands.
                    let _ = request.reply.send(outcome);
                }
                return;
            }
            Err(BatchError::At(index, err)) => {
                let request = batch.remove(index);
                let _ = request.reply.send(Err(err));
            }
            Err(BatchError::Whole(err)) => {
                fail_all(batch, &err);
                return;
            }
        }
    }
}

enum BatchError {
    /// The write at this index failed in a way that may have broken the transaction.
    At(usize, StoreError),
    /// BEGIN or COMMIT failed: nothing in the batch committed.
    Whole(StoreError),
}

/// The outcome of each write in `batch`, once all of them committed together.
fn run_batch(
    db: &rusqlite::Connection,
    batch: &[WriteRequest],
    stats: &CommitStats,
    copies: &OrgCopies,
) -> Result<Vec<StoreResult<()>>, BatchError> {
    let run = |sql: &str| db.execute_batch(sql).map_err(sqlite_error);
    // IMMEDIATE: take the write lock now (waiting out another process's within
    // the busy timeout) rather than fail on the first write.
    run("BEGIN IMMEDIATE").map_err(BatchError::Whole)?;
    // With the lock held, no other connection can commit until ours does: a
    // reading now vouches for the copies the batch keeps. Without one they lapse.
    let read_at = copies.now();
    if let Ok(version) = db
        .prepare_cached("PRAGMA data_version")
        .and_then(|mut s| s.query_row([], |row| row.get::<_, i64>(0)))
    {
        copies.confirm(version, read_at);
    }
    let abandon = |index, err| {
        let _ = db.execute_batch("ROLLBACK");
        BatchError::At(index, err)
    };
    let mut outcomes = Vec::with_capacity(batch.len());
    for (index, request) in batch.iter().enumerate() {
        // The common update is one guarded UPDATE that applies whole or fails alone
        // (SQLite undoes a failing statement), then its event: it needs no savepoint.
        if let WriteOp::WriteOrg(op) = &request.op {
            match sqlite_writes::write_org_in_place(db, op) {
                Ok(true) => {
                    stats.in_place.fetch_add(1, Ordering::Relaxed);
                    outcomes.push(Ok(()));
                    continue;
                }
                Ok(false) => {} // the full path below decides, and names the error
                Err(err) if is_own_check(&err) => {
                    outcomes.push(Err(err));
                    continue;
                }
                Err(err) => return Err(abandon(index, err)),
            }
        }
        run("SAVEPOINT write").map_err(|err| abandon(index, err))?;
        let outcome = match apply(db, &request.op) {
            Ok(()) => Ok(()),
            Err(err) if is_own_check(&err) => {
                // SQLite undid only the failing statement; undo the rest of this
                // write and keep the transaction (and the neighbours' writes).
                run("ROLLBACK TO write").map_err(|e| abandon(index, e))?;
                Err(err)
            }
            Err(err) => return Err(abandon(index, err)),
        };
        // Released at once, not left for COMMIT: while a savepoint is open, every
        // later statement of the batch copies each page it first touches into the
        // sub-journal, which then outgrew memory and went to a temporary file — a
        // third of PATCH batches did that, for the one write in fifty that missed
        // the in-place path (bench/README.md, session 9).
        run("RELEASE write").map_err(|e| abandon(index, e))?;
        outcomes.push(outcome);
    }
    run("COMMIT").map_err(BatchError::Whole)?;
    Ok(outcomes)
}

fn apply(db: &rusqlite::Connection, op: &WriteOp) -> StoreResult<()> {
    match op {
        WriteOp::CreateOrg(op) => sqlite_writes::create_org(db, op),
        WriteOp::WriteOrg(op) => sqlite_writes::write_org(db, op),
        WriteOp::WriteMembership(op) => sqlite_writes::write_membership(db, op),
        WriteOp::FanOut(op) => {
            let covered = sqlite_outbox::fan_out_in(db, &op.secrets_key, op.limit, op.now_ms)?;
            // Set on every run: a batch that is run again after a failure runs it again.
            op.covered.store(covered, Ordering::Relaxed);
            Ok(())
        }
    }
}

/// Refusals decided by a write's own checks or a constraint: SQLite leaves the
/// transaction usable after them.
fn is_own_check(err: &StoreError) -> bool {
    matches!(
        err,
        StoreError::NotFound
            | StoreError::VersionMismatch
            | StoreError::Conflict(_)
            | StoreError::Hierarchy(_)
            | StoreError::Member(_)
    )
}

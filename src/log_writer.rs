//! Where log lines go: request threads append each formatted line to one buffer,
//! and a thread of its own writes the buffer out in large pieces.
//!
//! tracing-appender's non-blocking writer did this job until session 18, and
//! under load it cost 17% of a GET by id's CPU (bench/README.md): each line was
//! copied into a `Vec`, sent through a channel and freed on its thread, and that
//! thread, always keeping up, wrote after every line or two (~6,000 `write`s and
//! ~3,500 `sched_yield`s a second at ~24,000 lines a second under `perf trace`).
//! Here a line is one copy into the buffer under a lock. The thread is woken
//! when the buffer stops being empty, gathers lines for [`GATHER`] (or until
//! [`WRITE_AT`] bytes wait), and writes them with one call.
//!
//! As before, request threads never wait for the sink while it keeps up, and no
//! line is dropped: if the sink falls behind by [`HOLD_AT_MOST`] bytes, loggers
//! wait for it. Lines reach the sink at most [`GATHER`] after they are logged,
//! and every line logged before [`Flusher`] is dropped is written.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long the thread gathers lines after the first before writing them.
const GATHER: Duration = Duration::from_millis(20);
/// Waiting bytes that are written at once, without gathering further.
const WRITE_AT: usize = 256 * 1024;
/// Waiting bytes past which loggers wait for the sink.
const HOLD_AT_MOST: usize = 16 * 1024 * 1024;

/// The `MakeWriter` for the tracing subscriber; cheap to clone.
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

/// Writes what is left and stops the thread when dropped.
pub struct Flusher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    pending: Mutex<Pending>,
    /// Rung when the buffer stops being empty, passes `write_at`, or on close.
    lines: Condvar,
    /// Rung after the thread takes the buffer.
    taken: Condvar,
    write_at: usize,
    hold_at_most: usize,
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    closed: bool,
}

impl LogWriter {
    /// Starts the writing thread on `sink`.
    pub fn start(sink: impl Write + Send + 'static) -> io::Result<(Self, Flusher)> {
        Self::start_with(sink, WRITE_AT, HOLD_AT_MOST)
    }

    fn start_with(
        sink: impl Write + Send + 'static,
        write_at: usize,
        hold_at_most: usize,
    ) -> io::Result<(Self, Flusher)> {
        let shared = Arc::new(Shared {
            pending: Mutex::default(),
            lines: Condvar::new(),
            taken: Condvar::new(),
            write_at,
            hold_at_most,
        });
        let thread = std::thread::Builder::new().name("orgd-log".into()).spawn({
            let shared = shared.clone();
            move || shared.write_out(sink)
        })?;
        Ok((
            Self {
                shared: shared.clone(),
            },
            Flusher {
                shared,
                thread: Some(thread),
            },
        ))
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding the lock cannot leave a line half appended:
        // `extend_from_slice` of a reserved `Vec` does not unwind midway.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn append(&self, line: &[u8]) {
        let mut pending = self.lock();
        while pending.bytes.len() >= self.hold_at_most && !pending.closed {
            pending = self
                .taken
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
        let before = pending.bytes.len();
        pending.bytes.extend_from_slice(line);
        if before == 0 || (before < self.write_at && pending.bytes.len() >= self.write_at) {
            self.lines.notify_one();
        }
    }

    /// The writing thread's loop. Write errors are ignored: there is nowhere left
    /// to report them, and the next lines are tried anyway.
    fn write_out(&self, mut sink: impl Write) {
        let mut spare = Vec::new();
        loop {
            let mut pending = self.lock();
            while pending.bytes.is_empty() && !pending.closed {
                pending = self
                    .lines
                    .wait(pending)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if pending.bytes.len() < self.write_at && !pending.closed {
                pending = self
                    .lines
                    .wait_timeout(pending, GATHER)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            std::mem::swap(&mut pending.bytes, &mut spare);
            let closed = pending.closed;
            drop(pending);
            self.taken.notify_all();
            if !spare.is_empty() {
                let _ = sink.write_all(&spare).and_then(|()| sink.flush());
                spare.clear();
            }
            if closed && self.lock().bytes.is_empty() {
                return;
            }
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.lines.notify_one();
        self.shared.taken.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One log line's writer, as the subscriber asks for one per event.
pub struct Line<'a>(&'a Shared);

impl Write for Line<'_> {
    /// The subscriber writes each formatted line with one call.
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        self.0.append(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line(&self.shared)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    use super::*;

    /// A sink that keeps what it is given and counts the calls.
    #[derive(Clone, Default)]
    struct Kept {
        bytes: Arc<Mutex<Vec<u8>>>,
        writes: Arc<AtomicUsize>,
    }

    impl Write for Kept {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            self.bytes.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Kept {
        fn text(&self) -> String {
            String::from_utf8(self.bytes.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn every_line_from_every_thread_is_written_whole_and_in_its_threads_order() {
        let sink = Kept::default();
        let (writer, flusher) = LogWriter::start(sink.clone()).unwrap();
        std::thread::scope(|s| {
            for t in 0..4 {
                let writer = writer.clone();
                s.spawn(move || {
                    for i in 0..2_000 {
                        let line = format!("thread {t} line {i:04} {}\n", "x".repeat(i % 50));
                        writer.make_writer().write_all(line.as_bytes()).unwrap();
                    }
                });
            }
        });
        drop(flusher);
        let text = sink.text();
        assert_eq!(text.lines().count(), 8_000);
        for t in 0..4 {
            let prefix = format!("thread {t} line ");
            let numbers: Vec<usize> = text
                .lines()
                .filter_map(|l| l.strip_prefix(&prefix))
                .map(|rest| {
                    let (number, padding) = rest.split_once(' ').unwrap();
                    let number: usize = number.parse().unwrap();
                    assert_eq!(padding, "x".repeat(number % 50));
                    number
                })
                .collect();
            assert_eq!(numbers, (0..2_000).collect::<Vec<_>>());
        }
    }

    #[test]
    fn lines_are_written_in_large_pieces_not_one_by_one() {
        let sink = Kept::default();
        let (writer, flusher) = LogWriter::start(sink.clone()).unwrap();
        for i in 0..10_000 {
            writer
                .make_writer()
                .write_all(format!("line {i}\n").as_bytes())
                .unwrap();
        }
        drop(flusher);
        assert_eq!(sink.text().lines().count(), 10_000);
        // However the thread was scheduled, 10,000 lines logged in a burst are far
        // fewer writes than lines (one per line was what this replaced).
        let writes = sink.writes.load(Ordering::SeqCst);
        assert!(writes <= 100, "{writes} writes");
    }

    #[test]
    fn a_line_reaches_the_sink_without_a_flush() {
        let sink = Kept::default();
        let (writer, _flusher) = LogWriter::start(sink.clone()).unwrap();
        writer.make_writer().write_all(b"alone\n").unwrap();
        for _ in 0..500 {
            if sink.text() == "alone\n" {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the line was not written within 5 s: {:?}", sink.text());
    }

    /// A sink that takes nothing until told to.
    struct Stuck(mpsc::Receiver<()>, Kept);

    impl Write for Stuck {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let _ = self.0.recv();
            self.1.write(bytes)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_sink_makes_loggers_wait_and_loses_nothing() {
        let (release, released) = mpsc::channel();
        let kept = Kept::default();
        let (writer, flusher) =
            LogWriter::start_with(Stuck(released, kept.clone()), 64, 128).unwrap();
        let logged = Arc::new(AtomicUsize::new(0));
        let logger = std::thread::spawn({
            let (writer, logged) = (writer.clone(), logged.clone());
            move || {
                for i in 0..100 {
                    let line = format!("line {i:02} of a sink that is stuck\n");
                    writer.make_writer().write_all(line.as_bytes()).unwrap();
                    logged.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        // The thread holds one piece for the stuck sink; the logger stopped at the
        // limit (128 bytes, 35 a line) instead of growing the buffer.
        let stalled_at = logged.load(Ordering::SeqCst);
        assert!(
            stalled_at < 20,
            "{stalled_at} lines logged into a stuck sink"
        );
        for _ in 0..1_000 {
            let _ = release.send(());
        }
        logger.join().unwrap();
        drop(flusher);
        let text = kept.text();
        assert_eq!(text.lines().count(), 100);
        assert!(
            text.starts_with("line 00 ") && text.ends_with("line 99 of a sink that is stuck\n")
        );
    }
}

//! How a log line reads when the log is not a terminal: the text of
//! tracing-subscriber's default format without colour, written without its
//! colour machinery.
//!
//! With colour off, tracing-subscriber's `Full` format still passes every field
//! name, `=` and the target through nu_ansi_term's painting (an empty style each),
//! escapes the message a character at a time, and prints the time through its own
//! calendar arithmetic. Counted with callgrind on a GET by id (bench/README.md,
//! "Session 21"), the access line cost ~10,800 of a request's ~55,000
//! instructions, ~3,400 of them in that painting. SPEC §6 makes the line part of
//! every request, so it is worth writing directly. A terminal keeps the default
//! format with its colours (`main.rs`).
//!
//! The line is the same text as the default's, byte for byte apart from the time
//! (same fields, order, spacing and span prefix; the message escaped the same
//! way); the tests below compare the two.

use std::fmt::{self, Write as _};

use jiff::fmt::temporal::DateTimePrinter;
use jiff::fmt::StdFmtWrite;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Microseconds, as the default format prints them (`2026-11-25T14:26:33.886225Z`).
const TIME: DateTimePrinter = DateTimePrinter::new().precision(Some(6));

/// The event format: time, level, spans, target, fields.
pub struct PlainLine;

/// The field format, for events and for the spans shown before them.
pub struct PlainFields;

impl<S, N> FormatEvent<S, N> for PlainLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // A `log` record (from a dependency that logs through the `log` crate)
        // arrives as an event whose metadata is in fields; show its own.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());

        if TIME
            .print_timestamp(&jiff::Timestamp::now(), StdFmtWrite(&mut writer))
            .is_err()
        {
            writer.write_str("<unknown time>")?;
        }
        write!(writer, " {:>5} ", meta.level().as_str())?;
        if let Some(scope) = ctx.event_scope() {
            let mut any = false;
            for span in scope.from_root() {
                writer.write_str(span.metadata().name())?;
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>() {
                    if !fields.is_empty() {
                        write!(writer, "{{{fields}}}")?;
                    }
                }
                writer.write_char(':')?;
                any = true;
            }
            if any {
                writer.write_char(' ')?;
            }
        }
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        ctx.format_fields(writer.by_ref(), event)?;
        writer.write_char('\n')
    }
}

impl<'w> FormatFields<'w> for PlainFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = Fields {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct Fields<'w> {
    writer: Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Fields<'_> {
    /// What goes before a value: the space after the previous field, then `name=`,
    /// except for the message, which stands bare.
    fn label(&mut self, field: &Field) -> fmt::Result {
        if !std::mem::take(&mut self.first) {
            self.writer.write_char(' ')?;
        }
        let name = field.name();
        if name == "message" {
            return Ok(());
        }
        self.writer
            .write_str(name.strip_prefix("r#").unwrap_or(name))?;
        self.writer.write_char('=')
    }

    fn record(&mut self, field: &Field, write: impl FnOnce(&mut Self) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        // Fields a `log` record's metadata arrived in; the line shows them already.
        if field.name().starts_with("log.") {
            return;
        }
        self.result = write(self);
    }

    fn record_display(&mut self, field: &Field, value: impl fmt::Display) {
        self.record(field, |this| {
            this.label(field)?;
            write!(this.writer, "{value}")
        });
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record(field, |this| {
            this.label(field)?;
            if field.name() == "message" {
                // As the default does: a message cannot smuggle terminal control
                // sequences into whoever reads the log.
                write!(Escaping(&mut this.writer), "{value:?}")
            } else {
                write!(this.writer, "{value:?}")
            }
        });
    }

    /// As the default: the error, then its chain of sources as `name.sources=[…]`,
    /// each escaped like a message.
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record(field, |this| {
            this.label(field)?;
            write!(Escaping(&mut this.writer), "{value}")?;
            let mut sources = std::iter::successors(value.source(), |error| error.source());
            let Some(first) = sources.next() else {
                return Ok(());
            };
            write!(this.writer, " {}.sources=[", field.name())?;
            write!(Escaping(&mut this.writer), "{first}")?;
            for error in sources {
                write!(Escaping(&mut this.writer), ", {error}")?;
            }
            this.writer.write_char(']')
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record_display(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record_display(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.record_display(field, value);
    }
}

/// Escapes what tracing-subscriber's message escaping does (ESC, BEL, BS, FF,
/// DEL and the C1 controls), writing runs without them in one piece.
struct Escaping<'a, W>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut clean = 0;
        for (at, ch) in text.char_indices() {
            let escaped = match ch {
                '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' | '\u{80}'..='\u{9f}' => ch as u32,
                _ => continue,
            };
            self.0.write_str(&text[clean..at])?;
            match ch {
                '\u{80}'..='\u{9f}' => write!(self.0, "\\u{{{escaped:x}}}")?,
                _ => write!(self.0, "\\x{escaped:02x}")?,
            }
            clean = at + ch.len_utf8();
        }
        self.0.write_str(&text[clean..])
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Self;
        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<String> {
            let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
            text.lines().map(str::to_owned).collect()
        }
    }

    /// Events and spans of every kind of field the service logs, and some it might.
    fn log_some_lines() {
        let id = "01a21319-f272-7633-9f62-a482f535ee1c";
        tracing::info!(
            request.id = %id,
            http.method = %"PATCH",
            http.path = %"/v1/organizations/org_1",
            http.status = 200u16,
            latency_ms = 0.087_123_f64,
            "request finished"
        );
        tracing::warn!(path = ?std::path::Path::new("/tmp/a b"), "wrote a new key");
        tracing::error!(error = %"disk full", attempts = -3i64, retry = false, "gave up");
        tracing::info!("a message with \x1b[31mcolour\x1b[0m, a bell\x07 and \u{9b}C1");
        tracing::info!(
            text = "quoted \"and\" \x1b escaped by Debug",
            r#type = "raw name"
        );
        tracing::info!(only = 1u64);
        let cause = std::io::Error::other("disk \x1b full");
        let outer = std::io::Error::other(Chained("write failed", cause));
        tracing::warn!(error = &outer as &(dyn std::error::Error + 'static), "io");
        let alone = std::io::Error::other("alone");
        tracing::warn!(error = &alone as &(dyn std::error::Error + 'static));
        let outer = tracing::info_span!("outer", org = "org_1", n = 2u64);
        let _outer = outer.enter();
        let inner = tracing::info_span!("inner");
        let _inner = inner.enter();
        tracing::debug!(seen = true, "inside two spans");
    }

    /// An error with a source, for the `name.sources=[…]` part of a line.
    #[derive(Debug)]
    struct Chained(&'static str, std::io::Error);

    impl fmt::Display for Chained {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Chained {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.1)
        }
    }

    fn without_time(line: &str) -> &str {
        line.split_once(' ').map(|(_, rest)| rest).unwrap_or(line)
    }

    #[test]
    fn a_line_reads_as_the_default_formats_it_apart_from_the_time() {
        let ours = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(ours.clone())
            .event_format(PlainLine)
            .fmt_fields(PlainFields)
            .finish();
        tracing::subscriber::with_default(subscriber, log_some_lines);

        let default = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(default.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, log_some_lines);

        let (ours, default) = (ours.lines(), default.lines());
        assert_eq!(ours.len(), 9);
        assert_eq!(ours.len(), default.len());
        for (ours, default) in ours.iter().zip(&default) {
            assert_eq!(without_time(ours), without_time(default));
            let (time, _) = ours.split_once(' ').unwrap();
            let (default_time, _) = default.split_once(' ').unwrap();
            assert_eq!(
                time.len(),
                default_time.len(),
                "{time} against {default_time}"
            );
            time.parse::<jiff::Timestamp>().unwrap();
        }
        assert!(
            ours[3].contains(r"\x1b[31mcolour\x1b[0m, a bell\x07 and \u{9b}C1"),
            "{}",
            ours[3]
        );
        assert!(
            ours[6].contains(r"error=write failed error.sources=[disk \x1b full]"),
            "{}",
            ours[6]
        );
        assert!(
            ours[8].ends_with("DEBUG outer{org=\"org_1\" n=2}:inner: orgd::log_line::tests: inside two spans seen=true"),
            "{}",
            ours[8]
        );
    }
}

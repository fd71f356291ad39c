//! Logs go to stderr, never stdout (stdout is the Singer protocol).
//!
//! The level comes from `ROSTER_LOG` (a `tracing` filter such as `debug` or
//! `roster::http=debug`), else `<BINARY>_LOGLEVEL` / `LOGLEVEL` as the Meltano SDK reads them,
//! else `info`. `ROSTER_LOG_FORMAT=json` writes one JSON object per line for log shippers.
//! Colours only when stderr is a terminal. While target-roster's progress bar is drawn, every
//! log line goes through it ([`set_progress_bar`]): the bar is lifted, the line printed, the bar
//! redrawn below, so a warning never tears it.
//!
//! Log lines carry values from the input and the vendor (stream names, keys, body excerpts).
//! Every message and field value passes [`escape`] on its way out ([`EscapedFields`]): control
//! characters (newlines, carriage returns, NUL, terminal escapes) are written as escapes, so a
//! value cannot forge a log line or drive the terminal, and a value is cut at a length that keeps
//! stderr readable. JSON lines are escaped by JSON itself.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::io::{self, IsTerminal, Write};

use indicatif::ProgressBar;
use parking_lot::Mutex;
use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::{FormatFields, Writer};

/// The longest field value a log line shows, in bytes (a stream name, a key, a URL).
pub const MAX_FIELD_BYTES: usize = 1024;

/// The longest message a log line shows, in bytes: room for an error with its causes and a
/// body excerpt, not for a megabyte of input echoed back.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// The progress bar being drawn, if any.
static PROGRESS_BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Registers the progress bar log lines must go around (`None` when it is finished).
pub fn set_progress_bar(bar: Option<ProgressBar>) {
    *PROGRESS_BAR.lock() = bar;
}

/// stderr, around the progress bar when one is drawn.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // The fmt layer hands over one whole event per call.
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let bar = PROGRESS_BAR.lock().clone();
        write_around(bar.as_ref(), buf, &mut io::stderr().lock())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// Writes `buf` to `out` with the bar lifted for the time of the write, then redrawn.
fn write_around(bar: Option<&ProgressBar>, buf: &[u8], out: &mut dyn Write) -> io::Result<()> {
    match bar {
        Some(bar) if !bar.is_hidden() => bar.suspend(|| out.write_all(buf)),
        _ => out.write_all(buf),
    }
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Stderr;

    fn make_writer(&'a self) -> Self::Writer {
        Stderr
    }
}

/// Whether log lines get ANSI colours: only on a terminal (a file, a pipe or a CI log gets
/// plain text), and never with `NO_COLOR` set.
pub fn use_colour(stderr_is_terminal: bool) -> bool {
    stderr_is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The level used when nothing is set.
const DEFAULT_LEVEL: &str = "info";

/// Installs the stderr logger once; later calls do nothing (tests start several runs).
pub fn init(binary: &str) {
    let meltano_var = format!("{}_LOGLEVEL", binary.to_ascii_uppercase().replace('-', "_"));
    let filter = std::env::var("ROSTER_LOG")
        .or_else(|_| std::env::var(&meltano_var))
        .or_else(|_| std::env::var("LOGLEVEL"))
        .map(|level| level.to_ascii_lowercase())
        .unwrap_or_else(|_| DEFAULT_LEVEL.to_string());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new(DEFAULT_LEVEL));
    let json = std::env::var("ROSTER_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Stderr)
        .with_target(false);
    let installed = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder
            .with_ansi(use_colour(std::io::stderr().is_terminal()))
            .fmt_fields(EscapedFields)
            .compact()
            .try_init()
    };
    if installed.is_ok() {
        install_panic_hook(binary.to_string());
    }
}

/// A panic is a bug; report it as one line on stderr instead of a backtrace dump.
fn install_panic_hook(binary: String) {
    std::panic::set_hook(Box::new(move |info| {
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        tracing::error!("{binary}: internal error (a bug, please report it){location}: {message}");
    }));
}

/// `text` as a log line may show it: control characters and Unicode direction overrides
/// escaped (`\n`, `\r`, `\t`, `\0`, `\u{1b}`), and cut after `max` bytes with a note of how
/// much was left out. Borrows when nothing needs changing.
pub fn escape_max(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max && !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len().min(max) + 32);
    for (at, c) in text.char_indices() {
        if out.len() >= max {
            let _ = write!(out, "… ({} more bytes)", text.len() - at);
            return Cow::Owned(out);
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// [`escape_max`] with the field limit, for values written to stderr outside `tracing` (the
/// run summary).
pub fn escape(text: &str) -> Cow<'_, str> {
    escape_max(text, MAX_FIELD_BYTES)
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Formats an event's fields as the default compact formatter does (`message key=value ...`),
/// with every value passed through [`escape_max`].
#[derive(Debug, Clone, Copy, Default)]
pub struct EscapedFields;

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut visitor = EscapingVisitor {
            writer: &mut writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct EscapingVisitor<'a, 'writer> {
    writer: &'a mut Writer<'writer>,
    first: bool,
    result: fmt::Result,
}

impl EscapingVisitor<'_, '_> {
    fn write(&mut self, field: &Field, text: &str) {
        if self.result.is_err() || field.name().starts_with("log.") {
            return;
        }
        let separator = if self.first { "" } else { " " };
        self.first = false;
        self.result = if field.name() == "message" {
            write!(
                self.writer,
                "{separator}{}",
                escape_max(text, MAX_MESSAGE_BYTES)
            )
        } else {
            write!(
                self.writer,
                "{separator}{}={}",
                field.name(),
                escape_max(text, MAX_FIELD_BYTES)
            )
        };
    }
}

impl Visit for EscapingVisitor<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.write(field, value);
        } else {
            self.write(field, &format!("{value:?}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, &format!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use indicatif::{ProgressDrawTarget, TermLike};
    use std::sync::Arc;

    /// A terminal that records what is drawn on it, and the log lines written between.
    #[derive(Debug, Clone, Default)]
    struct Screen(Arc<Mutex<Vec<String>>>);

    impl Screen {
        fn push(&self, what: String) -> io::Result<()> {
            self.0.lock().push(what);
            Ok(())
        }
    }

    impl TermLike for Screen {
        fn width(&self) -> u16 {
            80
        }
        fn move_cursor_up(&self, n: usize) -> io::Result<()> {
            self.push(format!("up {n}"))
        }
        fn move_cursor_down(&self, n: usize) -> io::Result<()> {
            self.push(format!("down {n}"))
        }
        fn move_cursor_right(&self, _: usize) -> io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> io::Result<()> {
            self.push(format!("bar {s}"))
        }
        fn write_str(&self, s: &str) -> io::Result<()> {
            self.push(format!("bar {s}"))
        }
        fn clear_line(&self) -> io::Result<()> {
            self.push("clear".into())
        }
        fn flush(&self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Write for Screen {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.push(format!("log {}", String::from_utf8_lossy(buf)))?;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_log_line_lifts_the_progress_bar_and_it_is_redrawn_below() {
        let screen = Screen::default();
        let bar = ProgressBar::with_draw_target(
            Some(10),
            ProgressDrawTarget::term_like(Box::new(screen.clone())),
        );
        bar.set_position(3);
        bar.tick();
        screen.0.lock().clear();
        write_around(Some(&bar), b"WARN retrying\n", &mut screen.clone()).unwrap();
        let seen = screen.0.lock().clone();
        let log = seen.iter().position(|s| s.starts_with("log ")).unwrap();
        assert!(
            seen[..log].iter().any(|s| s == "clear"),
            "the bar is cleared before the line: {seen:?}"
        );
        assert!(
            seen[log + 1..].iter().any(|s| s.starts_with("bar ")),
            "and drawn again after it: {seen:?}"
        );
    }

    #[test]
    fn no_colours_off_a_terminal() {
        assert!(!use_colour(false));
    }

    #[test]
    fn control_characters_are_escaped_and_long_values_cut() {
        assert!(matches!(escape("users"), Cow::Borrowed("users")));
        assert_eq!(
            escape("a\nERROR forged\r\u{1b}[31m\0\t\u{202e}z"),
            "a\\nERROR forged\\r\\u{1b}[31m\\0\\t\\u{202e}z"
        );
        let long = "é".repeat(600_000);
        let cut = escape(&long);
        assert!(cut.len() < MAX_FIELD_BYTES + 40, "{}", cut.len());
        assert!(cut.ends_with(" more bytes)"), "{cut}");
        assert!(cut.is_char_boundary(cut.len()));
    }
}

//! Logs go to stderr, never stdout (stdout is the Singer protocol).
//!
//! The level comes from `ROSTER_LOG` (a `tracing` filter such as `debug` or
//! `roster::http=debug`), else `<BINARY>_LOGLEVEL` / `LOGLEVEL` as the Meltano SDK reads them,
//! else `info`. `ROSTER_LOG_FORMAT=json` writes one JSON object per line for log shippers.
//!
//! Log lines carry values from the input and the vendor (stream names, keys, body excerpts).
//! Every message and field value passes [`escape`] on its way out ([`EscapedFields`]): control
//! characters (newlines, carriage returns, NUL, terminal escapes) are written as escapes, so a
//! value cannot forge a log line or drive the terminal, and a value is cut at a length that keeps
//! stderr readable. JSON lines are escaped by JSON itself.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{FormatFields, Writer};

/// The longest field value a log line shows, in bytes (a stream name, a key, a URL).
pub const MAX_FIELD_BYTES: usize = 1024;

/// The longest message a log line shows, in bytes: room for an error with its causes and a
/// body excerpt, not for a megabyte of input echoed back.
pub const MAX_MESSAGE_BYTES: usize = 4096;

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
        .with_writer(std::io::stderr)
        .with_target(false);
    let installed = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
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

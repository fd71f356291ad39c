//! Logs go to stderr, never stdout (stdout is the Singer protocol).
//!
//! The level comes from `ROSTER_LOG` (a `tracing` filter such as `debug` or
//! `roster::http=debug`), else `<BINARY>_LOGLEVEL` / `LOGLEVEL` as the Meltano SDK reads them,
//! else `info`. `ROSTER_LOG_FORMAT=json` writes one JSON object per line for log shippers.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

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

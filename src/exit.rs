//! Exit codes (CONTRACT.md) and the one line a failure prints.
//!
//! - `0`: success, also when records were rejected under `on_invalid: reject`.
//! - `1`: a runtime failure: the vendor unreachable past the retry budget, refused credentials,
//!   a record rejected under `on_invalid: fail`, or a protocol error in the input.
//! - `2`: a usage or config error, or a vendor without a list API given to the tap.
//! - `3`: `target-roster --verify` found drift: records the run wrote that the vendor does not
//!   hold, or holds with other values (the run itself succeeded).

use std::process::ExitCode;

use crate::config::ConfigError;

/// The exit code of a run whose `--verify` read-back found drift.
pub const DRIFT: u8 = 3;

/// Anything that knows which exit code it stands for.
pub trait ExitStatus {
    /// The process exit code.
    fn exit_code(&self) -> u8;
}

/// How a run of either binary ended badly.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The config is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The command line or the config asks for something roster cannot do.
    #[error("{0}")]
    Usage(String),
    /// The run started and failed.
    #[error("{0}")]
    Runtime(String),
    /// The run succeeded and `--verify` found drift.
    #[error("{0}")]
    Drift(String),
}

impl ExitStatus for RunError {
    fn exit_code(&self) -> u8 {
        match self {
            RunError::Config(_) | RunError::Usage(_) => 2,
            RunError::Runtime(_) => 1,
            RunError::Drift(_) => DRIFT,
        }
    }
}

impl RunError {
    /// Any error that knows its exit code, as a `RunError` with the same code.
    pub fn from_status<E: ExitStatus + std::error::Error + 'static>(err: &E) -> Self {
        match err.exit_code() {
            2 => RunError::Usage(one_line(err)),
            DRIFT => RunError::Drift(one_line(err)),
            _ => RunError::Runtime(one_line(err)),
        }
    }

    /// A runtime failure from any error, its sources joined into one line.
    pub fn runtime(err: &(dyn std::error::Error + 'static)) -> Self {
        RunError::Runtime(one_line(err))
    }
}

/// An error and its sources as one line: `a: b: c`, skipping sources already in the message.
pub fn one_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        let part = inner.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = inner.source();
    }
    text.replace('\n', " ")
}

/// Logs a failure as one line on stderr and turns the outcome into an exit code.
pub fn finish<E>(binary: &str, outcome: Result<(), E>) -> ExitCode
where
    E: ExitStatus + std::error::Error + 'static,
{
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{binary}: {}", one_line(&err));
            ExitCode::from(err.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot reach userflow")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn joins_sources_into_one_line() {
        let err = Outer(std::io::Error::other("connection refused\nby peer"));
        assert_eq!(
            one_line(&err),
            "cannot reach userflow: connection refused by peer"
        );
    }

    #[test]
    fn maps_exit_codes() {
        assert_eq!(RunError::Usage("x".into()).exit_code(), 2);
        assert_eq!(RunError::Runtime("x".into()).exit_code(), 1);
        assert_eq!(RunError::Drift("x".into()).exit_code(), 3);
        let config = ConfigError::NoVendor {
            valid: String::new(),
        };
        assert_eq!(RunError::from(config).exit_code(), 2);
    }
}

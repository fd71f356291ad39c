//! The one way the tests start roster's binaries: a command builder that sets the environment
//! every run wants (`ROSTER_ZERO_DELAYS=1`, since backoff only slows tests down while
//! client-side pacing stays real; no inherited `RUST_LOG`/`ROSTER_LOG`/`ROSTER_LOG_FORMAT`; no
//! colour), and runs the child to its end ([`Bin::output`], [`Bin::run`]) or hands back the
//! [`Command`] for a test that drives the child itself ([`Bin::command`]).
//!
//! ```ignore
//! let out = bin::target().config(&path).input_text(&singer).log("warn").output();
//! let run = bin::tap().config(&path).real_delays().run(Duration::from_secs(60));
//! ```
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::process::{Finished, run_with_input};

/// `tap-roster`.
pub const TAP: &str = env!("CARGO_BIN_EXE_tap-roster");
/// `target-roster`.
pub const TARGET: &str = env!("CARGO_BIN_EXE_target-roster");
/// `roster-sandbox`.
pub const SANDBOX: &str = env!("CARGO_BIN_EXE_roster-sandbox");

/// The directory holding the freshly built `tap-roster`, `target-roster` and `roster-sandbox`,
/// to put first on a child's PATH (Meltano and shell pipelines find them by name there).
pub fn dir() -> PathBuf {
    Path::new(TAP).parent().unwrap().to_path_buf()
}

/// A run of one of roster's binaries being put together.
#[derive(Debug)]
pub struct Bin {
    command: Command,
    stdin: Option<Vec<u8>>,
}

/// `tap-roster`, with the usual environment.
pub fn tap() -> Bin {
    Bin::new(TAP).zero_delays(true)
}

/// `target-roster`, with the usual environment.
pub fn target() -> Bin {
    Bin::new(TARGET).zero_delays(true)
}

/// `roster-sandbox` (it has no delays to zero).
pub fn sandbox() -> Bin {
    Bin::new(SANDBOX)
}

impl Bin {
    /// `program` (one of [`TAP`], [`TARGET`], [`SANDBOX`]) with the usual environment and no
    /// delays set either way.
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        let mut command = Command::new(program);
        command
            .env_remove("ROSTER_ZERO_DELAYS")
            .env_remove("ROSTER_LOG")
            .env_remove("ROSTER_LOG_FORMAT")
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1");
        Self {
            command,
            stdin: None,
        }
    }

    /// `--config <path>`.
    pub fn config(self, path: impl AsRef<OsStr>) -> Self {
        self.arg("--config").arg(path)
    }

    /// Writes `config` to `dir/config.json` and passes it with `--config`.
    pub fn config_json(self, dir: &Path, config: &serde_json::Value) -> Self {
        let path = super::files::write_json(&dir.join("config.json"), config);
        self.config(path)
    }

    /// `--input <path>`.
    pub fn input(self, path: impl AsRef<OsStr>) -> Self {
        self.arg("--input").arg(path)
    }

    /// `--report <path>`.
    pub fn report(self, path: impl AsRef<OsStr>) -> Self {
        self.arg("--report").arg(path)
    }

    /// One argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.command.arg(arg);
        self
    }

    /// Several arguments.
    pub fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.command.args(args);
        self
    }

    /// An environment variable.
    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.command.env(key, value);
        self
    }

    /// Several environment variables.
    pub fn envs(mut self, vars: &[(&str, &str)]) -> Self {
        for (k, v) in vars {
            self.command.env(k, v);
        }
        self
    }

    /// Removes an environment variable.
    pub fn env_remove(mut self, key: &str) -> Self {
        self.command.env_remove(key);
        self
    }

    /// `ROSTER_LOG=<level>`.
    pub fn log(self, level: &str) -> Self {
        self.env("ROSTER_LOG", level)
    }

    /// Backoff with its real delays (`ROSTER_ZERO_DELAYS` unset): for a test of waiting itself.
    pub fn real_delays(self) -> Self {
        self.zero_delays(false)
    }

    /// `ROSTER_ZERO_DELAYS=1` when `zero`, unset otherwise.
    pub fn zero_delays(mut self, zero: bool) -> Self {
        if zero {
            self.command.env("ROSTER_ZERO_DELAYS", "1");
        } else {
            self.command.env_remove("ROSTER_ZERO_DELAYS");
        }
        self
    }

    /// target-roster's default ledger (docs/sync.md) in `dir`, kept across a test's runs: the
    /// way users run it. `.cargo/config.toml` turns the default ledger off for every other run,
    /// since tests start sandboxes on recycled ports and a shared ledger would skip records a
    /// later test expects to be sent.
    pub fn default_ledger_in(mut self, dir: impl AsRef<Path>) -> Self {
        self.command
            .env_remove("ROSTER_NO_DEFAULT_LEDGER")
            .env("XDG_STATE_HOME", dir.as_ref());
        self
    }

    /// The working directory.
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.command.current_dir(dir);
        self
    }

    /// `text` on stdin (by [`Bin::output`] and [`Bin::run`]); stdin is empty otherwise.
    pub fn input_text(mut self, text: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(text.into());
        self
    }

    /// The command as built, for a test that drives the child itself (signals, kills, reading
    /// stdout line by line). Input given with [`Bin::input_text`] is not used here.
    pub fn command(self) -> Command {
        self.command
    }

    /// Runs to the end with stdout and stderr captured through pipes.
    pub fn output(mut self) -> Output {
        let stdin = self.stdin.take();
        let mut command = self.command;
        command
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        let writer = stdin.map(|bytes| {
            let mut pipe = child.stdin.take().unwrap();
            // A child that exits early closes the pipe: not an error of the test's.
            std::thread::spawn(move || {
                let _ = pipe.write_all(&bytes);
            })
        });
        let out = child.wait_with_output().unwrap();
        if let Some(writer) = writer {
            writer.join().unwrap();
        }
        out
    }

    /// Runs to the end within `timeout` (or kills its process group and fails the test), output
    /// captured through files; see [`super::process::run_with_input`].
    pub fn run(mut self, timeout: Duration) -> Finished {
        match self.stdin.take() {
            None => run_with_input(&mut self.command, Stdio::null(), timeout),
            Some(bytes) => {
                let file = tempfile::tempfile().unwrap();
                let mut writer = &file;
                writer.write_all(&bytes).unwrap();
                use std::io::Seek;
                writer.seek(std::io::SeekFrom::Start(0)).unwrap();
                run_with_input(&mut self.command, file, timeout)
            }
        }
    }
}

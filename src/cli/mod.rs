//! The command lines of `tap-roster` and `target-roster`, as the Singer spec and Meltano expect
//! them, and what every run shares: logging to stderr, `--about`, and exit codes.
//!
//! The binaries in `src/bin` only parse arguments and call [`run_tap`] / [`run_target`].

pub mod about;
pub mod help;
pub mod logging;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, ValueEnum};
use clap_complete::Shell;

use crate::config::{Applies, ConfigSource, RawConfig};
use crate::exit::{self, RunError};
use crate::http::shutdown::{STOP_DEADLINE, Shutdown, Signals};
use crate::load::TargetRequest;
use crate::singer::SingerWriter;
use crate::tap::{TapAction, TapRequest};
use crate::vendors::{self, Resolved};

/// How `--about` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum AboutFormat {
    /// Plain text for people.
    #[default]
    Text,
    /// JSON, as the Meltano SDK prints it.
    Json,
    /// Markdown, for a README.
    Markdown,
}

/// `tap-roster`: reads users, groups and memberships from a vendor and writes Singer messages.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "tap-roster",
    version,
    about = help::TAP_ABOUT,
    long_about = help::TAP_LONG_ABOUT,
    after_help = "Run with --help for examples and exit codes.",
    after_long_help = help::TAP_EXAMPLES
)]
pub struct TapArgs {
    /// Config JSON file; repeat to merge (later files win). `ENV` reads TAP_ROSTER_* variables.
    #[arg(long = "config", value_name = "FILE|ENV")]
    pub config: Vec<ConfigSource>,
    /// State JSON from an earlier run; unfinished streams resume from their bookmarks.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Catalog JSON with stream and property selection.
    #[arg(long, value_name = "FILE", conflicts_with = "properties")]
    pub catalog: Option<PathBuf>,
    /// Legacy name for --catalog.
    #[arg(long, value_name = "FILE")]
    pub properties: Option<PathBuf>,
    /// Print the catalog of the vendor's streams and exit.
    #[arg(long)]
    pub discover: bool,
    /// Print what this tap is and its settings, then exit.
    #[arg(long)]
    pub about: bool,
    /// Format of --about.
    #[arg(long, value_enum, default_value_t = AboutFormat::Text, requires = "about")]
    pub format: AboutFormat,
    /// Make one cheap authenticated call to the vendor, then exit 0 (it worked) or 1.
    #[arg(long, conflicts_with = "discover")]
    pub test: bool,
    /// Print a completion script for SHELL (bash, zsh, fish, elvish, powershell) and exit.
    #[arg(long, value_name = "SHELL", value_enum)]
    pub completions: Option<Shell>,
}

impl TapArgs {
    /// The catalog file, by either name.
    pub fn catalog_path(&self) -> Option<&PathBuf> {
        self.catalog.as_ref().or(self.properties.as_ref())
    }
}

/// `target-roster`: reads Singer messages and writes them to one vendor.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "target-roster",
    version,
    about = help::TARGET_ABOUT,
    long_about = help::TARGET_LONG_ABOUT,
    after_help = "Run with --help for examples and exit codes.",
    after_long_help = help::TARGET_EXAMPLES
)]
pub struct TargetArgs {
    /// Config JSON file; repeat to merge (later files win). `ENV` reads TARGET_ROSTER_* variables.
    #[arg(long = "config", value_name = "FILE|ENV")]
    pub config: Vec<ConfigSource>,
    /// Read messages from this file instead of stdin.
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Print what this target is and its settings, then exit.
    #[arg(long)]
    pub about: bool,
    /// Format of --about.
    #[arg(long, value_enum, default_value_t = AboutFormat::Text, requires = "about")]
    pub format: AboutFormat,
    /// Validate and map every record and show the requests it would send; send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Where --dry-run writes the requests it would send (default: stderr).
    #[arg(long, value_name = "FILE", requires = "dry_run")]
    pub dry_run_output: Option<PathBuf>,
    /// Write the run report (per-stream counts, requests, retries, 429s, rate-limit waits) as JSON.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// The longest input line accepted, in bytes (Meltano's default limit is 50 MiB).
    #[arg(long, value_name = "BYTES", default_value_t = crate::singer::DEFAULT_MAX_LINE_BYTES)]
    pub max_line_bytes: usize,
    /// Send every record for this run, unchanged or not, and refresh the ledger (change
    /// detection is off for the run).
    #[arg(long, conflicts_with = "test")]
    pub full_resync: bool,
    /// Read the input and what the destination holds now (reads where the vendor can read, the
    /// ledger elsewhere) and print per stream what a run would create, update (with the fields
    /// that change), leave unchanged and delete, with the API calls and an ETA; send no write.
    #[arg(long, conflicts_with_all = ["test", "dry_run"])]
    pub plan: bool,
    /// Where --plan writes one JSON line per record with its action and field diff (created
    /// 0600).
    #[arg(long, value_name = "FILE", requires = "plan")]
    pub plan_output: Option<PathBuf>,
    /// After the run, read back what it wrote where the vendor can read and report drift
    /// (records missing, fields that differ); drift exits 3.
    #[arg(long, conflicts_with_all = ["test", "dry_run", "plan"])]
    pub verify: bool,
    /// sync_mode mirror: make this run's deletes even past max_deletes or max_delete_ratio.
    #[arg(long, conflicts_with = "test")]
    pub force_deletes: bool,
    /// Send one request that checks the credentials and the base URL, read-only where the
    /// vendor has a read endpoint; read no input, then exit 0 (it worked) or 1.
    #[arg(long, conflicts_with_all = ["dry_run", "input"])]
    pub test: bool,
    /// Print a completion script for SHELL (bash, zsh, fish, elvish, powershell) and exit.
    #[arg(long, value_name = "SHELL", value_enum)]
    pub completions: Option<Shell>,
}

/// Loads and checks the config for `binary`.
pub fn load_config(
    sources: &[ConfigSource],
    binary: Applies,
    require_credentials: bool,
) -> Result<Resolved, RunError> {
    if sources.is_empty() {
        return Err(RunError::Usage(
            "no config given: pass --config FILE (or --config ENV)".into(),
        ));
    }
    let prefix = match binary {
        Applies::Target => "TARGET_ROSTER_",
        _ => "TAP_ROSTER_",
    };
    let raw = RawConfig::load(sources, prefix)?;
    Ok(vendors::resolve(&raw, binary, require_credentials)?)
}

/// Runs `tap-roster` and returns its exit code.
pub fn run_tap(args: TapArgs) -> ExitCode {
    logging::init("tap-roster");
    if let Some(shell) = args.completions {
        let script = help::completions(&mut TapArgs::command(), shell);
        return exit::finish("tap-roster", print_text(&script));
    }
    if args.about {
        return exit::finish("tap-roster", about::print(Applies::Tap, args.format));
    }
    let action = if args.discover {
        TapAction::Discover
    } else if args.test {
        TapAction::Test
    } else {
        TapAction::Sync
    };
    // Discovery needs no credentials: Meltano runs it to list streams before config is
    // complete. A vendor without a list API is refused before credentials are checked.
    let config = match load_config(&args.config, Applies::Tap, false) {
        Ok(config) if !config.spec.listable() => {
            let message = vendors::not_listable_message(config.spec);
            return exit::finish("tap-roster", Err(RunError::Usage(message)));
        }
        Ok(config) if action == TapAction::Discover => config,
        Ok(_) => match load_config(&args.config, Applies::Tap, true) {
            Ok(config) => config,
            Err(err) => return exit::finish("tap-roster", Err(err)),
        },
        Err(err) => return exit::finish("tap-roster", Err(err)),
    };
    let request = TapRequest {
        config,
        action,
        state: args.state.clone(),
        catalog: args.catalog_path().cloned(),
    };
    let vendor = request.config.spec.name;
    let outcome = with_runtime(until_signal(Applies::Tap, crate::tap::run(request))).map_err(
        |err| match err {
            // A refused credential names the keys to check, as the target does.
            RunError::Runtime(text) if refused_credentials(&text) => RunError::Runtime(format!(
                "{vendor} refused the credentials ({}): {text}",
                vendors::credentials_hint(vendor)
            )),
            other => other,
        },
    );
    exit::finish("tap-roster", outcome)
}

/// True for an HTTP engine error about a 401 or 403 answer.
fn refused_credentials(text: &str) -> bool {
    [" answered 401 ", " answered 403 "]
        .iter()
        .any(|s| text.contains(s))
}

/// A run until it ends or a signal stops it, listening from the start (a signal while the
/// config loads or the writer starts must not kill the process unannounced). On the first
/// SIGTERM or SIGINT every wait ends (the process's [`Shutdown`] flag) and a request on the wire
/// gets the grace; the run then ends with exit 1 within [`STOP_DEADLINE`]. A second signal
/// stops at once. The target's engine also hears the signals and ends with its own message and
/// report; the tap prints a state after each page's records, so the last state printed is
/// always safe to resume from.
async fn until_signal<F, E>(binary: Applies, run: F) -> Result<(), RunError>
where
    F: std::future::Future<Output = Result<(), E>>,
    E: exit::ExitStatus + std::error::Error + 'static,
{
    let mut signals = Signals::new();
    tokio::pin!(run);
    let signal = tokio::select! {
        biased;
        result = &mut run => return result.map_err(|err| RunError::from_status(&err)),
        Some(signal) = signals.recv() => signal,
    };
    if binary == Applies::Tap {
        tracing::warn!(
            "{signal}: reading nothing new; the last state printed is where a rerun resumes"
        );
    }
    if binary == Applies::Target {
        // The engine's own signal listener (a task) hands the signal to the engine's loop: let
        // it run, and the loop take the signal, before the shutdown below stops the requests.
        // On the target's one-worker runtime this task would otherwise always run first, and a
        // write stopped by the shutdown would reach the loop before the signal did (the run
        // then ended as "unreachable" instead of "stopped by SIGTERM").
        for _ in 0..2 {
            tokio::task::yield_now().await;
            if let std::task::Poll::Ready(result) = futures::poll!(&mut run) {
                return result.map_err(|err| RunError::from_status(&err));
            }
        }
    }
    Shutdown::process().begin();
    let stopped = || {
        RunError::Runtime(format!(
            "stopped by {signal}; the last state printed covers every record before it, and a rerun from it does the rest"
        ))
    };
    tokio::select! {
        biased;
        Some(again) = signals.recv() => {
            tracing::warn!("{again} again: stopping at once");
            // The target's engine stops at once too, and writes its state and report.
            if binary == Applies::Target
                && let Ok(result) = tokio::time::timeout(LAST_WORDS, &mut run).await
            {
                return result.map_err(|err| RunError::from_status(&err));
            }
        }
        result = &mut run => {
            return match result {
                Ok(()) => Ok(()),
                Err(err) if binary == Applies::Target => Err(RunError::from_status(&err)),
                Err(_) => Err(stopped()),
            };
        }
        () = tokio::time::sleep(STOP_DEADLINE + LAST_WORDS) => {
            tracing::warn!(
                "still running {} ms after the signal: stopping without what is in flight",
                (STOP_DEADLINE + LAST_WORDS).as_millis()
            );
        }
    }
    Err(stopped())
}

/// What a run gets after its deadline (or a second signal) to write its last state and report.
const LAST_WORDS: std::time::Duration = std::time::Duration::from_millis(200);

/// Runs `target-roster` and returns its exit code.
pub fn run_target(args: TargetArgs) -> ExitCode {
    logging::init("target-roster");
    if let Some(shell) = args.completions {
        let script = help::completions(&mut TargetArgs::command(), shell);
        return exit::finish("target-roster", print_text(&script));
    }
    if args.about {
        return exit::finish("target-roster", about::print(Applies::Target, args.format));
    }
    let config = match load_config(&args.config, Applies::Target, true) {
        Ok(config) => config,
        Err(err) => return exit::finish("target-roster", Err(err)),
    };
    if args.test {
        return exit::finish("target-roster", with_runtime(test_target(config)));
    }
    let request = TargetRequest {
        config,
        input: args.input.clone(),
        dry_run: args.dry_run,
        dry_run_output: args.dry_run_output.clone(),
        report: args.report.clone(),
        max_line_bytes: args.max_line_bytes,
        full_resync: args.full_resync,
        plan: args.plan,
        plan_output: args.plan_output.clone(),
        verify: args.verify,
        force_deletes: args.force_deletes,
    };
    exit::finish(
        "target-roster",
        with_target_runtime(until_signal(Applies::Target, crate::load::run(request))),
    )
}

/// `target-roster --test`: one request, one line on stderr saying whether it passed.
async fn test_target(config: Resolved) -> Result<(), crate::load::probe::TestError> {
    let line = crate::load::probe::test_connection(&config).await?;
    tracing::info!("{line}");
    Ok(())
}

/// Prints text on stdout (`--completions`); a closed stdout is not an error.
fn print_text(text: &str) -> Result<(), RunError> {
    match stdout().write_text(text) {
        Ok(()) | Err(crate::singer::WriteError::Closed) => Ok(()),
        Err(err) => Err(RunError::runtime(&err)),
    }
}

/// Runs an engine on a multi-threaded tokio runtime.
fn with_runtime<F, E>(future: F) -> Result<(), RunError>
where
    F: std::future::Future<Output = Result<(), E>>,
    E: exit::ExitStatus + std::error::Error + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| RunError::Runtime(format!("cannot start the async runtime: {err}")))?;
    runtime
        .block_on(future)
        .map_err(|err| RunError::from_status(&err))
}

/// Runs the target's engine on a multi-threaded tokio runtime of one worker, as a task of that
/// worker rather than on this thread.
///
/// The engine's loop, the writes it hands over and hyper's connections then share one thread:
/// a write's answer wakes the engine without a cross-thread hand-off. With the default runtime
/// (a worker per core, the loop on the main thread) every upsert's answer crossed threads, and
/// the idle worker was woken and parked again: 58,000 `futex` calls for 30,000 upserts, 685
/// now, and 1.25–1.6 → 1.04–1.26 times the sandbox's CPU (BENCHMARKS.md, "Issue 15, dawn: write"). The
/// other core parses the input (its own threads, `load::input`); the requests in flight, and so
/// the rate limiter's concurrency, are unchanged (they are futures, not threads).
fn with_target_runtime<F, E>(future: F) -> Result<(), RunError>
where
    F: std::future::Future<Output = Result<(), E>> + Send + 'static,
    E: exit::ExitStatus + std::error::Error + Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|err| RunError::Runtime(format!("cannot start the async runtime: {err}")))?;
    match runtime.block_on(runtime.spawn(future)) {
        Ok(result) => result.map_err(|err| RunError::from_status(&err)),
        // A panic in the run: carried on as it would have been on this thread.
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Err(err) => Err(RunError::Runtime(format!("the run was cancelled: {err}"))),
    }
}

/// The one stdout writer of this process.
pub fn stdout() -> SingerWriter {
    SingerWriter::stdout()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_flags_as_meltano_passes_them() {
        let args = TapArgs::try_parse_from([
            "tap-roster",
            "--config",
            "a.json",
            "--config",
            "ENV",
            "--state",
            "s.json",
            "--discover",
        ])
        .unwrap();
        assert_eq!(
            args.config,
            vec![ConfigSource::File("a.json".into()), ConfigSource::Env]
        );
        assert!(args.discover && args.state.is_some());
        let legacy =
            TapArgs::try_parse_from(["tap-roster", "--config", "c", "--properties", "p.json"])
                .unwrap();
        assert_eq!(legacy.catalog_path(), Some(&PathBuf::from("p.json")));
        assert!(
            TapArgs::try_parse_from(["tap-roster", "--catalog", "a", "--properties", "b"]).is_err()
        );
        let about = TapArgs::try_parse_from(["tap-roster", "--about", "--format", "json"]).unwrap();
        assert_eq!(about.format, AboutFormat::Json);
        assert!(
            TapArgs::try_parse_from(["tap-roster", "--format", "json"]).is_err(),
            "--format needs --about"
        );
    }

    #[test]
    fn target_flags() {
        let args = TargetArgs::try_parse_from([
            "target-roster",
            "--config",
            "c.json",
            "--input",
            "in.jsonl",
            "--dry-run",
        ])
        .unwrap();
        assert!(args.dry_run);
        assert_eq!(args.max_line_bytes, crate::singer::DEFAULT_MAX_LINE_BYTES);
        assert!(TargetArgs::try_parse_from(["target-roster", "--dry-run-output", "x"]).is_err());
        let test =
            TargetArgs::try_parse_from(["target-roster", "--config", "c", "--test"]).unwrap();
        assert!(test.test);
        assert!(
            TargetArgs::try_parse_from(["target-roster", "--test", "--dry-run"]).is_err(),
            "--test sends one request; --dry-run sends none"
        );
    }

    #[test]
    fn each_binary_describes_itself_with_examples() {
        for (mut command, name, verb) in [
            (TapArgs::command(), "tap-roster", "Read "),
            (TargetArgs::command(), "target-roster", "Write "),
        ] {
            let short = command.render_help().to_string();
            assert!(short.starts_with(verb), "{name} -h: {short}");
            assert!(
                !short.contains(env!("CARGO_PKG_DESCRIPTION")),
                "{name} -h shows the crate's description"
            );
            let long = command.render_long_help().to_string();
            for part in ["Examples:", "Exit status:", "--test", "--completions"] {
                assert!(long.contains(part), "{name} --help lacks {part}");
            }
        }
        let tap = TapArgs::command().render_long_help().to_string();
        assert!(tap.contains("--discover > catalog.json") && tap.contains("--state state.json"));
        let target = TargetArgs::command().render_long_help().to_string();
        assert!(target.contains("--dry-run --input") && target.contains("rejects-appcues.ndjson"));
    }

    #[test]
    fn completions_for_every_common_shell() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            for (mut command, name) in [
                (TapArgs::command(), "tap-roster"),
                (TargetArgs::command(), "target-roster"),
            ] {
                let script = help::completions(&mut command, shell);
                assert!(script.contains(name), "{shell} {name}");
                let config = if shell == Shell::Fish {
                    "-l config"
                } else {
                    "--config"
                };
                assert!(script.contains(config), "{shell} {name}: {script}");
            }
        }
        let args = TapArgs::try_parse_from(["tap-roster", "--completions", "zsh"]).unwrap();
        assert_eq!(args.completions, Some(Shell::Zsh));
    }

    #[test]
    fn the_target_runs_as_a_task_of_a_one_worker_runtime() {
        // The engine, its writes and their connections on one thread: not on this thread, and
        // with no second worker to hand answers to (BENCHMARKS.md, "Issue 15, dawn: write").
        let caller = std::thread::current().id();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
        let inside = seen.clone();
        with_target_runtime(async move {
            let handle = tokio::runtime::Handle::current();
            let here = std::thread::current().id();
            // A task spawned by the run (a write) runs on the same thread.
            let task = tokio::spawn(async { std::thread::current().id() }).await;
            *inside.lock().unwrap() = Some((handle.metrics().num_workers(), here, task.ok()));
            Ok::<(), RunError>(())
        })
        .unwrap();
        let (workers, thread, task) = seen.lock().unwrap().take().unwrap();
        assert_eq!(workers, 1);
        assert_ne!(thread, caller);
        assert_eq!(task, Some(thread));
    }

    #[test]
    fn the_target_runtime_passes_the_runs_error_on() {
        let err =
            with_target_runtime(async { Err::<(), RunError>(RunError::Runtime("boom".into())) })
                .unwrap_err();
        assert!(err.to_string().contains("boom"), "{err}");
    }
}

//! What `-h` and `--help` say: each binary's own description (not the crate's), and with
//! `--help` a manual page's worth: what it does, where settings come from, exit codes, and an
//! example for each common task. Shell completions for `--completions SHELL` are generated from
//! the same clap definitions, so they always match the flags.

/// `tap-roster -h`.
pub const TAP_ABOUT: &str = "Read users, groups and group memberships from Userflow, Guru, Guru SCIM or any SCIM 2.0 service, as Singer messages on stdout";

/// `tap-roster --help`, before the options.
pub const TAP_LONG_ABOUT: &str = "\
tap-roster reads users, groups and group memberships from a vendor with a list API (userflow,
guru, guru_scim, scim) and writes them to stdout as Singer SCHEMA, RECORD and STATE messages.
A STATE follows every page, so a run given the last STATE of an interrupted one (--state)
resumes at the page where it stopped. Logs go to stderr; stdout carries Singer messages only.

Settings come from --config FILE (repeat it: later files win) and, with --config ENV, from
TAP_ROSTER_<KEY> variables, which beat files. `tap-roster --about` lists every setting;
docs/configuration.md has the same reference with types and defaults.";

/// `tap-roster --help`, after the options.
pub const TAP_EXAMPLES: &str = "\
Examples:
  List the streams (Meltano runs this; no credentials needed):
    tap-roster --config samples/tap-userflow.json --discover > catalog.json

  Check the credentials and the base URL with one request (exit 0 or 1):
    tap-roster --config samples/tap-userflow.json --test

  Read everything into a file:
    tap-roster --config samples/tap-userflow.json > userflow.singer

  Resume an interrupted run from its last STATE, reading only the selected streams:
    tail -n 1 userflow.singer > state.json
    tap-roster --config samples/tap-userflow.json --state state.json --catalog catalog.json

  Take the config from the environment:
    TAP_ROSTER_VENDOR=scim TAP_ROSTER_BASE_URL=https://scim.example.com/v2 \\
      TAP_ROSTER_BEARER_TOKEN=... tap-roster --config ENV

  Pipe into target-roster (any listable vendor into any writable one):
    tap-roster --config samples/tap-scim.json | target-roster --config samples/target-userflow.json

  Print the settings as Meltano reads them, or install shell completions:
    tap-roster --about --format json
    tap-roster --completions bash > ~/.local/share/bash-completion/completions/tap-roster

Exit status:
  0  success
  1  runtime failure: the vendor unreachable past the retry budget, credentials refused,
     stdout closed mid-message
  2  usage or config error, or a vendor without a list API (userguiding, userpilot, appcues)

Environment:
  ROSTER_LOG         log level or filter (error, warn, info, debug; default info);
                     TAP_ROSTER_LOGLEVEL and LOGLEVEL, as Meltano sets them, work too
  ROSTER_LOG_FORMAT  json: one JSON object per log line on stderr";

/// `target-roster -h`.
pub const TARGET_ABOUT: &str = "Write Singer users, groups, memberships and events to UserGuiding, Userflow, Userpilot, Appcues, Guru or any SCIM 2.0 service";

/// `target-roster --help`, before the options.
pub const TARGET_LONG_ABOUT: &str = "\
target-roster reads Singer messages (stdin, or --input FILE) and writes them to one vendor
(userguiding, userflow, userpilot, appcues, guru, guru_scim, scim). It validates each record
against its stream's SCHEMA, sends writes for one key in input order, and prints a STATE on
stdout only once every record before it was accepted or rejected by the vendor. Records it
cannot deliver go, with the reason, to the reject file (reject_file), which replays as input.
Logs and the run's summary go to stderr.

Settings come from --config FILE (repeat it: later files win) and, with --config ENV, from
TARGET_ROSTER_<KEY> variables, which beat files. `target-roster --about` lists every setting;
docs/configuration.md has the same reference with types and defaults.";

/// `target-roster --help`, after the options.
pub const TARGET_EXAMPLES: &str = "\
Examples:
  Check the credentials and the base URL with one request (exit 0 or 1):
    target-roster --config samples/target-appcues.json --test

  Copy a listable vendor into another one:
    tap-roster --config samples/tap-userflow.json | target-roster --config samples/target-appcues.json

  Load a file and keep the run's counts as JSON:
    target-roster --config samples/target-userflow.json --input users.singer --report report.json

  See the requests a run would send, sending nothing:
    target-roster --config samples/target-userpilot.json --dry-run --input users.singer

  See what a run would create, update and delete against what the vendor holds now:
    target-roster --config samples/target-userflow.json --plan --input users.singer

  Read back what a run wrote (exit 3 when the vendor holds something else):
    target-roster --config samples/target-userflow.json --input users.singer --verify

  Replay the records an earlier run rejected:
    target-roster --config samples/target-appcues.json --input rejects-appcues.ndjson

  Reverse ETL from a warehouse table (keep the last STATE for the next run):
    tap-postgres --config postgres.json --catalog catalog.json \\
      | target-roster --config samples/target-appcues.json | tail -n 1 > state.json

  Print the settings as Meltano reads them, or install shell completions:
    target-roster --about --format json
    target-roster --completions zsh > ~/.zfunc/_target-roster

Exit status:
  0  success, also when records were rejected under on_invalid: reject (see the summary)
  1  runtime failure: the vendor unreachable past the retry budget, credentials refused, a
     record rejected under on_invalid: fail, a protocol error in the input, a failed --test
  2  usage or config error
  3  --verify found drift: records the run wrote are missing or differ at the vendor

Environment:
  ROSTER_LOG         log level or filter (error, warn, info, debug; default info);
                     TARGET_ROSTER_LOGLEVEL and LOGLEVEL, as Meltano sets them, work too
  ROSTER_LOG_FORMAT  json: one JSON object per log line on stderr";

/// The completion script of `command` for `shell`.
pub fn completions(command: &mut clap::Command, shell: clap_complete::Shell) -> String {
    let name = command.get_name().to_string();
    let mut out = Vec::new();
    clap_complete::generate(shell, command, name, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

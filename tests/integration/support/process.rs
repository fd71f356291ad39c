//! Child processes: free ports, children killed when the test ends, runs to completion with
//! their output captured (through files) and a timeout that kills the whole process group, and
//! shell pipelines as a user types them. The binaries themselves are started through
//! [`super::bin`].
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr
)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// True on CI (`CI` set), where a missing prerequisite is a failure, not a skip.
pub fn on_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Skips the current test with a note, or fails it on CI.
pub fn skip_or_fail(why: &str) {
    assert!(!on_ci(), "required on CI: {why}");
    eprintln!("SKIPPED: {why}");
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A child process that is killed (and reaped) when dropped.
#[derive(Debug)]
pub struct Guard(pub Child);

impl Guard {
    /// Spawns `command`, killed when the guard is dropped.
    pub fn spawn(command: &mut Command) -> Self {
        Self(command.spawn().unwrap())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `dirs` followed by the current PATH, for a child's `PATH`.
pub fn path_with(dirs: &[&Path]) -> std::ffi::OsString {
    let current = std::env::var_os("PATH").unwrap_or_default();
    let mut all: Vec<PathBuf> = dirs.iter().map(|d| d.to_path_buf()).collect();
    all.extend(std::env::split_paths(&current));
    std::env::join_paths(all).unwrap()
}

/// What a finished child printed, and how it ended.
#[derive(Debug)]
pub struct Finished {
    /// The exit status.
    pub status: std::process::ExitStatus,
    /// Everything on stdout (lossy UTF-8).
    pub stdout: String,
    /// Everything on stderr (lossy UTF-8).
    pub stderr: String,
}

impl Finished {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Panics with both outputs unless the child exited 0.
    #[track_caller]
    pub fn assert_success(&self, what: &str) -> &Self {
        assert!(
            self.success(),
            "{what} failed ({}):\n{}",
            self.status,
            self.both()
        );
        self
    }

    /// stdout and stderr, labelled, for assertion messages.
    pub fn both(&self) -> String {
        format!("--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr)
    }
}

/// Runs `command` to completion with stdin from `/dev/null`; see [`run_with_input`].
pub fn run(command: &mut Command, timeout: Duration) -> Finished {
    run_with_input(command, Stdio::null(), timeout)
}

/// Runs `command` to completion with `stdin` as its input and stdout and stderr captured
/// (through files, so a chatty child never blocks on a full pipe). The child leads its own
/// process group; past `timeout` the whole group (the child and whatever it started, such as
/// Meltano's plugins) is killed and the test fails with what it printed.
pub fn run_with_input(
    command: &mut Command,
    stdin: impl Into<Stdio>,
    timeout: Duration,
) -> Finished {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut child = command
        .stdin(stdin)
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > timeout {
            kill_group(child.id());
            let _ = child.wait();
            let read = |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned();
            panic!(
                "{command:?} did not finish within {timeout:?}; killed it\n--- stdout\n{}\n--- stderr\n{}",
                read(&out_path),
                read(&err_path)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Grandchildren that outlived the child would keep a test's ports and files busy.
    kill_group(child.id());
    let read = |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned();
    Finished {
        status,
        stdout: read(&out_path),
        stderr: read(&err_path),
    }
}

/// SIGKILL to every process of the group `pgid` (no-op when it is gone).
pub fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Copies the directory tree `from` into `to` (created), skipping names in `skip`.
pub fn copy_tree(from: &Path, to: &Path, skip: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if skip.iter().any(|s| name == *s) {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target, skip);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Runs a shell pipeline as a user would type it: `script` in bash with `set -euo pipefail`,
/// roster's freshly built binaries and then `path` first on PATH, and `vars` (file names) in
/// its environment so the script needs no quoting.
pub fn pipeline(
    script: &str,
    path: &[&Path],
    vars: &[(&str, &Path)],
    timeout: Duration,
) -> Finished {
    let bin = super::bin::dir();
    let dirs: Vec<&Path> = std::iter::once(bin.as_path())
        .chain(path.iter().copied())
        .collect();
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .env("PATH", path_with(&dirs));
    for (name, value) in vars {
        cmd.env(name, value);
    }
    run(&mut cmd, timeout)
}

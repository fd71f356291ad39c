//! Shared helpers for integration tests: Python virtualenvs with tools from PyPI, free ports,
//! and child processes that are killed when the test ends.
//!
//! Include it with `mod support;` from a test file. Not every test uses every helper.
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

/// The python3 to build virtualenvs with, if there is one.
pub fn python3() -> Option<PathBuf> {
    let candidates = [std::env::var("ROSTER_PYTHON").ok(), Some("python3".into())];
    candidates
        .into_iter()
        .flatten()
        .map(PathBuf::from)
        .find(|python| {
            Command::new(python)
                .args([
                    "-c",
                    "import venv, sys; sys.exit(sys.version_info < (3, 9))",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

/// A virtualenv named `name` with `packages` installed from PyPI, created once and reused
/// (under the Cargo target directory). `None` when there is no usable Python (the caller skips,
/// or fails on CI). Concurrent callers wait for one another.
pub fn venv(name: &str, packages: &[&str]) -> Option<PathBuf> {
    let python = python3()?;
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("venvs");
    std::fs::create_dir_all(&root).unwrap();
    let fingerprint = format!("{:x}", fnv1a(packages.join("\n").as_bytes()));
    let dir = root.join(format!("{name}-{fingerprint}"));
    let ready = dir.join(".roster-ready");
    let _lock = DirLock::acquire(&root.join(format!("{name}.lock")));
    if ready.exists() {
        return Some(dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let status = Command::new(&python)
        .args(["-m", "venv"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success(), "python3 -m venv {} failed", dir.display());
    let pip = dir.join("bin/pip");
    let status = Command::new(&pip)
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--upgrade",
            "pip",
        ])
        .status()
        .unwrap();
    assert!(status.success(), "pip self-upgrade failed");
    let output = Command::new(&pip)
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(packages)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "pip install {packages:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::write(&ready, packages.join("\n")).unwrap();
    Some(dir)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A lock between processes: a directory that exists while someone holds it.
struct DirLock(PathBuf);

impl DirLock {
    fn acquire(path: &Path) -> Self {
        let started = Instant::now();
        loop {
            match std::fs::create_dir(path) {
                Ok(()) => return Self(path.to_path_buf()),
                Err(_) if started.elapsed() > Duration::from_secs(900) => {
                    // A holder that died left the lock behind; take it over.
                    return Self(path.to_path_buf());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
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

/// The directory holding the freshly built `tap-roster`, `target-roster` and `roster-sandbox`,
/// to put first on a child's PATH (Meltano and shell pipelines find them by name there).
pub fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_tap-roster"))
        .parent()
        .unwrap()
        .to_path_buf()
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

/// The Singer messages of a tap's stdout, one JSON value per non-empty line.
pub fn singer_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("line {}: {e}: {l}", i + 1))
        })
        .collect()
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
    let bin = bin_dir();
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

/// Writes `value` as pretty JSON to `path` and returns the path.
pub fn write_json(path: &Path, value: &serde_json::Value) -> PathBuf {
    std::fs::write(path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    path.to_path_buf()
}

/// roster's wheel, built once from this checkout through pip's PEP 517 route (the one
/// `pip install .` takes, with maturin from `pyproject.toml`), and reused until a source file
/// changes. It is built with the dev profile into the project's own target directory
/// (`MATURIN_PEP517_ARGS=--profile dev`, `CARGO_TARGET_DIR`), so it reuses what `cargo test`
/// compiled; users get the release profile. `None` when there is no usable Python. Concurrent
/// callers wait for one another.
pub fn wheel() -> Option<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let builder = venv("wheel-build", &["maturin>=1.5,<2"])?;
    let root = tmp.join("wheel");
    std::fs::create_dir_all(&root).unwrap();
    let _lock = DirLock::acquire(&root.join("build.lock"));
    let dir = root.join(format!("{:x}", source_fingerprint(manifest)));
    let find = |dir: &Path| {
        std::fs::read_dir(dir).ok()?.find_map(|e| {
            let path = e.ok()?.path();
            path.extension().is_some_and(|x| x == "whl").then_some(path)
        })
    };
    if dir.join(".roster-ready").exists() {
        if let Some(wheel) = find(&dir) {
            return Some(wheel);
        }
    }
    // Older wheels are ~35 MB each: keep only the current one.
    for entry in std::fs::read_dir(&root).unwrap().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) && entry.file_name() != "build.lock" {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let started = Instant::now();
    let target_dir = tmp.parent().unwrap();
    let built = run(
        Command::new(builder.join("bin/pip"))
            .args([
                "wheel",
                "--no-deps",
                "--no-build-isolation",
                "--disable-pip-version-check",
                "--wheel-dir",
            ])
            .arg(&dir)
            .arg(manifest)
            .env("PATH", path_with(&[&builder.join("bin")]))
            .env("CARGO_TARGET_DIR", target_dir)
            // Its own profile (a dev build in `target/wheel-test/`): the wheel's build never
            // replaces `target/debug/`'s binaries while other tests run them.
            .env("MATURIN_PEP517_ARGS", "--profile wheel-test"),
        Duration::from_secs(1800),
    );
    built.assert_success("pip wheel (maturin)");
    eprintln!("built roster's wheel in {:?}", started.elapsed());
    let wheel = find(&dir).unwrap_or_else(|| panic!("no wheel in {}", dir.display()));
    std::fs::write(dir.join(".roster-ready"), "").unwrap();
    Some(wheel)
}

/// A hash of what goes into the wheel: the crate's sources, manifests and README.
fn source_fingerprint(manifest: &Path) -> u64 {
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                walk(&path, files);
            } else {
                files.push(path);
            }
        }
    }
    let mut files: Vec<PathBuf> = ["Cargo.toml", "Cargo.lock", "pyproject.toml", "README.md"]
        .iter()
        .map(|f| manifest.join(f))
        .collect();
    walk(&manifest.join("src"), &mut files);
    files.sort();
    let mut bytes = Vec::new();
    for file in files {
        bytes.extend_from_slice(file.to_string_lossy().as_bytes());
        bytes.extend_from_slice(&std::fs::read(&file).unwrap_or_default());
    }
    fnv1a(&bytes)
}

//! Shared helpers for integration tests: Python virtualenvs with tools from PyPI, free ports,
//! and child processes that are killed when the test ends.
//!
//! Include it with `mod support;` from a test file. Not every test uses every helper.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

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
    candidates.into_iter().flatten().map(PathBuf::from).find(|python| {
        Command::new(python)
            .args(["-c", "import venv, sys; sys.exit(sys.version_info < (3, 9))"])
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
    let status = Command::new(&python).args(["-m", "venv"]).arg(&dir).status().unwrap();
    assert!(status.success(), "python3 -m venv {} failed", dir.display());
    let pip = dir.join("bin/pip");
    let status = Command::new(&pip)
        .args(["install", "--quiet", "--disable-pip-version-check", "--upgrade", "pip"])
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
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
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

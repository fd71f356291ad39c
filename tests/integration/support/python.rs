//! Python for the tests that use real tools: virtualenvs with packages from PyPI, created once
//! and reused, and roster's own wheel built through pip's PEP 517 route.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::process::{path_with, run};

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

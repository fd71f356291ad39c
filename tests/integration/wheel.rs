//! roster as a Python wheel: `pyproject.toml` builds it with maturin (`bindings = "bin"`), and
//! it must carry all three binaries as console programs, at Cargo.toml's version, so that
//! `pip install` (and Meltano's `pip_url`) puts them on a virtualenv's PATH.
//!
//! The wheel is built once per source change and shared (`support::wheel`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(600);
const BINARIES: [&str; 3] = ["tap-roster", "target-roster", "roster-sandbox"];

fn wheel() -> Option<PathBuf> {
    let wheel = support::wheel();
    if wheel.is_none() {
        support::skip_or_fail("python3 with venv is needed to build the wheel");
    }
    wheel
}

/// The names in the wheel (a zip), listed by Python's zipfile.
fn wheel_names(python: &std::path::Path, wheel: &std::path::Path) -> BTreeSet<String> {
    let listed = support::run(
        Command::new(python)
            .args([
                "-c",
                "import sys, zipfile; print('\\n'.join(zipfile.ZipFile(sys.argv[1]).namelist()))",
            ])
            .arg(wheel),
        TIMEOUT,
    );
    listed.assert_success("listing the wheel");
    listed.stdout.lines().map(str::to_string).collect()
}

#[test]
fn wheel_carries_the_three_binaries_at_the_crate_version_and_pip_puts_them_on_path() {
    let Some(wheel) = wheel() else { return };
    let version = env!("CARGO_PKG_VERSION");
    let file_name = wheel.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        file_name.starts_with(&format!("roster-{version}-py3-none-")),
        "{file_name}: named after the crate and its version"
    );

    // Every [[bin]] target is in the wheel's scripts, and nothing else is run from it.
    let python = support::python3().unwrap();
    let names = wheel_names(&python, &wheel);
    let scripts: BTreeSet<&str> = names
        .iter()
        .filter_map(|n| n.strip_prefix(&format!("roster-{version}.data/scripts/")))
        .collect();
    assert_eq!(
        scripts,
        BINARIES.into_iter().collect::<BTreeSet<_>>(),
        "the wheel's scripts: {names:?}"
    );

    // A fresh virtualenv, the wheel installed: the three programs are on its PATH.
    let dir = tempfile::tempdir().unwrap();
    let venv = dir.path().join("venv");
    support::run(
        Command::new(&python).args(["-m", "venv"]).arg(&venv),
        TIMEOUT,
    )
    .assert_success("python3 -m venv");
    support::run(
        Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--no-index",
                "--disable-pip-version-check",
            ])
            .arg(&wheel),
        TIMEOUT,
    )
    .assert_success("pip install the wheel");
    let path = support::path_with(&[&venv.join("bin")]);
    let run = |binary: &str, args: &[&str]| {
        let got = support::run(Command::new(binary).args(args).env("PATH", &path), TIMEOUT);
        got.assert_success(&format!("{binary} {args:?}"));
        got
    };
    for binary in BINARIES {
        let which = support::run(
            Command::new("sh")
                .args(["-c", &format!("command -v {binary}")])
                .env("PATH", &path),
            TIMEOUT,
        );
        assert_eq!(
            PathBuf::from(which.stdout.trim()),
            venv.join("bin").join(binary),
            "{binary} is found in the virtualenv"
        );
        let got = run(binary, &["--version"]);
        assert!(
            got.stdout.contains(version),
            "{binary} --version: {}",
            got.both()
        );
    }
    for binary in ["tap-roster", "target-roster"] {
        let got = run(binary, &["--about", "--format", "json"]);
        let about: Value = serde_json::from_str(&got.stdout)
            .unwrap_or_else(|e| panic!("{binary} --about: {e}\n{}", got.both()));
        assert_eq!(about["name"], binary, "{binary} --about");
        assert_eq!(about["version"], version, "{binary} --about");
    }
}

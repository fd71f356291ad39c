//! Signals: SIGTERM during a long `Retry-After` ends the run within 2 s with the last safe state
//! and exit 1 (it took 100 s); a second signal stops at once; and the sandbox, which counts
//! requests as they arrive, shows which requests the binary left without waiting for their
//! answer. For the target and the tap.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use roster_sandbox::{FailRule, Sandbox, Vendor};
use serde_json::{Value, json};

use crate::support::bin::{self, TAP, TARGET};
use crate::support::target::{self, lines, rec, schema, state};

/// What the contract promises between the first signal and the exit.
const PROMISED: Duration = Duration::from_secs(2);

/// A running binary with its stdout lines on a channel and stdin held open.
struct Running {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: Receiver<String>,
}

fn start(binary: &str, config: &std::path::Path, args: &[&str]) -> Running {
    let mut child = bin::Bin::new(binary)
        .config(config)
        .args(args)
        .log("warn")
        .real_delays()
        .command()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take();
    let (tx, stdout) = channel();
    let out = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in out.lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Running {
        child,
        stdin,
        stdout,
    }
}

impl Running {
    fn write(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the exit (at most `limit`, then kills it); returns the exit code, the time the
    /// exit took, every stdout line and stderr.
    fn wait(mut self, limit: Duration) -> (Option<i32>, Duration, Vec<String>, String) {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break Some(status);
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let took = started.elapsed();
        drop(self.stdin.take());
        let mut stderr = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut err, &mut stderr);
        }
        let lines: Vec<String> = self.stdout.iter().collect();
        if let Some(signal) = status.and_then(|s| {
            use std::os::unix::process::ExitStatusExt;
            s.signal()
        }) {
            stderr.push_str(&format!("\n(ended by signal {signal})"));
        }
        (status.and_then(|s| s.code()), took, lines, stderr)
    }
}

/// Polls `what` until it holds (at most 30 s).
fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// After the exit, every request that arrived at the sandbox was answered: the binary left
/// none on the wire.
fn assert_none_abandoned(sb: &Sandbox) {
    std::thread::sleep(Duration::from_millis(200));
    let stats = sb.stats();
    assert_eq!(
        stats.arrived, stats.total,
        "requests arrived but never answered before the exit: {stats:?}"
    );
}

fn posts_answered(sb: &Sandbox, status: u16) -> u64 {
    target::answered(sb, |r| {
        r.method == "POST" && r.path == "/userflow/users" && r.status == status
    })
}

#[test]
fn target_sigterm_during_a_long_retry_after_exits_within_2_s_with_the_last_safe_state() {
    let sb = target::sandbox();
    let dir = tempfile::tempdir().unwrap();
    let config = target::config(&sb, Vendor::Userflow, dir.path(), json!({}));
    let mut run = start(TARGET, &config, &[]);
    run.write(&lines(&[
        schema("users"),
        rec("users", json!({"id": "u0"})),
        state(json!({"covers": 1})),
    ]));
    let first = run.stdout.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&first).unwrap(),
        json!({"covers": 1})
    );
    // From now on the vendor answers 429 with Retry-After: 100.
    sb.faults().fail_next(
        FailRule::new("/userflow/users", 1000)
            .method("post")
            .status(429)
            .retry_after(100),
    );
    run.write(&lines(&[
        rec("users", json!({"id": "u1"})),
        state(json!({"covers": 2})),
    ]));
    wait_for("the 429", || posts_answered(&sb, 429) == 1);
    std::thread::sleep(Duration::from_millis(200));
    run.signal("TERM");
    let (code, took, stdout, stderr) = run.wait(Duration::from_secs(150));
    assert!(
        took < PROMISED,
        "the exit took {took:?} after SIGTERM: {stderr}"
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("stopped by SIGTERM"), "{stderr}");
    // The last state printed is the last safe one: u1 was never accepted.
    let last = stdout
        .last()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .unwrap_or_else(|| serde_json::from_str(&first).unwrap());
    assert_eq!(last, json!({"covers": 1}), "{stdout:?}");
    assert_eq!(posts_answered(&sb, 200), 1);
    assert_eq!(
        posts_answered(&sb, 429),
        1,
        "nothing was sent after the signal"
    );
    assert_none_abandoned(&sb);
}

#[test]
fn target_waits_the_grace_for_requests_on_the_wire_and_a_second_signal_stops_at_once() {
    // (b) Requests on the wire that answer within the grace are waited for: every arrival is
    // answered before the exit.
    let sb = target::builder()
        .latency(Some(Vendor::Userflow), Duration::from_millis(400))
        .start_background()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = target::config(&sb, Vendor::Userflow, dir.path(), json!({}));
    let mut run = start(TARGET, &config, &[]);
    let mut input = vec![schema("users")];
    for i in 0..200 {
        input.push(rec("users", json!({"id": format!("u{i}")})));
        input.push(state(json!({"covers": i + 1})));
    }
    run.write(&lines(&input));
    wait_for("requests in flight", || {
        let stats = sb.stats();
        stats.arrived > stats.total
    });
    run.signal("TERM");
    let (code, took, stdout, stderr) = run.wait(Duration::from_secs(60));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(took < PROMISED, "the exit took {took:?}: {stderr}");
    assert_none_abandoned(&sb);
    if let Some(last) = stdout.last() {
        let covers = serde_json::from_str::<Value>(last).unwrap()["covers"]
            .as_u64()
            .unwrap();
        assert!(covers <= posts_answered(&sb, 200), "{covers}");
    }

    // (c) With a vendor slower than the grace, the first signal would wait the grace; a second
    // signal stops at once, leaving the requests on the wire (the sandbox sees them arrive and
    // never answered), and the last state still covers only answered records.
    let sb = target::builder()
        .latency(Some(Vendor::Userflow), Duration::from_secs(20))
        .start_background()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = target::config(&sb, Vendor::Userflow, dir.path(), json!({}));
    let mut run = start(TARGET, &config, &[]);
    run.write(&lines(&input));
    wait_for("requests in flight", || sb.stats().arrived > 0);
    run.signal("TERM");
    std::thread::sleep(Duration::from_millis(100));
    run.signal("TERM");
    let (code, took, stdout, stderr) = run.wait(Duration::from_secs(60));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        took < Duration::from_millis(900),
        "the second signal took {took:?}: {stderr}"
    );
    assert!(stderr.contains("SIGTERM again"), "{stderr}");
    assert!(stdout.is_empty(), "no record was answered: {stdout:?}");
    let stats = sb.stats();
    assert!(
        stats.arrived > stats.total,
        "the sandbox shows the abandoned requests: {stats:?}"
    );
}

#[test]
fn tap_sigterm_during_a_long_retry_after_exits_within_2_s_with_the_last_safe_state() {
    let sb = Sandbox::builder()
        .users(30)
        .groups(3)
        .start_background()
        .unwrap();
    // Groups are read (they come first); then every users page answers 429 with Retry-After: 100.
    sb.faults().fail_next(
        FailRule::new("/userflow/users", 1000)
            .status(429)
            .retry_after(100),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(&config, sb.config(Vendor::Userflow).to_string()).unwrap();
    let run = start(TAP, &config, &[]);
    wait_for("the 429", || {
        target::answered(&sb, |r| r.path == "/userflow/users" && r.status == 429) > 0
    });
    std::thread::sleep(Duration::from_millis(200));
    run.signal("TERM");
    let (code, took, stdout, stderr) = run.wait(Duration::from_secs(150));
    assert!(took < PROMISED, "the exit took {took:?}: {stderr}");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("stopped by SIGTERM"), "{stderr}");
    // Whole lines only; every group was emitted, and the last state marks groups done: a rerun
    // resumes from it.
    let messages: Vec<Value> = stdout
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let groups = messages
        .iter()
        .filter(|m| m["type"] == "RECORD" && m["stream"] == "groups")
        .count();
    assert_eq!(groups, 3);
    let last_state = messages
        .iter()
        .rev()
        .find(|m| m["type"] == "STATE")
        .unwrap();
    assert!(
        last_state["value"]["bookmarks"]["groups"].is_object(),
        "{last_state}"
    );
    assert_eq!(
        target::answered(&sb, |r| r.path == "/userflow/users"),
        1,
        "nothing was requested after the signal"
    );
    assert_none_abandoned(&sb);
}

#[test]
fn tap_second_signal_stops_at_once() {
    // A vendor slower than the grace: the first signal would wait the grace for the page on the
    // wire; the second stops at once.
    let sb = Sandbox::builder()
        .users(30)
        .latency(Some(Vendor::Userflow), Duration::from_secs(20))
        .start_background()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(&config, sb.config(Vendor::Userflow).to_string()).unwrap();
    // On a starved machine the two `kill` processes can take longer to start than the grace,
    // and the tap then ends on the first signal before the second comes: such an attempt proves
    // nothing either way, so it is made again (at most three times).
    let mut attempts = 0;
    let (code, took, stdout, stderr) = loop {
        attempts += 1;
        let run = start(TAP, &config, &[]);
        wait_for("a page on the wire", || sb.stats().arrived > 0);
        let first = Instant::now();
        run.signal("TERM");
        std::thread::sleep(Duration::from_millis(100));
        run.signal("INT");
        let gap = first.elapsed();
        let out = run.wait(Duration::from_secs(60));
        if out.3.contains("SIGINT again") || gap < Duration::from_millis(1000) || attempts == 3 {
            break out;
        }
    };
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        took < Duration::from_millis(900),
        "the second signal took {took:?}: {stderr}"
    );
    assert!(stderr.contains("SIGINT again"), "{stderr}");
    assert!(
        stdout
            .iter()
            .all(|l| serde_json::from_str::<Value>(l).is_ok())
    );
    let stats = sb.stats();
    assert!(
        stats.arrived > stats.total,
        "the page on the wire was abandoned: {stats:?}"
    );
}

//! The bad-input corpus (`tests/fixtures/bad/`): every malformed or awkward input a tap, a
//! warehouse or a hand-written file can feed target-roster (and every bad `--state` the tap can
//! be given), each with its specific error or reject, the right exit code, and no panic.
//!
//! Each case runs the real binary against the sandbox with a reject file and `--report`, so a
//! reject is checked where a user finds it (the reject file entry: line and reason), and every
//! record read is accounted for: sent, rejected or skipped. The 60 MiB line is generated here,
//! not committed.
//!
//! Defined behaviours worth knowing (also in `tests/fixtures/bad/README.md`):
//! - a protocol error (invalid JSON or UTF-8, a RECORD before its SCHEMA, a message without a
//!   required field, an over-long line) exits 1 naming the line, after finishing everything
//!   before it and printing the last safe state; nothing after the bad line is sent;
//! - a bad record (wrong type, missing or null key, values the vendor cannot take, a record
//!   that repeats a JSON key) is rejected to the reject file with its line, the run goes on and
//!   exits 0;
//! - two records with the same primary key are both sent, in input order (per-key order is
//!   kept), so the vendor ends with the last one merged over the first;
//! - a stream roster does not know is skipped with a warning naming it, and counted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::{self, bin};

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use roster_sandbox::{Sandbox, Vendor};
use serde_json::{Value, json};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad")
}

/// What one case must produce.
#[derive(Debug, Clone, Default)]
struct Expect {
    /// Exit code.
    exit: i32,
    /// For exit 1: what stderr says, and the line it names.
    error: Option<(&'static str, u64)>,
    /// Reject file entries: (input line, part of the reason).
    rejects: Vec<(u64, &'static str)>,
    /// User ids the vendor must hold afterwards (nothing else is written).
    delivered: Vec<&'static str>,
    /// Records the report must count as skipped.
    skipped: u64,
    /// The last state line on stdout.
    state: Option<Value>,
    /// Extra text stderr must contain.
    says: Vec<&'static str>,
}

struct Case {
    file: &'static str,
    vendor: Vendor,
    expect: Expect,
    /// Config keys over the sandbox's.
    config: Value,
}

fn case(file: &'static str, expect: Expect) -> Case {
    Case {
        file,
        vendor: Vendor::Userflow,
        expect,
        config: json!({}),
    }
}

fn protocol(line: u64, says: &'static str, delivered: &[&'static str]) -> Expect {
    Expect {
        exit: 1,
        error: Some((says, line)),
        delivered: delivered.to_vec(),
        ..Expect::default()
    }
}

fn rejects(rejects: &[(u64, &'static str)], delivered: &[&'static str]) -> Expect {
    Expect {
        exit: 0,
        rejects: rejects.to_vec(),
        delivered: delivered.to_vec(),
        ..Expect::default()
    }
}

/// The corpus with what each file must produce.
fn cases() -> Vec<Case> {
    let u1_state = json!({"bookmarks": {"users": {"next_page": "u1"}}});
    vec![
        case(
            "truncated-json.singer",
            Expect {
                state: Some(u1_state.clone()),
                ..protocol(4, "invalid JSON", &["u1"])
            },
        ),
        case("invalid-utf8.singer", protocol(3, "invalid UTF-8", &["u1"])),
        case(
            "record-before-schema.singer",
            protocol(3, "before any SCHEMA", &["u1"]),
        ),
        case(
            "unknown-stream.singer",
            Expect {
                skipped: 1,
                says: vec!["\"invoices\" names no kind roster writes"],
                ..rejects(&[], &["u1"])
            },
        ),
        case(
            "wrong-types.singer",
            rejects(&[(2, "field email"), (3, "field active")], &["u3"]),
        ),
        case(
            "missing-key.singer",
            rejects(&[(2, "\"id\" is missing")], &["u2"]),
        ),
        // Arrays and objects where UserGuiding takes only scalars go as their JSON text under
        // the default `nested_values: json_string`, each field warned about once
        // (target_mapping covers `reject` and `drop`).
        Case {
            file: "userguiding-non-scalar.singer",
            vendor: Vendor::UserGuiding,
            expect: Expect {
                says: vec![
                    "field \"attributes.address\" holds an object",
                    "field \"tags\" holds an array",
                ],
                ..rejects(&[], &["u1", "u2", "u3"])
            },
            config: json!({}),
        },
        // A reject file read back: the `reject` objects are ignored, a repeated SCHEMA is
        // fine, the records go out again, and the line a crash cut short stops the run there.
        case(
            "replayed-rejects.singer",
            Expect {
                rejects: vec![(2, "field email")],
                ..protocol(6, "invalid JSON", &["u2", "u3"])
            },
        ),
        Case {
            file: "mostly-rejected.singer",
            vendor: Vendor::Userflow,
            expect: Expect {
                rejects: vec![(3, "field email"), (4, "field email")],
                state: Some(json!({"bookmarks": {"users": {"next_page": "u3"}}})),
                says: vec![
                    "2 of 3 records rejected (66.7%), more than max_reject_ratio 0.5 allows",
                ],
                ..Expect {
                    exit: 1,
                    delivered: vec!["u1"],
                    ..Expect::default()
                }
            },
            config: json!({"max_reject_ratio": 0.5}),
        },
        case(
            "duplicate-json-keys.singer",
            rejects(
                &[
                    (2, "repeats the key /id"),
                    (3, "repeats the key /attributes/plan"),
                ],
                &["u4"],
            ),
        ),
        case(
            "duplicate-primary-key.singer",
            Expect {
                state: Some(u1_state.clone()),
                ..rejects(&[], &["u1"])
            },
        ),
        case(
            "state-without-value.singer",
            Expect {
                state: Some(u1_state),
                ..protocol(4, "STATE message has no \"value\" field", &["u1"])
            },
        ),
        case("empty.singer", rejects(&[], &[])),
        case("not-an-object.singer", protocol(2, "invalid JSON", &[])),
        case("no-type.singer", protocol(2, "no \"type\"", &[])),
        case(
            "record-without-stream.singer",
            protocol(2, "has no \"stream\" field", &[]),
        ),
        case(
            "record-not-an-object.singer",
            protocol(2, "\"record\" that is not a JSON object", &[]),
        ),
        case(
            "invalid-schema.singer",
            protocol(2, "not a valid JSON Schema", &[]),
        ),
        case("batch-message.singer", protocol(2, "BATCH", &[])),
        case(
            "null-key.singer",
            rejects(&[(2, "does not match its SCHEMA")], &["u2"]),
        ),
        case(
            "attributes-not-an-object.singer",
            // `attributes` itself must be an object; an array in a flat column goes as its JSON
            // text (`nested_values: json_string`, the default).
            Expect {
                says: vec!["field \"tags\" holds an array"],
                ..rejects(&[(2, "\"attributes\" must be an object")], &["u2"])
            },
        ),
        case(
            "event-without-name.singer",
            rejects(&[(2, "\"name\" is missing")], &[]),
        ),
        // Issue 12 item 1: an email holding a separator would invite a second person through
        // Guru's comma-separated invite; each is rejected before any request.
        Case {
            file: "guru-email-separators.singer",
            vendor: Vendor::Guru,
            config: json!({}),
            expect: rejects(
                &[
                    (2, "not one email address: it contains ','"),
                    (3, "not one email address: it contains ';'"),
                    (4, "not one email address: it contains ' '"),
                    (5, "not one email address: it contains ' '"),
                    (6, "not one email address: it contains '\\n'"),
                    (7, "not one email address: it contains '\\0'"),
                    (8, "field id"),
                ],
                &["bob@example.com"],
            ),
        },
        // Issue 12 item 5: keys that are dot segments would leave their path
        // (`DELETE /users/..` is `DELETE /`); rejected, not counted as skipped.
        case(
            "userflow-dot-segment-keys.singer",
            rejects(
                &[
                    (5, "key id \"..\" is a dot segment"),
                    (6, "key id \".\" is a dot segment"),
                    (7, "key id \"%2e%2e\" is a dot segment"),
                    (8, "key id \"..\" is a dot segment"),
                    (9, "key user_id \"..\" is a dot segment"),
                ],
                &["u1"],
            ),
        ),
        Case {
            file: "appcues-dot-segment-keys.singer",
            vendor: Vendor::Appcues,
            config: json!({}),
            expect: rejects(
                &[
                    (5, "key id \"..\" is a dot segment"),
                    (6, "key id \".\" is a dot segment"),
                    (7, "key id \".%2E\" is a dot segment"),
                    (8, "key id \"..\" is a dot segment"),
                    (9, "key user_id \"..\" is a dot segment"),
                ],
                &["u1"],
            ),
        },
        case(
            "sdc-deleted-at-not-a-date.singer",
            rejects(
                &[
                    (12, "\"_sdc_deleted_at\" must be an RFC 3339 date-time"),
                    (13, "\"_sdc_deleted_at\" must be an RFC 3339 date-time"),
                    (14, "\"_sdc_deleted_at\" must be an RFC 3339 date-time"),
                ],
                &["u1", "u2", "u3", "u4", "u5"],
            ),
        ),
        // A Windows tool writes a UTF-8 byte order mark before line 1: it is read past.
        case(
            "bom-first-line.singer",
            Expect {
                state: Some(json!({"bookmarks": {"users": {"next_page": "u1"}}})),
                ..rejects(&[], &["u1"])
            },
        ),
    ]
}

/// What one run left behind.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    report: Value,
    rejects: Vec<Value>,
}

fn run_target(config: &Value, input: &Path, dir: &Path, extra: &[&str]) -> Ran {
    let mut config = config.clone();
    config["reject_file"] = json!(dir.join("rejects.ndjson"));
    let report_path = dir.join("report.json");
    let out = bin::target()
        .config_json(dir, &config)
        .input(input)
        .report(&report_path)
        .args(extra)
        .log("info")
        .current_dir(dir)
        .run(Duration::from_secs(300));
    let rejects = support::rejects::rejects(dir);
    let report = std::fs::read(&report_path)
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap_or(Value::Null);
    Ran {
        code: out.status.code(),
        stdout: out.stdout,
        stderr: out.stderr,
        report,
        rejects,
    }
}

/// The user ids a write-only or listable vendor holds.
fn user_ids(sb: &Sandbox, vendor: Vendor) -> BTreeSet<String> {
    let dump = sb.dump(vendor);
    let (list, key) = match vendor {
        Vendor::UserGuiding => ("users", "/userId"),
        Vendor::Userflow => ("users", "/id"),
        Vendor::Appcues => ("users", "/user_id"),
        Vendor::Guru => ("members", "/user/email"),
        other => panic!("{other} is not used by the corpus"),
    };
    dump[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.pointer(key).unwrap().as_str().unwrap().to_string())
        .collect()
}

fn check(case: &str, ran: &Ran, expect: &Expect, held: &BTreeSet<String>) {
    let what = format!("{case}:\n--- stderr\n{}", ran.stderr);
    assert!(!ran.stderr.contains("panicked"), "{what}");
    assert_eq!(ran.code, Some(expect.exit), "{what}");
    if let Some((says, line)) = expect.error {
        let failure = ran
            .stderr
            .lines()
            .find(|l| l.contains("ERROR"))
            .unwrap_or_else(|| panic!("no error line: {what}"));
        assert!(failure.contains(says), "{what}");
        assert!(failure.contains(&format!("line {line}")), "{what}");
    }
    for says in &expect.says {
        assert!(ran.stderr.contains(says), "{says:?} missing: {what}");
    }
    let got: Vec<(u64, String)> = ran
        .rejects
        .iter()
        .map(|r| {
            (
                r["reject"]["line"].as_u64().unwrap(),
                r["reject"]["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(got.len(), expect.rejects.len(), "rejects {got:?}: {what}");
    for ((line, reason), (want_line, says)) in got.iter().zip(&expect.rejects) {
        assert_eq!(line, want_line, "{reason}: {what}");
        assert!(reason.contains(says), "{reason:?} lacks {says:?}: {what}");
    }
    let want: BTreeSet<String> = expect.delivered.iter().map(|s| s.to_string()).collect();
    assert_eq!(held, &want, "what the vendor holds: {what}");
    let last_state = ran
        .stdout
        .lines()
        .last()
        .map(|l| serde_json::from_str::<Value>(l).unwrap());
    assert_eq!(last_state, expect.state, "last state: {what}");
    // Every record read is sent, rejected or skipped; none vanishes.
    let totals = &ran.report["totals"];
    assert_eq!(
        totals["records_in"].as_u64().unwrap(),
        totals["sent"].as_u64().unwrap()
            + totals["rejected"].as_u64().unwrap()
            + totals["skipped"].as_u64().unwrap(),
        "{}: {what}",
        ran.report
    );
    assert_eq!(totals["rejected"], expect.rejects.len(), "{what}");
    assert_eq!(totals["skipped"], expect.skipped, "{what}");
    assert_eq!(ran.report["exit_code"], expect.exit, "{what}");
}

#[test]
fn every_file_of_the_corpus_has_its_case() {
    let listed: BTreeSet<String> = cases().iter().map(|c| c.file.to_string()).collect();
    let present: BTreeSet<String> = std::fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".singer"))
        .collect();
    assert_eq!(listed, present);
}

#[test]
fn each_bad_input_gets_its_error_or_reject_and_exit_code() {
    let sb = Sandbox::builder()
        .users(0)
        .groups(0)
        .start_background()
        .unwrap();
    for case in cases() {
        sb.reset();
        let dir = tempfile::tempdir().unwrap();
        let mut config = sb.config(case.vendor);
        for (k, v) in case.config.as_object().unwrap() {
            config[k] = v.clone();
        }
        let ran = run_target(&config, &corpus().join(case.file), dir.path(), &[]);
        check(case.file, &ran, &case.expect, &user_ids(&sb, case.vendor));
    }
}

#[test]
fn two_records_with_one_key_are_applied_in_order() {
    let sb = Sandbox::builder()
        .users(0)
        .groups(0)
        .start_background()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ran = run_target(
        &sb.config(Vendor::Userflow),
        &corpus().join("duplicate-primary-key.singer"),
        dir.path(),
        &[],
    );
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let dump = sb.dump(Vendor::Userflow);
    let users = dump["users"].as_array().unwrap();
    assert_eq!(users.len(), 1);
    // Userflow merges attributes: the second record's values win, `seats` (absent from it)
    // stays from the first.
    assert_eq!(
        users[0]["attributes"],
        json!({"email": "second@example.com", "plan": "pro", "seats": 1})
    );
    assert_eq!(ran.report["totals"]["sent"], 2);
    let posts: Vec<_> = sb
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/userflow/users")
        .collect();
    assert_eq!(posts.len(), 2, "both records go out: {posts:?}");
    assert!(posts[0].seq < posts[1].seq);
}

#[test]
fn under_on_invalid_fail_a_bad_record_stops_the_run_at_its_line() {
    let sb = Sandbox::builder()
        .users(0)
        .groups(0)
        .start_background()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = sb.config(Vendor::Userflow);
    config["on_invalid"] = json!("fail");
    let ran = run_target(
        &config,
        &corpus().join("wrong-types.singer"),
        dir.path(),
        &[],
    );
    assert!(!ran.stderr.contains("panicked"), "{}", ran.stderr);
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("line 2") && ran.stderr.contains("on_invalid is \"fail\""),
        "{}",
        ran.stderr
    );
    assert!(
        user_ids(&sb, Vendor::Userflow).is_empty(),
        "nothing after the bad line"
    );
}

/// Writes SCHEMA, a good record, a STATE, a record line of `mib` MiB, and one more record.
fn long_line_input(path: &Path, mib: usize) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(
        f,
        r#"{{"type":"SCHEMA","stream":"users","schema":{{"type":"object"}},"key_properties":["id"]}}"#
    )
    .unwrap();
    writeln!(
        f,
        r#"{{"type":"RECORD","stream":"users","record":{{"id":"u1"}}}}"#
    )
    .unwrap();
    writeln!(f, r#"{{"type":"STATE","value":{{"at":"u1"}}}}"#).unwrap();
    write!(
        f,
        r#"{{"type":"RECORD","stream":"users","record":{{"id":"u2","blob":""#
    )
    .unwrap();
    let chunk = vec![b'x'; 1024 * 1024];
    for _ in 0..mib {
        f.write_all(&chunk).unwrap();
    }
    writeln!(f, r#""}}}}"#).unwrap();
    writeln!(
        f,
        r#"{{"type":"RECORD","stream":"users","record":{{"id":"u3"}}}}"#
    )
    .unwrap();
    f.flush().unwrap();
}

#[test]
fn a_60_mib_line_is_refused_by_the_default_limit_and_read_with_a_higher_one() {
    let sb = Sandbox::builder()
        .users(0)
        .groups(0)
        .start_background()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("long.singer");
    long_line_input(&input, 60);
    let ran = run_target(&sb.config(Vendor::Userflow), &input, dir.path(), &[]);
    let expect = Expect {
        state: Some(json!({"at": "u1"})),
        ..protocol(4, "over the 52428800-byte limit", &["u1"])
    };
    check(
        "60 MiB line",
        &ran,
        &expect,
        &user_ids(&sb, Vendor::Userflow),
    );
    assert!(
        ran.stderr.contains("max_line_bytes"),
        "the error says how to raise the limit: {}",
        ran.stderr
    );

    // With the limit raised the line is read; the dry run maps it like any other record.
    let dry = tempfile::tempdir().unwrap();
    let ran = run_target(
        &sb.config(Vendor::Userflow),
        &input,
        dry.path(),
        &[
            "--max-line-bytes",
            "70000000",
            "--dry-run",
            "--dry-run-output",
            "dry.ndjson",
        ],
    );
    assert!(!ran.stderr.contains("panicked"), "{}", ran.stderr);
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(ran.report["totals"]["records_in"], 3);
    assert_eq!(ran.report["totals"]["sent"], 3, "{}", ran.report);
}

/// One bad `--state` for the tap and what it must do.
struct TapCase {
    file: &'static str,
    exit: i32,
    says: &'static str,
}

#[test]
fn bad_tap_states_are_refused_or_read_again_from_the_start_and_never_panic() {
    let sb = Sandbox::builder()
        .seed(5)
        .users(250)
        .groups(6)
        .start_background()
        .unwrap();
    let cases = [
        TapCase {
            // A cursor no listing could have written: the state is corrupt, and reading on
            // from a guess could skip pages, so the tap stops and names stream and cursor.
            file: "cursor-of-the-wrong-type.json",
            exit: 1,
            says: "stream users: the state's next_page {\"starting_after\":\"u1\"} is not a cursor of this listing",
        },
        TapCase {
            file: "cursor-the-vendor-refuses.json",
            exit: 0,
            says: "user_that_was_deleted",
        },
        TapCase {
            file: "bookmarks-not-an-object.json",
            exit: 2,
            says: "state is not a roster tap state",
        },
        TapCase {
            file: "not-an-object.json",
            exit: 2,
            says: "state is not a roster tap state",
        },
        TapCase {
            file: "truncated.json",
            exit: 2,
            says: "invalid JSON",
        },
    ];
    let listed: BTreeSet<&str> = cases.iter().map(|c| c.file).collect();
    let present: BTreeSet<String> = std::fs::read_dir(corpus().join("tap-state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        listed,
        present.iter().map(String::as_str).collect(),
        "every tap-state file has its case"
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(&config, sb.config(Vendor::Userflow).to_string()).unwrap();
    for case in cases {
        let out = bin::tap()
            .config(&config)
            .arg("--state")
            .arg(corpus().join("tap-state").join(case.file))
            .log("info")
            .run(Duration::from_secs(120));
        let what = format!("{}: {}", case.file, out.stderr);
        assert!(!out.stderr.contains("panicked"), "{what}");
        assert_eq!(out.status.code(), Some(case.exit), "{what}");
        assert!(out.stderr.contains(case.says), "{what}");
        let messages = support::singer_lines(&out.stdout);
        if case.exit == 0 {
            // Read again from the start: every user comes out.
            let users = messages
                .iter()
                .filter(|m| m["type"] == "RECORD" && m["stream"] == "users")
                .count();
            assert_eq!(users, 250, "{what}");
        } else {
            assert!(
                messages.iter().all(|m| m["type"] == "SCHEMA"),
                "nothing but SCHEMA before the error: {what}"
            );
        }
    }
}

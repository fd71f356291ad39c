//! The target's side of the matrix: each writer under each fault class, what the vendor holds
//! compared with the input through the vendor-neutral `actual()`. The compliance suite runs a row
//! per writer (`compliance::<vendor>::fault_matrix`); UserGuiding's block is checked here.

use super::*;

pub(super) struct TargetRun {
    pub(super) code: Option<i32>,
    pub(super) stdout: String,
    pub(super) stderr: String,
    pub(super) report: Value,
    pub(super) rejects: Vec<Value>,
}

pub(super) fn run_target(config: &Value, input: &str, dir: &Path, zero_delays: bool) -> TargetRun {
    let input_path = support::files::write_text(&dir.join("input.singer"), input);
    let report_path = dir.join("report.json");
    let out = bin::target()
        .config_json(dir, config)
        .input(&input_path)
        .report(&report_path)
        .log("warn")
        .zero_delays(zero_delays)
        .current_dir(dir)
        .run(Duration::from_secs(600));
    TargetRun {
        code: out.status.code(),
        stdout: out.stdout,
        stderr: out.stderr,
        report: std::fs::read(&report_path)
            .map(|b| serde_json::from_slice(&b).unwrap())
            .unwrap_or(Value::Null),
        rejects: support::rejects::rejects(dir),
    }
}

/// One target cell: `vendor` under `fault`, with `model` as input.
fn target_cell(vendor: Vendor, fault: Fault, model: Model) {
    let what = format!("target {vendor} under {fault:?}");
    let sb = fault.sandbox(
        vendor,
        write_path(vendor),
        Sandbox::builder().users(0).groups(0),
        Knobs {
            seed: 11,
            mixed_rate: 0.25,
            bucket: "4/s,burst=1",
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let mut config = sb.config(vendor);
    config["reject_file"] = json!(dir.path().join("rejects.ndjson"));
    config["max_retries"] = json!(BUDGET);
    config["requests_per_second"] = json!(50);
    if fault == Fault::Down {
        config["max_retries"] = json!(2);
    }
    let (input, total) = model.singer();
    let run = run_target(&config, &input, dir.path(), fault.zero_delays(vendor));
    let ctx = format!(
        "{what}\n--- stderr\n{}\n--- report\n{:#}",
        run.stderr, run.report
    );
    assert!(!run.stderr.contains("panicked"), "{ctx}");
    let held = actual(&sb, vendor);
    let printed: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();

    // Every record a printed state covers is at the vendor or in the reject file.
    let covered = printed
        .last()
        .map_or(0, |s| s["offset"].as_u64().unwrap() as usize);
    let rejected: BTreeSet<(String, String)> = run
        .rejects
        .iter()
        .map(|r| {
            let stream = s(&r["stream"]);
            let key = if stream == "memberships" {
                format!(
                    "{}|{}",
                    s(&r["record"]["group_id"]),
                    s(&r["record"]["user_id"])
                )
            } else {
                s(&r["record"]["id"])
            };
            (stream, key)
        })
        .collect();
    if fault == Fault::Down {
        for n in 0..covered {
            let (stream, key) = model.record_key(n);
            assert!(
                rejected.contains(&(stream.to_string(), key.clone())),
                "{stream} {key} is covered by a state but neither sent nor rejected: {ctx}"
            );
        }
    }

    // The client's counters agree with the sandbox's: no hidden retries, no phantom attempts.
    let http = &run.report["http"];
    let attempts = http["requests"].as_u64().unwrap() + http["retries"].as_u64().unwrap();
    let seen = sb
        .stats()
        .vendors
        .get(vendor.name())
        .map_or(0, |v| v.requests);
    assert_eq!(seen, attempts, "attempts: sandbox vs --report: {ctx}");
    let throttled = status_count(&sb, vendor, "429");
    let errors = count_5xx(&sb, vendor);
    let dropped = status_count(&sb, vendor, "0");
    assert_eq!(http["status_429"], throttled, "{ctx}");
    assert_eq!(http["status_5xx"], errors, "{ctx}");
    assert_eq!(http["transport_errors"], dropped, "{ctx}");
    let failures = throttled + errors + dropped;
    let retries = http["retries"].as_u64().unwrap();
    assert!(retries <= failures, "a retry without a failure: {ctx}");

    // The fault really happened.
    match fault {
        Fault::RetryAfter429 | Fault::Plain429 => assert!(throttled > 0, "no 429: {ctx}"),
        Fault::Burst500 => assert_eq!(status_count(&sb, vendor, "500"), 3, "{ctx}"),
        Fault::Burst503 => assert_eq!(status_count(&sb, vendor, "503"), 3, "{ctx}"),
        Fault::Mixed5xx => assert!(
            status_count(&sb, vendor, "500") > 0 && status_count(&sb, vendor, "503") > 0,
            "{ctx}"
        ),
        Fault::Drops => assert!(dropped > 0, "no dropped connection: {ctx}"),
        Fault::Latency => assert!(
            sb.requests()
                .iter()
                .all(|r| r.fault.as_deref() == Some("latency 150ms")),
            "{ctx}"
        ),
        Fault::UserGuidingBlock => assert!(
            sb.requests()
                .iter()
                .any(|r| r.fault.as_deref() == Some("userguiding_block")),
            "the block never triggered: {ctx}"
        ),
        Fault::Down => assert!(errors > 0, "{ctx}"),
        Fault::LostAnswers => assert!(
            sb.requests().iter().any(|r| r
                .fault
                .as_deref()
                .is_some_and(|f| f.starts_with("apply_then_fail"))),
            "no answer was lost: {ctx}"
        ),
    }

    if fault == Fault::Down {
        assert_eq!(run.code, Some(1), "{ctx}");
        assert!(
            held.is_empty(),
            "a vendor that is down took something: {held:?}"
        );
        assert_eq!(run.report["exit_code"], 1, "{ctx}");
        let outcome = run.report["outcome"].as_str().unwrap();
        assert!(
            outcome.contains(&format!("{vendor} is unreachable")),
            "{outcome}: {ctx}"
        );
        assert!(
            run.stderr.contains(&format!("{vendor} is unreachable")),
            "the failure is named: {ctx}"
        );
        crate::crash::record_trial(&json!({"side": "target", "vendor": vendor.name(),
            "fault": format!("{fault:?}"), "records": total, "faults": failures,
            "retries": retries, "lost": 0, "duplicates": null, "exit": 1}));
        return;
    }

    // Everything arrived, exactly as sent, and the run says so.
    assert_eq!(run.code, Some(0), "{ctx}");
    assert_eq!(held, expected(vendor, &model), "what {vendor} holds: {ctx}");
    assert!(run.rejects.is_empty(), "rejects {:?}: {ctx}", run.rejects);
    assert_eq!(
        printed.last(),
        Some(&json!({"offset": total})),
        "the last state: {ctx}"
    );
    let totals = &run.report["totals"];
    assert_eq!(totals["records_in"], total, "{ctx}");
    assert_eq!(totals["sent"], total, "{ctx}");
    assert_eq!(totals["rejected"], 0, "{ctx}");
    assert_eq!(run.report["outcome"], "ok", "{ctx}");
    assert!(
        run.stderr.contains(&format!("{total} records in"))
            && run
                .stderr
                .contains(&format!("{total} sent, 0 rejected, 0 skipped")),
        "the summary: {ctx}"
    );
    // Nothing was given up on, so every failed attempt was retried, within the budget.
    // (Guru's group creates and SCIM creates are not repeated by the engine: their writers look
    // first and send again themselves, which counts as a request, not a retry.)
    if !matches!(vendor, Vendor::Guru | Vendor::Scim | Vendor::GuruScim) {
        assert_eq!(retries, failures, "every failure retried once: {ctx}");
    }
    if matches!(fault, Fault::RetryAfter429 | Fault::UserGuidingBlock) {
        // Every Retry-After is at least a second, and the whole client pauses for it.
        assert!(
            http["rate_limit_wait_seconds"].as_f64().unwrap() >= 1.0,
            "Retry-After was not honoured: {ctx}"
        );
    }
    if fault == Fault::Latency {
        assert_eq!(retries, 0, "{ctx}");
    }
    crate::crash::record_trial(&json!({"side": "target", "vendor": vendor.name(),
        "fault": format!("{fault:?}"), "records": total, "faults": failures,
        "retries": retries, "lost": 0, "duplicates": null, "exit": 0}));
}

const TARGET_MODEL: Model = Model::new(24, 4);

/// The target's matrix row for `vendor`, or, while the vendor has no writer in this build, the
/// check that the target refuses it plainly.
pub(crate) fn target_row(vendor: Vendor) {
    let spec = vendors::find(vendor.name()).unwrap();
    if spec.sink.is_none() {
        let sb = Sandbox::builder()
            .users(0)
            .groups(0)
            .start_background()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let run = run_target(
            &sb.config(vendor),
            &TARGET_MODEL.singer().0,
            dir.path(),
            true,
        );
        assert_eq!(run.code, Some(2), "{}", run.stderr);
        assert!(
            run.stderr.contains("cannot be written by this build"),
            "{}",
            run.stderr
        );
        return;
    }
    for fault in TARGET_FAULTS.into_iter().filter(|f| runs_here(vendor, *f)) {
        target_cell(vendor, fault, TARGET_MODEL);
    }
}

/// Whether a cell runs in this `cargo test`: every cell whose delays are zeroed, and for
/// Userflow every cell. The cells that must honour real delays (Retry-After, backoff after a
/// plain 429, latency, UserGuiding's block) take minutes over all vendors, so for the others
/// they run in `scripts/reliability.sh` (`ROSTER_FULL_MATRIX=1`).
pub(super) fn runs_here(vendor: Vendor, fault: Fault) -> bool {
    fault.zero_delays(vendor)
        || vendor == Vendor::Userflow
        || std::env::var_os("ROSTER_FULL_MATRIX").is_some()
}

/// UserGuiding's rule (50 requests per 10 s, then blocked): a client told to go at 50/s trips
/// the block, honours the `Retry-After` the sandbox announces for the shortened block, and
/// loses nothing.
#[test]
fn target_userguiding_rides_out_its_block() {
    target_cell(
        Vendor::UserGuiding,
        Fault::UserGuidingBlock,
        Model::new(40, 4),
    );
}

/// With its default pace UserGuiding's writer never trips the block at all: 80 requests over
/// more than one 10-s window, not one 429 (a 429 here would cost a real user a minute).
#[test]
fn target_userguiding_default_pace_stays_under_the_block() {
    let model = Model::new(40, 4);
    let sb = Sandbox::builder()
        .users(0)
        .groups(0)
        .userguiding_block(Some(UserGuidingBlock {
            block_secs: 2.0,
            ..UserGuidingBlock::default()
        }))
        .start_background()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = sb.config(Vendor::UserGuiding);
    config["reject_file"] = json!(dir.path().join("rejects.ndjson"));
    let run = run_target(&config, &model.singer().0, dir.path(), false);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        status_count(&sb, Vendor::UserGuiding, "429"),
        0,
        "the default pace tripped UserGuiding's block: {}",
        run.stderr
    );
    assert_eq!(
        actual(&sb, Vendor::UserGuiding),
        expected(Vendor::UserGuiding, &model)
    );
}

//! The tap's side of the matrix: each listable vendor under each fault class, the tap's output
//! compared with what the vendor holds.

use super::target_matrix::runs_here;
use super::*;

const TAP_FAULTS: [Fault; 8] = [
    Fault::RetryAfter429,
    Fault::Plain429,
    Fault::Burst500,
    Fault::Burst503,
    Fault::Mixed5xx,
    Fault::Latency,
    Fault::Drops,
    Fault::Down,
];

fn tap_cell(vendor: Vendor, fault: Fault) {
    let what = format!("tap {vendor} under {fault:?}");
    let base = Sandbox::builder()
        .users(300)
        .groups(6)
        .guru_page_size(25)
        .scim_page_cap(25);
    // A tap makes few requests (one per page), some of them far apart: a higher share of them
    // fails, the bucket is smaller, and the seed is one whose first draws include failures (the
    // draws go in request order, so the count of faults is the same run after run).
    let knobs = Knobs {
        seed: 12,
        mixed_rate: 0.4,
        bucket: "1/s,burst=1",
    };
    let sb = fault.sandbox(vendor, ("GET", read_path(vendor)), base, knobs);
    // The faults start with the sync: the seeded holdings are read before them.
    let held = tap::Holdings::of(&sb, vendor);
    let dir = tempfile::tempdir().unwrap();
    let mut config = sb.config(vendor);
    config["max_retries"] = json!(if fault == Fault::Down { 2 } else { BUDGET });
    config["requests_per_second"] = json!(50);
    let out = bin::tap()
        .config_json(dir.path(), &config)
        .log("warn")
        .zero_delays(fault.zero_delays(vendor))
        .run(Duration::from_secs(600));
    let ctx = format!("{what}\n--- stderr\n{}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{ctx}");
    let messages = support::singer_lines(&out.stdout);
    let log: Vec<_> = sb
        .requests()
        .into_iter()
        .filter(|r| r.vendor == Some(vendor))
        .collect();
    let failed = |status: u16| status == 0 || status == 429 || status >= 500;
    if fault == Fault::Down {
        assert_eq!(out.status.code(), Some(1), "{ctx}");
        assert!(
            messages.iter().all(|m| m["type"] == "SCHEMA"),
            "nothing read from a vendor that is down: {ctx}"
        );
        assert!(log.iter().all(|r| failed(r.status)), "{ctx}");
        assert!(
            out.stderr.contains(vendor.name()),
            "the vendor is named: {ctx}"
        );
        crate::crash::record_trial(&json!({"side": "tap", "vendor": vendor.name(),
            "fault": format!("{fault:?}"), "records": 0, "faults": log.len(), "lost": 0,
            "duplicates": 0, "exit": 1}));
        return;
    }
    assert_eq!(out.status.code(), Some(0), "{ctx}");
    tap::check_protocol(&messages);
    tap::check_no_duplicates(&messages);
    let got = tap::Holdings::from_messages(&messages);
    assert_eq!(got.sizes(), held.sizes(), "{ctx}");
    assert_eq!(got, held, "{ctx}");
    // Every failed request was asked again (same method, path and query) and got an answer
    // within the budget.
    let mut failures: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    for r in &log {
        let key = (
            r.method.clone(),
            r.path.clone(),
            r.query.clone().unwrap_or_default(),
        );
        if failed(r.status) {
            *failures.entry(key).or_default() += 1;
        } else if let Some(n) = failures.get(&key) {
            assert!(*n <= BUDGET, "{key:?} failed {n} times: {ctx}");
            failures.remove(&key);
        }
    }
    assert!(
        failures.is_empty(),
        "failed requests never asked again: {failures:?}: {ctx}"
    );
    let count = |status: u16| log.iter().filter(|r| r.status == status).count();
    match fault {
        Fault::RetryAfter429 | Fault::Plain429 => assert!(count(429) > 0, "no 429: {ctx}"),
        Fault::Burst500 => assert_eq!(count(500), 3, "{ctx}"),
        Fault::Burst503 => assert_eq!(count(503), 3, "{ctx}"),
        // Few pages: the seeded draws give some 5xx, not necessarily both kinds.
        Fault::Mixed5xx => assert!(count(500) + count(503) > 0, "{ctx}"),
        Fault::Drops => assert!(count(0) > 0, "{ctx}"),
        Fault::Latency => assert!(
            log.iter()
                .all(|r| r.fault.as_deref() == Some("latency 150ms")),
            "{ctx}"
        ),
        Fault::UserGuidingBlock | Fault::Down | Fault::LostAnswers => {}
    }
    let (u, g, m) = got.sizes();
    crate::crash::record_trial(&json!({"side": "tap", "vendor": vendor.name(),
        "fault": format!("{fault:?}"), "records": u + g + m,
        "faults": log.iter().filter(|r| failed(r.status)).count(), "lost": 0,
        "duplicates": 0, "exit": 0}));
}

fn tap_row(vendor: Vendor) {
    for fault in TAP_FAULTS.into_iter().filter(|f| runs_here(vendor, *f)) {
        tap_cell(vendor, fault);
    }
}

#[test]
fn tap_userflow_survives_every_fault() {
    tap_row(Vendor::Userflow);
}

#[test]
fn tap_guru_survives_every_fault() {
    tap_row(Vendor::Guru);
}

#[test]
fn tap_guru_scim_survives_every_fault() {
    tap_row(Vendor::GuruScim);
}

#[test]
fn tap_scim_survives_every_fault() {
    tap_row(Vendor::Scim);
}

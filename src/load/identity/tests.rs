#![allow(clippy::unwrap_used)]
use super::*;

fn check(g: &mut IdentityGuard, line: u64, key: &str, email: &str) -> Option<Duplicate> {
    g.check("users", line, key, Some(email)).unwrap()
}

#[test]
fn normalise_trims_and_folds() {
    assert_eq!(normalise("  Ann@Example.COM\t"), "ann@example.com");
    assert_eq!(normalise("straße"), normalise("STRASSE"));
    assert_eq!(normalise("ΟΔΟΣ"), normalise("οδος"));
    assert_eq!(normalise("οδος"), normalise("οδοσ"));
    assert_eq!(normalise("\u{212A}elvin"), "kelvin");
    assert_eq!(normalise("\u{00A0}u1\u{2003}"), "u1");
}

#[test]
fn one_email_on_two_keys_names_the_earlier_key_and_line() {
    let mut g = IdentityGuard::new();
    assert_eq!(check(&mut g, 2, "u1", "ann@x.com"), None);
    let dup = check(&mut g, 7, "u2", "  ANN@X.com ").unwrap();
    assert_eq!(
        dup,
        Duplicate::Email {
            email: "  ANN@X.com ".into(),
            earlier_key: "u1".into(),
            earlier_stream: "users".into(),
            earlier_line: 2
        }
    );
    let reason = dup.reason("u2");
    assert!(
        reason.contains("\"u1\"") && reason.contains("line 2"),
        "{reason}"
    );
    assert_eq!(g.found, 1);
}

#[test]
fn keys_that_differ_in_case_whitespace_or_fold_are_duplicates() {
    let mut g = IdentityGuard::new();
    assert_eq!(check(&mut g, 1, "u1", "a@x.com"), None);
    assert!(matches!(
        check(&mut g, 2, "u1 ", "b@x.com"),
        Some(Duplicate::Key {
            earlier_line: 1,
            ..
        })
    ));
    assert!(matches!(
        check(&mut g, 3, "U1", "c@x.com"),
        Some(Duplicate::Key { .. })
    ));
    assert_eq!(check(&mut g, 4, "straße", "d@x.com"), None);
    let dup = check(&mut g, 5, "STRASSE", "e@x.com").unwrap();
    assert!(dup.reason("STRASSE").contains("\"straße\""));
    assert_eq!(g.found, 3);
}

#[test]
fn the_same_key_again_is_an_update_not_a_duplicate() {
    let mut g = IdentityGuard::new();
    assert_eq!(check(&mut g, 1, "u1", "a@x.com"), None);
    assert_eq!(check(&mut g, 2, "u1", "A@x.com"), None);
    assert_eq!(check(&mut g, 3, "u1", "new@x.com"), None);
    assert_eq!(g.check("users", 4, "u3", None).unwrap(), None);
    assert_eq!(g.check("users", 5, "u4", Some("  ")).unwrap(), None);
    assert_eq!(g.found, 0);
}

/// The peak memory and time of a million users with an email each, spilled past the
/// default bound and then all in memory (run by hand:
/// `cargo test --release --lib load::identity -- --ignored --nocapture`).
#[test]
#[ignore]
fn a_million_users_peak_memory() {
    fn hwm_kb() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap()
    }
    // Spilled first: the high-water mark only grows, so the in-memory run after it shows
    // its own growth on top.
    for (what, bound) in [
        ("spilled past 100,000", DEFAULT_SPILL_BOUND),
        ("in memory", usize::MAX),
    ] {
        let before = hwm_kb();
        let started = std::time::Instant::now();
        let mut g = IdentityGuard::with_spill_bound(false, bound);
        for i in 0..1_000_000u64 {
            let key = format!("user-{i:08}");
            let email = format!("Person.{i}@Example.com");
            assert_eq!(g.check("users", i + 1, &key, Some(&email)).unwrap(), None);
        }
        let dup = g
            .check("users", 1_000_001, "x", Some("person.5@example.com "))
            .unwrap();
        assert!(matches!(
            dup,
            Some(Duplicate::Email {
                earlier_line: 6,
                ..
            })
        ));
        eprintln!(
            "1,000,000 users, {what}: peak RSS grew by {} MB in {:.2} s ({} values indexed)",
            (hwm_kb() - before) / 1024,
            started.elapsed().as_secs_f64(),
            g.indexed()
        );
    }
}

/// A users stream with every kind of duplicate, early and late: emails repeated on other
/// keys (in other case and whitespace), keys repeated in other case and whitespace, the
/// same key again (an update), records without an email.
fn workload(n: u64) -> Vec<(String, Option<String>)> {
    let mut records = Vec::new();
    for i in 0..n {
        let email = (i % 5 != 0).then(|| format!("p{i}@x.com"));
        records.push((format!("u{i}"), email));
        if i % 7 == 3 {
            // An earlier user's email on a new key.
            records.push((format!("v{i}"), Some(format!("  P{}@X.COM", i / 2))));
        }
        if i % 11 == 5 {
            // An earlier key in upper case with a space.
            records.push((format!("U{} ", i / 3), Some(format!("w{i}@x.com"))));
        }
        if i % 13 == 0 {
            // An update of an earlier user.
            records.push((format!("u{}", i / 2), Some(format!("p{}@x.com", i / 2))));
        }
    }
    records
}

#[test]
fn the_spilled_index_finds_what_the_in_memory_one_finds() {
    let records = workload(3_000);
    let run = |bound: usize| {
        let mut g = IdentityGuard::with_spill_bound(false, bound);
        let found: Vec<Option<Duplicate>> = records
            .iter()
            .enumerate()
            .map(|(line, (key, email))| {
                g.check("users", line as u64 + 1, key, email.as_deref())
                    .unwrap()
            })
            .collect();
        (found, g)
    };
    let (in_memory, g) = run(usize::MAX);
    assert!(g.keys.run.is_none() && g.emails.run.is_none());
    let kinds = |found: &[Option<Duplicate>]| {
        let emails = found
            .iter()
            .filter(|d| matches!(d, Some(Duplicate::Email { .. })))
            .count();
        let keys = found
            .iter()
            .filter(|d| matches!(d, Some(Duplicate::Key { .. })))
            .count();
        (emails, keys)
    };
    let (emails, keys) = kinds(&in_memory);
    assert!(emails > 100 && keys > 100, "{emails} {keys}");
    for bound in [16, 100, 1000] {
        let (spilled, g) = run(bound);
        assert_eq!(spilled, in_memory, "bound {bound}");
        assert_eq!(g.found, (emails + keys) as u64);
        // Spilled: at most `bound` entries in memory, the rest in a run of many blocks.
        assert!(g.keys.hot.len() < bound && g.emails.hot.len() < bound);
        let run = g.keys.run.as_ref().unwrap();
        assert!(run.fences.len() > 1, "bound {bound}");
        assert_eq!(g.indexed(), run.len + g.keys.hot.len() + g.emails.len());
    }
}

#[test]
fn the_index_stays_exact_past_the_spill_bound() {
    let mut g = IdentityGuard::with_spill_bound(false, 1000);
    let n = 2 * BLOCK as u64 * 10 + 10;
    for i in 0..n {
        assert_eq!(
            check(&mut g, i + 1, &format!("u{i}"), &format!("p{i}@x.com")),
            None
        );
    }
    assert!(g.keys.run.is_some());
    assert_eq!(g.indexed() as u64, 2 * n);
    let dup = check(&mut g, n + 1, "other", "P17@X.COM").unwrap();
    assert!(
        matches!(
            dup,
            Duplicate::Email {
                earlier_line: 18,
                ..
            }
        ),
        "{dup:?}"
    );
    let dup = check(&mut g, n + 2, "U4999 ", "z@x.com").unwrap();
    assert!(
        matches!(
            dup,
            Duplicate::Key {
                earlier_line: 5000,
                ..
            }
        ),
        "{dup:?}"
    );
}

#[test]
fn the_spill_bound_comes_from_the_environment_or_the_default() {
    // Read, not set: the test threads share the environment.
    let bound = spill_bound_from_env();
    match std::env::var(SPILL_BOUND_ENV) {
        Ok(v) => assert_eq!(bound, v.trim().parse::<usize>().unwrap().max(1)),
        Err(_) => assert_eq!(bound, DEFAULT_SPILL_BOUND),
    }
}

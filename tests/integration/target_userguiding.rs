//! target-roster against the sandbox's UserGuiding: users land exactly as sent (null included),
//! groups and memberships become each user's nested company whichever comes first, what
//! UserGuiding cannot take is rejected with the reason, the documented 50-per-10-s rule is never
//! tripped at the default pace, and a block is waited out rather than hammered. What every
//! writer must do (round trip, STATE order, fault storms, rejects, Meltano's test stream) is in
//! `compliance::userguiding`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::target;
use crate::support::{self, bin};

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use roster_sandbox::{Sandbox, UserGuidingBlock, Vendor};
use serde_json::{Value, json};
use target::{
    find, items, lines, reason, rec, reject_at, rejects, run, sandbox, schema, state, succeeded,
};

fn config(sb: &Sandbox, dir: &Path, extra: Value) -> PathBuf {
    target::config(sb, Vendor::UserGuiding, dir, extra)
}

fn user<'a>(dump: &'a Value, id: &str) -> &'a Value {
    find(dump, "users", "userId", id).unwrap_or_else(|| panic!("no user {id} in {dump}"))
}

fn company<'a>(dump: &'a Value, id: &str) -> &'a Value {
    &find(dump, "companies", "companyId", id).unwrap_or_else(|| panic!("no company {id} in {dump}"))
        ["attributes"]
}

/// The identify calls the sandbox answered, by status.
fn identifies(sb: &Sandbox) -> Vec<roster_sandbox::RequestLogEntry> {
    sb.requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/userguiding/v1/identify")
        .collect()
}

#[test]
fn users_and_their_companies_land_exactly_as_sent_and_the_rest_is_rejected_with_the_reason() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    // The default pace (4.8 requests/s): a dozen requests take a few seconds.
    // Arrays go as JSON text by default (target_mapping); here they are refused, as the vendor
    // would, to check the reason.
    let cfg = config(&sb, dir.path(), json!({"nested_values": "reject"}));
    let input = lines(&[
        schema("users"),       // 1
        schema("groups"),      // 2
        schema("memberships"), // 3
        schema("events"),      // 4
        rec(
            "users",
            json!({"id": "u1", "email": "a@x.io", "name": "Ann", "plan": "pro", "attributes": {"seats": 5}}),
        ), // 5
        rec("users", json!({"id": "u2", "email": "b@x.io"})), // 6
        rec(
            "groups",
            json!({"id": "g1", "name": "Acme", "attributes": {"tier": "gold"}}),
        ), // 7
        rec(
            "memberships",
            json!({"group_id": "g1", "user_id": "u1", "attributes": {"role": "admin"}}),
        ), // 8
        // The membership comes before its group, as tap-roster emits them.
        rec("memberships", json!({"group_id": "g2", "user_id": "u2"})), // 9
        rec("groups", json!({"id": "g2", "name": "Beta"})),             // 10
        rec("memberships", json!({"group_id": "g1", "user_id": "u3"})), // 11
        // null is passed on (the sandbox stores it as sent; UserGuiding documents no clearing).
        rec("users", json!({"id": "u1", "attributes": {"seats": null}})), // 12
        rec("events", json!({"user_id": "u1", "name": "signed_up"})),     // 13
        rec("users", json!({"id": "u4", "tags": ["a", "b"]})),            // 14
        rec(
            "users",
            json!({"id": "u2", "_sdc_deleted_at": "2024-01-01T00:00:00Z"}),
        ), // 15
        rec(
            "memberships",
            json!({"group_id": "g1", "user_id": "u2", "_sdc_deleted_at": "2024-01-01T00:00:00Z"}),
        ), // 16
        rec("groups", json!({"id": "g3", "name": "Lonely"})),             // 17
        state(json!({"bookmarks": {"users": {}}})),                       // 18
    ]);
    let out = run(&cfg, &input);
    let stderr = succeeded(&out);
    assert_eq!(
        target::last_state(&out).as_deref(),
        Some(r#"{"bookmarks":{"users":{}}}"#)
    );
    let dump = sb.dump(Vendor::UserGuiding);
    assert_eq!(items(&dump, "users").len(), 3, "{dump}");
    let u1 = user(&dump, "u1");
    assert_eq!(
        u1["attributes"],
        json!({"email": "a@x.io", "name": "Ann", "plan": "pro", "seats": null})
    );
    assert_eq!(u1["companyId"], "g1");
    assert_eq!(user(&dump, "u2")["attributes"], json!({"email": "b@x.io"}));
    assert_eq!(user(&dump, "u2")["companyId"], "g2");
    assert_eq!(user(&dump, "u3")["attributes"], json!({}));
    assert_eq!(user(&dump, "u3")["companyId"], "g1");
    assert_eq!(items(&dump, "companies").len(), 2, "{dump}");
    assert_eq!(
        company(&dump, "g1"),
        &json!({"name": "Acme", "tier": "gold"})
    );
    // g2's attributes reached UserGuiding once the group arrived, on its member.
    assert_eq!(company(&dump, "g2"), &json!({"name": "Beta"}));

    let rejected = rejects(dir.path());
    assert_eq!(rejected.len(), 5, "{rejected:?}");
    for (line, expect) in [
        (13, "does not take events"),
        (14, "\"tags\" is an array"),
        (15, "no call to delete or deactivate a user"),
        (16, "no call to delete a user's company link"),
        (17, "no membership in this run named group \"g3\""),
    ] {
        let r = reject_at(&rejected, line).unwrap_or_else(|| panic!("line {line}: {rejected:?}"));
        assert!(reason(r).contains(expect), "line {line}: {}", reason(r));
    }
    assert!(
        stderr.contains("13 records") && stderr.contains("8 sent, 5 rejected, 0 skipped"),
        "{stderr}"
    );
    assert!(stderr.contains("membership's own attributes"), "{stderr}");
}

/// The documented rule: 50 requests per 10 s, then blocked (here for a minute, as documented).
fn documented_block(block_secs: f64) -> UserGuidingBlock {
    UserGuidingBlock {
        block_secs,
        ..UserGuidingBlock::default()
    }
}

#[test]
fn the_default_pace_never_trips_the_50_per_10_s_block() {
    let sb = target::builder()
        .userguiding_block(Some(documented_block(60.0)))
        .start_background()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&sb, dir.path(), json!({}));
    // 65 users: more than one window's budget, so only the pace keeps the key unblocked.
    let mut input = vec![schema("users")];
    input.extend((0..65).map(|i| rec("users", json!({"id": format!("u{i}")}))));
    let out = run(&cfg, &lines(&input));
    succeeded(&out);
    let log = identifies(&sb);
    assert_eq!(log.len(), 65, "one identify each, none refused");
    assert!(log.iter().all(|r| r.status == 200 && r.fault.is_none()));
    assert_eq!(items(&sb.dump(Vendor::UserGuiding), "users").len(), 65);
}

#[test]
fn a_block_is_waited_out_not_hammered() {
    // The sandbox's block is shortened to 2 s; the client does not know and waits its minute.
    let sb = target::builder()
        .userguiding_block(Some(documented_block(2.0)))
        .start_background()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Told a pace far above the rule (another integration sharing the key does the same).
    let cfg = config(&sb, dir.path(), json!({"requests_per_second": 100}));
    let mut input = vec![schema("users")];
    input.extend((0..80).map(|i| rec("users", json!({"id": format!("u{i}")}))));
    let input = lines(&input);
    let mut child = bin::target()
        .config(&cfg)
        .log("error")
        .real_delays()
        .command()
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(input.as_bytes());
    });
    let _child = support::Guard(child);
    let started = Instant::now();
    let blocked_at = loop {
        if let Some(r) = identifies(&sb).into_iter().find(|r| r.status == 429) {
            break r.at;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never blocked: {:?}",
            identifies(&sb)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // Watch well past the sandbox's 2 s block: a client that retried on its own backoff would
    // be back by now. Requests already past the pacer when the 429 came may still land (grace).
    std::thread::sleep(Duration::from_secs(6));
    let grace = chrono::Duration::milliseconds(1500);
    let later: Vec<_> = identifies(&sb)
        .into_iter()
        .filter(|r| r.at > blocked_at + grace)
        .collect();
    assert!(later.is_empty(), "requests during the pause: {later:?}");
    let answered = identifies(&sb).iter().filter(|r| r.status == 200).count();
    assert_eq!(
        answered, 50,
        "the window's budget went through, then the block"
    );
}

#[test]
fn a_block_storm_delivers_everything_once() {
    // The documented rule at a tenth of its scale (5 per second, blocked for 1 s), so the storm
    // repeats within seconds; the client is told a pace twenty times that.
    let sb = target::builder()
        .userguiding_block(Some(UserGuidingBlock {
            max_requests: 5,
            window_secs: 1.0,
            block_secs: 1.0,
            retry_after: false,
        }))
        .start_background()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        &sb,
        dir.path(),
        json!({"requests_per_second": 100, "max_retries": 10000}),
    );
    let mut input = vec![schema("users")];
    for i in 0..40 {
        input.push(rec("users", json!({"id": format!("u{i}"), "n": i})));
        if i % 10 == 9 {
            input.push(state(json!({"n": i})));
        }
    }
    let out = run(&cfg, &lines(&input));
    succeeded(&out);
    assert_eq!(target::last_state(&out).as_deref(), Some(r#"{"n":39}"#));
    assert!(rejects(dir.path()).is_empty());
    let log = identifies(&sb);
    assert!(
        log.iter()
            .any(|r| r.fault.as_deref() == Some("userguiding_block")),
        "never blocked"
    );
    assert_eq!(
        log.iter().filter(|r| r.status == 200).count(),
        40,
        "each once"
    );
    let dump = sb.dump(Vendor::UserGuiding);
    assert_eq!(items(&dump, "users").len(), 40);
    for i in 0..40 {
        assert_eq!(user(&dump, &format!("u{i}"))["attributes"], json!({"n": i}));
    }
}

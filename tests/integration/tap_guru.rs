//! `tap-roster` against the sandbox's Guru REST: members keyed by email, groups, per-group
//! member listings read concurrently, Link-header paging, expiring page tokens.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::tap;

use std::time::Duration;

use roster_sandbox::{Sandbox, Vendor};
use serde_json::{Value, json};
use tap::{Holdings, check_no_duplicates, check_protocol, sync, tap};

const V: Vendor = Vendor::Guru;

fn sandbox(page: usize) -> Sandbox {
    Sandbox::builder()
        .seed(5)
        .users(90)
        .groups(8)
        .guru_page_size(page)
        .start_background()
        .unwrap()
}

#[test]
fn a_sync_emits_every_member_group_and_group_member_once() {
    let sb = sandbox(20);
    let run = sync(&sb.config(V), None, None).ok();
    check_protocol(&run.messages);
    check_no_duplicates(&run.messages);
    let held = Holdings::of(&sb, V);
    assert_eq!(Holdings::from_messages(&run.messages), held);
    assert!(
        held.memberships.len() > 90,
        "All Members holds everyone: {:?}",
        held.sizes()
    );
    // One member listing per group, each paged by Link.
    let requests = sb.requests();
    for group in &held.groups {
        let path = format!("/guru/api/v1/groups/{group}/members");
        assert!(requests.iter().any(|r| r.path == path), "{path}");
    }
    let pages_of_members = requests
        .iter()
        .filter(|r| r.path == "/guru/api/v1/members")
        .count();
    // Guru's tokens are opaque (they may be offsets), so a listing of more than one page is read
    // a second time to confirm no member slipped past a token.
    assert_eq!(pages_of_members, 10, "90 members, 20 per page, two passes");
    // Records come out in group order: every group's memberships are contiguous.
    let order: Vec<Value> = run
        .records("memberships")
        .iter()
        .map(|m| m["group_id"].clone())
        .collect();
    let mut runs = order.clone();
    runs.dedup();
    assert_eq!(runs.len(), held.groups.len());
}

#[test]
fn members_are_keyed_by_email_with_status_and_access_type() {
    let sb = sandbox(50);
    let run = sync(&sb.config(V), None, None).ok();
    let dump = sb.dump(V);
    for wire in dump["members"].as_array().unwrap().iter().take(30) {
        let email = &wire["user"]["email"];
        let record = run
            .records("users")
            .into_iter()
            .find(|r| r["id"] == *email)
            .unwrap();
        assert_eq!(record["email"], *email);
        assert_eq!(record["status"], wire["user"]["status"]);
        assert_eq!(record["first_name"], wire["user"]["firstName"]);
        assert_eq!(
            record["attributes"]["access_type"],
            wire["userAttributes"]["ACCESS_TYPE"]
        );
        assert_eq!(
            record["attributes"]["billing_type"],
            wire["userAttributes"]["BILLING_TYPE"]
        );
        assert_eq!(record["active"], wire["user"]["status"] != "INACTIVE");
        assert!(record["created_at"].is_string());
    }
}

#[test]
fn group_members_are_read_concurrently_within_the_bound() {
    let sb = Sandbox::builder()
        .seed(5)
        .users(40)
        .groups(10)
        .latency(Some(V), Duration::from_millis(40))
        .start_background()
        .unwrap();
    let run = sync(&sb.config(V), None, None).ok();
    assert_eq!(Holdings::from_messages(&run.messages), Holdings::of(&sb, V));
    let spans: Vec<(f64, f64)> = sb
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/members") && r.path.contains("/groups/"))
        .map(|r| {
            let start = r.at.timestamp_micros() as f64 / 1000.0;
            (start, start + r.duration_ms)
        })
        .collect();
    let most = spans
        .iter()
        .map(|(s, _)| spans.iter().filter(|(a, b)| a <= s && s < b).count())
        .max()
        .unwrap();
    // At most GROUP_CONCURRENCY queued plus the one being drained.
    assert!(most <= 5, "{most} group listings at once");
    assert!(most >= 2, "group listings were read one at a time");
}

#[test]
fn resuming_mid_group_and_restarting_on_an_expired_token() {
    let sb = sandbox(15);
    let config = sb.config(V);
    let full = sync(&config, None, None).ok();
    // A state saved in the middle of the memberships listing.
    let mid = full
        .states()
        .into_iter()
        .find(|s| {
            s["currently_syncing"] == "memberships"
                && s["bookmarks"]["memberships"]["next_page"]["next"].is_string()
        })
        .expect("a mid-group state");
    let state = json!({"bookmarks": {"memberships": mid["bookmarks"]["memberships"].clone()}, "currently_syncing": "memberships"});
    let cursor = mid["bookmarks"]["memberships"]["next_page"].clone();
    let group = cursor["group_id"].as_str().unwrap();

    // Resumed with a fresh token: starts at that group's next page, reads the rest once.
    let resumed = sync(&config, Some(&state), None).ok();
    check_no_duplicates(&resumed.messages);
    let first = &resumed.records("memberships")[0];
    assert_eq!(first["group_id"], group);
    assert!(
        resumed.stderr.matches("rejected the stored cursor").count() == 0,
        "{}",
        resumed.stderr
    );
    let before: usize = full
        .records("memberships")
        .iter()
        .position(|m| m["group_id"] == first["group_id"] && m["user_id"] == first["user_id"])
        .unwrap();
    // The resumed group is read once more from its start (members removed between the kill and
    // the resume could have shifted others past the stored token), so its members before the
    // resume point come too, once; the groups after it are read once.
    let group_start: usize = full
        .records("memberships")
        .iter()
        .position(|m| m["group_id"] == first["group_id"])
        .unwrap();
    assert!(group_start < before);
    assert_eq!(
        resumed.records("memberships").len(),
        full.records("memberships").len() - group_start,
        "nothing skipped, nothing read twice"
    );

    // The same state after Guru expired its tokens: warned once, the stream read again.
    sb.expire_guru_tokens();
    let restarted = sync(&config, Some(&state), None).ok();
    assert_eq!(
        restarted
            .stderr
            .matches("rejected the stored cursor")
            .count(),
        1,
        "{}",
        restarted.stderr
    );
    assert_eq!(
        Holdings::from_messages(&restarted.messages),
        Holdings::of(&sb, V),
        "the restart read every stream in full"
    );
    check_no_duplicates(&restarted.messages);

    // A stored group that no longer exists also restarts the stream.
    let gone = json!({"bookmarks": {"memberships": {"next_page": {"group_id": "no-such-group"}}}, "currently_syncing": "memberships"});
    let run = sync(&config, Some(&gone), None).ok();
    assert!(
        run.stderr.contains("no-such-group no longer exists"),
        "{}",
        run.stderr
    );
    assert_eq!(
        Holdings::from_messages(&run.messages).memberships,
        Holdings::of(&sb, V).memberships
    );
}

#[test]
fn an_expired_members_token_restarts_the_users_stream() {
    let sb = sandbox(10);
    let config = sb.config(V);
    let full = sync(&config, None, None).ok();
    let mid = full.states()[2].clone();
    assert_eq!(mid["currently_syncing"], "users");
    sb.expire_guru_tokens();
    let run = sync(&config, Some(&mid), None).ok();
    assert_eq!(run.stderr.matches("rejected the stored cursor").count(), 1);
    assert_eq!(run.records("users").len(), 90);
}

#[test]
fn test_mode_asks_whoami() {
    let sb = sandbox(50);
    sb.clear_requests();
    let run = tap(&sb.config(V), &["--test"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let requests = sb.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/guru/api/v1/whoami");
    let mut bad = sb.config(V);
    bad["api_token"] = json!("bad-token-value");
    let run = tap(&bad, &["--test"]);
    assert_eq!(run.code, Some(1));
    assert!(!run.stderr.contains("bad-token-value"));
}

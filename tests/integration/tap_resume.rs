//! Kill the tap partway through a sync (SIGKILL, after several STATE lines), restart it with
//! the last STATE it printed, and check that the two runs together cover everything the
//! sandbox holds: no page skipped, for every listable vendor and at several points of the sync.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::tap;

use roster_sandbox::{Sandbox, Vendor};
use serde_json::Value;
use tap::{Holdings, check_no_duplicates, check_protocol, states, sync, sync_killed_after};

fn sandbox(users: usize) -> Sandbox {
    Sandbox::builder()
        .seed(3)
        .users(users)
        .groups(10)
        .guru_page_size(25)
        .scim_page_cap(25)
        .start_background()
        .unwrap()
}

/// Kills a sync after `after` STATE lines, resumes from the last one, and returns the
/// bookmark it resumed from.
fn kill_and_resume(sb: &Sandbox, vendor: Vendor, after: usize) -> Value {
    let config = sb.config(vendor);
    let (first, _) = sync_killed_after(&config, None, after);
    let printed = states(&first);
    assert_eq!(
        printed.len(),
        after,
        "{vendor}: the tap ended before {after} STATE lines"
    );
    let last = printed.last().unwrap().clone();
    let second = sync(&config, Some(&last), None).ok();
    check_protocol(&second.messages);
    check_no_duplicates(&second.messages);
    let mut both = first.clone();
    both.extend(second.messages.iter().cloned());
    let held = Holdings::of(sb, vendor);
    let got = Holdings::from_messages(&both);
    assert_eq!(
        got.sizes(),
        held.sizes(),
        "{vendor} killed after {after} states"
    );
    assert_eq!(got, held, "{vendor} killed after {after} states");
    last
}

fn kill_points(sb: &Sandbox, vendor: Vendor) -> Vec<Value> {
    let total = sync(&sb.config(vendor), None, None).ok().states().len();
    assert!(
        total >= 10,
        "{vendor}: {total} pages are too few to kill partway"
    );
    [2, total / 2, total - 2]
        .into_iter()
        .map(|after| kill_and_resume(sb, vendor, after))
        .collect()
}

#[test]
fn userflow_resumes_after_a_kill() {
    // Userflow pages hold 100 users.
    let sb = sandbox(1500);
    let bookmarks = kill_points(&sb, Vendor::Userflow);
    assert_eq!(bookmarks[0]["currently_syncing"], "users");
    assert!(bookmarks[0]["bookmarks"]["users"]["next_page"].is_string());
}

#[test]
fn guru_resumes_after_a_kill() {
    let sb = sandbox(300);
    let bookmarks = kill_points(&sb, Vendor::Guru);
    assert!(
        bookmarks
            .iter()
            .any(|b| b["currently_syncing"] == "memberships"),
        "one kill lands in the per-group listings: {bookmarks:?}"
    );
}

#[test]
fn guru_scim_resumes_after_a_kill() {
    let sb = sandbox(300);
    kill_points(&sb, Vendor::GuruScim);
}

#[test]
fn scim_resumes_after_a_kill() {
    let sb = sandbox(300);
    let bookmarks = kill_points(&sb, Vendor::Scim);
    // Killed after two states: the groups listing (one page) and the first page of users.
    assert!(bookmarks[0]["bookmarks"]["groups"]["completed_at"].is_string());
    // The next page starts a tenth of a page early (26 - 2), anchored on the page's last ids.
    let next = &bookmarks[0]["bookmarks"]["users"]["next_page"];
    assert_eq!(next["start_index"], 24, "{next}");
    assert_eq!(next["after"].as_array().unwrap().len(), 2, "{next}");
}

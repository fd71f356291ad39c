//! Listings that change under the tap (issue 12, item 3).

use super::*;

/// The user ids a SCIM sandbox holds, in listing order.
fn scim_user_ids(sb: &Sandbox, vendor: Vendor) -> Vec<String> {
    sb.dump(vendor)["Users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| s(&u["id"]))
        .collect()
}

/// SCIM `startIndex` paging with users deleted while the tap reads: 7 of 50 from the first page
/// once it is served (pages of 10; the old code then asked for index 11, which now held the
/// 18th user, and never emitted the 11th to 17th, with exit 0), and 1 behind the index (bridged
/// by the overlap). Every user still held at the end is emitted, none twice.
#[test]
fn scim_tap_misses_no_live_user_when_users_are_deleted_mid_run() {
    for vendor in [Vendor::Scim, Vendor::GuruScim] {
        for (from, deleted) in [(0usize, 7usize), (5, 1)] {
            let sb = Sandbox::builder()
                .seed(5)
                .users(50)
                .groups(3)
                .scim_page_cap(10)
                .start_background()
                .unwrap();
            let ids = scim_user_ids(&sb, vendor);
            let doomed: Vec<&str> = ids[from..from + deleted]
                .iter()
                .map(String::as_str)
                .collect();
            sb.delete_after_pages(vendor, &format!("{}/Users", vendor.prefix()), 1, &doomed);
            let run = tap::sync(&sb.config(vendor), None, None);
            let what = format!("{vendor}, {deleted} deleted from position {from}");
            assert_eq!(run.code, Some(0), "{what}: {}", run.stderr);
            tap::check_protocol(&run.messages);
            tap::check_no_duplicates(&run.messages);
            let emitted = tap::Holdings::from_messages(&run.messages).users;
            let live = tap::Holdings::of(&sb, vendor).users;
            assert_eq!(
                live.len(),
                50 - deleted,
                "{what}: the deletes did not happen"
            );
            let missed: Vec<&String> = live.difference(&emitted).collect();
            assert!(
                missed.is_empty(),
                "{what}: live users never emitted: {missed:?}"
            );
            // They were read (on page 1) before they were deleted.
            assert!(doomed.iter().all(|d| emitted.contains(*d)), "{what}");
        }
    }
}

/// Userflow's cursor is the id of the last user of a page; Userflow answers 400 to a
/// `starting_after` id that no longer exists. Deleting that user once its page is served made
/// the old tap fail the run (exit 1) at the next page; deleting the whole page is worse. Now the
/// next page starts after the page's earlier ids, or again from the start, leaving out what was
/// read: every user still held is emitted, once.
#[test]
fn userflow_tap_reads_on_when_the_cursor_user_is_deleted_mid_run() {
    let sb = Sandbox::builder()
        .seed(9)
        .users(250)
        .groups(3)
        .start_background()
        .unwrap();
    let config = sb.config(Vendor::Userflow);
    let order: Vec<String> = tap::sync(&config, None, None)
        .ok()
        .records("users")
        .iter()
        .map(|u| s(&u["id"]))
        .collect();
    assert_eq!(order.len(), 250);
    for (what, doomed) in [
        ("the cursor's user", order[99..100].to_vec()),
        ("the cursor and the 4 before it", order[95..100].to_vec()),
        ("the whole first page", order[..100].to_vec()),
    ] {
        sb.reset();
        let doomed: Vec<&str> = doomed.iter().map(String::as_str).collect();
        sb.delete_after_pages(Vendor::Userflow, "/userflow/users", 1, &doomed);
        let run = tap::sync(&config, None, None);
        assert_eq!(run.code, Some(0), "{what}: {}", run.stderr);
        tap::check_protocol(&run.messages);
        tap::check_no_duplicates(&run.messages);
        let emitted = tap::Holdings::from_messages(&run.messages).users;
        let live = tap::Holdings::of(&sb, Vendor::Userflow).users;
        assert_eq!(
            live.len(),
            250 - doomed.len(),
            "{what}: the deletes did not happen"
        );
        let missed: Vec<&String> = live.difference(&emitted).collect();
        assert!(
            missed.is_empty(),
            "{what}: live users never emitted: {missed:?}"
        );
    }
}

/// Guru REST pages with a `Link` token: 25 members removed from the team once the first page
/// of `/members` is served (pages of 10), and 25 removed once the first page of a group's
/// members is served. Every member still held is emitted (users and memberships), none twice.
/// Guru's tokens are opaque, so both token kinds are tried: "after this email" (keyset), and
/// "skip this many" (offset), where the removals shift unread members past the token: before
/// the tap checked its listings with a second pass, it missed 10 live members, with exit 0.
#[test]
fn guru_tap_misses_no_live_member_when_members_are_removed_mid_run() {
    for offset in [false, true] {
        guru_members_removed_mid_run(offset);
    }
}

/// A tap killed in the middle of `/members` (its last STATE holds a page token), then 25
/// members from the start of the listing are removed before the resume. With position-based
/// tokens the stored one now points 25 members further on, so the old tap resumed past 25 live
/// members it had never emitted (exit 0). Every live member is emitted by the first run before
/// that state or by the resumed run.
#[test]
fn guru_tap_misses_no_live_member_removed_between_a_kill_and_the_resume() {
    for offset in [false, true] {
        let sb = Sandbox::builder()
            .seed(5)
            .users(100)
            .groups(2)
            .guru_page_size(10)
            .guru_offset_tokens(offset)
            .start_background()
            .unwrap();
        let config = sb.config(Vendor::Guru);
        let full = tap::sync(&config, None, None).ok();
        let order: Vec<String> = full.records("users").iter().map(|u| s(&u["id"])).collect();
        assert!(order.len() >= 60, "{}", order.len());
        // The first STATE after the third page of members: the kill point.
        let at = full
            .messages
            .iter()
            .enumerate()
            .filter(|(_, m)| m["type"] == "STATE" && m["value"]["currently_syncing"] == "users")
            .map(|(i, _)| i)
            .nth(2)
            .expect("a mid-users state");
        let state = full.messages[at]["value"].clone();
        assert!(
            state["bookmarks"]["users"].to_string().contains("token="),
            "{state}"
        );
        let before: BTreeSet<String> = tap::records(&full.messages[..at], "users")
            .iter()
            .map(|u| s(&u["id"]))
            .collect();
        assert!(
            before.len() >= 20 && before.len() < order.len(),
            "{}",
            before.len()
        );
        for doomed in &order[..25] {
            assert!(sb.delete_user(Vendor::Guru, doomed), "{doomed}");
        }
        let run = tap::sync(&config, Some(&state), None);
        assert_eq!(run.code, Some(0), "offset {offset}: {}", run.stderr);
        tap::check_protocol(&run.messages);
        tap::check_no_duplicates(&run.messages);
        let mut emitted = tap::Holdings::from_messages(&run.messages).users;
        emitted.extend(before);
        let live = tap::Holdings::of(&sb, Vendor::Guru).users;
        assert_eq!(live.len(), order.len() - 25);
        let missed: Vec<&String> = live.difference(&emitted).collect();
        assert!(
            missed.is_empty(),
            "offset {offset}: live users never emitted: {missed:?}"
        );
    }
}

fn guru_members_removed_mid_run(offset: bool) {
    let sb = Sandbox::builder()
        .seed(4)
        .users(100)
        .groups(3)
        .guru_page_size(10)
        .guru_offset_tokens(offset)
        .start_background()
        .unwrap();
    let config = sb.config(Vendor::Guru);
    let first = tap::sync(&config, None, None).ok();
    let order: Vec<String> = first.records("users").iter().map(|u| s(&u["id"])).collect();
    let groups: Vec<String> = first
        .records("groups")
        .iter()
        .map(|g| s(&g["id"]))
        .collect();
    assert!(order.len() >= 60, "{}", order.len());
    let group_path = format!("/guru/api/v1/groups/{}/members", groups[0]);
    for (what, path, doomed) in [
        (
            "members, 25 from the start",
            "/guru/api/v1/members".to_string(),
            order[..25].to_vec(),
        ),
        (
            "members, 25 from the 6th",
            "/guru/api/v1/members".to_string(),
            order[5..30].to_vec(),
        ),
        ("a group's members", group_path, order[..25].to_vec()),
    ] {
        sb.reset();
        let doomed: Vec<&str> = doomed.iter().map(String::as_str).collect();
        sb.delete_after_pages(Vendor::Guru, &path, 1, &doomed);
        let run = tap::sync(&config, None, None);
        assert_eq!(
            run.code,
            Some(0),
            "{what} (offset {offset}): {}",
            run.stderr
        );
        tap::check_protocol(&run.messages);
        tap::check_no_duplicates(&run.messages);
        let emitted = tap::Holdings::from_messages(&run.messages);
        let live = tap::Holdings::of(&sb, Vendor::Guru);
        assert_eq!(
            live.users.len(),
            order.len() - doomed.len(),
            "{what} (offset {offset}): the deletes did not happen"
        );
        let missed: Vec<&String> = live.users.difference(&emitted.users).collect();
        assert!(
            missed.is_empty(),
            "{what} (offset {offset}): live users never emitted: {missed:?}"
        );
        let missed: Vec<&String> = live.memberships.difference(&emitted.memberships).collect();
        assert!(
            missed.is_empty(),
            "{what} (offset {offset}): live memberships never emitted: {missed:?}"
        );
        // Offset tokens did shift members past a token, and the second pass says so.
        assert_eq!(
            run.stderr.contains("were found by reading again"),
            offset,
            "{what} (offset {offset}): {}",
            run.stderr
        );
    }
}

//! target-roster managing a Guru team through Guru's REST API (roster-sandbox's
//! `/guru/api/v1`): batched invites with per-email statuses, removals by email, groups found by
//! name and created only when missing, all-or-nothing group adds where only the refused member
//! is rejected (light users, strangers), and a run killed mid-way then resumed from its last
//! STATE without duplicate groups.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use roster_sandbox::{FailRule, Sandbox, Vendor};
use serde_json::{Value, json};

use crate::support::target::{Input, resume_after, target, target_killed_after};

fn members(sb: &Sandbox) -> Vec<Value> {
    sb.dump(Vendor::Guru)["members"].as_array().unwrap().clone()
}

fn member(sb: &Sandbox, email: &str) -> Option<Value> {
    members(sb).into_iter().find(|m| {
        m["user"]["email"]
            .as_str()
            .is_some_and(|e| e.eq_ignore_ascii_case(email))
    })
}

fn groups_named(sb: &Sandbox, name: &str) -> Vec<Value> {
    sb.dump(Vendor::Guru)["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["name"] == json!(name))
        .cloned()
        .collect()
}

fn group_emails(sb: &Sandbox, name: &str) -> Vec<String> {
    let groups = groups_named(sb, name);
    assert_eq!(groups.len(), 1, "one group named {name}: {groups:?}");
    let mut emails: Vec<String> = groups[0]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_lowercase())
        .collect();
    emails.sort();
    emails
}

/// Seeded members: (core and active, light).
fn seeded(sb: &Sandbox) -> (Vec<String>, Vec<String>) {
    let mut core = Vec::new();
    let mut light = Vec::new();
    for m in members(sb) {
        let email = m["user"]["email"].as_str().unwrap().to_string();
        if m["userAttributes"]["ACCESS_TYPE"] == json!("READ_ONLY") {
            light.push(email);
        } else {
            core.push(email);
        }
    }
    (core, light)
}

fn count(sb: &Sandbox, method: &str, path: &str) -> usize {
    sb.requests()
        .iter()
        .filter(|r| r.method == method && r.path == path)
        .count()
}

fn singer() -> Input {
    Input::new()
        .schema("users", &["id"])
        .schema("groups", &["id"])
        .schema("memberships", &["group_id", "user_id"])
}

#[test]
fn members_are_invited_in_batches_and_removed_by_email() {
    let sb = Sandbox::builder()
        .users(30)
        .groups(2)
        .start_background()
        .unwrap();
    let (core, _) = seeded(&sb);
    let input = singer()
        .record("users", json!({"id": "n1", "email": "new1@example.com", "name": "Not sent"}))
        .record("users", json!({"id": "n2", "email": "new2@example.com"}))
        .record("users", json!({"id": "new3@example.com"}))
        .record("users", json!({"id": "old", "email": core[0]}))
        .record("users", json!({"id": "bad", "email": "bad@nodot"}))
        .record("users", json!({"id": "no-email"}))
        .record("users", json!({"id": "gone", "email": core[1], "_sdc_deleted_at": "2024-01-01T00:00:00Z"}))
        .record("users", json!({"id": "ghost", "email": "ghost@example.com", "_sdc_deleted_at": "2024-01-01T00:00:00Z"}))
        .state(json!({"n": 8}));
    sb.clear_requests();
    let run = target(&sb.config(Vendor::Guru), &input).ok();
    assert_eq!(run.states.last(), Some(&json!({"n": 8})));
    for email in ["new1@example.com", "new2@example.com", "new3@example.com"] {
        let m = member(&sb, email).unwrap_or_else(|| panic!("{email} invited"));
        assert_eq!(m["user"]["status"], json!("PENDING"));
    }
    assert_eq!(
        count(&sb, "POST", "/guru/api/v1/members/invite"),
        1,
        "one invite for the whole batch"
    );
    assert!(
        run.reason_for("id", "bad")
            .contains("Invalid email address")
    );
    assert!(run.reason_for("id", "no-email").contains("no email"));
    assert_eq!(run.rejects.len(), 2, "{:?}", run.rejects);
    assert!(member(&sb, &core[1]).is_none(), "removed");
    assert!(
        run.stderr
            .contains("only the email of users records is sent"),
        "{}",
        run.stderr
    );

    // Again: everyone is "already a part of the team", which is a success.
    let input = input_again();
    let run = target(&sb.config(Vendor::Guru), &input).ok();
    assert!(run.rejects.is_empty(), "{:?}", run.rejects);
}

fn input_again() -> Input {
    singer()
        .record("users", json!({"id": "n1", "email": "NEW1@example.com"}))
        .record("users", json!({"id": "n2", "email": "new2@example.com"}))
        .state(json!({"n": 2}))
}

#[test]
fn groups_are_found_by_name_and_created_only_when_missing() {
    let sb = Sandbox::builder()
        .users(10)
        .groups(2)
        .start_background()
        .unwrap();
    let existing = sb.dump(Vendor::Guru)["groups"][1]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let input = singer()
        .record("groups", json!({"id": "g-old", "name": existing}))
        .record("groups", json!({"id": "g-new", "name": "Brand New"}))
        .record("groups", json!({"id": "g-new-again", "name": "Brand New"}))
        .state(json!({"n": 3}));
    sb.clear_requests();
    let run = target(&sb.config(Vendor::Guru), &input).ok();
    assert!(run.rejects.is_empty(), "{:?}", run.rejects);
    assert_eq!(groups_named(&sb, "Brand New").len(), 1);
    assert_eq!(groups_named(&sb, &existing).len(), 1);
    target(&sb.config(Vendor::Guru), &input).ok();
    assert_eq!(
        groups_named(&sb, "Brand New").len(),
        1,
        "a replay creates nothing"
    );
    assert_eq!(count(&sb, "POST", "/guru/api/v1/groups"), 1);

    // A group deleted in the source is deleted in Guru.
    let input = singer()
        .record(
            "groups",
            json!({"id": "g-new", "name": "Brand New", "_sdc_deleted_at": "2024-01-01T00:00:00Z"}),
        )
        .record(
            "groups",
            json!({"id": "g-none", "name": "Never Was", "_sdc_deleted_at": "2024-01-01T00:00:00Z"}),
        )
        .state(json!({"n": 2}));
    let run = target(&sb.config(Vendor::Guru), &input).ok();
    assert!(run.rejects.is_empty(), "{:?}", run.rejects);
    assert!(groups_named(&sb, "Brand New").is_empty());
}

/// Unconfirmed writes (a 5xx to an invite or a group create, which Guru may have acted on)
/// are sent again only when that cannot duplicate anything: an invite answers "already a part
/// of the team" the second time, and a group create is repeated only after a fresh listing
/// shows it missing. The group create fails twice without Guru acting, then once after Guru
/// created the group (`apply_then_fail`); the invite is applied twice with its answer lost.
/// Guru must end up holding one group and one member per email: a blind resend of the create
/// would leave two groups named "Support".
#[test]
fn unconfirmed_invites_and_group_creates_are_sent_again_without_duplicates() {
    let sb = Sandbox::builder()
        .users(0)
        .groups(0)
        .start_background()
        .unwrap();
    // The first rule that matches wins: two plain 500s, then one applied before its 500.
    sb.faults().fail_next(
        FailRule::new("/guru/api/v1/groups", 2)
            .status(500)
            .method("POST"),
    );
    sb.faults().fail_next(
        FailRule::apply_then_fail("/guru/api/v1/groups", 1)
            .status(500)
            .method("POST"),
    );
    sb.faults().fail_next(
        FailRule::apply_then_fail("/guru/api/v1/members/invite", 1)
            .status(503)
            .method("POST"),
    );
    sb.faults()
        .fail_next(FailRule::apply_then_drop("/guru/api/v1/members/invite", 1).method("POST"));
    let groups_before = sb.dump(Vendor::Guru)["groups"].as_array().unwrap().len();
    let input = singer()
        .record("groups", json!({"id": "g1", "name": "Support"}))
        .record("users", json!({"id": "u1", "email": "one@example.com"}))
        .record("users", json!({"id": "u2", "email": "two@example.com"}))
        .record("memberships", json!({"group_id": "g1", "user_id": "u1"}))
        .record("memberships", json!({"group_id": "g1", "user_id": "u2"}))
        .state(json!({"n": 5}));
    let run = target(&sb.config(Vendor::Guru), &input).ok();
    assert!(run.rejects.is_empty(), "{:?}\n{}", run.rejects, run.stderr);
    assert_eq!(run.states.last(), Some(&json!({"n": 5})));
    assert!(sb.faults().view().fail_next.is_empty(), "every fault fired");
    assert_eq!(count(&sb, "POST", "/guru/api/v1/groups"), 3);
    // What Guru holds: one more group than before, one "Support", one member per email.
    assert_eq!(
        sb.dump(Vendor::Guru)["groups"].as_array().unwrap().len(),
        groups_before + 1
    );
    assert_eq!(
        group_emails(&sb, "Support"),
        ["one@example.com", "two@example.com"]
    );
    for email in ["one@example.com", "two@example.com"] {
        let held = members(&sb)
            .iter()
            .filter(|m| m["user"]["email"] == json!(email))
            .count();
        assert_eq!(held, 1, "{email} is a member once");
    }
}

#[test]
fn group_adds_reject_only_the_light_user_and_the_stranger() {
    let sb = Sandbox::builder()
        .users(60)
        .groups(2)
        .start_background()
        .unwrap();
    let (core, light) = seeded(&sb);
    assert!(!light.is_empty(), "the seed has light users");
    let mut input = singer()
        .record("users", json!({"id": "crm-1", "email": core[0]}))
        .record("groups", json!({"id": "g-x", "name": "Crew"}))
        .record(
            "memberships",
            json!({"group_id": "g-x", "user_id": "crm-1"}),
        );
    for email in &core[1..4] {
        input = input.record("memberships", json!({"group_id": "g-x", "user_id": email}));
    }
    input = input
        .record(
            "memberships",
            json!({"group_id": "g-x", "user_id": light[0]}),
        )
        .record(
            "memberships",
            json!({"group_id": "g-x", "user_id": "stranger@example.com"}),
        )
        .record(
            "memberships",
            json!({"group_id": "g-x", "user_id": "crm-unknown"}),
        )
        .state(json!({"n": 9}));
    let run = target(&sb.config(Vendor::Guru), &input).ok();
    assert_eq!(run.states.last(), Some(&json!({"n": 9})));
    let light_reason = run.reason_for("user_id", &light[0]);
    assert!(
        light_reason.contains("light users (read-only access) cannot be in groups"),
        "{light_reason}"
    );
    assert!(
        run.reason_for("user_id", "stranger@example.com")
            .contains("User must be a team member")
    );
    assert!(
        run.reason_for("user_id", "crm-unknown")
            .contains("not an email")
    );
    assert_eq!(run.rejects.len(), 3, "{:?}", run.rejects);
    let mut want: Vec<String> = core[0..4].iter().map(|e| e.to_lowercase()).collect();
    want.sort();
    assert_eq!(group_emails(&sb, "Crew"), want);

    // Removals: one member, and someone who is not in the group.
    let input = singer()
        .record("memberships", json!({"group_id": "g-x", "user_id": core[1], "_sdc_deleted_at": "2024-01-01T00:00:00Z"}))
        .record("memberships", json!({"group_id": "g-x", "user_id": core[9], "_sdc_deleted_at": "2024-01-01T00:00:00Z"}))
        .state(json!({"n": 2}));
    let config = sb.config(Vendor::Guru);
    // The group key "g-x" is not in this run's groups records: Guru groups are found by name,
    // so nothing is found and there is nothing to remove.
    let run = target(&config, &input).ok();
    assert!(run.rejects.is_empty(), "{:?}", run.rejects);
    assert!(
        run.stderr.contains("guru has no group for key"),
        "{}",
        run.stderr
    );
    let input = singer()
        .record("memberships", json!({"group_id": "Crew", "user_id": core[1], "_sdc_deleted_at": "2024-01-01T00:00:00Z"}))
        .record("memberships", json!({"group_id": "Crew", "user_id": core[9], "_sdc_deleted_at": "2024-01-01T00:00:00Z"}))
        .state(json!({"n": 2}));
    let run = target(&config, &input).ok();
    assert!(run.rejects.is_empty(), "{:?}", run.rejects);
    assert!(run.stderr.contains("skipped"), "{}", run.stderr);
    let mut want: Vec<String> = [&core[0], &core[2], &core[3]]
        .iter()
        .map(|e| e.to_lowercase())
        .collect();
    want.sort();
    assert_eq!(group_emails(&sb, "Crew"), want);
}

#[test]
fn a_run_killed_mid_way_resumes_from_its_last_state_without_duplicate_groups() {
    let sb = Sandbox::builder()
        .users(5)
        .groups(1)
        // Slow enough that the run outlasts two states (printed at most once a second) even
        // when a loaded machine delays the first one.
        .latency(Some(Vendor::Guru), std::time::Duration::from_millis(60))
        .start_background()
        .unwrap();
    let mut input = singer();
    let mut n = 0;
    // Keys Guru itself can find across runs: members by email, groups by name (CONTRACT.md).
    for i in 1..=30 {
        let email = format!("k{i}@example.com");
        input = input.record("users", json!({"id": email, "email": email}));
        n += 1;
        input = input.state(json!({"n": n}));
    }
    for i in 1..=30 {
        input = input.record(
            "groups",
            json!({"id": format!("Team {i}"), "name": format!("Team {i}")}),
        );
        n += 1;
        input = input.state(json!({"n": n}));
    }
    for i in 1..=30 {
        input = input.record(
            "memberships",
            json!({"group_id": format!("Team {i}"), "user_id": format!("k{i}@example.com")}),
        );
        n += 1;
        input = input.state(json!({"n": n}));
    }
    let mut config = sb.config(Vendor::Guru);
    config["max_concurrency"] = json!(1);
    let states = target_killed_after(&config, &input, 2);

    let last = states.last().cloned();
    assert!(
        last.as_ref().is_some_and(|s| s["n"].as_u64() < Some(90)),
        "killed mid-way: {last:?}"
    );
    // Groups created before the kill are found by name, not created twice.
    let run = target(&config, &resume_after(&input, last.as_ref())).ok();
    assert_eq!(run.states.last(), Some(&json!({"n": 90})));
    assert!(run.rejects.is_empty(), "{:?}", run.rejects);
    for i in 1..=30 {
        assert_eq!(
            group_emails(&sb, &format!("Team {i}")),
            vec![format!("k{i}@example.com")]
        );
    }
}

#[test]
fn group_adds_go_in_arrays_of_at_most_100_emails_and_a_refused_member_is_isolated() {
    // The sandbox answers 400 to a group add of more than 100 emails, as Guru does: 250
    // members all arrive with every add call accepted, so none was over the limit.
    let sb = Sandbox::builder()
        .users(400)
        .groups(1)
        .start_background()
        .unwrap();
    let (core, light) = seeded(&sb);
    assert!(core.len() >= 260 && !light.is_empty(), "seed too small");
    let mut input = singer().record("groups", json!({"id": "g-big", "name": "Big Crew"}));
    for email in &core[..250] {
        input = input.record(
            "memberships",
            json!({"group_id": "g-big", "user_id": email}),
        );
    }
    let input = input.state(json!({"n": 251}));
    sb.clear_requests();
    let run = target(&sb.config(Vendor::Guru), &input).ok();
    assert_eq!(run.states.last(), Some(&json!({"n": 251})));
    assert!(run.rejects.is_empty(), "{:?}", run.rejects);
    let mut want: Vec<String> = core[..250].iter().map(|e| e.to_lowercase()).collect();
    want.sort();
    assert_eq!(group_emails(&sb, "Big Crew"), want);
    let id = groups_named(&sb, "Big Crew")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let adds = |sb: &Sandbox| {
        sb.requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path == format!("/guru/api/v1/groups/{id}/members"))
            .map(|r| r.status)
            .collect::<Vec<_>>()
    };
    let first = adds(&sb);
    assert!(first.len() >= 3, "250 members need 3 calls: {first:?}");
    assert!(first.iter().all(|s| (200..300).contains(s)), "{first:?}");

    // All or nothing: one light user among 10 new members refuses their whole batch; only the
    // light user is rejected and the other 10 arrive.
    let mut input = singer().record("groups", json!({"id": "g-big", "name": "Big Crew"}));
    for (i, email) in core[250..260].iter().enumerate() {
        input = input.record(
            "memberships",
            json!({"group_id": "g-big", "user_id": email}),
        );
        if i == 4 {
            input = input.record(
                "memberships",
                json!({"group_id": "g-big", "user_id": light[0]}),
            );
        }
    }
    let input = input.state(json!({"n": 12}));
    sb.clear_requests();
    let run = target(&sb.config(Vendor::Guru), &input).ok();
    assert_eq!(run.states.last(), Some(&json!({"n": 12})));
    assert_eq!(run.rejects.len(), 1, "{:?}", run.rejects);
    assert!(
        run.reason_for("user_id", &light[0])
            .contains("light users (read-only access) cannot be in groups")
    );
    let mut want: Vec<String> = core[..260].iter().map(|e| e.to_lowercase()).collect();
    want.sort();
    assert_eq!(group_emails(&sb, "Big Crew"), want);
    assert!(
        adds(&sb).iter().any(|s| !(200..300).contains(s)),
        "the batch with the light user was refused whole, then resent without them"
    );
}

/// Issue 12 item 1: emails are joined into Guru's comma-separated invite string, so an email
/// holding a separator used to invite a second person. Every email a writer puts into a list or
/// a path is checked to be one address, and anything else is rejected before any request.
#[test]
fn an_email_with_a_separator_invites_nobody_else() {
    let sb = Sandbox::builder()
        .users(4)
        .groups(1)
        .start_background()
        .unwrap();
    let hostile = [
        ("comma", "alice@example.com,mallory@evil.example"),
        ("semicolon", "alice@example.com;mallory@evil.example"),
        ("space", "alice@example.com mallory@evil.example"),
        ("angle", "Alice <alice@example.com>"),
        ("newline", "alice@example.com\nmallory@evil.example"),
        ("nul", "alice@example.com\u{0}mallory@evil.example"),
    ];
    let mut input = singer();
    for (id, email) in hostile {
        input = input.record("users", json!({"id": id, "email": email}));
    }
    let input = input
        .record("users", json!({"id": "ok", "email": "bob@example.com"}))
        // A key taken as an email, in a membership and in a delete path.
        .record(
            "memberships",
            json!({"group_id": "team-001", "user_id": "x@example.com,mallory@evil.example"}),
        )
        .record(
            "users",
            json!({"id": "y@example.com,mallory@evil.example", "_sdc_deleted_at": "2024-01-01T00:00:00Z"}),
        )
        .state(json!({"n": 9}));
    sb.clear_requests();
    let run = target(&sb.config(Vendor::Guru), &input).ok();
    assert!(
        member(&sb, "mallory@evil.example").is_none(),
        "nobody extra"
    );
    assert!(member(&sb, "alice@example.com").is_none());
    assert!(
        member(&sb, "bob@example.com").is_some(),
        "the good one is invited"
    );
    assert_eq!(count(&sb, "POST", "/guru/api/v1/members/invite"), 1);
    for (id, _) in hostile {
        let reason = run.reason_for("id", id);
        assert!(
            reason.contains("is not one email address") && reason.contains("field email"),
            "{id}: {reason}"
        );
    }
    assert_eq!(run.rejects.len(), hostile.len() + 2, "{:?}", run.rejects);
    assert!(
        run.reason_for("user_id", "x@example.com,mallory@evil.example")
            .contains("not one email address")
    );
    assert!(
        sb.requests().iter().all(|r| r.method != "DELETE"),
        "no removal was sent: {:?}",
        sb.requests()
    );
}

/// Issue 11 item 3: an inactive users record (`active: false`, or a status such as INACTIVE)
/// is never invited. A member Guru has is removed (`inactive_users: remove`, the default), or
/// left alone with `inactive_users: ignore`.
#[test]
fn inactive_users_are_never_invited_and_members_are_removed() {
    let sb = Sandbox::builder()
        .users(20)
        .groups(1)
        .start_background()
        .unwrap();
    let (core, _) = seeded(&sb);
    let input = singer()
        .record(
            "users",
            json!({"id": "a", "email": "new-a@example.com", "active": false}),
        )
        .record(
            "users",
            json!({"id": "b", "email": "new-b@example.com", "status": "INACTIVE"}),
        )
        .record(
            "users",
            json!({"id": "c", "email": "new-c@example.com", "status": "deactivated"}),
        )
        .record(
            "users",
            json!({"id": "d", "email": "new-d@example.com", "active": "false"}),
        )
        .record(
            "users",
            json!({"id": "e", "email": "new-e@example.com", "status": "Suspended"}),
        )
        .record(
            "users",
            json!({"id": "m", "email": core[0], "active": false}),
        )
        .record(
            "users",
            json!({"id": "ok", "email": "new-ok@example.com", "active": true, "status": "ACTIVE"}),
        )
        .state(json!({"n": 7}));
    sb.clear_requests();
    let run = target(&sb.config(Vendor::Guru), &input).ok();
    assert!(run.rejects.is_empty(), "{:?}", run.rejects);
    for email in [
        "new-a@example.com",
        "new-b@example.com",
        "new-c@example.com",
        "new-d@example.com",
        "new-e@example.com",
    ] {
        assert!(member(&sb, email).is_none(), "{email} was invited");
    }
    assert!(
        member(&sb, &core[0]).is_none(),
        "an inactive member is removed"
    );
    assert!(member(&sb, "new-ok@example.com").is_some());
    assert_eq!(count(&sb, "POST", "/guru/api/v1/members/invite"), 1);

    // `inactive_users: ignore`: neither invited nor removed.
    let mut config = sb.config(Vendor::Guru);
    config["inactive_users"] = json!("ignore");
    let input = singer()
        .record(
            "users",
            json!({"id": "m2", "email": core[1], "status": "INACTIVE"}),
        )
        .record(
            "users",
            json!({"id": "f", "email": "new-f@example.com", "active": false}),
        )
        .state(json!({"n": 2}));
    sb.clear_requests();
    let run = target(&config, &input).ok();
    assert!(run.rejects.is_empty(), "{:?}", run.rejects);
    assert!(member(&sb, &core[1]).is_some(), "left alone");
    assert!(member(&sb, "new-f@example.com").is_none());
    assert!(
        sb.requests()
            .iter()
            .all(|r| r.method == "GET" || r.path.ends_with("/whoami")),
        "nothing written: {:?}",
        sb.requests()
    );
}

/// A record's role sets the member type: on invite (`teamMemberType`), and for someone
/// already on the team by upgrade or downgrade (Guru's API has no team-level role but these).
#[test]
fn roles_set_the_member_type_on_invite_and_for_existing_members() {
    let sb = Sandbox::builder()
        .users(40)
        .groups(1)
        .start_background()
        .unwrap();
    let (core, light) = seeded(&sb);
    assert!(!light.is_empty());
    let input = singer()
        .record(
            "users",
            json!({"id": "v", "email": "viewer@example.com", "role": "viewer"}),
        )
        .record(
            "users",
            json!({"id": "a", "email": "admin@example.com", "role": "ADMIN"}),
        )
        .record(
            "users",
            json!({"id": "down", "email": core[0], "role": "read_only"}),
        )
        .record(
            "users",
            json!({"id": "up", "email": light[0], "role": "author"}),
        )
        .record("users", json!({"id": "same", "email": core[1]}))
        .state(json!({"n": 5}));
    let run = target(&sb.config(Vendor::Guru), &input).ok();
    assert!(run.rejects.is_empty(), "{:?}", run.rejects);
    let access = |email: &str| member(&sb, email).unwrap()["userAttributes"]["ACCESS_TYPE"].clone();
    assert_eq!(access("viewer@example.com"), json!("READ_ONLY"));
    assert_eq!(access("admin@example.com"), json!("CORE"));
    assert_eq!(access(&core[0]), json!("READ_ONLY"), "downgraded");
    assert_eq!(access(&light[0]), json!("CORE"), "upgraded");
    assert_eq!(access(&core[1]), json!("CORE"), "no role: left alone");
}

/// Removing a member can re-assign the cards they verify (`replace_verifier`), through Guru's
/// `DELETE /members/{email}/replaceverifier`; a verifier that is not one email is a config error.
#[test]
fn removing_a_member_can_replace_their_verifier() {
    let sb = Sandbox::builder()
        .users(10)
        .groups(1)
        .start_background()
        .unwrap();
    let (core, _) = seeded(&sb);
    let mut config = sb.config(Vendor::Guru);
    config["replace_verifier"] =
        json!({"coll-1": core[1], "coll-2": {"type": "member", "id": core[2]}});
    let input = singer()
        .record(
            "users",
            json!({"id": "gone", "email": core[0], "_sdc_deleted_at": "2024-01-01T00:00:00Z"}),
        )
        .state(json!({"n": 1}));
    let run = target(&config, &input).ok();
    assert!(run.rejects.is_empty(), "{:?}", run.rejects);
    assert!(member(&sb, &core[0]).is_none());
    let replaced = sb.dump(Vendor::Guru)["replaced_verifiers"].clone();
    assert_eq!(
        replaced,
        json!([{"email": core[0], "collectionVerifiers": {
            "coll-1": {"type": "member", "id": core[1]},
            "coll-2": {"type": "member", "id": core[2]},
        }}])
    );
    config["replace_verifier"] = json!({"coll-1": "a@example.com,b@example.com"});
    let run = target(&config, &input);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("replace_verifier"), "{}", run.stderr);
}

/// Issue 11 item 3: a group renamed at the source is renamed in Guru, not created a second
/// time: `group_map_file` keeps which Guru group each source group key is across runs.
#[test]
fn a_group_renamed_at_the_source_is_renamed_in_guru() {
    let sb = Sandbox::builder()
        .users(6)
        .groups(1)
        .start_background()
        .unwrap();
    let (core, _) = seeded(&sb);
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("guru-groups.json");
    let mut config = sb.config(Vendor::Guru);
    config["group_map_file"] = json!(map.to_str().unwrap());
    let run1 = singer()
        .record("users", json!({"id": "u0", "email": core[0]}))
        .record("groups", json!({"id": "src-42", "name": "Eng Rename Test"}))
        .record(
            "memberships",
            json!({"group_id": "src-42", "user_id": "u0"}),
        )
        .state(json!({"n": 3}));
    let run = target(&config, &run1).ok();
    assert!(run.rejects.is_empty(), "{:?}", run.rejects);
    let id = groups_named(&sb, "Eng Rename Test")[0]["id"].clone();
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&map).unwrap()).unwrap();
    assert_eq!(saved, json!({"src-42": id}));

    let run2 = singer()
        .record("users", json!({"id": "u1", "email": core[1]}))
        .record(
            "groups",
            json!({"id": "src-42", "name": "Engineering Rename Test"}),
        )
        .record(
            "memberships",
            json!({"group_id": "src-42", "user_id": "u1"}),
        )
        .state(json!({"n": 3}));
    let run = target(&config, &run2).ok();
    assert!(run.rejects.is_empty(), "{:?}", run.rejects);
    assert!(
        groups_named(&sb, "Eng Rename Test").is_empty(),
        "the old name is gone"
    );
    let renamed = groups_named(&sb, "Engineering Rename Test");
    assert_eq!(renamed.len(), 1, "one group, not two");
    assert_eq!(renamed[0]["id"], id, "the same group");
    let mut want = vec![core[0].to_lowercase(), core[1].to_lowercase()];
    want.sort();
    assert_eq!(group_emails(&sb, "Engineering Rename Test"), want);
    // A replay changes nothing.
    sb.clear_requests();
    target(&config, &run2).ok();
    assert_eq!(
        count(
            &sb,
            "PUT",
            &format!("/guru/api/v1/groups/{}", id.as_str().unwrap())
        ),
        0
    );
    assert_eq!(count(&sb, "POST", "/guru/api/v1/groups"), 0);

    // Without the file, the run says a rename in a later run is not recognised.
    let run = target(&sb.config(Vendor::Guru), &run2).ok();
    assert!(
        run.stderr.contains("group_map_file is not set"),
        "{}",
        run.stderr
    );
}

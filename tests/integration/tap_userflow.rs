//! `tap-roster` against the sandbox's Userflow: streams, selection, state, resume, faults.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::tap;

use roster_sandbox::{FailRule, Sandbox, Vendor};
use serde_json::{Value, json};
use tap::{Holdings, catalog, check_no_duplicates, check_protocol, sync, tap};

const V: Vendor = Vendor::Userflow;

fn sandbox(users: usize) -> Sandbox {
    Sandbox::builder()
        .seed(7)
        .users(users)
        .groups(12)
        .start_background()
        .unwrap()
}

fn list_requests(sb: &Sandbox, path: &str) -> Vec<String> {
    sb.requests()
        .into_iter()
        .filter(|r| r.path == format!("/userflow{path}"))
        .map(|r| r.query.unwrap_or_default())
        .collect()
}

#[test]
fn a_sync_emits_every_user_group_and_membership_once_typed_by_the_schema() {
    let sb = sandbox(250);
    let run = sync(&sb.config(V), None, None).ok();
    check_protocol(&run.messages);
    check_no_duplicates(&run.messages);
    let held = Holdings::of(&sb, V);
    assert!(held.memberships.len() >= 250, "{:?}", held.sizes());
    assert_eq!(Holdings::from_messages(&run.messages), held);
    // Memberships come from expand=memberships: three pages of users, one of groups, no call
    // per user.
    let users = list_requests(&sb, "/users");
    assert_eq!(users.len(), 3, "{users:?}");
    assert!(
        users
            .iter()
            .all(|q| q.contains("limit=100") && q.contains("expand=memberships"))
    );
    assert!(users[1].ends_with(&format!(
        "starting_after={}",
        run.records("users")[99]["id"].as_str().unwrap()
    )));
    assert_eq!(list_requests(&sb, "/groups").len(), 1);
    assert_eq!(sb.requests().len(), 4, "no other request");
    assert!(run.stderr.contains("users 250"), "{}", run.stderr);
}

#[test]
fn records_carry_the_standard_fields_and_every_other_value_in_attributes() {
    let sb = sandbox(20);
    let run = sync(&sb.config(V), None, None).ok();
    let dump = sb.dump(V);
    let wire = &dump["users"][3];
    let id = wire["id"].as_str().unwrap();
    let record = run
        .records("users")
        .into_iter()
        .find(|r| r["id"] == id)
        .unwrap();
    let a = &wire["attributes"];
    assert_eq!(record["email"], a["email"]);
    assert_eq!(record["name"], a["name"]);
    assert_eq!(record["created_at"], wire["created_at"]);
    for key in ["plan", "role", "locale", "seats", "signed_up_at"] {
        assert_eq!(record["attributes"][key], a[key], "{key}");
    }
    assert_eq!(record["updated_at"], wire["updated_at"]);
    assert!(record["attributes"].get("updated_at").is_none());
    assert!(
        record["attributes"].get("email").is_none(),
        "standard fields are not repeated"
    );
    let m = &wire["memberships"][0];
    let membership = run
        .records("memberships")
        .into_iter()
        .find(|r| r["user_id"] == id && r["group_id"] == m["group_id"])
        .unwrap();
    assert_eq!(
        membership["attributes"],
        json!({"primary": m["attributes"]["primary"], "created_at": m["created_at"]})
    );
    let group = run.records("groups").into_iter().next().unwrap();
    assert_eq!(group["name"], dump["groups"][0]["attributes"]["name"]);
    assert_eq!(
        group["attributes"]["industry"],
        dump["groups"][0]["attributes"]["industry"]
    );
}

#[test]
fn a_state_follows_each_page_with_the_last_id_and_currently_syncing() {
    let sb = sandbox(250);
    let run = sync(&sb.config(V), None, None).ok();
    let states = run.states();
    assert_eq!(states.len(), 4, "one STATE per page");
    let users = run.records("users");
    // Groups first (one page), so a target knows every group before its memberships.
    assert!(states[0]["bookmarks"]["groups"]["completed_at"].is_string());
    assert_eq!(states[0]["currently_syncing"], Value::Null);
    assert_eq!(states[1]["currently_syncing"], "users");
    assert_eq!(
        states[1]["bookmarks"]["users"]["next_page"],
        users[99]["id"]
    );
    assert_eq!(
        states[1]["bookmarks"]["memberships"]["next_page"],
        users[99]["id"]
    );
    assert_eq!(
        states[2]["bookmarks"]["users"]["next_page"],
        users[199]["id"]
    );
    assert_eq!(states[3]["currently_syncing"], Value::Null);
    assert!(states[3]["bookmarks"]["users"]["completed_at"].is_string());
    assert!(states[3]["bookmarks"]["users"].get("next_page").is_none());
    // Every groups RECORD comes before the first users or memberships RECORD.
    let streams: Vec<&str> = run
        .messages
        .iter()
        .filter(|m| m["type"] == "RECORD")
        .map(|m| m["stream"].as_str().unwrap())
        .collect();
    let last_group = streams.iter().rposition(|s| *s == "groups").unwrap();
    let first_other = streams.iter().position(|s| *s != "groups").unwrap();
    assert!(last_group < first_other, "groups first");
    // Each STATE comes right after its page's records.
    let kinds: Vec<&str> = run
        .messages
        .iter()
        .map(|m| m["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.last(), Some(&"STATE"));
}

#[test]
fn an_unfinished_stream_resumes_and_a_finished_one_starts_over() {
    let sb = sandbox(250);
    let first = sync(&sb.config(V), None, None).ok();
    let users = first.records("users");
    let cursor = users[99]["id"].clone();
    let state = json!({
        "bookmarks": {
            "users": {"next_page": cursor},
            "memberships": {"next_page": cursor},
            "groups": {"completed_at": "2026-01-01T00:00:00Z"}
        },
        "currently_syncing": "users"
    });
    sb.clear_requests();
    let run = sync(&sb.config(V), Some(&state), None).ok();
    let resumed = run.records("users");
    assert_eq!(resumed.len(), 150);
    assert_eq!(resumed[0]["id"], users[100]["id"]);
    let first_request = &list_requests(&sb, "/users")[0];
    assert!(first_request.ends_with(&format!("starting_after={}", cursor.as_str().unwrap())));
    assert_eq!(
        run.records("groups").len(),
        12,
        "a finished stream starts a fresh pass"
    );
    check_no_duplicates(&run.messages);
}

/// Killed between listings: the groups listing had finished, users had not started. The resumed
/// run reads only users (and their memberships), and the two runs together hold everything
/// exactly once.
#[test]
fn a_listing_finished_before_the_kill_is_not_read_again() {
    let sb = sandbox(250);
    let first = sync(&sb.config(V), None, None).ok();
    let states = first.states();
    let interrupted = states[0].clone();
    assert!(interrupted["sync_started_at"].is_string(), "{interrupted}");
    assert!(interrupted["bookmarks"]["groups"]["completed_at"].is_string());
    assert_eq!(
        states[3]["sync_started_at"],
        Value::Null,
        "the last STATE ends the run"
    );
    // What the killed run had emitted up to that STATE.
    let cut = first
        .messages
        .iter()
        .position(|m| m["type"] == "STATE" && m["value"] == interrupted)
        .unwrap();
    sb.clear_requests();
    let run = sync(&sb.config(V), Some(&interrupted), None).ok();
    assert!(
        list_requests(&sb, "/groups").is_empty(),
        "groups read again"
    );
    assert_eq!(run.records("groups").len(), 0);
    assert_eq!(run.records("users").len(), 250);
    assert!(
        run.stderr.contains("done before the interruption"),
        "{}",
        run.stderr
    );
    assert_eq!(run.states().last().unwrap()["sync_started_at"], Value::Null);
    let mut both = first.messages[..=cut].to_vec();
    both.extend(run.messages.iter().cloned());
    check_no_duplicates(&both);
    assert_eq!(Holdings::from_messages(&both), Holdings::of(&sb, V));
}

#[test]
fn a_deleted_bookmark_is_warned_about_once_and_the_stream_read_again() {
    let sb = sandbox(150);
    let state = json!({"bookmarks": {"users": {"next_page": "usr_gone"}, "memberships": {"next_page": "usr_gone"}}, "currently_syncing": "users"});
    let run = sync(&sb.config(V), Some(&state), None).ok();
    assert_eq!(run.records("users").len(), 150);
    assert_eq!(
        run.stderr.matches("rejected the stored cursor").count(),
        1,
        "{}",
        run.stderr
    );
    check_no_duplicates(&run.messages);
    assert_eq!(Holdings::from_messages(&run.messages), Holdings::of(&sb, V));
}

#[test]
fn selection_is_honoured_and_unselected_streams_make_no_calls() {
    let sb = sandbox(120);
    let config = sb.config(V);

    // groups only: not one call to /users.
    sb.clear_requests();
    let run = sync(&config, None, Some(&catalog(&config, &["groups"], &[]))).ok();
    assert!(run.records("users").is_empty() && run.records("memberships").is_empty());
    assert_eq!(run.records("groups").len(), 12);
    assert!(list_requests(&sb, "/users").is_empty());
    assert!(
        !run.messages
            .iter()
            .any(|m| m["type"] == "SCHEMA" && m["stream"] == "users")
    );

    // users without memberships: no expand; a deselected property is gone, the key stays
    // although Meltano marked it deselected.
    sb.clear_requests();
    let selected = catalog(&config, &["users"], &[("users", "email"), ("users", "id")]);
    let run = sync(&config, None, Some(&selected)).ok();
    let users = run.records("users");
    assert_eq!(users.len(), 120);
    assert!(
        users
            .iter()
            .all(|u| u.get("email").is_none() && u["id"].is_string())
    );
    assert!(
        list_requests(&sb, "/users")
            .iter()
            .all(|q| !q.contains("expand"))
    );
    assert!(list_requests(&sb, "/groups").is_empty());
    let schema = run.messages.iter().find(|m| m["type"] == "SCHEMA").unwrap();
    assert!(schema["schema"]["properties"].get("email").is_none());
    assert_eq!(schema["key_properties"], json!(["id"]));
    check_protocol(&run.messages);

    // memberships only: the users listing runs with expand, no users are emitted.
    let run = sync(
        &config,
        None,
        Some(&catalog(&config, &["memberships"], &[])),
    )
    .ok();
    assert!(run.records("users").is_empty());
    assert_eq!(
        Holdings::from_messages(&run.messages).memberships,
        Holdings::of(&sb, V).memberships
    );
}

#[test]
fn retries_and_rate_limits_do_not_lose_or_repeat_records() {
    let sb = sandbox(250);
    sb.faults()
        .fail_next(FailRule::new("/userflow/users", 2).status(503));
    sb.faults().fail_next(
        FailRule::new("/userflow/groups", 1)
            .status(429)
            .retry_after(1),
    );
    sb.faults()
        .fail_next(FailRule::drop_connection("/userflow/users", 1));
    let run = sync(&sb.config(V), None, None).ok();
    check_no_duplicates(&run.messages);
    assert_eq!(Holdings::from_messages(&run.messages), Holdings::of(&sb, V));
}

/// A tap reads each listing one page at a time, so the HTTP engine's cautious start (the first
/// second paced from 10 requests/s, doubling every 100 ms, for clients that open with many
/// requests at once) is off for it: the first pages follow one another as fast as they are
/// answered. With it, the first six requests (groups and five users pages) took at least
/// 250 ms (at 0, 100, 150, 200, 225 and 250 ms), ~0.6 s of a 1,000-page run in all.
#[test]
fn the_page_chain_is_not_held_back_by_a_cautious_start() {
    let sb = sandbox(1_000);
    let files = crate::support::files::Files::new();
    let config = files.json("config.json", &sb.config(V));
    let out = crate::support::bin::tap()
        .real_delays()
        .config(&config)
        .output();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut listed: Vec<_> = sb
        .requests()
        .into_iter()
        .filter(|r| r.path == "/userflow/users" || r.path == "/userflow/groups")
        .collect();
    listed.sort_by_key(|r| r.seq);
    assert_eq!(listed.len(), 11, "ten users pages and one groups page");
    // From the first request's arrival to the sixth's, less the time the sandbox took to
    // answer the five before it (a debug build's pages take milliseconds to write).
    let first = &listed[..6];
    let span = (first[5].at - first[0].at).num_microseconds().unwrap() as f64 / 1000.0;
    let answering: f64 = first[..5].iter().map(|r| r.duration_ms).sum();
    assert!(
        span - answering < 150.0,
        "six requests over {span:.1} ms, of which the sandbox answered for {answering:.1} ms"
    );
}

/// When Userflow refuses a users page's cursor during a run (its record deleted since), the
/// chain reads on after the page's previous id: the next page is asked for before the chain
/// has noted the page's ids, so the fetch waits for them then.
#[test]
fn a_cursor_refused_during_the_run_reads_on_after_the_pages_previous_id() {
    let sb = Sandbox::builder()
        .seed(7)
        .users(250)
        .groups(12)
        .latency(Some(V), std::time::Duration::from_millis(300))
        .start_background()
        .unwrap();
    let dump = sb.dump(V);
    let previous = dump["users"][98]["id"].as_str().unwrap().to_string();
    let files = crate::support::files::Files::new();
    let config = files.json("config.json", &sb.config(V));
    let child = crate::support::bin::tap()
        .config(&config)
        .command()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The groups page and the first users page have arrived (and been let through): the
    // next users request, the second page's, is refused as if its cursor were deleted.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while sb.stats().arrived < 2 {
        assert!(std::time::Instant::now() < deadline, "the tap never asked");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    std::thread::sleep(std::time::Duration::from_millis(20));
    sb.faults()
        .fail_next(FailRule::new("/userflow/users", 1).status(400));
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("reading on after {previous}, read earlier")),
        "{stderr}"
    );
    let messages = crate::support::singer_lines(&String::from_utf8(out.stdout).unwrap());
    check_no_duplicates(&messages);
    assert_eq!(Holdings::from_messages(&messages), Holdings::of(&sb, V));
}

#[test]
fn test_mode_makes_one_authenticated_call() {
    let sb = sandbox(10);
    sb.clear_requests();
    let run = tap(&sb.config(V), &["--test"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.messages.is_empty());
    assert_eq!(sb.requests().len(), 1);
    let mut bad = sb.config(V);
    bad["api_key"] = json!("wrong-key");
    let run = tap(&bad, &["--test"]);
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("401"), "{}", run.stderr);
    assert!(
        !run.stderr.contains("wrong-key"),
        "the key is never printed"
    );
}

#[test]
fn the_sample_tap_configs_sync_against_the_sandbox() {
    let sb = sandbox(30);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("tap-") || !name.ends_with(".json") {
            continue;
        }
        let mut config: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let base = config["base_url"]
            .as_str()
            .unwrap()
            .replace("http://127.0.0.1:8787", &sb.origin());
        config["base_url"] = json!(base);
        let run = sync(&config, None, None).ok();
        assert_eq!(run.records("users").len(), 30, "{name}");
        assert!(!run.records("memberships").is_empty(), "{name}");
        seen.push(name);
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "tap-guru.json",
            "tap-guru_scim.json",
            "tap-scim.json",
            "tap-userflow.json"
        ]
    );
}

/// `flattening_enabled`: the Singer SDK's schema flattening. `attributes` becomes one column per
/// key (`attributes__plan`), typed from Userflow's attribute definitions; a key with no
/// definition gets a column when it first appears (the SCHEMA is sent again before that
/// record). Every value of the plain run is in the flattened one, in a declared column.
#[test]
fn flattening_turns_attributes_into_columns_typed_from_the_attribute_definitions() {
    let sb = sandbox(150);
    let plain = sync(&sb.config(V), None, None).ok();
    sb.clear_requests();
    let mut config = sb.config(V);
    config["flattening_enabled"] = json!(true);
    let run = sync(&config, None, None).ok();
    check_protocol(&run.messages);
    check_no_duplicates(&run.messages);
    assert_eq!(
        list_requests(&sb, "/attribute_definitions").len(),
        1,
        "the definitions are read once"
    );

    // The first SCHEMA of users: the declared attributes, typed, and no `attributes` column.
    let first_users_schema = run
        .messages
        .iter()
        .find(|m| m["type"] == "SCHEMA" && m["stream"] == "users")
        .unwrap();
    let columns = &first_users_schema["schema"]["properties"];
    assert!(columns.get("attributes").is_none(), "{columns}");
    assert!(
        columns.get("attributes__email").is_none(),
        "standard fields have their own columns"
    );
    assert_eq!(
        columns["attributes__plan"]["type"],
        json!(["string", "null"])
    );
    assert_eq!(
        columns["attributes__seats"]["type"],
        json!(["number", "null"])
    );
    assert_eq!(columns["attributes__signed_up_at"]["format"], "date-time");
    assert_eq!(first_users_schema["key_properties"], json!(["id"]));

    // Every record key is a column of the latest SCHEMA of its stream, and every record is the
    // plain one flattened.
    let mut latest: std::collections::BTreeMap<String, Value> = Default::default();
    let mut flattened: std::collections::BTreeMap<(String, String), Value> = Default::default();
    for m in &run.messages {
        let stream = m["stream"].as_str().unwrap_or_default().to_string();
        match m["type"].as_str().unwrap() {
            "SCHEMA" => {
                latest.insert(stream, m["schema"]["properties"].clone());
            }
            "RECORD" => {
                let columns = &latest[&stream];
                for key in m["record"].as_object().unwrap().keys() {
                    assert!(
                        columns.get(key).is_some(),
                        "{stream}: {key} is not declared: {}",
                        m["record"]
                    );
                }
                flattened.insert((stream, canonical(&m["record"])), m["record"].clone());
            }
            _ => {}
        }
    }
    let expected: std::collections::BTreeSet<(String, String)> = plain
        .messages
        .iter()
        .filter(|m| m["type"] == "RECORD")
        .map(|m| {
            let mut record = m["record"].as_object().unwrap().clone();
            if let Some(Value::Object(attributes)) = record.remove("attributes") {
                for (key, value) in attributes {
                    record.insert(format!("attributes__{key}"), value);
                }
            }
            (
                m["stream"].as_str().unwrap().to_string(),
                canonical(&Value::Object(record)),
            )
        })
        .collect();
    assert_eq!(
        flattened
            .keys()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        expected,
        "the flattened run holds exactly the plain run's values"
    );
    let latest_memberships = &latest["memberships"];
    assert!(
        latest_memberships["attributes__primary"]["type"]
            .as_array()
            .unwrap()
            .contains(&json!("boolean")),
        "a column typed from the values: {latest_memberships}"
    );
}

/// A record as JSON text with its keys sorted.
fn canonical(record: &Value) -> String {
    let sorted: std::collections::BTreeMap<&String, &Value> =
        record.as_object().unwrap().iter().collect();
    serde_json::to_string(&sorted).unwrap()
}

/// Classic Singer ACTIVATE_VERSION: a stream's first pass opens with it, every pass closes
/// with it, and every RECORD carries the pass's version. A pass killed after its second page
/// and resumed from the last STATE goes on with the same version and closes once, at its end.
#[test]
fn a_killed_and_resumed_pass_keeps_its_version_and_activates_it_once() {
    let sb = sandbox(450);
    let config = sb.config(V);
    let (first, running) = tap::sync_killed_after(&config, None, 3);
    assert!(running, "killed mid-sync");
    let state = crate::support::singer::states(&first).pop().unwrap();
    let version = state["bookmarks"]["users"]["version"].as_u64().unwrap();
    assert_eq!(state["bookmarks"]["memberships"]["version"], version);
    let activations = |messages: &[Value]| -> Vec<(String, u64)> {
        messages
            .iter()
            .filter(|m| m["type"] == "ACTIVATE_VERSION")
            .map(|m| {
                (
                    m["stream"].as_str().unwrap().to_string(),
                    m["version"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let record_versions = |messages: &[Value], stream: &str| -> Vec<Option<u64>> {
        messages
            .iter()
            .filter(|m| m["type"] == "RECORD" && m["stream"] == stream)
            .map(|m| m["version"].as_u64())
            .collect()
    };
    // The killed run opened users and memberships (their first pass) and finished groups.
    let opened = activations(&first);
    assert!(opened.contains(&("users".into(), version)), "{opened:?}");
    assert!(
        opened.contains(&("memberships".into(), version)),
        "{opened:?}"
    );
    assert_eq!(
        opened.iter().filter(|(s, _)| s == "groups").count(),
        2,
        "groups opened and closed: {opened:?}"
    );
    assert!(
        record_versions(&first, "users")
            .iter()
            .all(|v| *v == Some(version))
    );
    let resumed = sync(&config, Some(&state), None).ok();
    check_protocol(&resumed.messages);
    let users = record_versions(&resumed.messages, "users");
    assert!(!users.is_empty());
    assert!(users.iter().all(|v| *v == Some(version)), "{users:?}");
    assert_eq!(
        activations(&resumed.messages),
        [("users".into(), version), ("memberships".into(), version)],
        "closed once, with the interrupted pass's version"
    );
    let at = resumed
        .messages
        .iter()
        .position(|m| m["type"] == "ACTIVATE_VERSION")
        .unwrap();
    assert!(
        resumed.messages[at..].iter().all(|m| m["type"] != "RECORD"),
        "after the last record"
    );
    let last = resumed.states().pop().unwrap();
    assert!(
        last["bookmarks"]["users"].get("version").is_none(),
        "{last}"
    );
    let mut both = first.clone();
    both.extend(resumed.messages.iter().cloned());
    assert_eq!(Holdings::from_messages(&both), Holdings::of(&sb, V));
}

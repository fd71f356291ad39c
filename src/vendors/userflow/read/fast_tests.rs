use super::*;
use serde_json::json;

/// A sandbox-shaped user with `extra` merged over it.
fn user(id: &str, extra: Value) -> Value {
    let mut u = json!({
        "object": "user",
        "id": id,
        "attributes": {"name": "Zoë Ng", "email": "zoe@x.io", "plan": "pro", "seats": 3,
                       "ratio": 1.50, "beta": false, "nothing": null},
        "created_at": "2024-01-02T03:04:05.000Z",
        "updated_at": "2024-02-02T03:04:05+02:00",
        "memberships": [{
            "object": "group_membership",
            "attributes": {"primary": true},
            "created_at": "2024-01-02T03:04:05.000Z",
            "group_id": "g1",
            "user_id": id,
            "group": {"object": "group", "id": "g1", "attributes": {"name": "Acme"},
                      "created_at": "2024-01-01T00:00:00.000Z", "updated_at": "2024-01-01T00:00:00.000Z"}
        }]
    });
    if let (Some(u), Value::Object(extra)) = (u.as_object_mut(), extra) {
        for (k, v) in extra {
            u.insert(k, v);
        }
    }
    u
}

fn body(users: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"object": "list", "data": users, "has_more": false, "url": "/users"}),
    )
    .unwrap()
}

/// The records of a page as the tap writes them: (stream, record JSON text).
fn lines(page: &Page) -> Vec<(&'static str, String)> {
    page.records
        .iter()
        .map(|e| match &e.rendered {
            Some(range) => (
                e.stream,
                String::from_utf8(page.rendered[range.clone()].to_vec()).unwrap(),
            ),
            None => (e.stream, serde_json::to_string(&e.record).unwrap()),
        })
        .collect()
}

/// Through `wire::user` only (what every page went through before the fast path).
fn generic(body: &[u8], fresh: &[bool], memberships: bool) -> Page {
    let mut page = Page::last(Utc::now());
    let list: wire::UsersPage = serde_json::from_slice(body).unwrap();
    for (wire, fresh) in list.data.unwrap_or_default().into_iter().zip(fresh) {
        if !fresh {
            page.duplicates += 1;
            continue;
        }
        let parts = wire::user(wire, memberships);
        page.records.extend(parts.user.map(|u| Emit::new(USERS, u)));
        page.records.extend(
            parts
                .memberships
                .into_iter()
                .map(|m| Emit::new(MEMBERSHIPS, m)),
        );
        page.skipped.extend(parts.problems);
    }
    page
}

fn check(users: Vec<Value>, fresh: &[bool], memberships: bool, fast: bool) {
    let body = body(users);
    let mut page = Page::last(Utc::now());
    users_records(&body, fresh, memberships, &mut page).unwrap();
    let want = generic(&body, fresh, memberships);
    let text = String::from_utf8_lossy(&body);
    assert_eq!(lines(&page), lines(&want), "{text}");
    assert_eq!(page.skipped, want.skipped, "{text}");
    assert_eq!(page.duplicates, want.duplicates, "{text}");
    let took_fast = page.records.iter().any(|e| e.rendered.is_some());
    assert_eq!(took_fast, fast, "fast path taken: {took_fast}: {text}");
}

#[test]
fn usual_pages_are_rendered_straight_and_give_the_records_wire_user_gives() {
    let usual = vec![
        user("u1", json!({})),
        user(
            "u2",
            json!({"attributes": {"email": 42, "name": true, "first_name": null, "last_name": "Ng", "score": -0.25, "big": 18446744073709551615_u64}}),
        ),
        user("u3", json!({"memberships": null})),
        user("u4", json!({"memberships": []})),
        user(
            "u5",
            json!({"attributes": {}, "created_at": " 2024-01-02T03:04:05Z "}),
        ),
        user(
            "u6",
            json!({"memberships": [
                {"attributes": {}, "group_id": "g2", "user_id": "u6"},
                {"attributes": {"role": "admin"}, "created_at": null, "group_id": "g3", "user_id": "u6", "group": null}
            ]}),
        ),
    ];
    check(usual.clone(), &[true; 6], true, true);
    check(usual.clone(), &[true; 6], false, true);
    check(usual, &[true, false, true, false, true, true], true, true);
    let mut without = user("u7", json!({}));
    without.as_object_mut().unwrap().remove("memberships");
    check(vec![without], &[true], true, true);
    // An empty page has no record to render either way.
    check(Vec::new(), &[], true, false);
}

/// The serde scan (what every page went through before the byte walk).
fn serde_scan(body: &[u8]) -> Option<UsersScan> {
    serde_json::from_slice(body).ok()
}

#[test]
fn the_byte_walk_finds_what_the_serde_scan_finds() {
    let mut group = user("u9", json!({}));
    group["memberships"][0]["group"]["id"] = json!("not the user's");
    let users = vec![
        user("u1", json!({})),
        group,
        json!({"attributes": {"id": "nested"}, "id": "u3", "x": [1, {"id": "deep"}], "id": "u3b"}),
        json!({"id": "u4", "id": null}),
        json!({"id": "  "}),
        json!({"id": {"v": 1}}),
        json!({}),
        json!("not a user"),
        json!([{"id": "in an array"}]),
        json!(null),
        json!(12),
    ];
    let mut bodies = Vec::new();
    for envelope in [
        json!({"object": "list", "data": users.clone(), "has_more": true, "next_page_url": "/users?starting_after=u9"}),
        json!({"has_more": "TRUE ", "data": users.clone(), "url": "/users"}),
        json!({"data": null, "has_more": false, "next_page_url": null}),
        json!({"data": [], "next_page_url": "/users?starting_after=x"}),
        json!({"object": "list"}),
        json!({}),
    ] {
        bodies.push(serde_json::to_vec(&envelope).unwrap());
        bodies.push(serde_json::to_vec_pretty(&envelope).unwrap());
    }
    for body in &bodies {
        let text = String::from_utf8_lossy(body);
        assert_eq!(quick_scan(body), serde_scan(body), "{text}");
        assert!(quick_scan(body).is_some(), "{text}");
    }
    // Left to the serde scan: escapes, numeric ids, a repeated top-level key, not an object.
    for body in [
        &br#"{"data":[{"id":"u\u0031"}],"has_more":false}"#[..],
        br#"{"data":[{"id":17}],"has_more":false}"#,
        br#"{"data":[],"data":[]}"#,
        br#"{"data":{"id":"u1"}}"#,
        br#"[]"#,
        br#"{"data":[]} trailing"#,
    ] {
        assert_eq!(quick_scan(body), None, "{}", String::from_utf8_lossy(body));
    }
}

#[test]
fn unusual_pages_go_through_wire_user() {
    let unusual = [
        json!({"attributes": {"name": "a \"quoted\" name"}}),
        json!({"attributes": {"address": {"city": "Oslo"}}}),
        json!({"attributes": {"tags": ["a", "b"]}}),
        json!({"created_at": "2024-01-02 03:04:05"}),
        json!({"updated_at": 1_700_000_000}),
        json!({"created_at": null}),
        json!({"id": 17}),
        json!({"id": "  "}),
        json!({"extra": "kept in attributes"}),
        json!({"attributes": null}),
        json!({"memberships": {"data": [], "has_more": true}}),
        json!({"memberships": [{"attributes": {"created_at": "x"}, "created_at": "y", "group_id": "g1", "user_id": "u1"}]}),
        json!({"memberships": [{"attributes": {}, "group": {"id": "g9"}, "user_id": "u1"}]}),
        json!({"memberships": [{"attributes": {}, "group_id": "g1"}]}),
        json!({"memberships": [{"attributes": {}, "group_id": "g1", "user_id": "u1", "note": "x"}]}),
        json!({"memberships": ["not an object"]}),
    ];
    for extra in unusual {
        check(
            vec![user("u1", json!({})), user("u2", extra)],
            &[true, true],
            true,
            false,
        );
    }
    check(
        vec![json!("not a user"), user("u1", json!({}))],
        &[true, true],
        true,
        false,
    );
    // A repeated attribute: the last value wins in place, as in a JSON object.
    let repeated = br#"{"data":[{"id":"u1","attributes":{"plan":"a","plan":"b"},"created_at":"2024-01-02T03:04:05Z","updated_at":"2024-01-02T03:04:05Z"}]}"#;
    let mut page = Page::last(Utc::now());
    users_records(repeated, &[true], true, &mut page).unwrap();
    assert_eq!(lines(&page), lines(&generic(repeated, &[true], true)));
    assert!(page.records.iter().all(|e| e.rendered.is_none()));
}

/// The cursor the chain's scan gives (`None`: an error, the scan's to report).
fn scanned_cursor(body: &[u8]) -> Option<Option<String>> {
    quick_scan(body)
        .or_else(|| serde_scan(body))?
        .next_cursor()
        .ok()
}

#[test]
fn the_tail_guess_is_the_scans_cursor_on_userflow_pages() {
    let mut odd_last = user("u9", json!({}));
    odd_last["memberships"][0]["group"]["id"] = json!("not the user's");
    let users = vec![user("u1", json!({})), odd_last];
    let no_id = vec![user("u1", json!({})), json!({"name": "no id"})];
    let mut bodies = Vec::new();
    for data in [users.clone(), no_id, Vec::new()] {
        for envelope in [
            // The sandbox's and Userflow's order.
            json!({"object": "list", "data": data.clone(), "has_more": true, "url": "/users",
                   "next_page_url": "/users?limit=100&starting_after=u9"}),
            json!({"object": "list", "data": data.clone(), "has_more": false, "url": "/users",
                   "next_page_url": null}),
            json!({"data": data.clone(), "has_more": "true", "next_page_url": "/users?starting_after=x"}),
            json!({"data": data.clone(), "next_page_url": "/users?starting_after=x"}),
            json!({"data": data.clone(), "has_more": true}),
            json!({"data": data.clone()}),
            json!({"has_more": true, "data": data.clone()}),
        ] {
            bodies.push(serde_json::to_vec(&envelope).unwrap());
            bodies.push(serde_json::to_vec_pretty(&envelope).unwrap());
        }
    }
    for body in &bodies {
        let text = String::from_utf8_lossy(body);
        let guess = tail_cursor(body);
        if guess.is_some() {
            assert_eq!(guess, scanned_cursor(body), "{text}");
        }
    }
    // The usual pages are guessed: their next request goes out before the scan.
    let usual = serde_json::to_vec(&json!({"object": "list", "data": users, "has_more": true,
        "url": "/users", "next_page_url": "/users?limit=100&starting_after=u9"}))
    .unwrap();
    assert_eq!(tail_cursor(&usual), Some(Some("u9".into())));
    let last =
        br#"{"object":"list","data":[],"has_more":false,"url":"/users","next_page_url":null}"#;
    assert_eq!(tail_cursor(last), Some(None));
    // Not guessed: escapes, an object after `data`, a repeated key, a numeric id, no `data`.
    for body in [
        &br#"{"data":[{"id":"u\u0031"}],"has_more":true}"#[..],
        br#"{"data":[{"id":"u1"}],"more":{"a":1},"has_more":true}"#,
        br#"{"data":[{"id":"u1"}],"has_more":true,"has_more":false}"#,
        br#"{"data":[{"id":17}],"has_more":true}"#,
        br#"{"has_more":true}"#,
        br#"{"other":[],"has_more":true}"#,
        br#"{"data":[[]],"has_more":true}"#,
        b"",
    ] {
        assert_eq!(tail_cursor(body), None, "{}", String::from_utf8_lossy(body));
    }
    // An array after `data` is taken for it: a wrong guess, which the chain's scan corrects.
    let odd = br#"{"data":[{"id":"u1"}],"extra":[{"id":"x"}],"has_more":true}"#;
    assert_eq!(tail_cursor(odd), Some(Some("x".into())));
    assert_eq!(scanned_cursor(odd), Some(Some("u1".into())));
}

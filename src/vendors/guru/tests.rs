//! The Guru REST writer's unit tests (a child of `write.rs`, over a scripted transport).

use super::*;
use crate::sink::SendFailure;
use crate::sink::{Item, Origin, Outcome, ScriptedTransport, Settlement, Ticket, WireResponse};
use serde_json::Map;
use tokio::sync::mpsc::UnboundedReceiver;

fn op(
    n: u64,
    kind: Kind,
    action: Action,
    id: Option<&str>,
    user: Option<&str>,
    group: Option<&str>,
    fields: Value,
) -> Op {
    Op {
        ticket: Ticket(n),
        item: Item {
            kind,
            action,
            id: id.map(str::to_string),
            user_id: user.map(str::to_string),
            group_id: group.map(str::to_string),
            fields: fields
                .as_object()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            attributes: Default::default(),
        },
        origin: Arc::new(Origin {
            stream: "s".into(),
            line: n,
            record: Map::new().into(),
        }),
    }
}

fn user(n: u64, id: &str, email: &str) -> Op {
    op(
        n,
        Kind::Users,
        Action::Upsert,
        Some(id),
        None,
        None,
        json!({"email": email}),
    )
}

fn member(n: u64, user: &str, group: &str) -> Op {
    op(
        n,
        Kind::Memberships,
        Action::Upsert,
        None,
        Some(user),
        Some(group),
        json!({}),
    )
}

fn outcomes(rx: &mut UnboundedReceiver<Settlement>) -> Vec<(u64, Outcome)> {
    let mut out = Vec::new();
    while let Ok(s) = rx.try_recv() {
        out.push((s.ticket.0, s.outcome));
    }
    out.sort_by_key(|(t, _)| *t);
    out
}

fn refused(status: u16, body: &str) -> SendError {
    SendError {
        failure: SendFailure::Refused,
        status: Some(status),
        body_excerpt: Some(body.into()),
        message: format!("POST answered {status}"),
        maybe_processed: false,
    }
}

fn json_body(r: &WireRequest) -> Value {
    r.body.json_value().unwrap_or(Value::Null)
}

#[tokio::test]
async fn invites_batch_emails_and_read_each_status() {
    let transport = Arc::new(ScriptedTransport::new(|_| {
        Ok(WireResponse::ok(json!({"statuses": [
            {"email": "a@x.io"},
            {"email": "B@x.io", "errored": true, "error": "This user is already a part of the team"},
            {"email": "c@x.io", "errored": true, "error": "No seats left"},
        ]})))
    }));
    let sink = GuruSink::new(transport.clone(), Some(TeamMemberType::Light));
    let batch = vec![
        user(1, "u1", "a@x.io"),
        user(2, "u2", "b@x.io"),
        user(3, "u3", "c@x.io"),
        user(4, "u4", "d@x.io"),
        user(5, "u1-again", "A@x.io"),
    ];
    for op in &batch {
        assert!(sink.plan(op).unwrap().batch.is_some());
    }
    let (acks, mut rx) = Acks::channel();
    sink.write(batch, &acks).await.unwrap();
    let requests = transport.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/members/invite");
    assert!(requests[0].idempotent, "a repeated invite is harmless");
    assert_eq!(
        json_body(&requests[0]),
        json!({"emails": "a@x.io,b@x.io,c@x.io,d@x.io", "teamMemberType": "LIGHT"})
    );
    let out = outcomes(&mut rx);
    assert_eq!(out[0].1, Outcome::Accepted);
    assert_eq!(
        out[1].1,
        Outcome::Accepted,
        "already on the team is a success"
    );
    let Outcome::Rejected(r) = &out[2].1 else {
        panic!("{out:?}")
    };
    assert!(r.reason.contains("No seats left"), "{}", r.reason);
    let Outcome::Rejected(r) = &out[3].1 else {
        panic!("{out:?}")
    };
    assert!(r.reason.contains("no status for d@x.io"), "{}", r.reason);
    assert_eq!(out[4].1, Outcome::Accepted);
}

#[tokio::test]
async fn invites_are_retried_as_idempotent_and_already_on_the_team_is_success() {
    let transport = Arc::new(ScriptedTransport::new(|_| {
        Ok(WireResponse::ok(
            json!({"statuses": [{"email": "a@x.io", "errored": true, "error": "This user is already a part of the team"}]}),
        ))
    }));
    let sink = GuruSink::new(transport.clone(), None);
    let (acks, mut rx) = Acks::channel();
    sink.write(vec![user(1, "u1", "a@x.io")], &acks)
        .await
        .unwrap();
    let requests = transport.requests();
    assert_eq!(requests.len(), 1);
    assert!(requests[0].idempotent, "the engine may retry an invite");
    assert_eq!(json_body(&requests[0]), json!({"emails": "a@x.io"}));
    assert_eq!(outcomes(&mut rx), vec![(1, Outcome::Accepted)]);
}

/// A Guru whose group add refuses light users and non-members, naming them or not.
fn group_server(name_culprit: bool) -> Arc<ScriptedTransport> {
    Arc::new(ScriptedTransport::new(move |r| {
        match (r.method, r.path.as_str()) {
            (Method::Get, "/groups") => Ok(WireResponse::ok(json!([
                {"id": "g-all", "name": "All Members", "modifiable": false},
                {"id": "g-1", "name": "Eng", "modifiable": true},
            ]))),
            (Method::Post, "/groups/g-1/members") => {
                let emails = json_body(r);
                let emails: Vec<&str> = emails
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e.as_str().unwrap())
                    .collect();
                if let Some(bad) = emails.iter().find(|e| e.starts_with("light")) {
                    let body = if name_culprit {
                        format!(
                            "{{\"description\":\"Light users cannot be added to groups: {bad}\"}}"
                        )
                    } else {
                        "{\"description\":\"Light users cannot be added to groups\"}".to_string()
                    };
                    return Err(refused(400, &body));
                }
                Ok(WireResponse::ok(json!(emails)))
            }
            _ => Ok(WireResponse::ok(Value::Null)),
        }
    }))
}

#[tokio::test]
async fn a_refused_group_add_rejects_only_the_member_guru_names() {
    let transport = group_server(true);
    let sink = GuruSink::new(transport.clone(), None);
    let batch = vec![
        member(1, "a@x.io", "Eng"),
        member(2, "light@x.io", "Eng"),
        member(3, "c@x.io", "Eng"),
    ];
    let (acks, mut rx) = Acks::channel();
    sink.write(batch, &acks).await.unwrap();
    let posts: Vec<Value> = transport
        .requests()
        .iter()
        .filter(|r| r.method == Method::Post)
        .map(json_body)
        .collect();
    assert_eq!(
        posts,
        vec![
            json!(["a@x.io", "light@x.io", "c@x.io"]),
            json!(["a@x.io", "c@x.io"])
        ]
    );
    let out = outcomes(&mut rx);
    assert_eq!(out[0].1, Outcome::Accepted);
    let Outcome::Rejected(r) = &out[1].1 else {
        panic!("{out:?}")
    };
    assert!(
        r.reason
            .contains("light users (read-only access) cannot be in groups"),
        "{}",
        r.reason
    );
    assert_eq!(r.vendor_status, Some(400));
    assert_eq!(out[2].1, Outcome::Accepted);
}

#[tokio::test]
async fn a_refused_group_add_that_names_nobody_is_halved_until_the_culprit_stands_alone() {
    let transport = group_server(false);
    let sink = GuruSink::new(transport.clone(), None);
    let batch: Vec<Op> = (1..=8)
        .map(|n| {
            let email = if n == 6 {
                "light6@x.io".to_string()
            } else {
                format!("u{n}@x.io")
            };
            let email: &'static str = Box::leak(email.into_boxed_str());
            member(n, email, "Eng")
        })
        .collect();
    let (acks, mut rx) = Acks::channel();
    sink.write(batch, &acks).await.unwrap();
    let out = outcomes(&mut rx);
    assert_eq!(out.len(), 8);
    for (t, o) in &out {
        if *t == 6 {
            assert!(matches!(o, Outcome::Rejected(_)), "{o:?}");
        } else {
            assert_eq!(*o, Outcome::Accepted, "{t}");
        }
    }
    let posts = transport
        .requests()
        .iter()
        .filter(|r| r.method == Method::Post)
        .count();
    // 8 → 4+4 → (4 ok) 2+2 → (2 ok) 1+1: seven adds.
    assert_eq!(posts, 7);
}

#[tokio::test]
async fn groups_are_created_only_when_missing_by_name_and_all_members_is_read_only() {
    let transport = group_server(true);
    let sink = GuruSink::new(transport.clone(), None);
    let eng = op(
        1,
        Kind::Groups,
        Action::Upsert,
        Some("grp-eng"),
        None,
        None,
        json!({"name": "Eng"}),
    );
    let ops = op(
        2,
        Kind::Groups,
        Action::Upsert,
        Some("grp-ops"),
        None,
        None,
        json!({"name": "Ops"}),
    );
    sink.plan(&eng).unwrap();
    sink.plan(&ops).unwrap();
    let (acks, mut rx) = Acks::channel();
    sink.write(vec![eng], &acks).await.unwrap();
    sink.write(vec![ops], &acks).await.unwrap();
    let creates: Vec<Value> = transport
        .requests()
        .iter()
        .filter(|r| r.method == Method::Post && r.path == "/groups")
        .map(json_body)
        .collect();
    assert_eq!(creates, vec![json!({"id": "new-group", "name": "Ops"})]);
    let out = outcomes(&mut rx);
    assert!(
        matches!(&out[0].1, Outcome::Skipped(s) if s.contains("already has a group named \"Eng\"")),
        "{out:?}"
    );
    assert_eq!(out[1].1, Outcome::Accepted);
    // Memberships name the group by its source key, mapped by name.
    let m = member(3, "a@x.io", "grp-eng");
    sink.plan(&m).unwrap();
    sink.write(vec![m], &acks).await.unwrap();
    assert_eq!(
        transport.requests().last().unwrap().path,
        "/groups/g-1/members"
    );
    let all = member(4, "a@x.io", "All Members");
    sink.write(vec![all], &acks).await.unwrap();
    let out = outcomes(&mut rx);
    assert_eq!(out[0].1, Outcome::Accepted);
    // Every member is in "All Members" already: nothing to send (a Guru → Guru pipe).
    assert!(
        matches!(&out[1].1, Outcome::Skipped(r) if r.contains("is in group \"All Members\" already")),
        "{out:?}"
    );
}

#[test]
fn inactive_records_roles_and_verifiers_are_read_as_documented() {
    let with = |fields: Value| {
        op(
            1,
            Kind::Users,
            Action::Upsert,
            Some("u1"),
            None,
            None,
            fields,
        )
        .item
    };
    for fields in [
        json!({"active": false}),
        json!({"active": "False"}),
        json!({"active": 0}),
        json!({"status": "INACTIVE"}),
        json!({"status": " deactivated "}),
        json!({"status": "Suspended"}),
        json!({"active": true, "status": "disabled"}),
    ] {
        assert!(inactive(&with(fields.clone())).is_some(), "{fields}");
    }
    for fields in [
        json!({}),
        json!({"active": true}),
        json!({"status": "PENDING"}),
        json!({"status": "ACTIVE"}),
        json!({"active": null}),
    ] {
        assert!(inactive(&with(fields.clone())).is_none(), "{fields}");
    }
    assert_eq!(
        member_type_of_role("Read-Only"),
        Some(TeamMemberType::Light)
    );
    assert_eq!(member_type_of_role("viewer"), Some(TeamMemberType::Light));
    assert_eq!(
        member_type_of_role("COLLECTION_OWNER"),
        Some(TeamMemberType::Core)
    );
    assert_eq!(member_type_of_role("ADMIN"), Some(TeamMemberType::Core));
    assert_eq!(member_type_of_role("wizard"), None);
    let body = collection_verifiers(
        json!({"c1": " ann@x.io ", "c2": {"type": "user-group", "id": "g-9"}})
            .as_object()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        body,
        json!({"collectionVerifiers": {"c1": {"type": "member", "id": "ann@x.io"}, "c2": {"type": "user-group", "id": "g-9"}}})
    );
    for bad in [
        json!({"c1": "ann@x.io,bob@x.io"}),
        json!({"c1": 5}),
        json!({"c1": {"type": "owner", "id": "x"}}),
    ] {
        assert!(
            collection_verifiers(bad.as_object().unwrap()).is_err(),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn an_email_that_is_not_one_address_never_reaches_the_invite() {
    let transport = Arc::new(ScriptedTransport::new(|_| {
        Ok(WireResponse::ok(json!({"statuses": [{"email": "a@x.io"}]})))
    }));
    let sink = GuruSink::new(transport.clone(), None);
    let bad = user(2, "u2", "b@x.io,mallory@evil.example");
    assert!(
        sink.plan(&bad)
            .unwrap_err()
            .reason
            .contains("not one email address")
    );
    // Even if a batch held it, the invite would not.
    let (acks, mut rx) = Acks::channel();
    sink.write(vec![user(1, "u1", "a@x.io"), bad], &acks)
        .await
        .unwrap();
    let requests = transport.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(json_body(&requests[0]), json!({"emails": "a@x.io"}));
    let out = outcomes(&mut rx);
    assert_eq!(out[0].1, Outcome::Accepted);
    assert!(matches!(&out[1].1, Outcome::Rejected(r) if r.reason.contains("contains ','")));
}

#[test]
fn members_need_an_email_and_membership_keys_map_to_this_runs_emails() {
    let sink = GuruSink::new(Arc::new(ScriptedTransport::ok()), None);
    let no_email = op(
        1,
        Kind::Users,
        Action::Upsert,
        Some("u1"),
        None,
        None,
        json!({"name": "A"}),
    );
    assert!(
        sink.plan(&no_email)
            .unwrap_err()
            .reason
            .contains("no email")
    );
    assert!(
        sink.plan(&member(2, "u9", "g"))
            .unwrap_err()
            .reason
            .contains("not an email")
    );
    sink.plan(&user(3, "u9", "nine@x.io")).unwrap();
    assert!(sink.plan(&member(4, "u9", "g")).is_ok());
    assert_eq!(
        sink.member_email("u9").unwrap().as_deref(),
        Some("nine@x.io")
    );
    let event = op(
        5,
        Kind::Events,
        Action::Upsert,
        None,
        Some("u9"),
        None,
        json!({}),
    );
    assert!(sink.plan(&event).is_err());
}

//! The Userflow writer's unit tests (a child of `write.rs`, over a scripted transport).

use super::*;
use crate::sink::{Item, Origin, ScriptedTransport, SendError, SendFailure, Ticket, WireResponse};
use serde_json::json;

fn op(kind: Kind, action: Action, v: Value) -> Op {
    let o = v.as_object().cloned().unwrap();
    let s = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_string);
    Op {
        ticket: Ticket(0),
        item: Item {
            kind,
            action,
            id: s("id"),
            user_id: s("user_id"),
            group_id: s("group_id"),
            fields: o
                .get("fields")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            attributes: o
                .get("attributes")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .collect(),
        },
        origin: Arc::new(Origin {
            stream: "s".into(),
            line: 1,
            record: o.clone().into(),
        }),
    }
}

/// A request's JSON body as the bytes sent (key order included).
fn body_text(r: &WireRequest) -> String {
    match &r.body {
        crate::sink::WireBody::JsonBytes(bytes) => String::from_utf8(bytes.to_vec()).unwrap(),
        other => panic!("not a JSON body serialised once: {other:?}"),
    }
}

#[test]
fn upserts_put_the_id_in_the_body_and_keep_nulls() {
    let r = request(&op(
        Kind::Users,
        Action::Upsert,
        json!({"id": "u/1", "fields": {"email": "a@x.io", "name": null}, "attributes": {"plan": "pro"}}),
    ))
    .unwrap();
    assert_eq!((r.method, r.path.as_str()), (Method::Post, "/users"));
    assert_eq!(
        body_text(&r),
        json!({"id": "u/1", "attributes": {"email": "a@x.io", "name": null, "plan": "pro"}})
            .to_string()
    );
    assert!(r.idempotent);
    let m = request(&op(
        Kind::Memberships,
        Action::Upsert,
        json!({"user_id": "u1", "group_id": "g1"}),
    ))
    .unwrap();
    assert_eq!(
        body_text(&m),
        json!({"id": "u1", "groups": [{"id": "g1"}]}).to_string()
    );
    let m = request(&op(
        Kind::Memberships,
        Action::Upsert,
        json!({"user_id": "u1", "group_id": "g1", "attributes": {"role": "admin"}}),
    ))
    .unwrap();
    assert_eq!(
        body_text(&m),
        json!({"id": "u1", "memberships": [{"group": {"id": "g1"}, "attributes": {"role": "admin"}}]}).to_string()
    );
    let e = request(&op(
        Kind::Events,
        Action::Upsert,
        json!({"user_id": "u1", "fields": {"name": "signed_up", "timestamp": null}}),
    ))
    .unwrap();
    assert!(!e.idempotent);
    assert_eq!(
        body_text(&e),
        json!({"user_id": "u1", "name": "signed_up"}).to_string()
    );
    // Userflow documents no time field: the time is not sent, the rest is.
    let e = request(&op(
        Kind::Events,
        Action::Upsert,
        json!({"user_id": "u1", "group_id": "g1", "fields": {"name": "paid", "timestamp": "2024-01-01T00:00:00Z"}, "attributes": {"plan": "pro"}}),
    ))
    .unwrap();
    assert_eq!(
        body_text(&e),
        json!({"user_id": "u1", "name": "paid", "group_id": "g1", "attributes": {"plan": "pro"}})
            .to_string()
    );
}

#[test]
fn arrays_and_plain_objects_are_refused_change_objects_pass() {
    let sink = UserflowSink::new(Arc::new(ScriptedTransport::ok()));
    let bad = op(
        Kind::Users,
        Action::Upsert,
        json!({"id": "u", "attributes": {"tags": ["a"]}}),
    );
    let err = sink.plan(&bad).unwrap_err();
    assert!(
        err.reason.contains("\"tags\" is an array"),
        "{}",
        err.reason
    );
    let ok = op(
        Kind::Users,
        Action::Upsert,
        json!({"id": "u", "attributes": {"logins": {"add": 1}}}),
    );
    assert!(sink.plan(&ok).is_ok());
}

#[tokio::test]
async fn removing_a_membership_prunes_with_the_other_groups() {
    let transport = Arc::new(ScriptedTransport::new(|r| {
        if r.method == Method::Get {
            Ok(WireResponse::ok(json!({"id": "u1", "memberships": [
                {"group": {"id": "g1"}}, {"group": {"id": "g2"}}]})))
        } else {
            Ok(WireResponse::ok(json!({})))
        }
    }));
    let sink = UserflowSink::new(transport.clone());
    let (acks, mut rx) = Acks::channel();
    let m = op(
        Kind::Memberships,
        Action::Delete,
        json!({"user_id": "u1", "group_id": "g1"}),
    );
    sink.write(vec![m], &acks).await.unwrap();
    let requests = transport.requests();
    assert_eq!(requests[0].path, "/users/u1?expand=memberships");
    assert_eq!(
        body_text(&requests[1]),
        json!({"id": "u1", "groups": [{"id": "g2"}], "prune_memberships": true}).to_string()
    );
    assert!(matches!(
        rx.recv().await.unwrap().outcome,
        crate::sink::Outcome::Accepted
    ));
}

#[tokio::test]
async fn deletes_of_absent_things_are_skipped_and_401_is_fatal() {
    let transport = Arc::new(ScriptedTransport::new(|r| {
        let status = if r.path.starts_with("/users") {
            404
        } else {
            401
        };
        Err(SendError {
            failure: if status == 401 {
                SendFailure::Credentials
            } else {
                SendFailure::Refused
            },
            status: Some(status),
            body_excerpt: None,
            message: format!("answered {status}"),
            maybe_processed: false,
        })
    }));
    let sink = UserflowSink::new(transport);
    let (acks, mut rx) = Acks::channel();
    sink.write(
        vec![op(Kind::Users, Action::Delete, json!({"id": "gone"}))],
        &acks,
    )
    .await
    .unwrap();
    assert!(matches!(
        rx.recv().await.unwrap().outcome,
        crate::sink::Outcome::Skipped(_)
    ));
    let err = sink
        .write(
            vec![op(Kind::Groups, Action::Delete, json!({"id": "g"}))],
            &acks,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, SinkError::Credentials { .. }));
}

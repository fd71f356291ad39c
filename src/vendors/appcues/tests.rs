//! The Appcues writer's unit tests (a child of `write.rs`, over a scripted transport).

use super::*;
use crate::sink::{Item, Origin, Outcome, ScriptedTransport, Ticket};

fn op(
    kind: Kind,
    id: Option<&str>,
    user: Option<&str>,
    group: Option<&str>,
    fields: Value,
    attrs: Value,
) -> Op {
    Op {
        ticket: Ticket(0),
        item: Item {
            kind,
            action: Action::Upsert,
            id: id.map(str::to_string),
            user_id: user.map(str::to_string),
            group_id: group.map(str::to_string),
            fields: fields
                .as_object()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            attributes: attrs
                .as_object()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .collect(),
        },
        origin: Arc::new(Origin {
            stream: "s".into(),
            line: 1,
            record: Map::new().into(),
        }),
    }
}

fn body(r: &WireRequest) -> Value {
    r.body.json_value().unwrap_or(Value::Null)
}

#[test]
fn profiles_and_events_under_the_account() {
    let sink = AppcuesSink::new(Arc::new(ScriptedTransport::ok()), "A1");
    let u = sink
        .request(&op(
            Kind::Users,
            Some("u 1"),
            None,
            None,
            json!({"email": "a@x.io"}),
            json!({"plan": null}),
        ))
        .unwrap();
    assert_eq!(
        (u.method, u.path.as_str()),
        (Method::Patch, "/v2/accounts/A1/users/u%201/profile")
    );
    assert_eq!(body(&u), json!({"email": "a@x.io", "plan": null}));
    assert!(u.idempotent);
    let e = sink
        .request(&op(
            Kind::Events,
            None,
            Some("u1"),
            Some("g1"),
            json!({"name": "x", "timestamp": "2024-01-01T00:00:00Z"}),
            json!({}),
        ))
        .unwrap();
    assert_eq!(e.path, "/v2/accounts/A1/users/u1/events");
    assert_eq!(
        body(&e),
        json!({"name": "x", "timestamp": "2024-01-01T00:00:00Z", "group_id": "g1"})
    );
    assert!(!e.idempotent);
    let e = sink
        .request(&op(
            Kind::Events,
            None,
            Some("u1"),
            None,
            json!({"name": "x"}),
            json!({}),
        ))
        .unwrap();
    assert!(
        body(&e)["timestamp"].is_string(),
        "a timestamp is filled in"
    );
}

#[tokio::test]
async fn memberships_of_one_group_go_in_one_request() {
    let t = Arc::new(ScriptedTransport::ok());
    let sink = AppcuesSink::new(t.clone(), "A1");
    let ops: Vec<Op> = ["u1", "u2", "u1"]
        .iter()
        .map(|u| {
            op(
                Kind::Memberships,
                None,
                Some(u),
                Some("g1"),
                json!({}),
                json!({}),
            )
        })
        .collect();
    assert!(sink.plan(&ops[0]).unwrap().batch.is_some());
    let (acks, mut rx) = Acks::channel();
    sink.write(ops, &acks).await.unwrap();
    let r = &t.requests()[0];
    assert_eq!(r.path, "/v2/accounts/A1/groups/g1/users");
    assert_eq!(body(r), json!({"user_ids": ["u1", "u2"]}));
    for _ in 0..3 {
        assert!(matches!(
            rx.recv().await.unwrap().outcome,
            Outcome::Accepted
        ));
    }
}

//! The Userpilot writer's unit tests (a child of `write.rs`, over a scripted transport).

use super::*;
use crate::sink::{Item, Origin, Outcome, ScriptedTransport, Ticket};

fn op(
    kind: Kind,
    action: Action,
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
fn values_go_as_strings_and_companies_by_id() {
    let u = request(&op(
        Kind::Users,
        Action::Upsert,
        Some("u1"),
        None,
        None,
        json!({"email": "a@x.io", "active": true}),
        json!({"seats": 5, "gone": null}),
    ))
    .unwrap();
    assert_eq!(u.path, "/v1/identify");
    assert_eq!(
        body(&u),
        json!({"user_id": "u1", "metadata": {"email": "a@x.io", "active": "true", "seats": "5", "gone": null}})
    );
    let m = request(&op(
        Kind::Memberships,
        Action::Upsert,
        None,
        Some("u1"),
        Some("g1"),
        json!({}),
        json!({}),
    ))
    .unwrap();
    assert_eq!(
        body(&m),
        json!({"user_id": "u1", "company": {"id": "g1", "company_id": "g1"}})
    );
    let g = request(&op(
        Kind::Groups,
        Action::Upsert,
        Some("g1"),
        None,
        None,
        json!({"name": "Acme"}),
        json!({}),
    ))
    .unwrap();
    assert_eq!(
        (g.path.as_str(), body(&g)),
        (
            "/v1/companies/identify",
            json!({"company_id": "g1", "metadata": {"name": "Acme"}})
        )
    );
    let e = request(&op(
        Kind::Events,
        Action::Upsert,
        None,
        Some("u1"),
        None,
        json!({"name": "paid", "timestamp": "2024-01-01T00:00:00Z"}),
        json!({"amount": 3}),
    ))
    .unwrap();
    // Track documents no time field: the time is not sent, not even in metadata.
    assert_eq!(
        body(&e),
        json!({"user_id": "u1", "event_name": "paid", "metadata": {"amount": "3"}})
    );
    assert!(!e.idempotent && u.idempotent);
}

#[tokio::test]
async fn a_membership_rides_in_its_users_identify() {
    let t = Arc::new(ScriptedTransport::ok());
    let sink = UserpilotSink::new(t.clone());
    let mut user = op(
        Kind::Users,
        Action::Upsert,
        Some("u1"),
        None,
        None,
        json!({"email": "a@x.io"}),
        json!({}),
    );
    user.ticket = Ticket(1);
    let mut first = op(
        Kind::Memberships,
        Action::Upsert,
        None,
        Some("u1"),
        Some("g1"),
        json!({}),
        json!({}),
    );
    first.ticket = Ticket(2);
    let mut second = first.clone();
    second.ticket = Ticket(3);
    second.item.group_id = Some("g2".into());
    for o in [&user, &first, &second] {
        sink.plan(o).unwrap();
    }
    let (acks, mut rx) = Acks::channel();
    sink.write(vec![user], &acks).await.unwrap();
    sink.write(vec![first], &acks).await.unwrap();
    sink.write(vec![second], &acks).await.unwrap();
    let requests = t.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(
        body(&requests[0]),
        json!({"user_id": "u1", "metadata": {"email": "a@x.io"}, "company": {"id": "g1", "company_id": "g1"}})
    );
    // Userpilot keeps one company per user: the later membership still goes after it.
    assert_eq!(
        body(&requests[1]),
        json!({"user_id": "u1", "company": {"id": "g2", "company_id": "g2"}})
    );
    for ticket in [1, 2, 3] {
        let s = rx.recv().await.unwrap();
        assert_eq!(s.ticket, Ticket(ticket));
        assert!(matches!(s.outcome, Outcome::Accepted));
    }
    assert_eq!(sink.folded(), 1);
}

#[tokio::test]
async fn a_refused_combined_identify_sends_the_user_alone() {
    let t = Arc::new(ScriptedTransport::new(|r| match &r.body.json_value() {
        Some(b) if b.get("company").is_some() && b.get("metadata").is_some() => {
            Err(crate::sink::SendError {
                failure: crate::sink::SendFailure::Refused,
                status: Some(400),
                body_excerpt: None,
                message: "answered 400".into(),
                maybe_processed: false,
            })
        }
        _ => Ok(crate::sink::WireResponse::ok(Value::Null)),
    }));
    let sink = UserpilotSink::new(t.clone());
    let mut user = op(
        Kind::Users,
        Action::Upsert,
        Some("u1"),
        None,
        None,
        json!({"email": "a@x.io"}),
        json!({}),
    );
    user.ticket = Ticket(1);
    let mut m = op(
        Kind::Memberships,
        Action::Upsert,
        None,
        Some("u1"),
        Some("g1"),
        json!({}),
        json!({}),
    );
    m.ticket = Ticket(2);
    sink.plan(&user).unwrap();
    sink.plan(&m).unwrap();
    let (acks, mut rx) = Acks::channel();
    sink.write(vec![user], &acks).await.unwrap();
    sink.write(vec![m], &acks).await.unwrap();
    assert_eq!(
        t.requests().len(),
        3,
        "combined, user alone, membership alone"
    );
    for _ in 0..2 {
        assert!(matches!(
            rx.recv().await.unwrap().outcome,
            Outcome::Accepted
        ));
    }
    assert_eq!(sink.folded(), 0);
}

#[tokio::test]
async fn deletes_are_batched_through_the_delete_bucket() {
    let t = Arc::new(ScriptedTransport::ok());
    let sink = UserpilotSink::new(t.clone());
    let ops: Vec<Op> = ["u1", "u2"]
        .iter()
        .map(|id| {
            op(
                Kind::Users,
                Action::Delete,
                Some(id),
                None,
                None,
                json!({}),
                json!({}),
            )
        })
        .collect();
    let plan = sink.plan(&ops[0]).unwrap();
    assert_eq!(plan.batch.unwrap().limits().max_items, DELETE_BATCH);
    let (acks, mut rx) = Acks::channel();
    sink.write(ops, &acks).await.unwrap();
    let r = &t.requests()[0];
    assert_eq!(
        (r.method, r.path.as_str(), r.bucket),
        (Method::Delete, "/v1/users", Some(DELETE_BUCKET))
    );
    assert_eq!(body(r), json!({"users": ["u1", "u2"]}));
    assert!(matches!(
        rx.recv().await.unwrap().outcome,
        Outcome::Accepted
    ));
    assert!(matches!(
        rx.recv().await.unwrap().outcome,
        Outcome::Accepted
    ));
    let remove = op(
        Kind::Memberships,
        Action::Delete,
        None,
        Some("u"),
        Some("g"),
        json!({}),
        json!({}),
    );
    assert!(sink.plan(&remove).is_err());
}

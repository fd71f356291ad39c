//! The UserGuiding writer's unit tests (a child of `write.rs`, over a scripted transport).

use super::*;
use crate::sink::{Item, Origin, Outcome, ScriptedTransport, Settlement, Ticket};
use serde_json::json;

fn op(
    ticket: u64,
    kind: Kind,
    id: Option<&str>,
    user: Option<&str>,
    group: Option<&str>,
    attrs: Value,
) -> Op {
    Op {
        ticket: Ticket(ticket),
        item: Item {
            kind,
            action: Action::Upsert,
            id: id.map(str::to_string),
            user_id: user.map(str::to_string),
            group_id: group.map(str::to_string),
            fields: Default::default(),
            attributes: attrs
                .as_object()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .collect(),
        },
        origin: Arc::new(Origin {
            stream: "s".into(),
            line: ticket,
            record: Map::new().into(),
        }),
    }
}

fn bodies(t: &ScriptedTransport) -> Vec<Value> {
    t.requests()
        .into_iter()
        .map(|r| r.body.json_value().unwrap_or(Value::Null))
        .collect()
}

async fn drain(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Settlement>) -> Vec<Settlement> {
    let mut out = Vec::new();
    while let Ok(s) = rx.try_recv() {
        out.push(s);
    }
    out
}

#[tokio::test]
async fn companies_are_nested_from_groups_and_memberships_in_either_order() {
    let t = Arc::new(ScriptedTransport::new(|_| {
        Ok(WireResponse::ok(json!({"success": true})))
    }));
    let sink = UserGuidingSink::new(t.clone());
    let (acks, mut rx) = Acks::channel();
    sink.write(
        vec![op(
            0,
            Kind::Users,
            Some("u1"),
            None,
            None,
            json!({"plan": "pro"}),
        )],
        &acks,
    )
    .await
    .unwrap();
    sink.write(
        vec![op(
            1,
            Kind::Groups,
            Some("g1"),
            None,
            None,
            json!({"name": "Acme"}),
        )],
        &acks,
    )
    .await
    .unwrap();
    sink.write(
        vec![op(
            2,
            Kind::Memberships,
            None,
            Some("u1"),
            Some("g1"),
            json!({}),
        )],
        &acks,
    )
    .await
    .unwrap();
    // g2's membership comes before the group itself.
    sink.write(
        vec![op(
            3,
            Kind::Memberships,
            None,
            Some("u2"),
            Some("g2"),
            json!({}),
        )],
        &acks,
    )
    .await
    .unwrap();
    sink.write(
        vec![op(
            4,
            Kind::Groups,
            Some("g2"),
            None,
            None,
            json!({"name": "Beta"}),
        )],
        &acks,
    )
    .await
    .unwrap();
    sink.write(
        vec![op(
            5,
            Kind::Groups,
            Some("g3"),
            None,
            None,
            json!({"name": "Lonely"}),
        )],
        &acks,
    )
    .await
    .unwrap();
    let before_flush = drain(&mut rx).await;
    let tickets: Vec<u64> = before_flush.iter().map(|s| s.ticket.0).collect();
    assert_eq!(
        tickets,
        vec![0, 2, 1, 3, 4],
        "a group is accepted once a member carried it (g1 by u1's membership, g2 at once on \
         u2, who waited for it); g3 waits for the end of the run"
    );
    sink.flush(&acks).await.unwrap();
    let mut settled = before_flush;
    settled.extend(drain(&mut rx).await);
    let outcome = |t: u64| {
        settled
            .iter()
            .find(|s| s.ticket.0 == t)
            .map(|s| s.outcome.clone())
    };
    assert_eq!(outcome(1), Some(Outcome::Accepted));
    assert_eq!(outcome(4), Some(Outcome::Accepted));
    assert!(matches!(outcome(5), Some(Outcome::Rejected(r)) if r.reason.contains("no membership")));
    assert_eq!(
        bodies(&t),
        vec![
            json!({"userId": "u1", "attributes": {"plan": "pro"}}),
            json!({"userId": "u1", "company": {"companyId": "g1", "attributes": {"name": "Acme"}}}),
            json!({"userId": "u2", "company": {"companyId": "g2"}}),
            json!({"userId": "u2", "company": {"companyId": "g2", "attributes": {"name": "Beta"}}}),
        ]
    );
}

#[tokio::test]
async fn a_late_group_leaves_members_that_moved_on_where_they_are() {
    let t = Arc::new(ScriptedTransport::new(|_| {
        Ok(WireResponse::ok(json!({"success": true})))
    }));
    let sink = UserGuidingSink::new(t.clone());
    let (acks, mut rx) = Acks::channel();
    for o in [
        op(
            0,
            Kind::Groups,
            Some("g1"),
            None,
            None,
            json!({"name": "Acme"}),
        ),
        // u1 joins g2 (not known yet), then g1: g1 is its company.
        op(
            1,
            Kind::Memberships,
            None,
            Some("u1"),
            Some("g2"),
            json!({}),
        ),
        op(
            2,
            Kind::Memberships,
            None,
            Some("u1"),
            Some("g1"),
            json!({}),
        ),
        op(
            3,
            Kind::Memberships,
            None,
            Some("u2"),
            Some("g2"),
            json!({}),
        ),
        op(
            4,
            Kind::Groups,
            Some("g2"),
            None,
            None,
            json!({"name": "Beta"}),
        ),
    ] {
        sink.write(vec![o], &acks).await.unwrap();
    }
    sink.flush(&acks).await.unwrap();
    assert!(
        drain(&mut rx)
            .await
            .iter()
            .all(|s| s.outcome == Outcome::Accepted)
    );
    assert_eq!(
        bodies(&t),
        vec![
            json!({"userId": "u1", "company": {"companyId": "g2"}}),
            json!({"userId": "u1", "company": {"companyId": "g1", "attributes": {"name": "Acme"}}}),
            json!({"userId": "u2", "company": {"companyId": "g2"}}),
            json!({"userId": "u2", "company": {"companyId": "g2", "attributes": {"name": "Beta"}}}),
        ],
        "u1 stays in g1, its last membership"
    );
}

#[tokio::test]
async fn a_changed_group_reaches_userguiding_on_one_of_its_members() {
    let t = Arc::new(ScriptedTransport::new(|_| {
        Ok(WireResponse::ok(json!({"success": true})))
    }));
    let sink = UserGuidingSink::new(t.clone());
    let (acks, mut rx) = Acks::channel();
    let group = |ticket, name: &str| {
        op(
            ticket,
            Kind::Groups,
            Some("g1"),
            None,
            None,
            json!({ "name": name }),
        )
    };
    let member = |ticket, user| {
        op(
            ticket,
            Kind::Memberships,
            None,
            Some(user),
            Some("g1"),
            json!({}),
        )
    };
    for o in [
        group(0, "Acme"),
        member(1, "u1"),
        member(2, "u2"),
        group(3, "Acme Inc"),
        // Unchanged: nothing to send, accepted at once.
        group(4, "Acme Inc"),
    ] {
        sink.write(vec![o], &acks).await.unwrap();
    }
    let settled = drain(&mut rx).await;
    assert!(settled.iter().all(|s| s.outcome == Outcome::Accepted));
    assert_eq!(
        settled.iter().map(|s| s.ticket.0).collect::<Vec<_>>(),
        vec![1, 0, 2, 3, 4],
        "every group is accepted before the end of the run"
    );
    assert_eq!(
        bodies(&t).last().unwrap(),
        &json!({"userId": "u2", "company": {"companyId": "g1", "attributes": {"name": "Acme Inc"}}}),
    );
    assert_eq!(bodies(&t).len(), 3);
}

#[tokio::test]
async fn success_false_is_a_refusal_and_deletes_and_nested_values_are_refused() {
    let t = Arc::new(ScriptedTransport::new(|_| {
        Ok(WireResponse::ok(json!({"success": false, "message": "no"})))
    }));
    let sink = UserGuidingSink::new(t);
    let (acks, mut rx) = Acks::channel();
    sink.write(
        vec![op(0, Kind::Users, Some("u1"), None, None, json!({}))],
        &acks,
    )
    .await
    .unwrap();
    let s = drain(&mut rx).await;
    assert_eq!(s.len(), 1);
    assert!(matches!(&s[0].outcome, Outcome::Rejected(r) if r.reason.contains("success: false")));
    let mut delete = op(1, Kind::Users, Some("u1"), None, None, json!({}));
    delete.item.action = Action::Delete;
    assert!(
        sink.plan(&delete)
            .unwrap_err()
            .reason
            .contains("no call to delete")
    );
    let nested = op(
        2,
        Kind::Users,
        Some("u1"),
        None,
        None,
        json!({"tags": ["a"]}),
    );
    assert!(
        sink.plan(&nested)
            .unwrap_err()
            .reason
            .contains("\"tags\" is an array")
    );
}

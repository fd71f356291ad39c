//! The Userflow writer: merging upserts, memberships through the user upsert, events, deletes.
//!
//! | kind | upsert | delete |
//! | --- | --- | --- |
//! | users | `POST /users {"id", "attributes"}` | `DELETE /users/{id}` |
//! | groups | `POST /groups {"id", "attributes"}` | `DELETE /groups/{id}` |
//! | memberships | `POST /users {"id": user, "groups": [{"id": group}]}` (or `memberships` with the membership's attributes) | `GET /users/{id}?expand=memberships`, then `POST /users` with the other groups and `prune_memberships: true` |
//! | events | `POST /events {"user_id", "name", "attributes", "group_id"}` | rejected |
//!
//! Userflow's API document and every client found show no time field on an event: Userflow
//! records the time it receives one. An event's `timestamp` is therefore not sent (a warning
//! says so once); rename the column to keep it as an event attribute.
//!
//! Differences from the seed (reference/vendors.md, the vendor's form is more credible): the id
//! goes in the body of `POST /users` and `POST /groups`, not in the path; memberships go
//! through the user upsert (`groups` / `memberships`), not `POST /group_memberships`; every
//! request carries `Userflow-Version: 2020-01-03`. Attributes merge: an attribute sent as `null`
//! is cleared, one not sent is kept. A delete of something already gone (404) is skipped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;

use crate::model::PropKey;
use crate::sink::body::Properties;
use crate::sink::read::{property_changes, split_properties};
use crate::sink::{
    Acks, Action, Auth, ClientSpec, Current, Holding, Item, Kind, Method, Op, OrderKey, Plan,
    Refusal, SendError, Sink, SinkContext, SinkError, Transport, WireRequest, WireStats,
    key_segment, object, path_keys, send_and_settle,
};
use crate::vendors::patterns;

use super::wire::{
    self, AttributesBody, EventBody, GroupRef, MembershipBody, MembershipRef, is_change_object,
};

/// The vendor's name.
const VENDOR: &str = "userflow";

/// The Userflow writer.
#[derive(Debug)]
pub struct UserflowSink {
    transport: Arc<dyn Transport>,
    warned_event_time: AtomicBool,
}

/// The registry's factory.
pub fn sink(ctx: &SinkContext<'_>) -> Result<Arc<dyn Sink>, SinkError> {
    let config: super::config::Config = ctx.config.typed()?;
    let mut spec = ClientSpec::new(Auth::Bearer(config.api_key));
    spec.headers.push(("Userflow-Version", super::API_VERSION));
    // Userflow answers every write with the JSON object it wrote.
    spec.json_answers = true;
    // Userflow documents "2 safeguards" without figures: the HTTP engine discovers the limit
    // from 429s.
    Ok(Arc::new(UserflowSink::new(ctx.transport(spec)?)))
}

impl UserflowSink {
    /// A writer over any transport (tests).
    pub fn new(transport: Arc<dyn Transport>) -> Self {
        UserflowSink {
            transport,
            warned_event_time: AtomicBool::new(false),
        }
    }

    async fn send(&self, op: &Op, request: WireRequest, acks: &Acks) -> Result<(), SinkError> {
        send_and_settle(VENDOR, self.transport.as_ref(), op, request, acks).await?;
        Ok(())
    }

    /// A delete: a 404 means it is gone already, which is what was asked.
    async fn delete(&self, op: &Op, path: String, acks: &Acks) -> Result<(), SinkError> {
        let request = WireRequest::new(Method::Delete, path);
        let absent = || "already absent at userflow (404)".to_string();
        patterns::delete(VENDOR, self.transport.as_ref(), op, request, acks, absent).await?;
        Ok(())
    }

    /// Removes one membership: Userflow has no call for that, only `prune_memberships` with the
    /// user's full list, so read the list first (writes for this user are serialised by the
    /// engine, so nobody changes it in between).
    async fn remove_membership(&self, op: &Op, acks: &Acks) -> Result<(), SinkError> {
        let (Some(user), Some(group)) = (op.item.user_id.as_deref(), op.item.group_id.as_deref())
        else {
            acks.rejected(
                op,
                Refusal::new("a membership needs user_id and group_id"),
                None,
            );
            return Ok(());
        };
        let lookup = WireRequest::new(
            Method::Get,
            format!("/users/{}?expand=memberships", key_segment(user)),
        );
        let response = match self.transport.send(lookup).await {
            Ok(response) => response,
            Err(err) if err.status == Some(404) => {
                acks.skipped(
                    op,
                    "the user does not exist at userflow, so neither does the membership",
                );
                return Ok(());
            }
            Err(err) => return patterns::reject_one(VENDOR, op, err, None, acks),
        };
        if response.dry_run {
            // Nothing was read: show the lookup only.
            acks.accepted(op, None);
            return Ok(());
        }
        let current = wire::membership_group_ids(&response.json());
        if !current.iter().any(|g| g == group) {
            acks.skipped(op, "not a member at userflow already");
            return Ok(());
        }
        let keep: Vec<Value> = current
            .iter()
            .filter(|g| g.as_str() != group)
            .map(|g| object([("id", Value::String(g.clone()))]))
            .collect();
        let body = object([
            ("id", Value::String(user.to_string())),
            ("groups", Value::Array(keep)),
            ("prune_memberships", Value::Bool(true)),
        ]);
        self.send(
            op,
            WireRequest::new(Method::Post, "/users").json(body),
            acks,
        )
        .await
    }
}

/// What Userflow holds for `item`: `GET /users/{id}` or `GET /groups/{id}` (404: absent), and
/// for a membership the user's memberships (`?expand=memberships`). Other kinds are not read.
pub async fn read_holding(transport: &dyn Transport, item: &Item) -> Result<Holding, SendError> {
    let (path, membership_of) = match item.kind {
        Kind::Users => (
            format!(
                "/users/{}",
                key_segment(item.id.as_deref().unwrap_or_default())
            ),
            None,
        ),
        Kind::Groups => (
            format!(
                "/groups/{}",
                key_segment(item.id.as_deref().unwrap_or_default())
            ),
            None,
        ),
        Kind::Memberships => (
            format!(
                "/users/{}?expand=memberships",
                key_segment(item.user_id.as_deref().unwrap_or_default())
            ),
            item.group_id.as_deref(),
        ),
        _ => return Ok(Holding::Unreadable),
    };
    let response = match transport.send(WireRequest::new(Method::Get, path)).await {
        Ok(response) => response,
        Err(err) if err.status == Some(404) => return Ok(Holding::Absent),
        Err(err) => return Err(err),
    };
    if response.dry_run {
        return Ok(Holding::Unreadable);
    }
    let body = response.json();
    let attributes_of = |v: &Value| {
        v.get("attributes")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    let Some(group) = membership_of else {
        let held = attributes_of(&body);
        let mut current = split_properties(item.kind, &held);
        current.changes = property_changes(&item.properties(), &held);
        return Ok(Holding::Held(current));
    };
    let membership = body
        .get("memberships")
        .and_then(Value::as_array)
        .and_then(|list| {
            list.iter().find(|m| {
                m.get("group")
                    .and_then(|g| g.get("id"))
                    .or_else(|| m.get("group_id"))
                    .and_then(Value::as_str)
                    == Some(group)
            })
        });
    Ok(match membership {
        None => Holding::Absent,
        Some(m) => {
            let held = attributes_of(m);
            Holding::Held(Current {
                changes: property_changes(&item.attributes, &held),
                attributes: held,
                ..Current::default()
            })
        }
    })
}

/// Userflow attribute values: a literal (string, number, boolean, null) or a change object
/// (`{"set": …}`, `set_once`, `add`, `subtract`, with an optional `data_type`).
fn check_attributes<'a>(
    what: &str,
    values: impl IntoIterator<Item = (&'a PropKey, &'a Value)>,
) -> Result<(), Refusal> {
    for (key, value) in values {
        let ok = match value {
            Value::Array(_) => false,
            Value::Object(o) => is_change_object(o),
            _ => true,
        };
        if !ok {
            return Err(Refusal::new(format!(
                "userflow takes strings, numbers, booleans, null or change objects ({{\"set\": …}}) as {what}, but {key:?} is {}",
                if value.is_array() {
                    "an array"
                } else {
                    "an object that is not a change object"
                }
            )));
        }
    }
    Ok(())
}

/// A user's or group's upsert body, serialised once from the item.
fn attributes_body(path: &str, item: &Item) -> Option<WireRequest> {
    let properties = Properties(item);
    let body = AttributesBody {
        id: item.id.as_deref()?,
        attributes: (!properties.is_empty()).then_some(properties),
    };
    Some(
        WireRequest::new(Method::Post, path)
            .json_of(&body)
            .ok()?
            .idempotent(),
    )
}

/// The request for an upsert or event (deletes and membership removals are read-then-write).
/// Bodies are serialised once, straight from the item.
pub fn request(op: &Op) -> Option<WireRequest> {
    let item = &op.item;
    match (item.kind, item.action) {
        (Kind::Users, Action::Upsert) => attributes_body("/users", item),
        (Kind::Groups, Action::Upsert) => attributes_body("/groups", item),
        (Kind::Memberships, Action::Upsert) => {
            let user = item.user_id.as_deref()?;
            let group = GroupRef {
                id: item.group_id.as_deref()?,
            };
            let body = if item.attributes.is_empty() {
                MembershipBody {
                    id: user,
                    groups: Some([group]),
                    memberships: None,
                }
            } else {
                MembershipBody {
                    id: user,
                    groups: None,
                    memberships: Some([MembershipRef {
                        group,
                        attributes: &item.attributes,
                    }]),
                }
            };
            Some(
                WireRequest::new(Method::Post, "/users")
                    .json_of(&body)
                    .ok()?
                    .idempotent(),
            )
        }
        (Kind::Events, Action::Upsert) => {
            let body = EventBody {
                user_id: item.user_id.as_deref()?,
                name: item.fields.get("name")?,
                group_id: item.group_id.as_deref(),
                attributes: (!item.attributes.is_empty()).then_some(&item.attributes),
            };
            // An event has no id: repeating it after an ambiguous failure could count it twice.
            Some(
                WireRequest::new(Method::Post, "/events")
                    .json_of(&body)
                    .ok()?
                    .not_idempotent(),
            )
        }
        _ => None,
    }
}

#[async_trait::async_trait]
impl Sink for UserflowSink {
    fn vendor(&self) -> &'static str {
        VENDOR
    }

    fn plan(&self, op: &Op) -> Result<Plan, Refusal> {
        let item = &op.item;
        // Deletes and membership removals put the keys into paths (`DELETE /users/{id}`).
        if item.action == Action::Delete {
            path_keys(item)?;
        }
        match item.kind {
            Kind::Users | Kind::Groups => {
                let id = item.id.as_deref().unwrap_or_default();
                if item.action == Action::Upsert {
                    check_attributes("attributes", item.property_entries())?;
                }
                Ok(Plan::single(vec![if item.kind == Kind::Users {
                    OrderKey::user(id)
                } else {
                    OrderKey::group(id)
                }]))
            }
            Kind::Memberships => {
                check_attributes("membership attributes", &item.attributes)?;
                Ok(Plan::single(vec![
                    OrderKey::user(item.user_id.as_deref().unwrap_or_default()),
                    OrderKey::group(item.group_id.as_deref().unwrap_or_default()),
                ]))
            }
            Kind::Events => {
                check_attributes("event attributes", &item.attributes)?;
                Ok(Plan::single(vec![OrderKey::user(
                    item.user_id.as_deref().unwrap_or_default(),
                )]))
            }
            Kind::Segments => Err(Refusal::new("userflow has no segments")),
        }
    }

    async fn write(&self, batch: Vec<Op>, acks: &Acks) -> Result<(), SinkError> {
        for op in &batch {
            let item = &op.item;
            if item.kind == Kind::Events
                && item.fields.get("timestamp").is_some_and(|t| !t.is_null())
                && !self.warned_event_time.swap(true, Ordering::Relaxed)
            {
                tracing::warn!(
                    "userflow takes no time for an event (it records when it receives one), so the events' \"timestamp\" is not sent; rename the column to keep it as an event attribute"
                );
            }
            match (item.kind, item.action) {
                (Kind::Users, Action::Delete) => {
                    let id = item.id.as_deref().unwrap_or_default();
                    self.delete(op, format!("/users/{}", key_segment(id)), acks)
                        .await?;
                }
                (Kind::Groups, Action::Delete) => {
                    let id = item.id.as_deref().unwrap_or_default();
                    self.delete(op, format!("/groups/{}", key_segment(id)), acks)
                        .await?;
                }
                (Kind::Memberships, Action::Delete) => self.remove_membership(op, acks).await?,
                _ => match request(op) {
                    Some(request) => self.send(op, request, acks).await?,
                    None => acks.rejected(
                        op,
                        Refusal::new(format!("userflow cannot write this {} record", item.kind)),
                        None,
                    ),
                },
            }
        }
        Ok(())
    }

    async fn check(&self) -> Result<(), SinkError> {
        let request = WireRequest::new(Method::Get, "/users?limit=1");
        patterns::probe(VENDOR, self.transport.as_ref(), request).await
    }

    fn stats(&self) -> WireStats {
        self.transport.stats()
    }

    fn nested_rule(&self) -> crate::sink::NestedRule {
        crate::sink::NestedRule::ScalarsAnd(is_change_object)
    }

    fn reads(&self, kind: Kind) -> bool {
        matches!(kind, Kind::Users | Kind::Groups | Kind::Memberships)
    }

    async fn read(&self, item: &Item) -> Result<Holding, SendError> {
        read_holding(self.transport.as_ref(), item).await
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;

//! The Appcues writer (public API v2, real-time; `mode: bulk` and segments are issue 6's).
//!
//! Paths are under `/v2/accounts/{account_id}`:
//!
//! | kind | upsert | delete |
//! | --- | --- | --- |
//! | users | `PATCH /users/{id}/profile` (flat properties) | `DELETE /users/{id}/profile` |
//! | groups | `PATCH /groups/{id}/profile` | rejected: no call deletes a group |
//! | memberships | `POST /groups/{id}/users {"user_ids": […]}`, batched per group | rejected: no call removes one |
//! | events | `POST /users/{id}/events {"name", "timestamp", "attributes", "group_id"}` | rejected |
//!
//! Properties are merged (`null` is passed on); values must be scalar (the seed: strings,
//! numbers, booleans). An event without a timestamp gets the time it is sent, since Appcues
//! requires one. A profile delete of a user that does not exist (404) is skipped. Basic auth
//! `api_key:api_secret`. Limits (Appcues CLI, more credible than the seed's "none documented"):
//! 60 requests/s per account and `Retry-After` on 429, honoured by the HTTP engine; the client
//! paces itself to 50 requests/s as the CLI does. A membership's own attributes have no place at
//! Appcues and are not sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::sink::read::{property_changes, split_properties};
use crate::sink::{
    Acks, Action, Auth, BatchKey, BatchLimits, ClientSpec, Holding, Item, Kind, Method, Op,
    OrderKey, Plan, Refusal, SendError, Sink, SinkContext, SinkError, Transport, WireRequest,
    WireStats, key_segment, path_keys, scalars_only, send_and_settle,
};
use crate::vendors::patterns;

/// The vendor's name.
const VENDOR: &str = "appcues";

/// The Appcues CLI throttles itself to 50 requests/s under the account's 60.
pub const REQUESTS_PER_SECOND: f64 = 50.0;

/// User ids per membership request; Appcues documents no cap, so keep requests modest.
pub const MEMBERSHIP_BATCH: usize = 100;

/// How long a group's membership batch gathers ids.
pub const MEMBERSHIP_LINGER: Duration = Duration::from_millis(200);

/// The Appcues writer.
#[derive(Debug)]
pub struct AppcuesSink {
    transport: Arc<dyn Transport>,
    account: String,
    warned_membership_attributes: AtomicBool,
}

/// The `mode: realtime` writer: everything in real time but segments, which go through upload
/// jobs in both modes ([`super::segments`]), so it is built from the same parts as the bulk one.
pub fn sink(ctx: &SinkContext<'_>) -> Result<Arc<dyn Sink>, SinkError> {
    Ok(super::bulk::Parts::new(ctx)?.into_sink(None))
}

/// What the Appcues HTTP client needs: Basic `api_key:api_secret` and the CLI's pace (shared
/// with the bulk writer, which sends through the same client).
pub fn client_spec(config: &super::config::Config) -> ClientSpec {
    let mut spec = ClientSpec::new(Auth::Basic {
        username: config.api_key.expose().to_string(),
        password: config.api_secret.clone(),
    });
    spec.requests_per_second = Some(REQUESTS_PER_SECOND);
    spec
}

impl AppcuesSink {
    /// A writer for `account` over any transport (tests).
    pub fn new(transport: Arc<dyn Transport>, account: &str) -> Self {
        AppcuesSink {
            transport,
            account: format!("/v2/accounts/{}", key_segment(account)),
            warned_membership_attributes: AtomicBool::new(false),
        }
    }

    /// The request of an upsert or event.
    pub fn request(&self, op: &Op) -> Option<WireRequest> {
        let item = &op.item;
        let a = &self.account;
        match item.kind {
            Kind::Users => Some(
                WireRequest::new(
                    Method::Patch,
                    format!("{a}/users/{}/profile", key_segment(item.id.as_deref()?)),
                )
                .json(Value::Object(item.properties()))
                .idempotent(),
            ),
            Kind::Groups => Some(
                WireRequest::new(
                    Method::Patch,
                    format!("{a}/groups/{}/profile", key_segment(item.id.as_deref()?)),
                )
                .json(Value::Object(item.properties()))
                .idempotent(),
            ),
            Kind::Events => {
                let mut body = Map::new();
                body.insert("name".into(), item.fields.get("name")?.clone());
                let timestamp = match item.fields.get("timestamp") {
                    Some(ts) if !ts.is_null() => ts.clone(),
                    _ => Value::String(
                        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    ),
                };
                body.insert("timestamp".into(), timestamp);
                if !item.attributes.is_empty() {
                    body.insert(
                        "attributes".into(),
                        Value::Object(
                            item.attributes
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.clone()))
                                .collect(),
                        ),
                    );
                }
                if let Some(group) = &item.group_id {
                    body.insert("group_id".into(), Value::String(group.clone()));
                }
                Some(
                    WireRequest::new(
                        Method::Post,
                        format!("{a}/users/{}/events", key_segment(item.user_id.as_deref()?)),
                    )
                    .json(Value::Object(body)),
                )
            }
            Kind::Memberships | Kind::Segments => None,
        }
    }

    async fn memberships(&self, batch: &[Op], acks: &Acks) -> Result<(), SinkError> {
        let Some(group) = batch.first().and_then(|op| op.item.group_id.clone()) else {
            return Ok(());
        };
        if batch.iter().any(|op| !op.item.attributes.is_empty())
            && !self
                .warned_membership_attributes
                .swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                "appcues has no place for a membership's own attributes; they are not sent"
            );
        }
        let mut users: Vec<Value> = Vec::with_capacity(batch.len());
        for op in batch {
            if let Some(user) = &op.item.user_id
                && !users.iter().any(|u| u.as_str() == Some(user))
            {
                users.push(Value::String(user.clone()));
            }
        }
        // Associating users with a group is idempotent: a repeat changes nothing.
        let request = WireRequest::new(
            Method::Post,
            format!("{}/groups/{}/users", self.account, key_segment(&group)),
        )
        .json(json!({ "user_ids": users }))
        .idempotent();
        let payload = request.payload_hash();
        match self.transport.send(request).await {
            Ok(_) => batch.iter().for_each(|op| acks.accepted(op, payload)),
            Err(err) => patterns::reject_batch(VENDOR, batch, err, payload, acks)?,
        }
        Ok(())
    }

    /// What Appcues holds for a user or group: `GET /users/{id}/profile` or
    /// `GET /groups/{id}/profile` (404: absent), a flat map of properties. Appcues' API document
    /// warns that a profile fed by a bulk import may not be current yet.
    pub async fn read_holding(&self, item: &Item) -> Result<Holding, SendError> {
        let (noun, key_field) = match item.kind {
            Kind::Users => ("users", "user_id"),
            Kind::Groups => ("groups", "group_id"),
            _ => return Ok(Holding::Unreadable),
        };
        let id = item.id.as_deref().unwrap_or_default();
        let path = format!("{}/{noun}/{}/profile", self.account, key_segment(id));
        let response = match self
            .transport
            .send(WireRequest::new(Method::Get, path))
            .await
        {
            Ok(response) => response,
            Err(err) if err.status == Some(404) => return Ok(Holding::Absent),
            Err(err) => return Err(err),
        };
        if response.dry_run {
            return Ok(Holding::Unreadable);
        }
        let mut held = response.json().as_object().cloned().unwrap_or_default();
        held.shift_remove(key_field);
        let mut current = split_properties(item.kind, &held);
        current.changes = property_changes(&item.properties(), &held);
        Ok(Holding::Held(current))
    }

    async fn delete_user(&self, op: &Op, acks: &Acks) -> Result<(), SinkError> {
        let id = op.item.id.as_deref().unwrap_or_default();
        let request = WireRequest::new(
            Method::Delete,
            format!("{}/users/{}/profile", self.account, key_segment(id)),
        );
        let absent = || "no such user profile at appcues (404)".to_string();
        patterns::delete(VENDOR, self.transport.as_ref(), op, request, acks, absent).await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Sink for AppcuesSink {
    fn vendor(&self) -> &'static str {
        VENDOR
    }

    fn plan(&self, op: &Op) -> Result<Plan, Refusal> {
        let item = &op.item;
        // Every key goes into a path (`/users/{id}/profile`, `/groups/{id}/users`).
        if item.kind != Kind::Segments {
            path_keys(item)?;
        }
        match (item.kind, item.action) {
            (Kind::Users, Action::Upsert) => {
                scalars_only(VENDOR, "profile property values", item.property_entries())?;
                Ok(Plan::single(vec![OrderKey::user(
                    item.id.as_deref().unwrap_or_default(),
                )]))
            }
            (Kind::Users, Action::Delete) => Ok(Plan::single(vec![OrderKey::user(
                item.id.as_deref().unwrap_or_default(),
            )])),
            (Kind::Groups, Action::Upsert) => {
                scalars_only(VENDOR, "group property values", item.property_entries())?;
                Ok(Plan::single(vec![OrderKey::group(
                    item.id.as_deref().unwrap_or_default(),
                )]))
            }
            (Kind::Groups, Action::Delete) => {
                Err(Refusal::new("appcues has no call to delete a group"))
            }
            (Kind::Memberships, Action::Upsert) => {
                let group = item.group_id.as_deref().unwrap_or_default();
                Ok(Plan::batched(
                    vec![
                        OrderKey::group(group),
                        OrderKey::user(item.user_id.as_deref().unwrap_or_default()),
                    ],
                    BatchKey::new(
                        format!("appcues members of {group}"),
                        BatchLimits {
                            max_items: MEMBERSHIP_BATCH,
                            linger: MEMBERSHIP_LINGER,
                        },
                    ),
                ))
            }
            (Kind::Memberships, Action::Delete) => Err(Refusal::new(
                "appcues has no call to remove a user from a group",
            )),
            (Kind::Events, _) => {
                scalars_only(VENDOR, "event attribute values", &item.attributes)?;
                Ok(Plan::single(vec![OrderKey::user(
                    item.user_id.as_deref().unwrap_or_default(),
                )]))
            }
            (Kind::Segments, _) => Err(Refusal::new(
                "appcues segments are not written by this build (they come with mode: bulk)",
            )),
        }
    }

    async fn write(&self, batch: Vec<Op>, acks: &Acks) -> Result<(), SinkError> {
        if batch
            .first()
            .is_some_and(|op| op.item.kind == Kind::Memberships)
        {
            return self.memberships(&batch, acks).await;
        }
        for op in &batch {
            if op.item.kind == Kind::Users && op.item.action == Action::Delete {
                self.delete_user(op, acks).await?;
                continue;
            }
            match self.request(op) {
                Some(request) => {
                    send_and_settle(VENDOR, self.transport.as_ref(), op, request, acks).await?;
                }
                None => acks.rejected(
                    op,
                    Refusal::new(format!("appcues cannot write this {} record", op.item.kind)),
                    None,
                ),
            }
        }
        Ok(())
    }

    async fn check(&self) -> Result<(), SinkError> {
        // Appcues has no cheap identity endpoint for an API key: the first write tells.
        Ok(())
    }

    fn stats(&self) -> WireStats {
        self.transport.stats()
    }

    fn nested_rule(&self) -> crate::sink::NestedRule {
        crate::sink::NestedRule::ScalarsOnly
    }

    fn reads(&self, kind: Kind) -> bool {
        matches!(kind, Kind::Users | Kind::Groups)
    }

    async fn read(&self, item: &Item) -> Result<Holding, SendError> {
        self.read_holding(item).await
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;

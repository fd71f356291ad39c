//! The UserGuiding writer: `POST /identify` for users, with the company nested in the same call.
//!
//! UserGuiding has no company endpoint, no unlink and no delete, so:
//! - a `users` record is `{"userId", "attributes"}`;
//! - a `groups` record is kept in memory (its attributes become the company's) and sent on its
//!   members: every membership is an identify `{"userId", "company": {"companyId",
//!   "attributes"}}` carrying the group's attributes when the group came first, and a group
//!   that comes after some of its memberships re-identifies those members with its attributes;
//! - a group is accepted as soon as its attributes went out on at least one member (UserGuiding
//!   then holds the company, and later identifies naming only its id keep it), and rejected at
//!   the end of the run if no membership named it. So a STATE after a group waits until one of
//!   its members is identified: a rerun from an earlier state sends the group again before its
//!   memberships;
//! - deletes (users, groups, memberships) are rejected with that reason.
//!
//! Values must be scalar (help centre: strings, numbers, booleans, dates; no arrays or objects).
//! A membership's own attributes have no place at UserGuiding and are not sent (a warning says
//! so once). UserGuiding keeps one company per user: the user's last membership in the input
//! wins, so a late group re-identifies only the waiting members whose last membership is still
//! that group.
//!
//! Rate limit (help centre, more credible than the seed's "unknown"): 50 requests per 10 s, then
//! a 60 s block. The client paces itself just under that ([`REQUESTS_PER_SECOND`]) and pauses
//! 60 s after a 429.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{Map, Value};

use crate::sink::{
    Acks, Action, Auth, ClientSpec, Kind, Method, Op, OrderKey, Plan, Refusal, Sink, SinkContext,
    SinkError, Transport, WireRequest, WireResponse, WireStats, scalars_only, send_and_settle,
};

use super::wire::{Company, Identify};

/// The vendor's name.
const VENDOR: &str = "userguiding";

/// 50 requests per 10 s (help centre), less a little: the pacer lets one request through early
/// after an idle spell, and at exactly 5/s that one makes 51 in some 10 s window, which blocks
/// the key for a minute. At 4.8/s a 10 s window holds at most 49.
pub const REQUESTS_PER_SECOND: f64 = 4.8;

/// The block after going over the limit (help centre: "blocked for the next 1 minute").
pub const BLOCK_AFTER_429: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct Group {
    /// The group's record, once it arrived (`None` while only memberships named it).
    op: Option<Op>,
    attributes: Option<Map<String, Value>>,
    /// Members identified before the group's attributes were known.
    waiting: Vec<String>,
    /// A member identified with this company and its attributes: a later record of the group
    /// re-identifies it, so changed attributes reach UserGuiding.
    carrier: Option<String>,
    /// True once an identify carried this company.
    delivered: bool,
}

/// The UserGuiding writer.
#[derive(Debug)]
pub struct UserGuidingSink {
    transport: Arc<dyn Transport>,
    groups: Mutex<HashMap<String, Group>>,
    /// Each user's company as last sent by a membership (UserGuiding keeps one).
    company_of: Mutex<HashMap<String, String>>,
    warned_membership_attributes: AtomicBool,
}

/// The registry's factory.
pub fn sink(ctx: &SinkContext<'_>) -> Result<Arc<dyn Sink>, SinkError> {
    let config: super::config::Config = ctx.config.typed()?;
    let mut spec = ClientSpec::new(Auth::Bearer(config.api_key));
    spec.requests_per_second = Some(REQUESTS_PER_SECOND);
    spec.default_429_wait = Some(BLOCK_AFTER_429);
    // The vendor documents `{"success": true}` as the answer to identify.
    spec.json_answers = true;
    Ok(Arc::new(UserGuidingSink::new(ctx.transport(spec)?)))
}

/// UserGuiding answers 200 `{"success": false}` for some failures: that is a refusal.
fn refused(response: &WireResponse) -> Option<Refusal> {
    let body = response.json();
    (body.get("success") == Some(&Value::Bool(false))).then(|| {
        Refusal::vendor(
            "userguiding answered success: false",
            Some(response.status),
            Some(body.to_string()),
        )
    })
}

impl UserGuidingSink {
    /// A writer over any transport (tests).
    pub fn new(transport: Arc<dyn Transport>) -> Self {
        UserGuidingSink {
            transport,
            groups: Mutex::new(HashMap::new()),
            company_of: Mutex::new(HashMap::new()),
            warned_membership_attributes: AtomicBool::new(false),
        }
    }

    fn identify(body: &Identify) -> WireRequest {
        WireRequest::new(Method::Post, "/identify")
            .json(serde_json::to_value(body).unwrap_or(Value::Null))
            .idempotent()
            .expect_fields(&["success"])
    }

    /// Sends an identify for `op` and settles it; `true` when accepted.
    async fn send(&self, op: &Op, body: &Identify, acks: &Acks) -> Result<bool, SinkError> {
        let request = Self::identify(body);
        let payload = request.payload_hash();
        // Settle through a private channel first: a 200 with success:false is a refusal.
        let (inner, mut rx) = Acks::channel();
        let response =
            send_and_settle(VENDOR, self.transport.as_ref(), op, request, &inner).await?;
        drop(inner);
        if let Some(response) = response {
            if let Some(refusal) = refused(&response) {
                acks.rejected(op, refusal, payload);
                return Ok(false);
            }
        }
        let mut accepted = false;
        while let Ok(settlement) = rx.try_recv() {
            accepted = matches!(settlement.outcome, crate::sink::Outcome::Accepted);
            acks.settle(settlement);
        }
        Ok(accepted)
    }

    async fn membership(&self, op: &Op, acks: &Acks) -> Result<(), SinkError> {
        let (Some(user), Some(group)) = (op.item.user_id.clone(), op.item.group_id.clone()) else {
            acks.rejected(
                op,
                Refusal::new("a membership needs user_id and group_id"),
                None,
            );
            return Ok(());
        };
        if !op.item.attributes.is_empty()
            && !self
                .warned_membership_attributes
                .swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                "userguiding has no place for a membership's own attributes; they are not sent (the company gets the group's attributes)"
            );
        }
        let attributes = self
            .groups
            .lock()
            .get(&group)
            .and_then(|g| g.attributes.clone());
        let known = attributes.is_some();
        let body = Identify {
            user_id: user.clone(),
            attributes: None,
            company: Some(Company {
                company_id: group.clone(),
                attributes,
            }),
        };
        if self.send(op, &body, acks).await? {
            self.company_of.lock().insert(user.clone(), group.clone());
            let held = {
                let mut groups = self.groups.lock();
                let entry = groups.entry(group).or_default();
                if known {
                    entry.delivered = true;
                    entry.carrier = Some(user);
                    // The group's record waited for a member to carry it: it is at the vendor now.
                    entry.op.take()
                } else {
                    entry.waiting.push(user);
                    None
                }
            };
            if let Some(group_op) = held {
                acks.accepted(&group_op, None);
            }
        }
        Ok(())
    }

    /// A group: keep its attributes, and re-identify members that went out without them.
    async fn group(&self, op: Op, acks: &Acks) -> Result<(), SinkError> {
        let id = op.item.id.clone().unwrap_or_default();
        let attributes = op.item.properties();
        let waiting = {
            let mut groups = self.groups.lock();
            let entry = groups.entry(id.clone()).or_default();
            let changed = entry.attributes.as_ref() != Some(&attributes);
            entry.attributes = Some(attributes.clone());
            let mut waiting = std::mem::take(&mut entry.waiting);
            if waiting.is_empty() && changed {
                waiting.extend(entry.carrier.clone());
            }
            waiting
        };
        let mut delivered = false;
        let mut failed: Option<Refusal> = None;
        for user in waiting {
            // A later membership moved this user to another company: leave it there.
            if self.company_of.lock().get(&user) != Some(&id) {
                continue;
            }
            let body = Identify {
                user_id: user.clone(),
                attributes: None,
                company: Some(Company {
                    company_id: id.clone(),
                    attributes: Some(attributes.clone()),
                }),
            };
            let (inner, mut rx) = Acks::channel();
            if self.send(&op, &body, &inner).await? {
                delivered = true;
                self.groups.lock().entry(id.clone()).or_default().carrier = Some(user);
            } else if let Ok(settlement) = rx.try_recv()
                && let crate::sink::Outcome::Rejected(refusal) = settlement.outcome
            {
                failed.get_or_insert(refusal);
            }
        }
        if let Some(refusal) = failed {
            // The group's attributes did not reach every member: say so now.
            acks.rejected(&op, refusal, None);
            return Ok(());
        }
        {
            let mut groups = self.groups.lock();
            let entry = groups.entry(id).or_default();
            entry.delivered |= delivered;
            if !entry.delivered {
                // Settled when a membership carries it, or rejected at flush if none does.
                entry.op = Some(op);
                return Ok(());
            }
        }
        acks.accepted(&op, None);
        Ok(())
    }
}

#[async_trait::async_trait]
impl Sink for UserGuidingSink {
    fn vendor(&self) -> &'static str {
        VENDOR
    }

    fn plan(&self, op: &Op) -> Result<Plan, Refusal> {
        let item = &op.item;
        if item.action == Action::Delete {
            return Err(Refusal::new(format!(
                "userguiding has no call to delete {} (its API only identifies users and their company)",
                match item.kind {
                    Kind::Users => "or deactivate a user",
                    Kind::Groups => "a company",
                    _ => "a user's company link",
                }
            )));
        }
        match item.kind {
            Kind::Users => {
                scalars_only(VENDOR, "attribute values", item.property_entries())?;
                Ok(Plan::single(vec![OrderKey::user(
                    item.id.as_deref().unwrap_or_default(),
                )]))
            }
            Kind::Groups => {
                scalars_only(VENDOR, "company attribute values", item.property_entries())?;
                Ok(Plan::single(vec![OrderKey::group(
                    item.id.as_deref().unwrap_or_default(),
                )]))
            }
            Kind::Memberships => Ok(Plan::single(vec![
                OrderKey::user(item.user_id.as_deref().unwrap_or_default()),
                OrderKey::group(item.group_id.as_deref().unwrap_or_default()),
            ])),
            Kind::Events | Kind::Segments => Err(Refusal::new(format!(
                "userguiding takes no {} through its API",
                item.kind
            ))),
        }
    }

    async fn write(&self, batch: Vec<Op>, acks: &Acks) -> Result<(), SinkError> {
        for op in batch {
            match op.item.kind {
                Kind::Users => {
                    let body = Identify {
                        user_id: op.item.id.clone().unwrap_or_default(),
                        attributes: Some(op.item.properties()),
                        company: None,
                    };
                    self.send(&op, &body, acks).await?;
                }
                Kind::Groups => self.group(op, acks).await?,
                Kind::Memberships => self.membership(&op, acks).await?,
                Kind::Events | Kind::Segments => {
                    acks.rejected(&op, Refusal::new("userguiding takes no such records"), None);
                }
            }
        }
        Ok(())
    }

    async fn flush(&self, acks: &Acks) -> Result<(), SinkError> {
        let groups = std::mem::take(&mut *self.groups.lock());
        for (id, group) in groups {
            let Some(op) = group.op else { continue };
            if group.delivered {
                // Not reached: a delivered group is settled at once. Kept for safety.
                acks.accepted(&op, None);
            } else {
                acks.rejected(
                    &op,
                    Refusal::new(format!(
                        "userguiding keeps a company only on its users, and no membership in this run named group {id:?}"
                    )),
                    None,
                );
            }
        }
        Ok(())
    }

    async fn check(&self) -> Result<(), SinkError> {
        // UserGuiding has no read endpoint: the first identify tells whether the key works.
        Ok(())
    }

    fn stats(&self) -> WireStats {
        self.transport.stats()
    }

    fn nested_rule(&self) -> crate::sink::NestedRule {
        crate::sink::NestedRule::ScalarsOnly
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;

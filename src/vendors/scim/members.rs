//! The SCIM writer's memberships: a group's records become member deltas against what the
//! group holds. Users and groups are mapped from their source keys (the run's map, else a
//! lookup by `externalId`, then `userName` / `displayName`); a group's members are read once per
//! run and kept current, so only real changes are sent: `PATCH /Groups/{id}` with removals
//! before additions, at most `membership_chunk_size` per PATCH. A chunk refused with `400` or
//! `413` is halved until it passes or one change is left, which is then rejected (or skipped,
//! when removing a member who is not there: `noTarget`); a `413`, or a `400` that blames the
//! request rather than a value, also lowers the chunk size for the rest of the run. Servers
//! without PATCH get the whole group back by `PUT` (with `If-Match` when they have ETags, read
//! again after a `412`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use futures::StreamExt;
use serde_json::{Map, Value, json};

use crate::scim::error::ScimError;
use crate::scim::patch::{self, MemberChange};
use crate::scim::types::get;
use crate::sink::{
    Acks, Action, Method, Op, PayloadHash, Refusal, SendError, SinkError, fatal_or, key_segment,
};
use crate::vendors::patterns::{self, Attempt, Pending, reject_all};

use super::directory::{Attr, Found, Res, member_ids};
use super::write::{Resolution, ScimSink, detail_of, scim_error, with_body};

/// Lookups of one membership batch's users that run at once.
const LOOKUP_CONCURRENCY: usize = 8;

/// SCIM Error types that blame one value of a PATCH, not its size.
const VALUE_ERRORS: [&str; 5] = [
    "noTarget",
    "invalidValue",
    "uniqueness",
    "mutability",
    "invalidPath",
];

/// Each user key's server id: found (`None`: no such user) or a refusal.
type UserIds = HashMap<String, Result<Option<String>, Refusal>>;

/// The records each member change settles.
type OpsOf<'a> = HashMap<MemberChange, Vec<&'a Op>>;

/// One user's wanted membership: server id, the last record's action, and every record for it.
type Wanted<'a> = Vec<(String, Action, Vec<&'a Op>)>;

/// Settles the records of `changes` with `done`.
fn settle(changes: &[MemberChange], ops_of: &OpsOf<'_>, done: &dyn Fn(&Op)) {
    for change in changes {
        for op in ops_of.get(change).into_iter().flatten() {
            done(op);
        }
    }
}

/// A membership record whose user or group is missing at the server: a removal has nothing
/// to do; an addition is rejected with `missing` (what is missing, after the stream's name).
fn settle_missing(op: &Op, skip: String, missing: String, acks: &Acks) {
    match op.item.action {
        Action::Delete => acks.skipped(op, skip),
        Action::Upsert => acks.rejected(
            op,
            Refusal::new(format!("{} record {missing}", op.origin.stream)),
            None,
        ),
    }
}

/// `members` with the changes applied (each id once).
fn with_changes(mut members: Vec<Value>, changes: &[MemberChange]) -> Vec<Value> {
    for change in changes {
        match change {
            MemberChange::Add(id) => {
                if !members.iter().any(|m| m["value"].as_str() == Some(id)) {
                    members.push(json!({"value": id}));
                }
            }
            MemberChange::Remove(id) => {
                members.retain(|m| m["value"].as_str() != Some(id));
            }
        }
    }
    members
}

impl ScimSink {
    /// One group's membership records: resolve ids, compare with the current members, send
    /// the real changes in chunks.
    pub(super) async fn memberships(&self, batch: &[Op], acks: &Acks) -> Result<(), SinkError> {
        let Some(group_key) = batch.first().and_then(|op| op.item.group_id.clone()) else {
            return Ok(());
        };
        let Some(group) = self.membership_group(&group_key, batch, acks).await? else {
            return Ok(());
        };
        let user_ids = self.user_ids(batch).await?;
        if !self
            .members_known(&group_key, &group.id, batch, acks)
            .await?
        {
            return Ok(());
        }
        let wanted = self.wanted(batch, &user_ids, acks);
        let (changes, ops_of) = self.real_changes(&group.id, wanted, acks);
        self.send_changes(&group.id, changes, &ops_of, acks).await
    }

    /// The group of a membership batch; `None` when it is missing or its lookup failed (the
    /// batch is settled then).
    async fn membership_group(
        &self,
        group_key: &str,
        batch: &[Op],
        acks: &Acks,
    ) -> Result<Option<Found>, SinkError> {
        let fallback = Some((Attr::DisplayName, group_key));
        match self.resolve(Res::Group, group_key, fallback).await? {
            Ok(Some(found)) => Ok(Some(found)),
            Ok(None) if self.dry_run_lookups() => Ok(Some(Found {
                id: self.dry_run_id(Res::Group, group_key),
                resource: None,
            })),
            Ok(None) => {
                for op in batch {
                    settle_missing(
                        op,
                        format!(
                            "no group with externalId {group_key:?} at {}, so no member in it",
                            self.vendor
                        ),
                        format!(
                            "in group key {group_key:?}: no group with externalId or displayName {group_key:?} at {}, and none was created from this run's groups records",
                            self.vendor
                        ),
                        acks,
                    );
                }
                Ok(None)
            }
            Err(refusal) => {
                reject_all(batch, &refusal, None, acks);
                Ok(None)
            }
        }
    }

    /// Maps each user key of the batch to its server id (a few lookups at once).
    async fn user_ids(&self, batch: &[Op]) -> Result<UserIds, SinkError> {
        let keys: Vec<String> = {
            let mut seen = HashSet::new();
            batch
                .iter()
                .filter_map(|op| op.item.user_id.clone())
                .filter(|k| seen.insert(k.clone()))
                .collect()
        };
        let resolved: Vec<(String, Resolution)> = futures::stream::iter(keys)
            .map(|key| async move {
                let result = self
                    .resolve(Res::User, &key, Some((Attr::UserName, &key)))
                    .await;
                (key, result)
            })
            .buffer_unordered(LOOKUP_CONCURRENCY)
            .collect()
            .await;
        let mut user_ids = UserIds::new();
        for (key, result) in resolved {
            let id = match result? {
                Ok(Some(found)) => Ok(Some(found.id)),
                Ok(None) if self.dry_run_lookups() => Ok(Some(self.dry_run_id(Res::User, &key))),
                Ok(None) => Ok(None),
                Err(refusal) => Err(refusal),
            };
            user_ids.insert(key, id);
        }
        Ok(user_ids)
    }

    /// Reads the group's members once per run (kept current afterwards), to send only real
    /// changes. False when the group could not be read (the batch is settled then).
    async fn members_known(
        &self,
        group_key: &str,
        group_id: &str,
        batch: &[Op],
        acks: &Acks,
    ) -> Result<bool, SinkError> {
        if self.members.lock().contains_key(group_id) {
            return Ok(true);
        }
        let known = match self.read(Res::Group, group_id).await? {
            Ok(Some((resource, false))) => member_ids(&resource),
            Ok(Some((_, true))) => None,
            Ok(None) => {
                self.dir.forget(Res::Group, group_key, group_id).await;
                let refusal = Refusal::vendor(
                    format!(
                        "group {group_id} (key {group_key:?}) disappeared from {}",
                        self.vendor
                    ),
                    Some(404),
                    None,
                );
                reject_all(batch, &refusal, None, acks);
                return Ok(false);
            }
            Err(err) => {
                reject_all(batch, &patterns::refusal(self.vendor, err)?, None, acks);
                return Ok(false);
            }
        };
        self.members.lock().insert(group_id.to_string(), known);
        Ok(true)
    }

    /// Each user's wanted membership: the last record for a user wins; earlier ones share its
    /// outcome. Records whose user is missing or failed to resolve are settled here.
    fn wanted<'a>(&self, batch: &'a [Op], user_ids: &UserIds, acks: &Acks) -> Wanted<'a> {
        let mut wanted: Wanted<'a> = Vec::new();
        for op in batch {
            let key = op.item.user_id.as_deref().unwrap_or_default();
            let id = match user_ids.get(key) {
                Some(Ok(Some(id))) => id.clone(),
                Some(Ok(None)) | None => {
                    settle_missing(
                        op,
                        format!(
                            "no user with externalId {key:?} at {}, so not a member",
                            self.vendor
                        ),
                        format!(
                            "of user key {key:?}: no user with externalId or userName {key:?} at {}, and none was created from this run's users records",
                            self.vendor
                        ),
                        acks,
                    );
                    continue;
                }
                Some(Err(refusal)) => {
                    acks.rejected(op, refusal.clone(), None);
                    continue;
                }
            };
            match wanted.iter_mut().find(|(i, _, _)| *i == id) {
                Some(entry) => {
                    entry.1 = op.item.action;
                    entry.2.push(op);
                }
                None => wanted.push((id, op.item.action, vec![op])),
            }
        }
        wanted
    }

    /// The changes the group needs (what it holds already is skipped), with their records.
    fn real_changes<'a>(
        &self,
        group_id: &str,
        wanted: Wanted<'a>,
        acks: &Acks,
    ) -> (Vec<MemberChange>, OpsOf<'a>) {
        let mut changes: Vec<MemberChange> = Vec::new();
        let mut ops_of = OpsOf::new();
        for (id, action, ops) in wanted {
            let member = self
                .members
                .lock()
                .get(group_id)
                .and_then(|known| known.as_ref().map(|c| c.contains(&id)));
            let change = match (action, member) {
                (Action::Upsert, Some(true)) | (Action::Delete, Some(false)) => {
                    let already = match action {
                        Action::Upsert => "already a member",
                        Action::Delete => "not a member",
                    };
                    for op in ops {
                        acks.skipped(op, format!("{already} at {}", self.vendor));
                    }
                    continue;
                }
                (Action::Upsert, _) => MemberChange::Add(id),
                (Action::Delete, _) => MemberChange::Remove(id),
            };
            changes.push(change.clone());
            ops_of.insert(change, ops);
        }
        (changes, ops_of)
    }

    /// Keeps the run's copy of a group's members in step with changes it accepted.
    fn applied(&self, group_id: &str, changes: &[MemberChange]) {
        if let Some(Some(known)) = self.members.lock().get_mut(group_id) {
            for change in changes {
                match change {
                    MemberChange::Add(id) => known.insert(id.clone()),
                    MemberChange::Remove(id) => known.remove(id),
                };
            }
        }
    }

    /// Sends membership changes in chunks (removals first), halving refused chunks.
    async fn send_changes(
        &self,
        group_id: &str,
        changes: Vec<MemberChange>,
        ops_of: &OpsOf<'_>,
        acks: &Acks,
    ) -> Result<(), SinkError> {
        if changes.is_empty() {
            return Ok(());
        }
        if !self.spc().await.patch {
            return self.put_members(group_id, &changes, ops_of, acks).await;
        }
        let mut pending = Pending::of(patch::chunks(&changes, self.chunk_size()));
        while let Some(chunk) = pending.next_chunk() {
            let request = with_body(
                Method::Patch,
                format!("/Groups/{}", key_segment(group_id)),
                patch::body(&patch::member_operations(&chunk)),
            )
            // Adding a member twice changes nothing; removing one twice is a noTarget, read below.
            .idempotent();
            let payload = request.payload_hash();
            let err = match self.transport.send(request).await {
                Ok(_) => {
                    self.applied(group_id, &chunk);
                    settle(&chunk, ops_of, &|op| acks.accepted(op, payload));
                    continue;
                }
                Err(err) => fatal_or(self.vendor, err)?,
            };
            // What the run knows of this group may be stale: read it again next time.
            self.members.lock().remove(group_id);
            let size_problem = matches!(err.status, Some(400 | 413));
            if size_problem && pending.halve(&chunk) {
                self.lower_chunk_size(&err, chunk.len());
                continue;
            }
            self.refused_chunk(group_id, &chunk, err, payload, ops_of, acks)?;
        }
        Ok(())
    }

    /// A PATCH of `sent` changes was refused as too large (413), or with a 400 that blames the
    /// request rather than a value: send at most half as many per PATCH from now on.
    fn lower_chunk_size(&self, err: &SendError, sent: usize) {
        let blames_a_value = scim_error(err).is_some_and(|e| VALUE_ERRORS.iter().any(|t| e.is(t)));
        if err.status != Some(413) && blames_a_value {
            return;
        }
        let half = sent.div_ceil(2);
        let before = self.chunk.fetch_min(half, Ordering::Relaxed);
        if half < before {
            tracing::info!(
                "{}: a PATCH of {sent} membership changes was refused ({}); sending at most {half} per PATCH from now on",
                self.vendor,
                err.status.unwrap_or_default()
            );
        }
    }

    /// Settles a refused chunk that is not halved (one change left, or another failure).
    fn refused_chunk(
        &self,
        group_id: &str,
        chunk: &[MemberChange],
        err: SendError,
        payload: Option<PayloadHash>,
        ops_of: &OpsOf<'_>,
        acks: &Acks,
    ) -> Result<(), SinkError> {
        let one = match chunk {
            [one] => Some(one),
            _ => None,
        };
        let no_target = scim_error(&err).is_some_and(|e: ScimError| e.is("noTarget"));
        if no_target && matches!(one, Some(MemberChange::Remove(_))) {
            settle(chunk, ops_of, &|op| {
                acks.skipped(op, format!("not a member at {} (noTarget)", self.vendor));
            });
            return Ok(());
        }
        let refusal = match one {
            Some(change) if matches!(err.status, Some(400 | 413)) => {
                let what = match change {
                    MemberChange::Add(id) => format!("adding user {id} to"),
                    MemberChange::Remove(id) => format!("removing user {id} from"),
                };
                Refusal::vendor(
                    format!(
                        "{} refused {what} group {group_id}: {}",
                        self.vendor,
                        detail_of(&err)
                    ),
                    err.status,
                    err.body_excerpt.clone(),
                )
            }
            _ => patterns::refusal(self.vendor, err)?,
        };
        settle(chunk, ops_of, &|op| {
            acks.rejected(op, refusal.clone(), payload);
        });
        Ok(())
    }

    /// Membership changes on a server without PATCH (its ServiceProviderConfig says
    /// `patch.supported: false`): read the group, apply every change to its `members`, and PUT
    /// the whole group back, with `If-Match` when the server has ETags and once more after a
    /// `412`. The changes succeed or fail together, as one request.
    async fn put_members(
        &self,
        group_id: &str,
        changes: &[MemberChange],
        ops_of: &OpsOf<'_>,
        acks: &Acks,
    ) -> Result<(), SinkError> {
        let reject = |refusal: Refusal, payload: Option<PayloadHash>| {
            settle(changes, ops_of, &|op| {
                acks.rejected(op, refusal.clone(), payload);
            });
        };
        let attempt = || self.put_members_once(group_id, changes, ops_of, acks);
        patterns::reread_on_412(attempt, |err, payload| {
            self.members.lock().remove(group_id);
            reject(patterns::refusal(self.vendor, err)?, payload);
            Ok(())
        })
        .await
    }

    /// One read, merge and PUT of a group's members.
    async fn put_members_once(
        &self,
        group_id: &str,
        changes: &[MemberChange],
        ops_of: &OpsOf<'_>,
        acks: &Acks,
    ) -> Result<Attempt<()>, SinkError> {
        let reject = |refusal: Refusal, payload: Option<PayloadHash>| {
            settle(changes, ops_of, &|op| {
                acks.rejected(op, refusal.clone(), payload);
            });
            Ok(Attempt::Done(()))
        };
        let etag = self.spc().await.etag;
        let mut resource = match self.read(Res::Group, group_id).await? {
            Ok(Some((resource, _))) => resource,
            Ok(None) => {
                let refusal = Refusal::vendor(
                    format!("group {group_id} disappeared from {}", self.vendor),
                    Some(404),
                    None,
                );
                return reject(refusal, None);
            }
            Err(err) => return reject(patterns::refusal(self.vendor, err)?, None),
        };
        let members = get(&resource, "members")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let version = version_of(&resource);
        // Attribute names are case-insensitive in SCIM: one `members` key goes back.
        resource.retain(|k, _| !k.eq_ignore_ascii_case("members"));
        resource.insert(
            "members".into(),
            Value::Array(with_changes(members, changes)),
        );
        let path = format!("{}/{}", Res::Group.endpoint(), key_segment(group_id));
        // Setting the same members again changes nothing (a repeat after a lost answer
        // meets a 412 at worst, which reads the group again).
        let mut request = with_body(Method::Put, path, Value::Object(resource)).idempotent();
        if etag && let Some(version) = version {
            request = request.header("if-match", version);
        }
        let payload = request.payload_hash();
        match self.transport.send(request).await {
            Ok(_) => {
                self.applied(group_id, changes);
                settle(changes, ops_of, &|op| acks.accepted(op, payload));
                Ok(Attempt::Done(()))
            }
            // Someone changed the group between our read and our write: read it again.
            Err(err) if patterns::stale(&err) => Ok(Attempt::Stale(err, payload)),
            Err(err) => {
                self.members.lock().remove(group_id);
                reject(patterns::refusal(self.vendor, err)?, payload)
            }
        }
    }
}

/// A resource's `meta.version` (its ETag), if it has one.
pub(super) fn version_of(resource: &Map<String, Value>) -> Option<String> {
    get(resource, "meta")
        .and_then(Value::as_object)
        .and_then(|m| get(m, "version"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

//! The Guru REST writer's groups and group members. Groups have no key at Guru but the id Guru
//! assigns: a source group key is found through the group map, else by name (Guru does not
//! deduplicate names, so a group is created only when a fresh listing shows it missing), else
//! as a Guru id. Group adds go in all-or-nothing chunks, halved until the refused members stand
//! alone. See [`super::write`] for the rules.

use std::sync::atomic::Ordering;

use serde_json::json;

use crate::sink::{
    Acks, Method, Op, Refusal, SendError, SendFailure, SinkError, WireRequest, WireResponse,
    fatal_or, key_segment,
};
use crate::vendors::patterns::{self, Created, Deleted, Looked, Pending, create_once, reject_all};

use super::wire::{self, GuruGroup};
use super::write::{
    GROUP_ADD_MAX, GuruSink, VENDOR, contains_ignore_case, dry_run_id, group_name, no_email,
    refusal_of,
};

/// A group's adds by email: the email, and every record for it.
type Adds<'a> = Vec<(String, Vec<&'a Op>)>;

/// Every record of a chunk of adds.
fn ops<'a>(chunk: &[(String, Vec<&'a Op>)]) -> Vec<&'a Op> {
    chunk
        .iter()
        .flat_map(|(_, ops)| ops.iter().copied())
        .collect()
}

/// True when Guru's words blame a light (read-only) user.
fn is_light_user_error(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("light user") || t.contains("read_only") || t.contains("read-only")
}

/// Why a group add was refused, as a record's reason.
fn add_refusal(email: &str, group: &str, err: &SendError) -> Refusal {
    let said = err.body_excerpt.as_deref().unwrap_or(&err.message);
    let reason = if is_light_user_error(said) {
        format!(
            "guru refused to add {email} to group {group:?}: light users (read-only access) cannot be in groups; upgrade the member to a core user first"
        )
    } else {
        format!(
            "guru refused to add {email} to group {group:?}: {}",
            err.message
        )
    };
    Refusal::failed(reason, err)
}

impl GuruSink {
    /// The name a source group key stands for.
    pub(super) fn name_of_group(&self, key: &str) -> String {
        self.group_names
            .lock()
            .get(key)
            .cloned()
            .unwrap_or_else(|| key.to_string())
    }

    /// Lists Guru's groups (`GET /groups`, a bare array) into the cache.
    async fn list_groups(
        &self,
        cache: &mut Option<Vec<GuruGroup>>,
    ) -> Result<Result<(), SendError>, SinkError> {
        match self
            .transport
            .send(WireRequest::new(Method::Get, "/groups"))
            .await
        {
            Ok(response) => {
                self.dry_run.store(response.dry_run, Ordering::Relaxed);
                *cache = Some(wire::guru_groups(&response.json()));
                Ok(Ok(()))
            }
            Err(err) => Ok(Err(fatal_or(VENDOR, err)?)),
        }
    }

    /// What `pick` takes from the Guru groups, listing them first when `fresh` or not yet listed.
    async fn listed_groups<T>(
        &self,
        fresh: bool,
        pick: impl FnOnce(&[GuruGroup]) -> T,
    ) -> Result<Result<T, SendError>, SinkError> {
        let mut cache = self.groups.lock().await;
        if fresh || cache.is_none() {
            if let Err(err) = self.list_groups(&mut cache).await? {
                return Ok(Err(err));
            }
        }
        Ok(Ok(pick(cache.as_deref().unwrap_or_default())))
    }

    /// The Guru groups named `name`.
    pub(super) async fn groups_named(
        &self,
        name: &str,
        fresh: bool,
    ) -> Result<Result<Vec<GuruGroup>, SendError>, SinkError> {
        self.listed_groups(fresh, |groups| {
            groups.iter().filter(|g| g.name == name).cloned().collect()
        })
        .await
    }

    /// The Guru group with id `id`.
    async fn group_by_id(
        &self,
        id: &str,
        fresh: bool,
    ) -> Result<Result<Option<GuruGroup>, SendError>, SinkError> {
        self.listed_groups(fresh, |groups| groups.iter().find(|g| g.id == id).cloned())
            .await
    }

    /// The Guru group the group map holds for a source key, if it still exists (a key whose
    /// group is gone from Guru is forgotten).
    pub(super) async fn mapped_group(
        &self,
        key: &str,
    ) -> Result<Result<Option<GuruGroup>, SendError>, SinkError> {
        let Some(id) = self.group_map.get(key) else {
            return Ok(Ok(None));
        };
        for fresh in [false, true] {
            match self.group_by_id(&id, fresh).await? {
                Ok(Some(group)) => return Ok(Ok(Some(group))),
                Ok(None) => {}
                Err(err) => return Ok(Err(err)),
            }
        }
        if !self.dry_run.load(Ordering::Relaxed) {
            self.group_map.forget(key)?;
        }
        Ok(Ok(None))
    }

    /// Records which Guru group a source key is (not in a dry run, which created nothing).
    fn remember_group(&self, key: &str, group: &GuruGroup) -> Result<(), SinkError> {
        if key.is_empty() || self.dry_run.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.group_map.set(key, &group.id)
    }

    /// The Guru group a source group key stands for: the one the group map holds for it, else by
    /// this run's name for it (or the key as a name), else the key as a Guru id. `Ok(Err)` says
    /// why there is none.
    pub(super) async fn resolve_group(
        &self,
        key: &str,
    ) -> Result<Result<GuruGroup, Refusal>, SinkError> {
        match self.mapped_group(key).await? {
            Ok(Some(group)) => return Ok(Ok(group)),
            Ok(None) => {}
            Err(err) => return Ok(Err(refusal_of(err, "listing guru's groups"))),
        }
        let name = self.name_of_group(key);
        let mut found = match self.groups_named(&name, false).await? {
            Ok(found) => found,
            Err(err) => return Ok(Err(refusal_of(err, "listing guru's groups"))),
        };
        if found.is_empty() {
            // Created outside this run since the last listing?
            found = match self.groups_named(&name, true).await? {
                Ok(found) => found,
                Err(err) => return Ok(Err(refusal_of(err, "listing guru's groups"))),
            };
        }
        if found.is_empty() {
            let cache = self.groups.lock().await;
            if let Some(by_id) = cache
                .as_deref()
                .unwrap_or_default()
                .iter()
                .find(|g| g.id == key)
            {
                return Ok(Ok(by_id.clone()));
            }
        }
        Ok(match found.len() {
            1 => Ok(found.remove(0)),
            0 if self.dry_run.load(Ordering::Relaxed) => Ok(GuruGroup {
                id: dry_run_id(&name),
                name,
                modifiable: true,
            }),
            0 => Err(Refusal::new(format!(
                "guru has no group named {name:?} (group key {key:?}), and none was created from this run's groups records"
            ))),
            n => Err(Refusal::new(format!(
                "{n} guru groups are named {name:?}, so group key {key:?} is ambiguous; rename or delete the duplicates in guru"
            ))),
        })
    }

    /// Renames the Guru group a source key maps to (`PUT /groups/{id}`), unless another group
    /// has the new name already.
    async fn rename_group(
        &self,
        op: &Op,
        group: GuruGroup,
        name: &str,
        acks: &Acks,
    ) -> Result<(), SinkError> {
        let taken = match self.groups_named(name, false).await? {
            Ok(found) => found,
            Err(err) => return patterns::reject_one(VENDOR, op, err, None, acks),
        };
        if let Some(other) = taken.iter().find(|g| g.id != group.id) {
            acks.rejected(
                op,
                Refusal::new(format!(
                    "renaming guru group {:?} to {name:?}: guru already has another group with that name (id {:?}); rename or delete one of them in guru",
                    group.name, other.id
                )),
                None,
            );
            return Ok(());
        }
        if !group.modifiable {
            acks.rejected(
                op,
                Refusal::new(format!("guru group {:?} cannot be renamed", group.name)),
                None,
            );
            return Ok(());
        }
        let request = WireRequest::new(Method::Put, format!("/groups/{}", key_segment(&group.id)))
            .json(json!({"id": group.id, "name": name}))
            .idempotent();
        let payload = request.payload_hash();
        match self.transport.send(request).await {
            Ok(_) => {
                if let Some(cache) = self.groups.lock().await.as_mut() {
                    for g in cache.iter_mut().filter(|g| g.id == group.id) {
                        g.name = name.to_string();
                    }
                }
                tracing::info!(
                    "guru: renamed group {:?} to {name:?} (source key {:?})",
                    group.name,
                    op.item.id.as_deref().unwrap_or_default()
                );
                acks.accepted(op, payload);
            }
            Err(err) => patterns::reject_one(VENDOR, op, err, None, acks)?,
        }
        Ok(())
    }

    /// Makes sure the record's group exists under its name: the group the map holds for its key
    /// (renamed when the name changed), else one with its name (adopted), else a new one, created
    /// only when a fresh listing shows it missing.
    pub(super) async fn upsert_group(&self, op: &Op, acks: &Acks) -> Result<(), SinkError> {
        let Some(name) = group_name(&op.item) else {
            acks.rejected(op, Refusal::new("a guru group needs a name"), None);
            return Ok(());
        };
        let key = op.item.id.as_deref().unwrap_or_default();
        if !self.group_map.is_persistent() && !self.warned_no_map.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "guru: group_map_file is not set, so which guru group each group key is lasts only for this run; a group renamed at the source before a later run is created again there"
            );
        }
        match self.mapped_group(key).await? {
            Ok(Some(group)) if group.name == name => {
                acks.skipped(op, format!("guru group {name:?} is up to date"));
                return Ok(());
            }
            Ok(Some(group)) => return self.rename_group(op, group, &name, acks).await,
            Ok(None) => {}
            Err(err) => return patterns::reject_one(VENDOR, op, err, None, acks),
        }
        let found = match self.groups_named(&name, true).await? {
            Ok(found) => found,
            Err(err) => return patterns::reject_one(VENDOR, op, err, None, acks),
        };
        match found.len() {
            0 => self.create_group(op, key, name, acks).await,
            1 => {
                self.remember_group(key, &found[0])?;
                acks.skipped(op, format!("guru already has a group named {name:?}"));
                Ok(())
            }
            n => {
                acks.rejected(
                    op,
                    Refusal::new(format!(
                        "{n} guru groups are named {name:?}; rename or delete the duplicates in guru"
                    )),
                    None,
                );
                Ok(())
            }
        }
    }

    /// Creates a group a fresh listing shows missing. Guru does not deduplicate names, so a
    /// create whose answer was lost is sent again only after a fresh listing shows it did not
    /// happen, and one that did happen is adopted.
    async fn create_group(
        &self,
        op: &Op,
        key: &str,
        name: String,
        acks: &Acks,
    ) -> Result<(), SinkError> {
        // Guru's SDK sends a placeholder id with the name; Guru assigns the real one.
        let request = WireRequest::new(Method::Post, "/groups")
            .json(json!({"id": "new-group", "name": name}))
            .not_idempotent();
        let payload = request.payload_hash();
        // Did it get created? Look before sending again, never create twice.
        let look = |_: &SendError, _: bool| async {
            Ok(match self.groups_named(&name, true).await? {
                Ok(mut found) if found.len() == 1 => Looked::Found(found.remove(0)),
                Ok(found) if found.is_empty() => Looked::Absent,
                _ => Looked::Unsure,
            })
        };
        let what = format!("group {name:?}");
        match create_once(VENDOR, self.transport.as_ref(), &request, &what, look).await? {
            Created::Answered(response) => {
                self.created_group(key, &name, &response).await?;
                acks.accepted(op, payload);
            }
            Created::Found(group) => {
                self.remember_group(key, &group)?;
                acks.accepted(op, payload);
            }
            Created::Failed(err) => patterns::reject_one(VENDOR, op, err, None, acks)?,
        }
        Ok(())
    }

    /// Remembers a group Guru answered a create with (a dry run's stand-in), in the group map
    /// and the listing.
    async fn created_group(
        &self,
        key: &str,
        name: &str,
        response: &WireResponse,
    ) -> Result<(), SinkError> {
        let created = match wire::guru_group(&response.json()) {
            Some(group) => Some(GuruGroup {
                name: name.to_string(),
                ..group
            }),
            None if response.dry_run => Some(GuruGroup {
                id: dry_run_id(name),
                name: name.to_string(),
                modifiable: true,
            }),
            // No id in the answer: the next lookup lists the groups again.
            None => None,
        };
        if let Some(created) = &created
            && !response.dry_run
        {
            self.group_map.set(key, &created.id)?;
        }
        // A listing made meanwhile by another record's lookup may hold it already.
        if let (Some(created), Some(cache)) = (created, self.groups.lock().await.as_mut())
            && !cache.iter().any(|g| g.id == created.id)
        {
            cache.push(created);
        }
        Ok(())
    }

    /// Deletes the Guru group a groups record names.
    pub(super) async fn delete_group(&self, op: &Op, acks: &Acks) -> Result<(), SinkError> {
        let Some(key) = op.item.id.as_deref() else {
            acks.rejected(op, Refusal::new("a groups record needs an id"), None);
            return Ok(());
        };
        let group = match self.resolve_group(key).await? {
            Ok(group) => group,
            Err(refusal) if refusal.reason.starts_with("guru has no group") => {
                acks.skipped(op, format!("guru has no group for key {key:?}"));
                return Ok(());
            }
            Err(refusal) => {
                acks.rejected(op, refusal, None);
                return Ok(());
            }
        };
        let request = WireRequest::new(
            Method::Delete,
            format!("/groups/{}", key_segment(&group.id)),
        );
        let gone = || format!("guru group {:?} is gone already", group.name);
        match patterns::delete(VENDOR, self.transport.as_ref(), op, request, acks, gone).await? {
            Deleted::Done { dry_run } => {
                if let Some(cache) = self.groups.lock().await.as_mut() {
                    cache.retain(|g| g.id != group.id);
                }
                if !dry_run {
                    self.group_map.forget(key)?;
                }
            }
            Deleted::Absent => self.group_map.forget(key)?,
            Deleted::Refused => {}
        }
        Ok(())
    }

    /// Adds a batch of members to one group.
    pub(super) async fn add_members(&self, batch: &[Op], acks: &Acks) -> Result<(), SinkError> {
        let Some(key) = batch.first().and_then(|op| op.item.group_id.clone()) else {
            return Ok(());
        };
        let group = match self.resolve_group(&key).await? {
            Ok(group) => group,
            Err(refusal) => {
                reject_all(batch, &refusal, None, acks);
                return Ok(());
            }
        };
        if !group.modifiable {
            // Guru's "All Members": every team member is in it already (a Guru → Guru pipe
            // carries its memberships), so there is nothing to send.
            for op in batch {
                acks.skipped(
                    op,
                    format!(
                        "every guru team member is in group {:?} already (guru keeps it)",
                        group.name
                    ),
                );
            }
            return Ok(());
        }
        let by_email = self.adds_by_email(batch, &group, acks);
        self.send_adds(&group, &by_email, acks).await
    }

    /// One entry per email; every record for it shares its outcome. Records of users who are
    /// inactive or have no email are settled here.
    fn adds_by_email<'a>(&self, batch: &'a [Op], group: &GuruGroup, acks: &Acks) -> Adds<'a> {
        let mut by_email: Adds<'a> = Vec::new();
        for op in batch {
            let user = op.item.user_id.as_deref().unwrap_or_default();
            if self.inactive_keys.lock().contains(user) {
                acks.skipped(
                    op,
                    format!(
                        "user {user} is inactive at the source, so not a guru member: not added to group {:?}",
                        group.name
                    ),
                );
                continue;
            }
            let email = match self.member_email(user) {
                Ok(Some(email)) => email,
                Ok(None) => {
                    acks.rejected(op, no_email(user), None);
                    continue;
                }
                Err(refusal) => {
                    acks.rejected(op, refusal, None);
                    continue;
                }
            };
            match by_email
                .iter_mut()
                .find(|(e, _)| e.eq_ignore_ascii_case(&email))
            {
                Some((_, ops)) => ops.push(op),
                None => by_email.push((email, vec![op])),
            }
        }
        by_email
    }

    /// Sends the adds in chunks of [`GROUP_ADD_MAX`]. Guru takes a chunk all or nothing: when
    /// it names the member it refused, that one is rejected and the rest sent again; when it
    /// names nobody, the chunk is halved until the refused members stand alone.
    async fn send_adds(
        &self,
        group: &GuruGroup,
        by_email: &Adds<'_>,
        acks: &Acks,
    ) -> Result<(), SinkError> {
        let mut pending = Pending::chunks(by_email, GROUP_ADD_MAX);
        while let Some(chunk) = pending.next_chunk() {
            let emails: Vec<&str> = chunk.iter().map(|(e, _)| e.as_str()).collect();
            let request = WireRequest::new(
                Method::Post,
                format!("/groups/{}/members", key_segment(&group.id)),
            )
            .json(json!(emails))
            // Adding someone who is in the group already changes nothing.
            .idempotent();
            let payload = request.payload_hash();
            match self.transport.send(request).await {
                Ok(_) => ops(&chunk)
                    .into_iter()
                    .for_each(|op| acks.accepted(op, payload)),
                Err(err) if err.failure == SendFailure::Refused => {
                    let said = err.body_excerpt.as_deref().unwrap_or(&err.message);
                    let named: Vec<usize> = chunk
                        .iter()
                        .enumerate()
                        .filter(|(_, (e, _))| contains_ignore_case(said, e))
                        .map(|(i, _)| i)
                        .collect();
                    if chunk.len() == 1 || named.len() == 1 {
                        // Guru named the culprit (or there is only one): reject it, send the rest.
                        let culprit = if chunk.len() == 1 { 0 } else { named[0] };
                        let mut rest = chunk;
                        let (email, ops) = rest.remove(culprit);
                        for op in ops {
                            acks.rejected(op, add_refusal(&email, &group.name, &err), payload);
                        }
                        pending.put_back(rest);
                    } else {
                        // All or nothing, and Guru named nobody: halve until the culprits stand alone.
                        pending.halve(&chunk);
                    }
                }
                Err(err) => {
                    let refusal = patterns::refusal(VENDOR, err)?;
                    reject_all(ops(&chunk), &refusal, payload, acks);
                }
            }
        }
        Ok(())
    }

    /// Removes one member from one group.
    pub(super) async fn remove_from_group(&self, op: &Op, acks: &Acks) -> Result<(), SinkError> {
        let key = op.item.group_id.as_deref().unwrap_or_default();
        let user = op.item.user_id.as_deref().unwrap_or_default();
        let email = match self.member_email(user) {
            Ok(Some(email)) => email,
            Ok(None) => {
                acks.rejected(op, no_email(user), None);
                return Ok(());
            }
            Err(refusal) => {
                acks.rejected(op, refusal, None);
                return Ok(());
            }
        };
        let group = match self.resolve_group(key).await? {
            Ok(group) => group,
            Err(refusal) if refusal.reason.starts_with("guru has no group") => {
                acks.skipped(
                    op,
                    format!("guru has no group for key {key:?}, so no member in it"),
                );
                return Ok(());
            }
            Err(refusal) => {
                acks.rejected(op, refusal, None);
                return Ok(());
            }
        };
        let request = WireRequest::new(
            Method::Delete,
            format!(
                "/groups/{}/members/{}",
                key_segment(&group.id),
                key_segment(&email)
            ),
        );
        match self.transport.send(request).await {
            Ok(_) => acks.accepted(op, None),
            Err(err) if err.status == Some(404) => {
                acks.skipped(op, format!("{email} is not in guru group {:?}", group.name));
            }
            Err(err) => patterns::reject_one(VENDOR, op, err, None, acks)?,
        }
        Ok(())
    }
}

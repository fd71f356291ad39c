//! The Guru REST writer: team members keyed by email, groups keyed by the source's group key
//! (a group map, else by name), group members in all-or-nothing batches.
//!
//! | kind | upsert | delete |
//! | --- | --- | --- |
//! | users | `POST /members/invite {"emails": "a@x,b@y", "teamMemberType"}`, batched per member type; each email's status read; an existing member's type set by `POST /members/{email}/upgrade` or `/downgrade` when the record has a role. Inactive records: `DELETE /members/{email}` (`inactive_users: remove`) or nothing | `DELETE /members/{email}`, or `DELETE /members/{email}/replaceverifier` with `replace_verifier` |
//! | groups | the group map's group (`PUT /groups/{id} {"id","name"}` when renamed), else `GET /groups` (by name), then `POST /groups {"name"}` only when it is missing | `DELETE /groups/{id}` |
//! | memberships | `POST /groups/{id}/members ["a@x", …]`, ≤ 100 per call, batched per group | `DELETE /groups/{id}/members/{email}` |
//!
//! - **Members are keyed by email** (Guru's SDK and help cards; vendors.md §2, more credible
//!   than the vendor's API document's UUIDs). A users record gives its `email` (else an `id`
//!   that is an email); memberships name the user by its source key, mapped to the email of the
//!   users record seen in this run (or taken as is when it is an email).
//! - **Every email is one address** ([`single_email`]): a `,` `;` `<` `>`, whitespace or a
//!   control character rejects the record before any request, so joining emails into the
//!   invite's comma-separated string can never invite someone the source did not name.
//! - **Inactive users are never invited** ([`inactive`]: `active` false, or a status in
//!   [`INACTIVE_STATUSES`]). With `inactive_users: remove` (the default) a member Guru has is
//!   removed, and one it does not have is skipped; with `ignore` the record is skipped.
//! - **Roles**: Guru's API has no team-level role but core or light. A record's `role` (or
//!   Guru's own `access_type` attribute) maps to `teamMemberType` on invite
//!   ([`member_type_of_role`]), and sets an existing member's type by upgrade or downgrade. The
//!   vendor's API document's `PUT /members/{id} {"role"}` is not in Guru's API (vendors.md §2.4),
//!   so it is not sent.
//! - **Invites** carry a comma-separated `emails` string and answer a status per email; an
//!   entry without `errored`, or one saying the user is "already a part of the team", is a
//!   success; any other error rejects that email's record with Guru's words. Repeating an invite
//!   is harmless (Guru answers "already a part of the team" for whoever an earlier attempt
//!   reached), so invites are retried like upserts, within the whole retry budget.
//! - **Groups** have no key at Guru but their id, which Guru assigns. The writer keeps which
//!   Guru group each source group key is in a [`GroupMap`] (the run's memory, or
//!   `group_map_file`), so a group renamed at the source is renamed in Guru, not created again.
//!   A key the map does not hold is found by name; Guru does not deduplicate names, so a group is
//!   created only after a fresh `GET /groups` shows the name is missing, and a create that failed
//!   unconfirmed is sent again only after a fresh listing shows it did not happen. Memberships
//!   map source group keys to Guru group ids the same way (the map, else this run's groups
//!   record's `name`, else the key itself as a name, else the key as a Guru id).
//! - **Group adds** are all-or-nothing at Guru. When a batch is refused, the member Guru names is
//!   rejected and the rest sent again; when Guru names nobody, the batch is split in halves until
//!   the refused members stand alone, so only they are rejected. Light users (read-only access)
//!   cannot be in groups: their records are rejected saying so.
//! - Guru keeps names and profile fields to the user's own profile, so a users record sends
//!   only its email (and its member type); its other fields are not sent.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::sink::{
    Acks, Action, Auth, BatchKey, BatchLimits, ClientSpec, Item, Kind, Method, Op, OrderKey, Plan,
    Refusal, SendError, SendFailure, Sink, SinkContext, SinkError, Transport, WireRequest,
    WireStats, WriteVerdict, fatal_or, key_segment, single_email, verdict,
};

use self::wire::{GuruGroup, InviteStatus};
use super::config::{Config, InactiveUsers, TeamMemberType};
use super::group_map::GroupMap;
use crate::config::ConfigError;

/// The vendor's name.
const VENDOR: &str = "guru";

/// Most emails `POST /groups/{id}/members` takes at once (Guru help card).
pub const GROUP_ADD_MAX: usize = 100;

/// Emails per invite: Guru documents no cap, so invites go in batches as large as group adds.
pub const INVITE_MAX: usize = 100;

/// How long an invite or group-add batch gathers records.
pub const BATCH_LINGER: Duration = Duration::from_millis(200);

/// Guru documents no rate limit: stay at 10 requests/s, as vendors.md's checklist advises for
/// vendors without figures (the HTTP engine still slows down on 429s).
pub const REQUESTS_PER_SECOND: f64 = 10.0;

/// How often a group create that failed unconfirmed, and that a fresh listing shows never
/// happened, is sent again: as often as the engine retries a request that is safe to repeat.
const UNCONFIRMED_RESENDS: u32 = crate::http::DEFAULT_MAX_RETRIES;

/// The invite status Guru gives for someone already on the team (help card).
const ALREADY_ON_TEAM: &str = "already a part of the team";

/// The Guru REST writer.
#[derive(Debug)]
pub struct GuruSink {
    transport: Arc<dyn Transport>,
    member_type: Option<TeamMemberType>,
    inactive_users: InactiveUsers,
    /// The `collectionVerifiers` body of a removal (`replace_verifier`), if any.
    replace_verifier: Option<Value>,
    /// Source group key → Guru group id.
    group_map: GroupMap,
    /// Source user key → email, from this run's users records.
    emails: Mutex<HashMap<String, String>>,
    /// Users keys this run's records mark inactive: never invited, so their memberships are
    /// skipped rather than refused by Guru ("must be a team member").
    inactive_keys: Mutex<std::collections::HashSet<String>>,
    /// Source group key → group name, from this run's groups records.
    group_names: Mutex<HashMap<String, String>>,
    /// Guru's groups as last listed (`None` until the first listing).
    groups: tokio::sync::Mutex<Option<Vec<GuruGroup>>>,
    warned_fields: AtomicBool,
    warned_role: AtomicBool,
    warned_no_map: AtomicBool,
    /// True once a dry run answered the group listing (nothing was read).
    dry_run: AtomicBool,
}

/// How a [`GuruSink`] behaves beyond its transport (the settings of [`super::config`]).
#[derive(Debug, Default)]
pub struct Options {
    /// `team_member_type`.
    pub member_type: Option<TeamMemberType>,
    /// `inactive_users`.
    pub inactive_users: InactiveUsers,
    /// `replace_verifier`, as the `collectionVerifiers` body.
    pub replace_verifier: Option<Value>,
    /// `group_map_file`, or a map for the run.
    pub group_map: Option<GroupMap>,
}

/// The registry's factory.
pub fn sink(ctx: &SinkContext<'_>) -> Result<Arc<dyn Sink>, SinkError> {
    let config: Config = ctx.config.typed()?;
    let mut spec = ClientSpec::new(Auth::Basic {
        username: config.username.clone(),
        password: config.api_token.clone(),
    });
    spec.requests_per_second = Some(REQUESTS_PER_SECOND);
    let replace_verifier = config
        .replace_verifier
        .as_ref()
        .map(collection_verifiers)
        .transpose()?;
    let group_map = match &config.group_map_file {
        Some(path) => GroupMap::file(path)?,
        None => GroupMap::memory(),
    };
    // Guru answers its writes with JSON (the group, the invite statuses) or nothing.
    spec.json_answers = true;
    Ok(Arc::new(GuruSink::with(
        ctx.transport(spec)?,
        Options {
            member_type: config.team_member_type,
            inactive_users: config.inactive_users,
            replace_verifier,
            group_map: Some(group_map),
        },
    )))
}

/// The `replace_verifier` setting as Guru's `collectionVerifiers` body: collection id → an
/// email (a member) or `{"type": "member" | "user-group", "id"}`.
pub fn collection_verifiers(
    setting: &serde_json::Map<String, Value>,
) -> Result<Value, ConfigError> {
    let bad = |problem: String| ConfigError::Invalid {
        key: "replace_verifier".into(),
        problem,
    };
    let mut out = serde_json::Map::new();
    for (collection, verifier) in setting {
        let entry = match verifier {
            Value::String(email) => {
                let email = single_email(email).map_err(|why| {
                    bad(format!(
                        "names no member for collection {collection:?}: the email {why}"
                    ))
                })?;
                json!({"type": "member", "id": email})
            }
            Value::Object(o) => {
                let kind = o.get("type").and_then(Value::as_str);
                let id = o.get("id").and_then(Value::as_str).map(str::trim);
                match (kind, id) {
                    (Some("member"), Some(id)) => {
                        let id = single_email(id).map_err(|why| {
                            bad(format!(
                                "names no member for collection {collection:?}: the email {why}"
                            ))
                        })?;
                        json!({"type": "member", "id": id})
                    }
                    (Some("user-group"), Some(id)) if !id.is_empty() => {
                        json!({"type": "user-group", "id": id})
                    }
                    _ => {
                        return Err(bad(format!(
                            "entry for collection {collection:?} must be an email or {{\"type\": \"member\" | \"user-group\", \"id\": \"...\"}}"
                        )));
                    }
                }
            }
            _ => {
                return Err(bad(format!(
                    "entry for collection {collection:?} must be an email or an object"
                )));
            }
        };
        out.insert(collection.clone(), entry);
    }
    Ok(json!({"collectionVerifiers": out}))
}

/// The statuses (compared without case) that say a user is not active. Guru's own are ACTIVE,
/// PENDING and INACTIVE; the rest are what other sources write (SCIM `active: false` becomes
/// `active`; Okta's SUSPENDED and DEPROVISIONED; warehouse rows' deactivated, disabled, ...).
pub const INACTIVE_STATUSES: &[&str] = &[
    "inactive",
    "deactivated",
    "disabled",
    "suspended",
    "deprovisioned",
    "deleted",
    "archived",
    "blocked",
    "terminated",
];

/// Why a users record is inactive, or `None`: `active` false (or `"false"`, `0`), or a
/// `status` in [`INACTIVE_STATUSES`]. Either one is enough: an invite is an email and a paid seat.
pub fn inactive(item: &Item) -> Option<String> {
    let value = |name: &str| item.fields.get(name).or_else(|| item.attributes.get(name));
    match value("active") {
        Some(Value::Bool(false)) => return Some("active is false".into()),
        Some(Value::String(s))
            if matches!(s.trim().to_ascii_lowercase().as_str(), "false" | "0" | "no") =>
        {
            return Some(format!("active is {s:?}"));
        }
        Some(Value::Number(n)) if n.as_f64() == Some(0.0) => return Some("active is 0".into()),
        _ => {}
    }
    match value("status") {
        Some(Value::String(s))
            if INACTIVE_STATUSES.contains(&s.trim().to_ascii_lowercase().as_str()) =>
        {
            Some(format!("status is {s:?}"))
        }
        _ => None,
    }
}

/// What a role (or Guru's own `access_type`) means for the member type: Guru's API sets no
/// team-level role, only core or light (`teamMemberType`, `/upgrade`, `/downgrade`). Read-only
/// roles make a light user; the roles of the vendor's API document (MEMBER, AUTHOR,
/// COLLECTION_OWNER, CORE_USER, ADMIN) and other full-user roles make a core user.
pub fn member_type_of_role(role: &str) -> Option<TeamMemberType> {
    match role
        .trim()
        .to_ascii_lowercase()
        .replace(['-', ' '], "_")
        .as_str()
    {
        "light" | "light_user" | "read_only" | "readonly" | "viewer" | "reader" | "free" => {
            Some(TeamMemberType::Light)
        }
        "core" | "core_user" | "member" | "author" | "collection_owner" | "coll_admin"
        | "admin" | "editor" | "owner" => Some(TeamMemberType::Core),
        _ => None,
    }
}

/// The email of a users record, checked to be one address: its `email`, else an `id` that holds
/// an `@`. `Ok(None)`: it has neither; `Err`: the one it has is not one address.
fn user_email(item: &Item) -> Result<Option<String>, Refusal> {
    let email = item
        .fields
        .get("email")
        .and_then(Value::as_str)
        .filter(|e| !e.trim().is_empty());
    let (field, raw) = match email {
        Some(e) => ("email", e),
        None => match item.id.as_deref().filter(|id| id.contains('@')) {
            Some(id) => ("id", id),
            None => return Ok(None),
        },
    };
    single_email(raw)
        .map(|e| Some(e.to_string()))
        .map_err(|why| {
            Refusal::new(format!(
                "guru takes one email per member, and field {field} {why}; nothing was sent"
            ))
        })
}

/// The name of a groups record: its `name`, else its key.
fn group_name(item: &Item) -> Option<String> {
    item.fields
        .get("name")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .or_else(|| item.id.clone())
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

/// The partition of an invite batch.
fn invite_partition(member_type: Option<TeamMemberType>) -> String {
    match member_type {
        None => "guru invite".into(),
        Some(t) => format!("guru invite {}", t.as_str()),
    }
}

impl GuruSink {
    /// A writer over any transport (tests).
    pub fn new(transport: Arc<dyn Transport>, member_type: Option<TeamMemberType>) -> Self {
        GuruSink::with(
            transport,
            Options {
                member_type,
                ..Options::default()
            },
        )
    }

    /// A writer over any transport, with its options.
    pub fn with(transport: Arc<dyn Transport>, options: Options) -> Self {
        GuruSink {
            transport,
            member_type: options.member_type,
            inactive_users: options.inactive_users,
            replace_verifier: options.replace_verifier,
            group_map: options.group_map.unwrap_or_else(GroupMap::memory),
            emails: Mutex::new(HashMap::new()),
            inactive_keys: Mutex::new(std::collections::HashSet::new()),
            group_names: Mutex::new(HashMap::new()),
            groups: tokio::sync::Mutex::new(None),
            warned_fields: AtomicBool::new(false),
            warned_role: AtomicBool::new(false),
            warned_no_map: AtomicBool::new(false),
            dry_run: AtomicBool::new(false),
        }
    }

    /// The email of a membership's user: from this run's users record, else the key itself when
    /// it is an email. `Err` when the key holds an `@` but is not one address.
    fn member_email(&self, key: &str) -> Result<Option<String>, Refusal> {
        if let Some(email) = self.emails.lock().get(key) {
            return Ok(Some(email.clone()));
        }
        if !key.contains('@') {
            return Ok(None);
        }
        single_email(key)
            .map(|e| Some(e.to_string()))
            .map_err(|why| {
                Refusal::new(format!(
                    "guru takes one email per member, and user key {why}; nothing was sent"
                ))
            })
    }

    /// The member type a users record asks for: its `role` (else Guru's own `access_type`
    /// attribute), and `None` when it names none (the `team_member_type` setting applies).
    fn record_member_type(&self, item: &Item) -> Option<TeamMemberType> {
        let role = ["role", "access_type"].iter().find_map(|name| {
            item.fields
                .get(*name)
                .or_else(|| item.attributes.get(*name))
                .and_then(Value::as_str)
        })?;
        let mapped = member_type_of_role(role);
        if mapped.is_none() && !self.warned_role.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "guru: role {:?} means neither a core nor a light member; such users are invited as team_member_type says and their type is left alone",
                role.chars().take(80).collect::<String>()
            );
        }
        mapped
    }

    /// The member type of an invite: the record's role, else the setting.
    fn invite_type(&self, item: &Item) -> Option<TeamMemberType> {
        self.record_member_type(item).or(self.member_type)
    }

    /// The name a source group key stands for.
    fn name_of_group(&self, key: &str) -> String {
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
                *cache = Some(wire::groups(&response.json()));
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
    async fn groups_named(
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
    async fn mapped_group(
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
    async fn resolve_group(&self, key: &str) -> Result<Result<GuruGroup, Refusal>, SinkError> {
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

    /// Invites a batch of users records.
    async fn invite(&self, batch: &[Op], acks: &Acks) -> Result<(), SinkError> {
        let mut wanted: Vec<String> = Vec::new();
        let mut seen = HashSet::new();
        let mut emails: Vec<(usize, String)> = Vec::new();
        for (i, op) in batch.iter().enumerate() {
            match user_email(&op.item) {
                Ok(Some(email)) => {
                    if seen.insert(email.to_lowercase()) {
                        wanted.push(email.clone());
                    }
                    emails.push((i, email));
                }
                Ok(None) => acks.rejected(op, Refusal::new("a guru member needs an email"), None),
                Err(refusal) => acks.rejected(op, refusal, None),
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        // Every email was checked to be one address, so joining them cannot add anyone.
        let mut body = json!({"emails": wanted.join(",")});
        // One partition per member type, so the first record's is the batch's.
        let member_type = batch.first().and_then(|op| self.invite_type(&op.item));
        if let Some(t) = member_type {
            body["teamMemberType"] = json!(t.as_str().to_ascii_uppercase());
        }
        // Idempotent in effect: whoever an earlier attempt reached is "already a part of the
        // team" on the next, which counts as invited.
        let request = WireRequest::new(Method::Post, "/members/invite")
            .json(body)
            .idempotent();
        let payload = request.payload_hash();
        let answer = self.transport.send(request).await;
        let response = match answer {
            Ok(response) => response,
            Err(err) => {
                return match verdict(VENDOR, err) {
                    WriteVerdict::Fatal(fatal) => Err(fatal),
                    WriteVerdict::Reject(refusal) => {
                        for (i, _) in &emails {
                            acks.rejected(&batch[*i], refusal.clone(), payload);
                        }
                        Ok(())
                    }
                };
            }
        };
        let statuses = wire::invite_statuses(&response.json());
        for (i, email) in &emails {
            let op = &batch[*i];
            let status = statuses
                .iter()
                .find(|s| s.email.eq_ignore_ascii_case(email));
            match status {
                Some(InviteStatus { error: None, .. }) => acks.accepted(op, payload),
                Some(InviteStatus {
                    error: Some(error), ..
                }) if error.to_ascii_lowercase().contains(ALREADY_ON_TEAM) => {
                    // A member already: bring their type in line with the record's role.
                    match self.record_member_type(&op.item) {
                        Some(t) => self.set_member_type(op, email, t, acks).await?,
                        None => acks.accepted(op, payload),
                    }
                }
                Some(InviteStatus {
                    error: Some(error), ..
                }) => acks.rejected(
                    op,
                    Refusal::vendor(
                        format!("guru did not invite {email}: {error}"),
                        Some(response.status),
                        Some(error.clone()),
                    ),
                    payload,
                ),
                None if response.dry_run => acks.accepted(op, payload),
                None => acks.rejected(
                    op,
                    Refusal::vendor(
                        format!("guru's invite answer has no status for {email}"),
                        Some(response.status),
                        Some(
                            String::from_utf8_lossy(&response.body)
                                .chars()
                                .take(500)
                                .collect(),
                        ),
                    ),
                    payload,
                ),
            }
        }
        Ok(())
    }

    /// Makes an existing member core or light (`POST /members/{email}/upgrade` or `/downgrade`,
    /// Guru's only team-level role change; the vendor's API document's `PUT /members/{id}
    /// {"role"}` is not in Guru's API).
    async fn set_member_type(
        &self,
        op: &Op,
        email: &str,
        member_type: TeamMemberType,
        acks: &Acks,
    ) -> Result<(), SinkError> {
        let call = match member_type {
            TeamMemberType::Core => "upgrade",
            TeamMemberType::Light => "downgrade",
        };
        let request = WireRequest::new(
            Method::Post,
            format!("/members/{}/{call}", key_segment(email)),
        )
        .json(json!({}))
        // Making a core member core again changes nothing.
        .idempotent();
        let payload = request.payload_hash();
        match self.transport.send(request).await {
            Ok(_) => acks.accepted(op, payload),
            Err(err) => match verdict(VENDOR, err) {
                WriteVerdict::Fatal(fatal) => return Err(fatal),
                WriteVerdict::Reject(refusal) => acks.rejected(
                    op,
                    Refusal {
                        reason: format!(
                            "{email} is on the guru team, but making them a {} member failed: {}",
                            member_type.as_str(),
                            refusal.reason
                        ),
                        ..refusal
                    },
                    payload,
                ),
            },
        }
        Ok(())
    }

    /// The email a users delete (or an inactive users record) removes.
    fn email_to_remove(&self, op: &Op) -> Result<Option<String>, Refusal> {
        if let Some(email) = user_email(&op.item)? {
            return Ok(Some(email));
        }
        match op.item.id.as_deref() {
            Some(id) => self.member_email(id),
            None => Ok(None),
        }
    }

    /// A users record that is inactive at the source: never invited; removed from the team
    /// when Guru has them (`inactive_users: remove`), else left alone.
    async fn inactive_user(&self, op: &Op, why: &str, acks: &Acks) -> Result<(), SinkError> {
        if self.inactive_users == InactiveUsers::Ignore {
            acks.skipped(
                op,
                format!("inactive at the source ({why}): not invited, and guru is left as it is (inactive_users: ignore)"),
            );
            return Ok(());
        }
        self.remove_member(op, Some(why), acks).await
    }

    /// Removes a member from the team (`DELETE /members/{email}`, or with `replace_verifier`
    /// `DELETE /members/{email}/replaceverifier` so their cards keep a verifier). `inactive`
    /// says why an upsert removes them.
    async fn remove_member(
        &self,
        op: &Op,
        inactive: Option<&str>,
        acks: &Acks,
    ) -> Result<(), SinkError> {
        let email = match self.email_to_remove(op) {
            Ok(Some(email)) => email,
            Ok(None) => {
                acks.rejected(
                    op,
                    Refusal::new("a guru member is removed by email, and this record has none"),
                    None,
                );
                return Ok(());
            }
            Err(refusal) => {
                acks.rejected(op, refusal, None);
                return Ok(());
            }
        };
        let request = match &self.replace_verifier {
            None => WireRequest::new(Method::Delete, format!("/members/{}", key_segment(&email))),
            Some(body) => WireRequest::new(
                Method::Delete,
                format!("/members/{}/replaceverifier", key_segment(&email)),
            )
            .json(body.clone()),
        };
        match self.transport.send(request).await {
            Ok(_) => acks.accepted(op, None),
            Err(err) if err.status == Some(404) => {
                let reason = match inactive {
                    Some(why) => format!(
                        "inactive at the source ({why}): not invited, and {email} is not on the guru team"
                    ),
                    None => format!("{email} is not on the guru team"),
                };
                acks.skipped(op, reason);
            }
            Err(err) => settle_failure(op, err, acks)?,
        }
        Ok(())
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
            Err(err) => return settle_failure(op, err, acks),
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
            Err(err) => settle_failure(op, err, acks)?,
        }
        Ok(())
    }

    /// Makes sure the record's group exists under its name: the group the map holds for its key
    /// (renamed when the name changed), else one with its name (adopted), else a new one, created
    /// only when a fresh listing shows it missing.
    async fn upsert_group(&self, op: &Op, acks: &Acks) -> Result<(), SinkError> {
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
            Err(err) => return settle_failure(op, err, acks),
        }
        let found = match self.groups_named(&name, true).await? {
            Ok(found) => found,
            Err(err) => return settle_failure(op, err, acks),
        };
        match found.len() {
            0 => {}
            1 => {
                self.remember_group(key, &found[0])?;
                acks.skipped(op, format!("guru already has a group named {name:?}"));
                return Ok(());
            }
            n => {
                acks.rejected(
                    op,
                    Refusal::new(format!(
                        "{n} guru groups are named {name:?}; rename or delete the duplicates in guru"
                    )),
                    None,
                );
                return Ok(());
            }
        }
        // Guru's SDK sends a placeholder id with the name; Guru assigns the real one.
        let request = WireRequest::new(Method::Post, "/groups")
            .json(json!({"id": "new-group", "name": name}))
            .not_idempotent();
        let payload = request.payload_hash();
        let mut resent = 0;
        let answer = loop {
            let err = match self.transport.send(request.clone()).await {
                Ok(response) => break Ok(response),
                Err(err) => fatal_or(VENDOR, err)?,
            };
            if !(err.maybe_processed && err.failure == SendFailure::Exhausted) {
                break Err(err);
            }
            // Did it get created? Look before sending again, never create twice.
            match self.groups_named(&name, true).await? {
                Ok(found) if found.len() == 1 => {
                    self.remember_group(key, &found[0])?;
                    acks.accepted(op, payload);
                    return Ok(());
                }
                Ok(found) if found.is_empty() && resent < UNCONFIRMED_RESENDS => {
                    resent += 1;
                    tracing::info!(
                        "guru: creating group {name:?} was not confirmed ({}) and it does not exist; sending it again ({resent} of {UNCONFIRMED_RESENDS})",
                        err.message
                    );
                }
                _ => break Err(err),
            }
        };
        match answer {
            Ok(response) => {
                let created = match wire::group(&response.json()) {
                    Some(group) => Some(GuruGroup {
                        name: name.clone(),
                        ..group
                    }),
                    None if response.dry_run => Some(GuruGroup {
                        id: dry_run_id(&name),
                        name: name.clone(),
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
                acks.accepted(op, payload);
            }
            Err(err) => settle_failure(op, err, acks)?,
        }
        Ok(())
    }

    /// Deletes the Guru group a groups record names.
    async fn delete_group(&self, op: &Op, acks: &Acks) -> Result<(), SinkError> {
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
        match self.transport.send(request).await {
            Ok(response) => {
                if let Some(cache) = self.groups.lock().await.as_mut() {
                    cache.retain(|g| g.id != group.id);
                }
                if !response.dry_run {
                    self.group_map.forget(key)?;
                }
                acks.accepted(op, None);
            }
            Err(err) if err.status == Some(404) => {
                self.group_map.forget(key)?;
                acks.skipped(op, format!("guru group {:?} is gone already", group.name));
            }
            Err(err) => settle_failure(op, err, acks)?,
        }
        Ok(())
    }

    /// Adds a batch of members to one group.
    async fn add_members(&self, batch: &[Op], acks: &Acks) -> Result<(), SinkError> {
        let Some(key) = batch.first().and_then(|op| op.item.group_id.clone()) else {
            return Ok(());
        };
        let group = match self.resolve_group(&key).await? {
            Ok(group) => group,
            Err(refusal) => {
                for op in batch {
                    acks.rejected(op, refusal.clone(), None);
                }
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
        // One entry per email; every record for it shares its outcome.
        let mut by_email: Vec<(String, Vec<&Op>)> = Vec::new();
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
        // A stack: the next chunk to send is the last one.
        let mut pending: Vec<Vec<(String, Vec<&Op>)>> = by_email
            .chunks(GROUP_ADD_MAX)
            .rev()
            .map(<[_]>::to_vec)
            .collect();
        while let Some(chunk) = pending.pop() {
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
                Ok(_) => {
                    for (_, ops) in &chunk {
                        for op in ops {
                            acks.accepted(op, payload);
                        }
                    }
                }
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
                        if !rest.is_empty() {
                            pending.push(rest);
                        }
                    } else {
                        // All or nothing, and Guru named nobody: halve until the culprits stand alone.
                        let (a, b) = chunk.split_at(chunk.len().div_ceil(2));
                        pending.push(b.to_vec());
                        pending.push(a.to_vec());
                    }
                }
                Err(err) => match verdict(VENDOR, err) {
                    WriteVerdict::Fatal(fatal) => return Err(fatal),
                    WriteVerdict::Reject(refusal) => {
                        for (_, ops) in &chunk {
                            for op in ops {
                                acks.rejected(op, refusal.clone(), payload);
                            }
                        }
                    }
                },
            }
        }
        Ok(())
    }

    /// Removes one member from one group.
    async fn remove_from_group(&self, op: &Op, acks: &Acks) -> Result<(), SinkError> {
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
            Err(err) => settle_failure(op, err, acks)?,
        }
        Ok(())
    }
}

/// The stand-in id of a group a dry run would have created or found.
fn dry_run_id(name: &str) -> String {
    format!("<id of guru group {name}>")
}

fn no_email(user: &str) -> Refusal {
    Refusal::new(format!(
        "guru keys members by email, but user key {user:?} is not an email and no users record in this run gave its email"
    ))
}

fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack.to_lowercase().contains(&needle.to_lowercase())
}

/// A failed request for one record: rejected with the vendor's answer, or fatal.
fn settle_failure(op: &Op, err: SendError, acks: &Acks) -> Result<(), SinkError> {
    match verdict(VENDOR, err) {
        WriteVerdict::Reject(refusal) => {
            acks.rejected(op, refusal, None);
            Ok(())
        }
        WriteVerdict::Fatal(fatal) => Err(fatal),
    }
}

/// A failed lookup, as the reason of the records that needed it.
fn refusal_of(err: SendError, doing: &str) -> Refusal {
    Refusal::failed(format!("{doing} failed: {}", err.message), &err)
}

#[async_trait::async_trait]
impl Sink for GuruSink {
    fn vendor(&self) -> &'static str {
        VENDOR
    }

    fn plan(&self, op: &Op) -> Result<Plan, Refusal> {
        let item = &op.item;
        match (item.kind, item.action) {
            (Kind::Users, action) => {
                let key = item.id.as_deref().unwrap_or_default();
                let email = match user_email(item)? {
                    Some(email) => Some(email),
                    None if action == Action::Delete => self.member_email(key)?,
                    None => None,
                };
                let Some(email) = email else {
                    return Err(Refusal::new(
                        "guru keys members by email, but the record has no email (and its id is not one)",
                    ));
                };
                self.emails.lock().insert(key.to_string(), email.clone());
                /// What roster reads from a users record; the rest is Guru's member's own.
                const READ: &[&str] = &["email", "active", "status", "role", "access_type"];
                if action == Action::Upsert
                    && (item.fields.keys().any(|k| !READ.contains(&k.as_str()))
                        || item.attributes.keys().any(|k| !READ.contains(&k.as_str())))
                    && !self.warned_fields.swap(true, Ordering::Relaxed)
                {
                    tracing::warn!(
                        "guru sets names and profile fields from the member's own profile; only the email of users records is sent (their active, status and role decide whether and as what)"
                    );
                }
                let keys = vec![
                    OrderKey::user(key),
                    OrderKey::new("guru member", &email.to_lowercase()),
                ];
                if action == Action::Upsert && inactive(item).is_some() {
                    // Never invited: removed one by one (or skipped).
                    self.inactive_keys.lock().insert(key.to_string());
                    return Ok(Plan::single(keys));
                }
                if action == Action::Upsert {
                    self.inactive_keys.lock().remove(key);
                }
                Ok(match action {
                    Action::Upsert => Plan::batched(
                        keys,
                        BatchKey::new(
                            invite_partition(self.invite_type(item)),
                            BatchLimits {
                                max_items: INVITE_MAX,
                                linger: BATCH_LINGER,
                            },
                        ),
                    ),
                    Action::Delete => Plan::single(keys),
                })
            }
            (Kind::Groups, _) => {
                let key = item.id.as_deref().unwrap_or_default();
                let Some(name) = group_name(item) else {
                    return Err(Refusal::new("a guru group needs a name"));
                };
                // A delete that names its group finds it by that name too.
                if item.action == Action::Upsert || item.fields.contains_key("name") {
                    self.group_names
                        .lock()
                        .insert(key.to_string(), name.clone());
                }
                Ok(Plan::single(vec![
                    OrderKey::group(key),
                    OrderKey::new("guru group name", &name),
                ]))
            }
            (Kind::Memberships, action) => {
                let user = item.user_id.as_deref().unwrap_or_default();
                let group = item.group_id.as_deref().unwrap_or_default();
                let Some(email) = self.member_email(user)? else {
                    return Err(no_email(user));
                };
                let keys = vec![
                    OrderKey::group(group),
                    OrderKey::new("guru group name", &self.name_of_group(group)),
                    OrderKey::user(user),
                    OrderKey::new("guru member", &email.to_lowercase()),
                ];
                Ok(match action {
                    Action::Upsert => Plan::batched(
                        keys,
                        BatchKey::new(
                            format!("guru group {group} add"),
                            BatchLimits {
                                max_items: GROUP_ADD_MAX,
                                linger: BATCH_LINGER,
                            },
                        ),
                    ),
                    Action::Delete => Plan::single(keys),
                })
            }
            (Kind::Events, _) => Err(Refusal::new("guru takes no events")),
            (Kind::Segments, _) => Err(Refusal::new("guru has no segments")),
        }
    }

    async fn write(&self, batch: Vec<Op>, acks: &Acks) -> Result<(), SinkError> {
        let Some(first) = batch.first() else {
            return Ok(());
        };
        match (first.item.kind, first.item.action) {
            (Kind::Users, Action::Upsert) => {
                let (inactive_ops, active): (Vec<Op>, Vec<Op>) = batch
                    .into_iter()
                    .partition(|op| inactive(&op.item).is_some());
                for op in &inactive_ops {
                    let why = inactive(&op.item).unwrap_or_default();
                    self.inactive_user(op, &why, acks).await?;
                }
                if active.is_empty() {
                    return Ok(());
                }
                self.invite(&active, acks).await
            }
            (Kind::Memberships, Action::Upsert) => self.add_members(&batch, acks).await,
            _ => {
                for op in &batch {
                    match (op.item.kind, op.item.action) {
                        (Kind::Users, Action::Delete) => self.remove_member(op, None, acks).await?,
                        (Kind::Groups, Action::Upsert) => self.upsert_group(op, acks).await?,
                        (Kind::Groups, Action::Delete) => self.delete_group(op, acks).await?,
                        (Kind::Memberships, Action::Delete) => {
                            self.remove_from_group(op, acks).await?;
                        }
                        _ => acks.rejected(
                            op,
                            Refusal::new(format!("guru cannot write this {} record", op.item.kind)),
                            None,
                        ),
                    }
                }
                Ok(())
            }
        }
    }

    async fn check(&self) -> Result<(), SinkError> {
        match self
            .transport
            .send(WireRequest::new(Method::Get, "/whoami"))
            .await
        {
            Ok(_) => Ok(()),
            Err(err) => match verdict(VENDOR, err) {
                WriteVerdict::Fatal(fatal) => Err(fatal),
                WriteVerdict::Reject(_) => Ok(()),
            },
        }
    }

    fn stats(&self) -> WireStats {
        self.transport.stats()
    }

    fn holds_memberships(&self) -> bool {
        true
    }
}

/// What the writer reads from Guru's answers (leniently: a field that is missing or of another
/// type is treated as absent).
pub mod wire {
    use serde_json::Value;

    /// One entry of an invite's `statuses`.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct InviteStatus {
        /// The email it is about.
        pub email: String,
        /// Guru's error, when `errored` is set.
        pub error: Option<String>,
    }

    /// The `statuses` of an invite answer.
    pub fn invite_statuses(body: &Value) -> Vec<InviteStatus> {
        body.get("statuses")
            .and_then(Value::as_array)
            .map(|statuses| {
                statuses
                    .iter()
                    .filter_map(|s| {
                        let email = s.get("email")?.as_str()?.trim().to_string();
                        let errored = match s.get("errored") {
                            Some(Value::Bool(b)) => *b,
                            Some(Value::String(t)) => t.eq_ignore_ascii_case("true"),
                            _ => false,
                        };
                        let error = errored.then(|| {
                            s.get("error")
                                .and_then(Value::as_str)
                                .unwrap_or("errored without a reason")
                                .to_string()
                        });
                        Some(InviteStatus { email, error })
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A Guru group as the writer needs it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct GuruGroup {
        /// Guru's id (empty when a dry run read nothing).
        pub id: String,
        /// Its name.
        pub name: String,
        /// False for "All Members", which cannot be changed.
        pub modifiable: bool,
    }

    /// One group object.
    pub fn group(value: &Value) -> Option<GuruGroup> {
        let id = match value.get("id")? {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return None,
        };
        Some(GuruGroup {
            id,
            name: value
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            modifiable: value
                .get("modifiable")
                .and_then(Value::as_bool)
                .unwrap_or(true),
        })
    }

    /// `GET /groups`: a bare array of groups.
    pub fn groups(body: &Value) -> Vec<GuruGroup> {
        body.as_array()
            .map(|a| a.iter().filter_map(group).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::{
        Item, Origin, Outcome, ScriptedTransport, Settlement, Ticket, WireBody, WireResponse,
    };
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
                fields: fields.as_object().cloned().unwrap_or_default(),
                attributes: Map::new(),
            },
            origin: Arc::new(Origin {
                stream: "s".into(),
                line: n,
                record: Map::new(),
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
        match &r.body {
            WireBody::Json(v) => v.clone(),
            _ => Value::Null,
        }
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
                            "{\"description\":\"Light users cannot be added to groups\"}"
                                .to_string()
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
}

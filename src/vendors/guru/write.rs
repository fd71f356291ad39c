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

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::sink::{
    Acks, Action, Auth, BatchKey, BatchLimits, ClientSpec, Current, FieldChange, Holding, Item,
    Kind, Method, Op, OrderKey, Plan, Refusal, SendError, Sink, SinkContext, SinkError, Transport,
    WireRequest, WireStats, single_email,
};

use super::config::{Config, InactiveUsers, TeamMemberType};
use super::group_map::GroupMap;
use super::wire::GuruGroup;
use crate::config::ConfigError;
use crate::vendors::patterns;

/// The vendor's name.
pub(super) const VENDOR: &str = "guru";

/// Most emails `POST /groups/{id}/members` takes at once (Guru help card).
pub const GROUP_ADD_MAX: usize = 100;

/// Emails per invite: Guru documents no cap, so invites go in batches as large as group adds.
pub const INVITE_MAX: usize = 100;

/// How long an invite or group-add batch gathers records.
pub const BATCH_LINGER: Duration = Duration::from_millis(200);

/// Guru documents no rate limit: stay at 10 requests/s, as vendors.md's checklist advises for
/// vendors without figures (the HTTP engine still slows down on 429s).
pub const REQUESTS_PER_SECOND: f64 = 10.0;

/// The invite status Guru gives for someone already on the team (help card).
pub(super) const ALREADY_ON_TEAM: &str = "already a part of the team";

/// The Guru REST writer.
#[derive(Debug)]
pub struct GuruSink {
    pub(super) transport: Arc<dyn Transport>,
    pub(super) member_type: Option<TeamMemberType>,
    pub(super) inactive_users: InactiveUsers,
    /// The `collectionVerifiers` body of a removal (`replace_verifier`), if any.
    pub(super) replace_verifier: Option<Value>,
    /// Source group key → Guru group id.
    pub(super) group_map: GroupMap,
    /// Source user key → email, from this run's users records.
    pub(super) emails: Mutex<HashMap<String, String>>,
    /// Users keys this run's records mark inactive: never invited, so their memberships are
    /// skipped rather than refused by Guru ("must be a team member").
    pub(super) inactive_keys: Mutex<std::collections::HashSet<String>>,
    /// Source group key → group name, from this run's groups records.
    pub(super) group_names: Mutex<HashMap<String, String>>,
    /// Guru's groups as last listed (`None` until the first listing).
    pub(super) groups: tokio::sync::Mutex<Option<Vec<GuruGroup>>>,
    pub(super) warned_fields: AtomicBool,
    pub(super) warned_role: AtomicBool,
    pub(super) warned_no_map: AtomicBool,
    /// True once a dry run answered the group listing (nothing was read).
    pub(super) dry_run: AtomicBool,
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
pub(super) fn user_email(item: &Item) -> Result<Option<String>, Refusal> {
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
pub(super) fn group_name(item: &Item) -> Option<String> {
    item.fields
        .get("name")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .or_else(|| item.id.clone())
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
    pub(super) fn member_email(&self, key: &str) -> Result<Option<String>, Refusal> {
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
    pub(super) fn record_member_type(&self, item: &Item) -> Option<TeamMemberType> {
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
    pub(super) fn invite_type(&self, item: &Item) -> Option<TeamMemberType> {
        self.record_member_type(item).or(self.member_type)
    }
}

/// The stand-in id of a group a dry run would have created or found.
pub(super) fn dry_run_id(name: &str) -> String {
    format!("<id of guru group {name}>")
}

pub(super) fn no_email(user: &str) -> Refusal {
    Refusal::new(format!(
        "guru keys members by email, but user key {user:?} is not an email and no users record in this run gave its email"
    ))
}

pub(super) fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack.to_lowercase().contains(&needle.to_lowercase())
}

/// A failed lookup, as the reason of the records that needed it.
pub(super) fn refusal_of(err: SendError, doing: &str) -> Refusal {
    Refusal::failed(format!("{doing} failed: {}", err.message), &err)
}

impl GuruSink {
    /// A users record: keyed by its email (remembered for its memberships); active upserts are
    /// invited in batches per member type, the rest go one by one.
    fn plan_user(&self, item: &Item, action: Action) -> Result<Plan, Refusal> {
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
            && (item.fields.keys().any(|k| !READ.contains(&&**k))
                || item.attributes.keys().any(|k| !READ.contains(&&**k)))
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

    /// A groups record: its name is remembered for the memberships that name its key.
    fn plan_group(&self, item: &Item) -> Result<Plan, Refusal> {
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

    /// A memberships record: adds are batched per group, removals go one by one.
    fn plan_membership(&self, item: &Item, action: Action) -> Result<Plan, Refusal> {
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
}

#[async_trait::async_trait]
impl Sink for GuruSink {
    fn vendor(&self) -> &'static str {
        VENDOR
    }

    fn plan(&self, op: &Op) -> Result<Plan, Refusal> {
        let item = &op.item;
        match (item.kind, item.action) {
            (Kind::Users, action) => self.plan_user(item, action),
            (Kind::Groups, _) => self.plan_group(item),
            (Kind::Memberships, action) => self.plan_membership(item, action),
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
        let request = WireRequest::new(Method::Get, "/whoami");
        patterns::probe(VENDOR, self.transport.as_ref(), request).await
    }

    fn stats(&self) -> WireStats {
        self.transport.stats()
    }

    fn holds_memberships(&self) -> bool {
        true
    }

    fn reads(&self, kind: Kind) -> bool {
        matches!(kind, Kind::Users | Kind::Groups)
    }

    async fn read(&self, item: &Item) -> Result<Holding, SendError> {
        match item.kind {
            Kind::Users => self.read_member(item).await,
            Kind::Groups => self.read_group(item).await,
            _ => Ok(Holding::Unreadable),
        }
    }
}

/// A failure the read cannot turn into an answer, as a failed request.
fn read_error(reason: String, failure: crate::sink::SendFailure) -> SendError {
    SendError {
        failure,
        status: None,
        body_excerpt: None,
        message: reason,
        maybe_processed: false,
    }
}

impl GuruSink {
    /// What Guru holds for a users record: the member with its email (`GET /members?search=`,
    /// the first page of matches, compared ignoring case). Guru keeps names to the user's own
    /// profile, so only the member type (core or light) can differ from what roster would send.
    async fn read_member(&self, item: &Item) -> Result<Holding, SendError> {
        let email = match user_email(item) {
            Ok(Some(email)) => email,
            Ok(None) => return Ok(Holding::Unreadable),
            Err(refusal) => {
                return Err(read_error(
                    refusal.reason,
                    crate::sink::SendFailure::Refused,
                ));
            }
        };
        let path = format!("/members?search={}", crate::sink::key_segment(&email));
        let response = self
            .transport
            .send(WireRequest::new(Method::Get, path))
            .await?;
        if response.dry_run {
            return Ok(Holding::Unreadable);
        }
        let body = response.json();
        let member = body.as_array().and_then(|list| {
            list.iter().find(|m| {
                m.pointer("/user/email")
                    .and_then(Value::as_str)
                    .is_some_and(|e| e.eq_ignore_ascii_case(&email))
            })
        });
        let Some(member) = member else {
            return Ok(Holding::Absent);
        };
        let light = member
            .pointer("/userAttributes/ACCESS_TYPE")
            .and_then(Value::as_str)
            == Some("READ_ONLY");
        let record = super::wire::member(member.clone()).unwrap_or_default();
        let mut current = crate::sink::read::split_properties(Kind::Users, &record);
        current.attributes.shift_remove("id");
        if let Some(attributes) = current.attributes.shift_remove("attributes")
            && let Value::Object(attributes) = attributes
        {
            current.attributes.extend(attributes);
        }
        let held = if light { "light" } else { "core" };
        if let Some(wanted) = self.record_member_type(item)
            && wanted.as_str() != held
        {
            current.changes.push(FieldChange {
                field: "member_type".into(),
                from: json!(held),
                to: json!(wanted.as_str()),
            });
        }
        Ok(Holding::Held(current))
    }

    /// What Guru holds for a groups record: the group the group map holds for its key, else the
    /// one with its name (`GET /groups`); a mapped group under another name would be renamed.
    async fn read_group(&self, item: &Item) -> Result<Holding, SendError> {
        let unreachable =
            |err: SinkError| read_error(err.to_string(), crate::sink::SendFailure::Unreachable);
        let key = item.id.clone().unwrap_or_default();
        let name = group_name(item).unwrap_or_else(|| key.clone());
        let group = match self.mapped_group(&key).await.map_err(unreachable)?? {
            Some(group) => group,
            None => {
                let mut named = self
                    .groups_named(&name, false)
                    .await
                    .map_err(unreachable)??;
                match named.len() {
                    0 => return Ok(Holding::Absent),
                    1 => named.remove(0),
                    n => {
                        let why = format!("{n} guru groups are named {name:?}");
                        return Err(read_error(why, crate::sink::SendFailure::Refused));
                    }
                }
            }
        };
        if self.dry_run.load(Ordering::Relaxed) {
            return Ok(Holding::Unreadable);
        }
        let mut current = Current::default();
        current.fields.insert("name".into(), json!(group.name));
        if group.name != name {
            current.changes.push(FieldChange {
                field: "name".into(),
                from: json!(group.name),
                to: json!(name),
            });
        }
        Ok(Holding::Held(current))
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;

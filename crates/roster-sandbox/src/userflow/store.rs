//! What Userflow holds: users, groups and memberships in `created_at` order, events, and the
//! content lists; and how each record is shown on the wire.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::ordered::Ordered;
use crate::seed::World;
use crate::util;

/// A group link of a user upsert: group id, group attributes, membership attributes.
pub(super) type Link<'a> = (
    String,
    Option<&'a Map<String, Value>>,
    Option<&'a Map<String, Value>>,
);

#[derive(Debug, Clone)]
pub(super) struct User {
    pub(super) attributes: Map<String, Value>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    pub(super) memberships: BTreeMap<String, Membership>,
}

#[derive(Debug, Clone)]
pub(super) struct Membership {
    pub(super) attributes: Map<String, Value>,
    pub(super) created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub(super) struct Group {
    pub(super) attributes: Map<String, Value>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    pub(super) members: BTreeSet<String>,
}

/// A user on the wire; the fields in Userflow's order, expansions only when asked for.
#[derive(Serialize)]
pub(super) struct UserView<'a> {
    object: &'static str,
    id: &'a str,
    attributes: &'a Map<String, Value>,
    created_at: util::Iso,
    updated_at: util::Iso,
    #[serde(skip_serializing_if = "Option::is_none")]
    memberships: Option<Vec<MembershipView<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    groups: Option<Vec<GroupView<'a>>>,
}

/// A group on the wire.
#[derive(Serialize)]
pub(super) struct GroupView<'a> {
    object: &'static str,
    id: &'a str,
    attributes: &'a Map<String, Value>,
    created_at: util::Iso,
    updated_at: util::Iso,
    #[serde(skip_serializing_if = "Option::is_none")]
    memberships: Option<Vec<MembershipView<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    users: Option<Vec<UserView<'a>>>,
}

/// A group membership on the wire, with its group when expanded from a user.
#[derive(Serialize)]
pub(super) struct MembershipView<'a> {
    object: &'static str,
    attributes: &'a Map<String, Value>,
    created_at: util::Iso,
    group_id: &'a str,
    user_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<GroupView<'a>>,
}

impl<'a> MembershipView<'a> {
    fn new(
        group_id: &'a str,
        user_id: &'a str,
        m: &'a Membership,
        group: Option<GroupView<'a>>,
    ) -> Self {
        MembershipView {
            object: "group_membership",
            attributes: &m.attributes,
            created_at: util::Iso::of(m.created_at),
            group_id,
            user_id,
            group,
        }
    }
}

/// What Userflow holds.
#[derive(Debug, Default)]
pub(crate) struct Store {
    pub(super) users: Ordered<User>,
    pub(super) groups: Ordered<Group>,
    pub(super) events: Vec<Value>,
    pub(super) content: Vec<Value>,
    pub(super) content_versions: Vec<Value>,
    pub(super) content_sessions: Vec<Value>,
}

impl Store {
    pub fn seeded(w: &World) -> Store {
        let mut s = Store::default();
        s.seed_groups(w);
        s.seed_users(w);
        s.seed_memberships(w);
        s.seed_content(w);
        s
    }

    /// One group per company of the world.
    fn seed_groups(&mut self, w: &World) {
        for c in &w.companies {
            let mut attributes = Map::new();
            attributes.insert("name".into(), json!(c.name));
            attributes.insert("plan".into(), json!(c.plan));
            attributes.insert("industry".into(), json!(c.industry));
            attributes.insert("employees".into(), json!(c.employees));
            self.groups.insert(
                c.userflow_id(),
                Group {
                    attributes,
                    created_at: c.created_at,
                    updated_at: c.created_at,
                    members: BTreeSet::new(),
                },
            );
        }
    }

    /// One user per person of the world.
    fn seed_users(&mut self, w: &World) {
        for p in &w.people {
            let mut attributes = Map::new();
            attributes.insert("name".into(), json!(p.name()));
            attributes.insert("email".into(), json!(p.email));
            attributes.insert("plan".into(), json!(p.plan));
            attributes.insert("role".into(), json!(p.role));
            attributes.insert("locale".into(), json!(p.locale));
            attributes.insert("seats".into(), json!(p.seats));
            attributes.insert("signed_up_at".into(), json!(util::iso(p.signed_up_at)));
            self.users.insert(
                p.userflow_id(),
                User {
                    attributes,
                    created_at: p.created_at,
                    updated_at: p.created_at,
                    memberships: BTreeMap::new(),
                },
            );
        }
    }

    /// The world's company memberships; a person's first is marked `primary`.
    fn seed_memberships(&mut self, w: &World) {
        let mut seen = BTreeSet::new();
        for (pi, ci) in &w.company_members {
            let (uid, gid) = (w.people[*pi].userflow_id(), w.companies[*ci].userflow_id());
            let primary = seen.insert(*pi);
            let created_at = w.people[*pi].created_at;
            if let Some(u) = self.users.get_mut(&uid) {
                let mut attributes = Map::new();
                attributes.insert("primary".into(), json!(primary));
                u.memberships.insert(
                    gid.clone(),
                    Membership {
                        attributes,
                        created_at,
                    },
                );
            }
            if let Some(g) = self.groups.get_mut(&gid) {
                g.members.insert(uid);
            }
        }
    }

    /// Content for tap-userflow 0.0.3 / kingalban's content streams: flows and checklists,
    /// one version each, and a session for every third person.
    fn seed_content(&mut self, w: &World) {
        let n_content = (w.people.len() / 10).clamp(3, 50);
        let base = w.companies.first().map_or_else(Utc::now, |c| c.created_at);
        for i in 0..n_content {
            let created = base + ChronoDuration::hours(i as i64);
            let id = format!("cnt_{:03}", i + 1);
            self.content.push(json!({
                "object": "content", "id": id, "name": format!("Onboarding flow {}", i + 1),
                "type": if i % 3 == 2 { "checklist" } else { "flow" },
                "created_at": util::iso(created),
            }));
            self.content_versions.push(json!({
                "object": "content_version", "id": format!("cv_{:03}", i + 1), "content_id": id,
                "number": 1, "created_at": util::iso(created),
            }));
        }
        for (i, p) in w.people.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
            let c = (i / 3) % n_content;
            let t = p.created_at + ChronoDuration::hours(2);
            self.content_sessions.push(json!({
                "object": "content_session", "id": format!("cs_{:05}", i + 1),
                "content_id": format!("cnt_{:03}", c + 1), "version_id": format!("cv_{:03}", c + 1),
                "user_id": p.userflow_id(), "completed": i % 2 == 0,
                "created_at": util::iso(p.created_at), "last_activity_at": util::iso(t),
            }));
        }
    }

    pub fn dump(&self) -> Value {
        let all = Expand {
            memberships: true,
            ..Expand::default()
        };
        json!({
            "users": self.users.iter().map(|(id, u)| self.user_json(id, u, &all)).collect::<Vec<_>>(),
            "groups": self.groups.iter().map(|(id, g)| self.group_json(id, g, &Expand::default())).collect::<Vec<_>>(),
            "events": self.events,
        })
    }

    /// How many users are held, and the named ones as the dump shows them (cheap at a million
    /// users, where the whole dump is not).
    pub fn users_summary(&self, ids: &[String]) -> Value {
        let all = Expand {
            memberships: true,
            ..Expand::default()
        };
        let picked: serde_json::Map<String, Value> = ids
            .iter()
            .map(|id| {
                let u = self
                    .users
                    .get(id)
                    .map_or(Value::Null, |u| self.user_json(id, u, &all));
                (id.clone(), u)
            })
            .collect();
        json!({"count": self.users.len(), "users": picked})
    }

    pub(super) fn group_json(&self, id: &str, g: &Group, ex: &Expand) -> Value {
        serde_json::to_value(self.group_view(id, g, ex)).unwrap_or(Value::Null)
    }

    pub(super) fn user_json(&self, id: &str, u: &User, ex: &Expand) -> Value {
        serde_json::to_value(self.user_view(id, u, ex)).unwrap_or(Value::Null)
    }

    /// A group as Userflow shows it, borrowed from the store (lists serialise it directly).
    pub(super) fn group_view<'a>(
        &'a self,
        id: &'a str,
        g: &'a Group,
        ex: &Expand,
    ) -> GroupView<'a> {
        let memberships = ex.memberships.then(|| {
            g.members
                .iter()
                .filter_map(|uid| {
                    let m = self.users.get(uid)?.memberships.get(id)?;
                    Some(MembershipView::new(id, uid, m, None))
                })
                .collect()
        });
        let users = ex.users.then(|| {
            g.members
                .iter()
                .filter_map(|uid| {
                    let u = self.users.get(uid)?;
                    Some(self.user_view(uid, u, &Expand::default()))
                })
                .collect()
        });
        GroupView {
            object: "group",
            id,
            attributes: &g.attributes,
            created_at: util::Iso::of(g.created_at),
            updated_at: util::Iso::of(g.updated_at),
            memberships,
            users,
        }
    }

    /// A user as Userflow shows it, borrowed from the store.
    pub(super) fn user_view<'a>(&'a self, id: &'a str, u: &'a User, ex: &Expand) -> UserView<'a> {
        let memberships = ex.memberships.then(|| {
            u.memberships
                .iter()
                .map(|(gid, m)| {
                    let group = self
                        .groups
                        .get(gid)
                        .map(|g| self.group_view(gid, g, &Expand::default()));
                    MembershipView::new(gid, id, m, group)
                })
                .collect()
        });
        let groups = ex.groups.then(|| {
            u.memberships
                .keys()
                .filter_map(|gid| {
                    let g = self.groups.get(gid)?;
                    Some(self.group_view(gid, g, &Expand::default()))
                })
                .collect()
        });
        UserView {
            object: "user",
            id,
            attributes: &u.attributes,
            created_at: util::Iso::of(u.created_at),
            updated_at: util::Iso::of(u.updated_at),
            memberships,
            groups,
        }
    }

    /// Upserts a user (attributes merge), links it to each group of `links` (creating or
    /// updating the group), and with `prune` unlinks it from every other group.
    pub(super) fn upsert_user(
        &mut self,
        id: &str,
        attrs: Option<&Map<String, Value>>,
        links: &[Link<'_>],
        prune: bool,
    ) {
        let now = util::now();
        if self.users.get(id).is_none() {
            self.users.insert(
                id.to_owned(),
                User {
                    attributes: Map::new(),
                    created_at: now,
                    updated_at: now,
                    memberships: BTreeMap::new(),
                },
            );
        }
        if let Some(u) = self.users.get_mut(id) {
            if let Some(a) = attrs {
                apply_attributes(&mut u.attributes, a);
            }
            u.updated_at = now;
        }
        for (gid, gattrs, mattrs) in links {
            self.upsert_group_attrs(gid, *gattrs);
            self.link(id, gid, *mattrs);
        }
        if prune {
            let keep: BTreeSet<&str> = links.iter().map(|(g, _, _)| g.as_str()).collect();
            let current: Vec<String> = self
                .users
                .get(id)
                .map(|u| u.memberships.keys().cloned().collect())
                .unwrap_or_default();
            for gid in current.iter().filter(|g| !keep.contains(g.as_str())) {
                self.unlink(id, gid);
            }
        }
    }

    pub(super) fn upsert_group_attrs(&mut self, id: &str, attrs: Option<&Map<String, Value>>) {
        let now = util::now();
        if self.groups.get(id).is_none() {
            self.groups.insert(
                id.to_owned(),
                Group {
                    attributes: Map::new(),
                    created_at: now,
                    updated_at: now,
                    members: BTreeSet::new(),
                },
            );
        }
        if let Some(g) = self.groups.get_mut(id) {
            if let Some(a) = attrs {
                apply_attributes(&mut g.attributes, a);
            }
            g.updated_at = now;
        }
    }

    pub(super) fn link(&mut self, uid: &str, gid: &str, attrs: Option<&Map<String, Value>>) {
        let now = util::now();
        if let Some(u) = self.users.get_mut(uid) {
            let m = u
                .memberships
                .entry(gid.to_owned())
                .or_insert_with(|| Membership {
                    attributes: Map::new(),
                    created_at: now,
                });
            if let Some(a) = attrs {
                apply_attributes(&mut m.attributes, a);
            }
        }
        if let Some(g) = self.groups.get_mut(gid) {
            g.members.insert(uid.to_owned());
        }
    }

    fn unlink(&mut self, uid: &str, gid: &str) {
        if let Some(u) = self.users.get_mut(uid) {
            u.memberships.remove(gid);
        }
        if let Some(g) = self.groups.get_mut(gid) {
            g.members.remove(uid);
        }
    }
}

#[derive(Debug, Default, Clone)]
pub(super) struct Expand {
    pub(super) memberships: bool,
    pub(super) groups: bool,
    pub(super) users: bool,
}

/// Merges validated attributes: `null` removes, change objects apply, literals replace.
pub(super) fn apply_attributes(target: &mut Map<String, Value>, given: &Map<String, Value>) {
    for (k, v) in given {
        match v {
            Value::Null => {
                target.remove(k);
            }
            Value::Object(o) => {
                if let Some(x) = o.get("set") {
                    if x.is_null() {
                        target.remove(k);
                    } else {
                        target.insert(k.clone(), x.clone());
                    }
                } else if let Some(x) = o.get("set_once") {
                    if !target.contains_key(k) && !x.is_null() {
                        target.insert(k.clone(), x.clone());
                    }
                } else {
                    let (delta, sign) = match (o.get("add"), o.get("subtract")) {
                        (Some(a), _) => (a.as_f64().unwrap_or(0.0), 1.0),
                        (None, Some(s)) => (s.as_f64().unwrap_or(0.0), -1.0),
                        _ => continue,
                    };
                    let cur = target.get(k).and_then(Value::as_f64).unwrap_or(0.0);
                    let n = cur + sign * delta;
                    let v = if n.fract() == 0.0 && n.abs() < 9.0e15 {
                        json!(n as i64)
                    } else {
                        json!(n)
                    };
                    target.insert(k.clone(), v);
                }
            }
            other => {
                target.insert(k.clone(), other.clone());
            }
        }
    }
}

impl Store {
    /// Removes a user, its memberships and events, as `DELETE /users/{id}` does.
    pub(crate) fn remove_user(&mut self, id: &str) -> bool {
        let Some(u) = self.users.remove(id) else {
            return false;
        };
        for gid in u.memberships.keys() {
            if let Some(g) = self.groups.get_mut(gid) {
                g.members.remove(id);
            }
        }
        self.events
            .retain(|e| e.get("user_id").and_then(Value::as_str) != Some(id));
        true
    }
}

//! What one SCIM service provider holds: users and groups in creation order, a `userName`
//! index for uniqueness, and how a resource is rendered (`id`, `meta`, member displays).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use serde_json::{Map, Value, json};

use super::filter::find_key;
use super::{ENTERPRISE, GROUP_SCHEMA, USER_SCHEMA};
use crate::ordered::Ordered;
use crate::seed::{self, World};
use crate::{Settings, util};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    User,
    Group,
}

impl Kind {
    pub(super) fn endpoint(self) -> &'static str {
        match self {
            Kind::User => "Users",
            Kind::Group => "Groups",
        }
    }
    pub(super) fn resource_type(self) -> &'static str {
        match self {
            Kind::User => "User",
            Kind::Group => "Group",
        }
    }
    pub(super) fn schema(self) -> &'static str {
        match self {
            Kind::User => USER_SCHEMA,
            Kind::Group => GROUP_SCHEMA,
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Res {
    pub(super) body: Map<String, Value>,
    created: DateTime<Utc>,
    modified: DateTime<Utc>,
    pub(super) version: u64,
}

impl Res {
    /// The times the server keeps apart from the body, as `meta` shows them: what a
    /// `meta.lastModified gt "…"` (an incremental read) or `meta.created` filter reads.
    pub(super) fn meta_times(&self) -> Value {
        serde_json::json!({"created": util::iso(self.created), "lastModified": util::iso(self.modified)})
    }
}

/// A provider's users or groups, in creation order.
pub(super) type Resources = Ordered<Res>;

/// One SCIM service provider's data.
#[derive(Debug)]
pub(crate) struct Store {
    pub(super) rng: StdRng,
    pub(super) users: Resources,
    groups: Resources,
    /// Lower-cased userName → id, for uniqueness.
    pub(super) user_names: HashMap<String, String>,
}

pub(super) fn user_name_key(body: &Map<String, Value>) -> Option<String> {
    find_key(body, "userName")
        .and_then(|k| body[k].as_str())
        .map(str::to_lowercase)
}

impl Store {
    pub fn seeded(w: &World, salt: u64) -> Store {
        let mut s = Store {
            rng: seed::rng(w.spec.seed, salt),
            users: Resources::default(),
            groups: Resources::default(),
            user_names: HashMap::new(),
        };
        let ids = s.seed_users(w);
        s.seed_groups(w, &ids);
        s
    }

    /// One user per person of the world, in the enterprise extension with their first team as
    /// department; returns their ids in the world's order.
    fn seed_users(&mut self, w: &World) -> Vec<String> {
        // A person's department is their first team (one pass, not a search per person).
        let mut first_team: HashMap<usize, usize> = HashMap::new();
        for (pi, ti) in &w.team_members {
            first_team.entry(*pi).or_insert(*ti);
        }
        let mut ids = Vec::with_capacity(w.people.len());
        for p in &w.people {
            let id = seed::uuid(&mut self.rng);
            let dept = first_team.get(&p.idx).map(|t| w.teams[*t].name.clone());
            let mut body = json!({
                "schemas": [USER_SCHEMA, ENTERPRISE],
                "userName": p.email,
                "externalId": p.external_id(),
                "name": {"givenName": p.first, "familyName": p.last, "formatted": p.name()},
                "displayName": p.name(),
                "emails": [{"value": p.email, "type": "work", "primary": true}],
                "title": p.role,
                "locale": p.locale,
                "active": p.active,
                ENTERPRISE: {"employeeNumber": format!("{}", 70000 + p.idx)},
            });
            if let Some(d) = dept {
                body[ENTERPRISE]["department"] = json!(d);
            }
            if let Value::Object(body) = body {
                self.user_names.insert(p.email.to_lowercase(), id.clone());
                self.users.insert(
                    id.clone(),
                    Res {
                        body,
                        created: p.created_at,
                        modified: p.created_at,
                        version: 1,
                    },
                );
            }
            ids.push(id);
        }
        ids
    }

    /// One group per team of the world, its members the users `ids` names.
    fn seed_groups(&mut self, w: &World, ids: &[String]) {
        let mut members_of: Vec<Vec<Value>> = vec![Vec::new(); w.teams.len()];
        for (pi, ti) in &w.team_members {
            if let Some(members) = members_of.get_mut(*ti) {
                members.push(json!({"value": ids[*pi]}));
            }
        }
        for t in &w.teams {
            let id = seed::uuid(&mut self.rng);
            let members = std::mem::take(&mut members_of[t.idx]);
            let body = json!({
                "schemas": [GROUP_SCHEMA],
                "displayName": t.name,
                "externalId": t.external_id(),
                "members": members,
            });
            if let Value::Object(body) = body {
                self.groups.insert(
                    id,
                    Res {
                        body,
                        created: t.created_at,
                        modified: t.created_at,
                        version: 1,
                    },
                );
            }
        }
    }

    pub(super) fn coll(&self, k: Kind) -> &Resources {
        match k {
            Kind::User => &self.users,
            Kind::Group => &self.groups,
        }
    }

    pub(super) fn coll_mut(&mut self, k: Kind) -> &mut Resources {
        match k {
            Kind::User => &mut self.users,
            Kind::Group => &mut self.groups,
        }
    }

    /// The resource as served: stored body plus `id` and `meta`, member displays filled in.
    pub(super) fn render(&self, k: Kind, id: &str, r: &Res, base: &str) -> Value {
        let mut body = r.body.clone();
        if k == Kind::Group
            && let Some(key) = find_key(&body, "members").cloned()
            && let Some(Value::Array(ms)) = body.get_mut(&key)
        {
            for m in ms.iter_mut() {
                let Some(uid) = m.get("value").and_then(Value::as_str).map(str::to_owned) else {
                    continue;
                };
                if let Some(u) = self.users.get(&uid) {
                    let display = find_key(&u.body, "userName")
                        .map(|k| u.body[k].clone())
                        .unwrap_or(Value::Null);
                    m["display"] = display;
                    m["$ref"] = json!(format!("{base}/Users/{uid}"));
                    m["type"] = json!("User");
                }
            }
        }
        let mut out = Map::new();
        out.insert("id".into(), json!(id));
        out.extend(body);
        out.insert(
            "meta".into(),
            json!({
                "resourceType": k.resource_type(),
                "created": util::iso(r.created),
                "lastModified": util::iso(r.modified),
                "location": format!("{base}/{}/{id}", k.endpoint()),
                "version": format!("W/\"{}\"", r.version),
            }),
        );
        Value::Object(out)
    }

    pub fn dump(&self, settings: &Settings, base: &str) -> Value {
        let _ = settings;
        json!({
            "Users": self.users.iter().map(|(id, r)| self.render(Kind::User, id, r, base)).collect::<Vec<_>>(),
            "Groups": self.groups.iter().map(|(id, r)| self.render(Kind::Group, id, r, base)).collect::<Vec<_>>(),
        })
    }

    pub(super) fn store(
        &mut self,
        k: Kind,
        id: String,
        body: Map<String, Value>,
        prev: Option<Res>,
    ) {
        let now = util::now();
        if k == Kind::User {
            if let Some(p) = &prev
                && let Some(old) = user_name_key(&p.body)
            {
                self.user_names.remove(&old);
            }
            if let Some(n) = user_name_key(&body) {
                self.user_names.insert(n, id.clone());
            }
        }
        let res = Res {
            body,
            created: prev.as_ref().map_or(now, |p| p.created),
            modified: now,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
        };
        let coll = self.coll_mut(k);
        match coll.get_mut(&id) {
            Some(r) => *r = res,
            None => coll.insert(id, res),
        }
    }
}

impl Store {
    /// Removes a user and its group memberships, as `DELETE /Users/{id}` does; false when absent.
    pub(crate) fn remove_user(&mut self, id: &str) -> bool {
        let Some(prev) = self.coll_mut(Kind::User).remove(id) else {
            return false;
        };
        if let Some(n) = user_name_key(&prev.body) {
            self.user_names.remove(&n);
        }
        let now = util::now();
        for g in self.groups.values_mut() {
            if let Some(key) = find_key(&g.body, "members").cloned()
                && let Some(Value::Array(ms)) = g.body.get_mut(&key)
            {
                let before = ms.len();
                ms.retain(|m| m.get("value").and_then(Value::as_str) != Some(id));
                if ms.len() != before {
                    g.modified = now;
                    g.version += 1;
                }
            }
        }
        true
    }
}

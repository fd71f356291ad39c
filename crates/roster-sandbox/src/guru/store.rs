//! What the Guru team holds: members keyed by lower-cased email, groups, and the signed page
//! tokens of its listings.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rand::Rng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

use crate::seed::{self, World};
use crate::util;

#[derive(Debug, Clone)]
pub(super) struct Member {
    pub(super) email: String,
    pub(super) first: String,
    pub(super) last: String,
    pub(super) status: &'static str,
    pub(super) light: bool,
    pub(super) created: DateTime<Utc>,
    pub(super) groups: BTreeSet<String>,
}

#[derive(Debug, Clone)]
pub(super) struct Group {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) created: DateTime<Utc>,
    /// "All Members" cannot be changed.
    pub(super) modifiable: bool,
    pub(super) members: BTreeSet<String>,
}

/// What the Guru team holds.
#[derive(Debug)]
pub(crate) struct Store {
    pub(super) rng: StdRng,
    team_id: String,
    /// Lower-cased email → member.
    pub(super) members: BTreeMap<String, Member>,
    pub(super) groups: Vec<Group>,
    token_epoch: u64,
    secret: u64,
    /// Every `replaceverifier` removal: the member and the `collectionVerifiers` it named.
    pub(super) replaced_verifiers: Vec<Value>,
}

pub(super) fn key(email: &str) -> String {
    email.trim().to_lowercase()
}

impl Store {
    pub fn seeded(w: &World) -> Store {
        let mut rng = seed::rng(w.spec.seed, 5);
        let team_id = seed::uuid(&mut rng);
        let secret: u64 = rng.random();
        let all = Group {
            id: seed::uuid(&mut rng),
            name: "All Members".into(),
            created: w.teams.first().map_or_else(util::now, |t| t.created_at),
            modifiable: false,
            members: BTreeSet::new(),
        };
        let mut groups = vec![all];
        for t in &w.teams {
            groups.push(Group {
                id: seed::uuid(&mut rng),
                name: t.name.clone(),
                created: t.created_at,
                modifiable: true,
                members: BTreeSet::new(),
            });
        }
        let mut members = BTreeMap::new();
        for p in &w.people {
            members.insert(
                key(&p.email),
                Member {
                    email: p.email.clone(),
                    first: p.first.clone(),
                    last: p.last.clone(),
                    status: if p.pending { "PENDING" } else { "ACTIVE" },
                    light: p.light,
                    created: p.created_at,
                    groups: BTreeSet::new(),
                },
            );
        }
        for (pi, ti) in &w.team_members {
            let k = key(&w.people[*pi].email);
            let g = &mut groups[ti + 1];
            g.members.insert(k.clone());
            if let Some(m) = members.get_mut(&k) {
                m.groups.insert(g.id.clone());
            }
        }
        Store {
            rng,
            team_id,
            members,
            groups,
            token_epoch: 1,
            secret,
            replaced_verifiers: Vec::new(),
        }
    }

    pub fn expire_tokens(&mut self) {
        self.token_epoch += 1;
    }

    pub(super) fn team(&self) -> Value {
        json!({"id": self.team_id, "name": "Sandbox Team", "status": "ACTIVE"})
    }

    pub(super) fn group(&self, id: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.id == id)
    }

    pub(super) fn group_json(&self, g: &Group) -> Value {
        let n = if g.modifiable {
            g.members.len()
        } else {
            self.members.len()
        };
        json!({
            "id": g.id,
            "name": g.name,
            "groupIdentifier": g.name.to_lowercase().replace(' ', "-"),
            "dateCreated": util::iso(g.created),
            "modifiable": g.modifiable,
            "userModifiable": g.modifiable,
            "numberOfMembers": n,
            "team": self.team(),
        })
    }

    fn user_json(m: &Member) -> Value {
        json!({
            "email": m.email,
            "firstName": m.first,
            "lastName": m.last,
            "profilePicUrl": null,
            "status": m.status,
        })
    }

    /// A member as `GET /members` shows it: groups and user attributes included.
    pub(super) fn member_json(&self, m: &Member) -> Value {
        let groups: Vec<Value> = self
            .groups
            .iter()
            .filter(|g| !g.modifiable || m.groups.contains(&g.id))
            .map(|g| self.group_json(g))
            .collect();
        let (access, billing) = if m.light {
            ("READ_ONLY", "FREE")
        } else {
            ("CORE", "CORE")
        };
        json!({
            "id": m.email,
            "dateCreated": util::iso(m.created),
            "user": Store::user_json(m),
            "groups": groups,
            "userAttributes": {"ACCESS_TYPE": access, "BILLING_TYPE": billing},
        })
    }

    /// A member as group listings show it.
    pub(super) fn group_member_json(m: &Member) -> Value {
        json!({"id": m.email, "dateCreated": util::iso(m.created), "user": Store::user_json(m)})
    }

    pub fn dump(&self) -> Value {
        json!({
            "team": self.team(),
            "members": self.members.values().map(|m| self.member_json(m)).collect::<Vec<_>>(),
            "groups": self.groups.iter().map(|g| {
                let mut v = self.group_json(g);
                let emails: Vec<&String> = if g.modifiable {
                    g.members.iter().filter_map(|k| self.members.get(k).map(|m| &m.email)).collect()
                } else {
                    self.members.values().map(|m| &m.email).collect()
                };
                v["members"] = json!(emails);
                v
            }).collect::<Vec<_>>(),
            "replaced_verifiers": self.replaced_verifiers,
        })
    }

    fn mac(&self, payload: &str) -> u64 {
        let mut h = DefaultHasher::new();
        self.secret.hash(&mut h);
        payload.hash(&mut h);
        h.finish()
    }

    pub(super) fn token(&self, scope: &str, after: &str) -> String {
        let payload = format!("{scope}\n{after}\n{}\n{}", self.token_epoch, now_ms());
        let mac = self.mac(&payload);
        URL_SAFE_NO_PAD.encode(format!("{payload}\n{mac:016x}"))
    }

    /// The key to continue after, if `token` is this store's, for `scope`, and still fresh.
    pub(super) fn check_token(
        &self,
        token: &str,
        scope: &str,
        ttl_ms: u128,
    ) -> Result<String, &'static str> {
        let raw = URL_SAFE_NO_PAD
            .decode(token.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or("invalid page token")?;
        let (payload, mac) = raw.rsplit_once('\n').ok_or("invalid page token")?;
        if u64::from_str_radix(mac, 16).ok() != Some(self.mac(payload)) {
            return Err("invalid page token");
        }
        let parts: Vec<&str> = payload.split('\n').collect();
        let [s, after, epoch, issued] = parts.as_slice() else {
            return Err("invalid page token");
        };
        if *s != scope {
            return Err("the page token belongs to another listing");
        }
        let issued: u128 = issued.parse().map_err(|_| "invalid page token")?;
        if epoch.parse::<u64>().ok() != Some(self.token_epoch) || now_ms() > issued + ttl_ms {
            return Err("the page token has expired: restart the listing");
        }
        Ok((*after).to_owned())
    }
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

impl Store {
    /// Removes a member from the team and its groups, as `DELETE /members/{email}` does.
    pub(crate) fn remove_member(&mut self, email: &str) -> bool {
        let k = key(email);
        if self.members.remove(&k).is_none() {
            return false;
        }
        for g in &mut self.groups {
            g.members.remove(&k);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SeedSpec;

    #[test]
    fn tokens_verify_scope_and_expire() {
        let mut st = Store::seeded(&World::generate(SeedSpec::default()));
        let t = st.token("members:", "a@x.com");
        assert_eq!(st.check_token(&t, "members:", 60_000).unwrap(), "a@x.com");
        assert!(st.check_token(&t, "group:1", 60_000).is_err());
        assert!(st.check_token("garbage", "members:", 60_000).is_err());
        let mut forged = URL_SAFE_NO_PAD.decode(&t).unwrap();
        forged[10] ^= 1;
        assert!(
            st.check_token(&URL_SAFE_NO_PAD.encode(forged), "members:", 60_000)
                .is_err()
        );
        st.expire_tokens();
        assert!(
            st.check_token(&t, "members:", 60_000)
                .unwrap_err()
                .contains("expired")
        );
    }
}

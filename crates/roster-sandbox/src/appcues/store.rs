//! What the Appcues account holds: user and group profiles, events, segments, import jobs.

use std::collections::{BTreeMap, BTreeSet};

use rand::rngs::StdRng;
use serde_json::{Map, Value, json};

use crate::jobs::Job;
use crate::seed;
use crate::util;

#[derive(Debug, Clone, Default)]
pub(super) struct Group {
    pub(super) properties: Map<String, Value>,
    pub(super) user_ids: BTreeSet<String>,
}

#[derive(Debug, Clone)]
pub(super) struct Segment {
    pub(super) name: String,
    pub(super) description: Option<String>,
    pub(super) user_ids: BTreeSet<String>,
}

/// What the Appcues account holds.
#[derive(Debug)]
pub(crate) struct Store {
    pub(super) rng: StdRng,
    pub(super) users: BTreeMap<String, Map<String, Value>>,
    pub(super) events: BTreeMap<String, Vec<Value>>,
    pub(super) groups: BTreeMap<String, Group>,
    pub(super) segments: BTreeMap<String, Segment>,
    pub(super) jobs: Vec<Job>,
}

impl Store {
    pub fn new(seed: u64) -> Store {
        Store {
            rng: seed::rng(seed, 7),
            users: BTreeMap::new(),
            events: BTreeMap::new(),
            groups: BTreeMap::new(),
            segments: BTreeMap::new(),
            jobs: Vec::new(),
        }
    }

    pub fn dump(&self) -> Value {
        json!({
            "users": self.users.iter().map(|(id, p)| profile(id, "user_id", p)).collect::<Vec<_>>(),
            "events": self.events,
            "groups": self.groups.iter().map(|(id, g)| {
                let mut v = profile(id, "group_id", &g.properties);
                v["user_ids"] = json!(g.user_ids);
                v
            }).collect::<Vec<_>>(),
            "segments": self.segments.iter().map(|(id, s)| json!({
                "id": id, "name": s.name, "description": s.description, "user_ids": s.user_ids,
            })).collect::<Vec<_>>(),
            "jobs": self.jobs.iter().map(job_json).collect::<Vec<_>>(),
        })
    }

    /// How many users are held, and the named ones as the dump shows them (cheap at a million
    /// users, where the whole dump is not).
    pub fn users_summary(&self, ids: &[String]) -> Value {
        let picked: Map<String, Value> = ids
            .iter()
            .map(|id| {
                let u = self
                    .users
                    .get(id)
                    .map_or(Value::Null, |p| profile(id, "user_id", p));
                (id.clone(), u)
            })
            .collect();
        json!({"count": self.users.len(), "users": picked})
    }

    pub fn job_mut(&mut self, id: &str) -> Option<&mut Job> {
        self.jobs.iter_mut().find(|j| j.id == id)
    }

    /// Applies rows of an import or segment job (rows were checked when the job was made).
    pub fn apply_rows(&mut self, kind: &str, target: Option<&str>, rows: Vec<Value>) {
        for row in rows {
            let Value::Object(mut o) = row else { continue };
            let Some(id) = o.remove("user_id").as_ref().and_then(util::id_string) else {
                continue;
            };
            match (kind, target) {
                ("segment_add_user_ids", Some(seg)) => {
                    if let Some(s) = self.segments.get_mut(seg) {
                        s.user_ids.insert(id);
                    }
                }
                ("segment_remove_user_ids", Some(seg)) => {
                    if let Some(s) = self.segments.get_mut(seg) {
                        s.user_ids.remove(&id);
                    }
                }
                _ => self.users.entry(id).or_default().extend(o),
            }
        }
    }
}

pub(super) fn profile(id: &str, key: &str, props: &Map<String, Value>) -> Value {
    let mut out = Map::new();
    out.insert(key.into(), json!(id));
    out.extend(props.clone());
    Value::Object(out)
}

pub(super) fn job_json(j: &Job) -> Value {
    let (created, started, ended) = j.times();
    json!({
        "id": j.id,
        "job_id": j.id,
        "type": j.kind,
        "status": j.status,
        "total_rows": j.total_rows,
        "completed_rows": j.completed_rows,
        "errors": j.errors,
        "segment_id": j.target,
        "created_at": created,
        "started_at": started,
        "completed_at": ended,
    })
}

//! What Userpilot holds: users, companies, events, scheduled deletions and bulk jobs.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use serde_json::{Map, Value, json};

use super::routes::{Row, parse_row};
use crate::jobs::Job;
use crate::seed;
use crate::util;

#[derive(Debug, Clone)]
pub(super) struct User {
    metadata: Map<String, Value>,
    company_id: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// What Userpilot holds.
#[derive(Debug)]
pub(crate) struct Store {
    pub(super) rng: StdRng,
    users: BTreeMap<String, User>,
    companies: BTreeMap<String, Map<String, Value>>,
    pub(super) events: Vec<Value>,
    pub(super) scheduled_user_deletions: BTreeSet<String>,
    pub(super) scheduled_company_deletions: BTreeSet<String>,
    pub(super) jobs: Vec<Job>,
}

impl Store {
    pub fn new(seed: u64) -> Store {
        Store {
            rng: seed::rng(seed, 6),
            users: BTreeMap::new(),
            companies: BTreeMap::new(),
            events: Vec::new(),
            scheduled_user_deletions: BTreeSet::new(),
            scheduled_company_deletions: BTreeSet::new(),
            jobs: Vec::new(),
        }
    }

    pub fn dump(&self) -> Value {
        json!({
            "users": self.users.iter().map(|(id, u)| json!({
                "user_id": id, "metadata": u.metadata, "company_id": u.company_id,
                "created_at": util::iso(u.created_at), "updated_at": util::iso(u.updated_at),
            })).collect::<Vec<_>>(),
            "companies": self.companies.iter().map(|(id, m)| json!({"company_id": id, "metadata": m})).collect::<Vec<_>>(),
            "events": self.events,
            "scheduled_deletions": {"users": self.scheduled_user_deletions, "companies": self.scheduled_company_deletions},
            "jobs": self.jobs.iter().map(job_json).collect::<Vec<_>>(),
        })
    }

    /// How many users are held, and the named ones as the dump shows them (cheap at a million
    /// users, where the whole dump is not).
    pub fn users_summary(&self, ids: &[String]) -> Value {
        let picked: Map<String, Value> =
            ids.iter()
                .map(|id| {
                    let u = self.users.get(id).map_or(Value::Null, |u| {
                    json!({"user_id": id, "metadata": u.metadata, "company_id": u.company_id})
                });
                    (id.clone(), u)
                })
                .collect();
        json!({"count": self.users.len(), "users": picked})
    }

    pub fn job_mut(&mut self, id: &str) -> Option<&mut Job> {
        self.jobs.iter_mut().find(|j| j.id == id)
    }

    pub(super) fn upsert_user(
        &mut self,
        id: String,
        metadata: Map<String, Value>,
        company: Option<String>,
    ) {
        let now = util::now();
        let u = self.users.entry(id).or_insert_with(|| User {
            metadata: Map::new(),
            company_id: None,
            created_at: now,
            updated_at: now,
        });
        u.metadata.extend(metadata);
        if company.is_some() {
            u.company_id = company;
        }
        u.updated_at = now;
    }

    pub(super) fn upsert_company(&mut self, id: String, metadata: Map<String, Value>) {
        self.companies.entry(id).or_default().extend(metadata);
    }

    /// Applies validated bulk rows.
    pub fn apply_rows(&mut self, kind: &str, rows: Vec<Value>) {
        for row in rows {
            let Ok(parsed) = parse_row(kind, &row) else {
                continue;
            };
            match parsed {
                Row::User(id, meta, company) => self.upsert_user(id, meta, company),
                Row::Company(id, meta) => self.upsert_company(id, meta),
            }
        }
    }
}

pub(super) fn job_json(j: &Job) -> Value {
    let (created, started, ended) = j.times();
    let enc: String = url::form_urlencoded::byte_serialize(j.id.as_bytes()).collect();
    json!({
        "job_id": j.id,
        "status": j.status,
        "type": j.kind,
        "completed_rows": j.completed_rows,
        "total_rows": j.total_rows,
        "elapsed_time": j.elapsed_secs(),
        "created_at": created,
        "start_time": started,
        "end_time": ended,
        "file_size": j.file_size,
        "filename": j.filename,
        "links": {"self": format!("/v1/background_jobs/{enc}")},
        "errors": j.errors,
    })
}

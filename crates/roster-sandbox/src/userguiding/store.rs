//! What UserGuiding holds: users and companies, both upserted by identify.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::util;

#[derive(Debug, Clone)]
pub(super) struct User {
    attributes: Map<String, Value>,
    company_id: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// What UserGuiding holds: users and companies, both upserted by identify.
#[derive(Debug, Default)]
pub(crate) struct Store {
    users: BTreeMap<String, User>,
    companies: BTreeMap<String, Map<String, Value>>,
}

impl Store {
    pub fn dump(&self) -> Value {
        json!({
            "users": self.users.iter().map(|(id, u)| json!({
                "userId": id,
                "attributes": u.attributes,
                "companyId": u.company_id,
                "created_at": util::iso(u.created_at),
                "updated_at": util::iso(u.updated_at),
            })).collect::<Vec<_>>(),
            "companies": self.companies.iter().map(|(id, a)| json!({"companyId": id, "attributes": a})).collect::<Vec<_>>(),
        })
    }

    /// Upserts a user (attributes merge) and, when given, its company.
    pub(super) fn identify(
        &mut self,
        user_id: String,
        attributes: Map<String, Value>,
        company: Option<(String, Map<String, Value>)>,
    ) {
        let now = util::now();
        let u = self.users.entry(user_id).or_insert_with(|| User {
            attributes: Map::new(),
            company_id: None,
            created_at: now,
            updated_at: now,
        });
        u.attributes.extend(attributes);
        u.updated_at = now;
        if let Some((cid, cattrs)) = company {
            u.company_id = Some(cid.clone());
            self.companies.entry(cid).or_default().extend(cattrs);
        }
    }
}

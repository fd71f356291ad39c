//! The record model as the target sees it: a record's [`Kind`], the [`Action`] it asks for,
//! and the [`Item`] the engine hands every writer after routing and field mapping, before any
//! vendor shape. The tap's streams ([`super::StreamDef`]) carry the same kinds.

use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

/// The kind of object a stream carries: one enum for the tap's streams, the target's routing
/// and every writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// People.
    Users,
    /// Groups, companies, accounts, teams.
    Groups,
    /// A user in a group.
    Memberships,
    /// Something a user did.
    Events,
    /// A named list of user ids (Appcues segments).
    Segments,
}

impl Kind {
    /// Every kind, in the order the docs list them.
    pub const ALL: [Kind; 5] = [
        Kind::Users,
        Kind::Groups,
        Kind::Memberships,
        Kind::Events,
        Kind::Segments,
    ];

    /// The kind's name as config and docs write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Users => "users",
            Kind::Groups => "groups",
            Kind::Memberships => "memberships",
            Kind::Events => "events",
            Kind::Segments => "segments",
        }
    }

    /// A kind by its config name.
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a record asks of the vendor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Create or update (merge: absent fields are kept, `null` clears).
    Upsert,
    /// `_sdc_deleted_at` was set: delete, deactivate or remove the membership.
    Delete,
}

/// A record's standard fields or custom attributes: in input order, hashed with foldhash (a
/// record's maps are built and read several times per record; SipHash was a measurable share).
/// Keys are [`PropKey`]s: the names a stream's SCHEMA or the record model declares are shared,
/// not a `String` allocated per key per record. Reads and writes as the `IndexMap` it wraps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Props(PropsMap);

/// The map inside [`Props`].
pub type PropsMap = indexmap::IndexMap<PropKey, Value, foldhash::fast::RandomState>;

impl Props {
    /// An empty map with room for `n` entries.
    pub fn with_capacity(n: usize) -> Self {
        Props(PropsMap::with_capacity_and_hasher(n, Default::default()))
    }
}

impl std::ops::Deref for Props {
    type Target = PropsMap;

    fn deref(&self) -> &PropsMap {
        &self.0
    }
}

impl std::ops::DerefMut for Props {
    fn deref_mut(&mut self) -> &mut PropsMap {
        &mut self.0
    }
}

impl<'a> IntoIterator for &'a Props {
    type Item = (&'a PropKey, &'a Value);
    type IntoIter = indexmap::map::Iter<'a, PropKey, Value>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl IntoIterator for Props {
    type Item = (PropKey, Value);
    type IntoIter = indexmap::map::IntoIter<PropKey, Value>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl FromIterator<(PropKey, Value)> for Props {
    fn from_iter<I: IntoIterator<Item = (PropKey, Value)>>(iter: I) -> Self {
        Props(iter.into_iter().collect())
    }
}

impl FromIterator<(String, Value)> for Props {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Self {
        Props(
            iter.into_iter()
                .map(|(k, v)| (PropKey::Owned(k), v))
                .collect(),
        )
    }
}

/// A key of [`Props`]: a name shared for the whole run ([`crate::model::intern`]) or one of
/// this record's own. Compares, hashes and serialises as the string it is.
pub type PropKey = std::borrow::Cow<'static, str>;

/// A record in roster's record model (CONTRACT.md), after routing and field mapping and before
/// any vendor shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// What it is.
    pub kind: Kind,
    /// Upsert or delete.
    pub action: Action,
    /// The key of a user or group; the segment's name for segments.
    pub id: Option<String>,
    /// Memberships, events and segments: the user's key.
    pub user_id: Option<String>,
    /// Memberships: the group's key; events: the group it happened in, if any.
    pub group_id: Option<String>,
    /// The standard fields that were given, by their model names: users `email`, `name`,
    /// `first_name`, `last_name`, `external_id`, `active`, `status`, `created_at`; groups `name`,
    /// `external_id`, `created_at`; events `name`, `timestamp`. `null` is kept (it clears).
    /// `updated_at`, the source's change time, is never here: routing leaves it out.
    pub fields: Props,
    /// Custom attributes: every non-reserved top-level field of a flat row, then the record's
    /// own `attributes` object (which wins on a clash). `null` is kept (it clears).
    pub attributes: Props,
}

impl Item {
    /// The standard fields the vendors that take free-form properties store as properties of
    /// the same name (`email`, `name`, `first_name`, `last_name`, `created_at`; CONTRACT.md),
    /// followed by `external_id`, `active` and `status` when given, then the attributes: the
    /// property map Userflow, Appcues, Userpilot and UserGuiding receive.
    pub fn properties(&self) -> Map<String, Value> {
        let mut out = Map::with_capacity(self.fields.len() + self.attributes.len());
        for (k, v) in &self.fields {
            out.insert(k.to_string(), v.clone());
        }
        for (k, v) in &self.attributes {
            out.insert(k.to_string(), v.clone());
        }
        out
    }

    /// The entries of [`Item::properties`] without copying them (an attribute wins over a
    /// standard field of the same name), for the writers' checks: building the map only to
    /// check it cost a clone of every record.
    pub fn property_entries(&self) -> impl Iterator<Item = (&PropKey, &Value)> {
        self.fields
            .iter()
            .filter(|(k, _)| !self.attributes.contains_key(k.as_ref()))
            .chain(&self.attributes)
    }

    /// The user key of a membership, event or segment, or the key of a user.
    pub fn user_key(&self) -> Option<&str> {
        match self.kind {
            Kind::Users => self.id.as_deref(),
            _ => self.user_id.as_deref(),
        }
    }

    /// The group key of a membership or event, or the key of a group.
    pub fn group_key(&self) -> Option<&str> {
        match self.kind {
            Kind::Groups => self.id.as_deref(),
            _ => self.group_id.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kinds_round_trip_their_names() {
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(Kind::parse("people"), None);
    }

    #[test]
    fn properties_put_standard_fields_first_and_attributes_win() {
        let item = Item {
            kind: Kind::Users,
            action: Action::Upsert,
            id: Some("u1".into()),
            user_id: None,
            group_id: None,
            fields: json!({"email": "a@x.io", "name": null})
                .as_object()
                .cloned()
                .unwrap()
                .into_iter()
                .collect(),
            attributes: json!({"plan": "pro", "email": "b@x.io"})
                .as_object()
                .cloned()
                .unwrap()
                .into_iter()
                .collect(),
        };
        assert_eq!(
            Value::Object(item.properties()),
            json!({"email": "b@x.io", "name": null, "plan": "pro"})
        );
        assert_eq!(item.user_key(), Some("u1"));
        assert_eq!(item.group_key(), None);
    }
}

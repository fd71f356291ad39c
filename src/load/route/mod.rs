//! Routing and field mapping: which [`Kind`] an incoming stream carries, and how one of its
//! records becomes an [`Item`] of roster's record model.
//!
//! - Defaults go by the stream's table part (`public-users` → `users`, as database taps name
//!   streams `<schema>-<table>`), case-insensitively: users/members → users,
//!   groups/companies → groups, memberships/group_members → memberships, events → events,
//!   segments → segments (singular forms too).
//! - `streams.<name>` (the exact stream name, else its table part) overrides the kind
//!   (`"skip"` ignores the stream on purpose), the key field, and the field mapping: `rename`
//!   (source → model name), then `include` / `exclude` (after renaming; the key fields and
//!   `_sdc_deleted_at` are always kept by `include`), then `constants` (added when absent).
//! - Flat warehouse rows work as they are: every top-level field that is not reserved becomes
//!   an attribute; the record's own `attributes` object is merged over them.
//! - `_sdc_deleted_at` holding an RFC 3339 date-time turns the record into a delete (decided in
//!   [`is_deletion`], the one place); `null`, absent, `""`, `false` and `0` mean "not deleted"
//!   (a CSV tap writes `""` for an empty cell); anything else is refused, naming the field.
//!   Other `_sdc_*` columns are Singer metadata and are dropped.
//! - `nested_values` (top level, or `streams.<name>.nested_values`): an array or object where the
//!   vendor takes only scalars ([`NestedRule`]) is sent as its JSON text (`json_string`, the
//!   default), left for the writer to reject (`reject`), or left out (`drop`); warned once per
//!   stream and field. It applies to a top-level field and to a value inside the record's
//!   `attributes` object alike (named `attributes.<key>`), since both end up as one property.
//! - `null_values` (top level, or per stream): `clear` (the default) passes `null` on, so the
//!   vendor clears its value; `skip` leaves the field out, so the vendor keeps it.
//! - `streams.<name>.group_key` (users streams): the field holding the key of a group the user
//!   belongs to; the engine writes that membership too ([`StreamMap::membership`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::Value;

use crate::config::{ConfigError, NestedValues, NullValues, StreamOverride};
use crate::sink::{Kind, NestedRule};

mod map;
pub use map::Entry;

pub use self::map::{is_deletion, type_name};
pub use crate::model::{ATTRIBUTES, SDC_DELETED_AT as DELETED_AT};

/// The `kind` value that ignores a stream on purpose.
pub const SKIP_KIND: &str = "skip";

/// The kind a stream name carries by default, from its table part.
pub fn default_kind(stream: &str) -> Option<Kind> {
    let table = table_part(stream).to_ascii_lowercase();
    Some(match table.as_str() {
        "users" | "user" | "members" | "member" => Kind::Users,
        "groups" | "group" | "companies" | "company" => Kind::Groups,
        "memberships" | "membership" | "group_members" | "group_member" => Kind::Memberships,
        "events" | "event" => Kind::Events,
        "segments" | "segment" | "segment_members" => Kind::Segments,
        _ => return None,
    })
}

/// The table part of `<schema>-<table>`, or the whole name.
pub fn table_part(stream: &str) -> &str {
    stream.rsplit('-').next().unwrap_or(stream)
}

/// The fields a `streams.<name>` override takes.
pub const OVERRIDE_FIELDS: &[&str] = &[
    "kind",
    "key",
    "rename",
    "include",
    "exclude",
    "constants",
    "group_key",
    "nested_values",
    "null_values",
];

/// Checks the raw `streams` config before it is typed, so an error names its path
/// (`streams.public-users.exlude`) instead of the whole config.
pub fn check_overrides(streams: &Value) -> Result<(), ConfigError> {
    let invalid = |key: String, problem: String| ConfigError::Invalid { key, problem };
    let Value::Object(streams) = streams else {
        return Err(invalid(
            "streams".into(),
            "must be an object of stream name → override".into(),
        ));
    };
    for (stream, o) in streams {
        let Value::Object(fields) = o else {
            return Err(invalid(
                format!("streams.{stream}"),
                format!(
                    "must be an object with any of {}, got {o}",
                    OVERRIDE_FIELDS.join(", ")
                ),
            ));
        };
        for (field, value) in fields {
            let key = format!("streams.{stream}.{field}");
            let typed = match field.as_str() {
                "kind" | "key" | "group_key" => {
                    serde_json::from_value::<Option<String>>(value.clone())
                        .map(drop)
                        .map_err(|_| "must be a string")
                }
                "rename" => serde_json::from_value::<BTreeMap<String, String>>(value.clone())
                    .map(drop)
                    .map_err(|_| "must be an object of source field → new name (strings)"),
                "include" => serde_json::from_value::<Option<Vec<String>>>(value.clone())
                    .map(drop)
                    .map_err(|_| "must be a list of field names"),
                "exclude" => serde_json::from_value::<Vec<String>>(value.clone())
                    .map(drop)
                    .map_err(|_| "must be a list of field names"),
                "nested_values" => {
                    serde_json::from_value::<Option<crate::config::NestedValues>>(value.clone())
                        .map(drop)
                        .map_err(|_| "must be one of json_string, reject, drop")
                }
                "null_values" => {
                    serde_json::from_value::<Option<crate::config::NullValues>>(value.clone())
                        .map(drop)
                        .map_err(|_| "must be one of clear, skip")
                }
                "constants" => {
                    if value.is_object() {
                        Ok(())
                    } else {
                        Err("must be an object of field → value")
                    }
                }
                _ => {
                    return Err(invalid(
                        key,
                        format!(
                            "is not an override field (valid: {})",
                            OVERRIDE_FIELDS.join(", ")
                        ),
                    ));
                }
            };
            if let Err(problem) = typed {
                return Err(invalid(key, format!("{problem}, got {value}")));
            }
        }
    }
    Ok(())
}

/// How one stream is routed.
#[derive(Debug, Clone)]
pub enum Route {
    /// Records become items of this kind.
    Write(Arc<StreamMap>),
    /// Records are counted as skipped, with this reason (unrouted or `kind: "skip"`).
    Skip(Arc<str>),
    /// Records are rejected with this reason (a kind the vendor does not take).
    Reject(Arc<str>),
}

/// The mapping of one routed stream.
#[derive(Debug, Clone)]
pub struct StreamMap {
    /// The kind.
    pub kind: Kind,
    /// The field holding the key (users, groups: `id`; segments: `segment`).
    pub key_field: String,
    /// The field mapping, when the config gives one.
    pub mapping: Option<StreamOverride>,
    /// Users: the field holding the key of a group the user is a member of.
    pub group_key: Option<String>,
    /// Arrays and objects the vendor does not take.
    pub nested: NestedValues,
    /// `null` values.
    pub nulls: NullValues,
    /// Which nested values the vendor takes.
    rule: NestedRule,
    /// The stream's name and the vendor's, for warnings.
    stream: Arc<str>,
    vendor: &'static str,
    /// Fields already warned about (stream, field), shared by every stream of the run.
    warned: Arc<parking_lot::Mutex<BTreeSet<(String, String)>>>,
}

/// The routing table built from `streams` and the vendor's kinds.
#[derive(Debug, Clone)]
pub struct Router {
    overrides: BTreeMap<String, StreamOverride>,
    writes: &'static [&'static str],
    vendor: &'static str,
    nested: NestedValues,
    nulls: NullValues,
    rule: NestedRule,
    warned: Arc<parking_lot::Mutex<BTreeSet<(String, String)>>>,
}

impl Router {
    /// Checks the overrides: every `kind` must be a kind (or `skip`) that this vendor writes.
    pub fn new(
        vendor: &'static str,
        writes: &'static [&'static str],
        overrides: &BTreeMap<String, StreamOverride>,
    ) -> Result<Self, ConfigError> {
        for (stream, o) in overrides {
            if let Some(kind) = &o.kind {
                if kind == SKIP_KIND {
                    continue;
                }
                let Some(parsed) = Kind::parse(kind) else {
                    return Err(ConfigError::Invalid {
                        key: format!("streams.{stream}.kind"),
                        problem: format!(
                            "must be one of users, groups, memberships, events, segments or skip, got {kind:?}"
                        ),
                    });
                };
                if !writes.contains(&parsed.as_str()) {
                    return Err(ConfigError::Invalid {
                        key: format!("streams.{stream}.kind"),
                        problem: format!(
                            "is {kind:?}, which vendor {vendor} does not take (it takes {})",
                            writes.join(", ")
                        ),
                    });
                }
            }
            if o.key.as_deref().is_some_and(str::is_empty) {
                return Err(ConfigError::Invalid {
                    key: format!("streams.{stream}.key"),
                    problem: "must name a field".into(),
                });
            }
            if let Some(group_key) = &o.group_key {
                let key = format!("streams.{stream}.group_key");
                let kind = match o.kind.as_deref() {
                    Some(kind) => Kind::parse(kind),
                    None => default_kind(stream),
                };
                let problem = if group_key.is_empty() {
                    Some("must name a field".to_string())
                } else if kind != Some(Kind::Users) {
                    Some("applies to users streams only (it turns a column of a users row into that user's membership)".to_string())
                } else if !writes.contains(&Kind::Memberships.as_str()) {
                    Some(format!(
                        "needs memberships, which vendor {vendor} does not take (it takes {})",
                        writes.join(", ")
                    ))
                } else {
                    None
                };
                if let Some(problem) = problem {
                    return Err(ConfigError::Invalid { key, problem });
                }
            }
        }
        Ok(Router {
            overrides: overrides.clone(),
            writes,
            vendor,
            nested: NestedValues::default(),
            nulls: NullValues::default(),
            rule: NestedRule::Taken,
            warned: Arc::default(),
        })
    }

    /// The `streams` keys that matched none of `seen` (by exact name or table part), for the
    /// end-of-run warning about an override for a stream that never arrived.
    pub fn unused(&self, seen: &[&str]) -> Vec<String> {
        self.overrides
            .keys()
            .filter(|key| {
                !seen
                    .iter()
                    .any(|s| *s == key.as_str() || table_part(s) == key.as_str())
            })
            .cloned()
            .collect()
    }

    /// The top-level `nested_values` and `null_values` (streams may override them).
    pub fn defaults(mut self, nested: NestedValues, nulls: NullValues) -> Self {
        self.nested = nested;
        self.nulls = nulls;
        self
    }

    /// Which nested values the vendor's writer takes ([`crate::sink::Sink::nested_rule`]).
    pub fn nested_rule(mut self, rule: NestedRule) -> Self {
        self.rule = rule;
        self
    }

    /// The override for a stream: by its exact name, else by its table part.
    fn override_for(&self, stream: &str) -> Option<&StreamOverride> {
        self.overrides
            .get(stream)
            .or_else(|| self.overrides.get(table_part(stream)))
    }

    /// Routes a stream.
    pub fn route(&self, stream: &str) -> Route {
        let mapping = self.override_for(stream).cloned();
        let kind = match mapping.as_ref().and_then(|m| m.kind.as_deref()) {
            Some(SKIP_KIND) => {
                return Route::Skip(
                    format!("stream {stream:?} is set to kind \"skip\" in streams").into(),
                );
            }
            Some(name) => Kind::parse(name),
            None => default_kind(stream),
        };
        let Some(kind) = kind else {
            return Route::Skip(
                format!(
                    "stream {stream:?} names no kind roster writes (users, groups, memberships, events, segments); set streams.{stream}.kind to write it"
                )
                .into(),
            );
        };
        if !self.writes.contains(&kind.as_str()) {
            return Route::Reject(
                format!(
                    "vendor {} does not take {kind} (it takes {}), so stream {stream:?} is not written",
                    self.vendor,
                    self.writes.join(", ")
                )
                .into(),
            );
        }
        let key_field =
            mapping
                .as_ref()
                .and_then(|m| m.key.clone())
                .unwrap_or_else(|| match kind {
                    Kind::Segments => "segment".to_string(),
                    _ => "id".to_string(),
                });
        let group_key = mapping.as_ref().and_then(|m| m.group_key.clone());
        let nested = mapping
            .as_ref()
            .and_then(|m| m.nested_values)
            .unwrap_or(self.nested);
        let nulls = mapping
            .as_ref()
            .and_then(|m| m.null_values)
            .unwrap_or(self.nulls);
        let mapping = mapping.filter(|m| {
            !(m.rename.is_empty()
                && m.include.is_none()
                && m.exclude.is_empty()
                && m.constants.is_empty())
        });
        Route::Write(Arc::new(StreamMap {
            kind,
            key_field,
            mapping,
            group_key,
            nested,
            nulls,
            rule: self.rule,
            stream: stream.into(),
            vendor: self.vendor,
            warned: self.warned.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::singer::Object;
    use crate::sink::Action;
    use serde_json::json;

    const ALL: &[&str] = &["users", "groups", "memberships", "events", "segments"];

    fn obj(v: Value) -> Object {
        v.as_object().cloned().unwrap()
    }

    fn router(overrides: Value) -> Router {
        let overrides: BTreeMap<String, StreamOverride> =
            serde_json::from_value(overrides).unwrap();
        Router::new("userflow", ALL, &overrides).unwrap()
    }

    fn write(route: Route) -> Arc<StreamMap> {
        match route {
            Route::Write(m) => m,
            Route::Skip(why) | Route::Reject(why) => panic!("not written: {why}"),
        }
    }

    #[test]
    fn defaults_go_by_the_table_part() {
        for (stream, kind) in [
            ("users", Kind::Users),
            ("public-users", Kind::Users),
            ("Members", Kind::Users),
            ("companies", Kind::Groups),
            ("crm-group_members", Kind::Memberships),
            ("memberships", Kind::Memberships),
            ("events", Kind::Events),
        ] {
            assert_eq!(default_kind(stream), Some(kind), "{stream}");
        }
        assert_eq!(default_kind("meltano_test_stream"), None);
        let r = router(json!({}));
        assert!(matches!(r.route("meltano_test_stream"), Route::Skip(_)));
    }

    #[test]
    fn overrides_set_kind_key_and_mapping() {
        let r = router(json!({
            "public-people": {"kind": "users", "key": "user_id", "rename": {"mail": "email"},
                               "exclude": ["ssn"], "constants": {"source": "warehouse", "plan": "x"}},
            "audit": {"kind": "skip"}
        }));
        let m = write(r.route("public-people"));
        let item = m
            .item(&obj(json!({"user_id": 7, "mail": "a@x.io", "ssn": "1", "plan": "pro", "_sdc_extracted_at": "t"})))
            .unwrap();
        assert_eq!(item.id.as_deref(), Some("7"));
        assert_eq!(
            item.fields,
            obj(json!({"email": "a@x.io"}))
                .into_iter()
                .collect::<crate::model::Props>()
        );
        assert_eq!(
            item.attributes,
            obj(json!({"plan": "pro", "source": "warehouse"}))
                .into_iter()
                .collect::<crate::model::Props>()
        );
        assert!(matches!(r.route("audit"), Route::Skip(_)));
    }

    #[test]
    fn include_keeps_keys_and_deletes() {
        let r = router(json!({"users": {"include": ["email"]}}));
        let m = write(r.route("users"));
        let item = m
            .item(&obj(
                json!({"id": "u1", "email": "e", "plan": "p", "_sdc_deleted_at": "2024-01-01T00:00:00Z"}),
            ))
            .unwrap();
        assert_eq!(item.action, Action::Delete);
        assert_eq!(item.id.as_deref(), Some("u1"));
        assert!(item.attributes.is_empty());
    }

    #[test]
    fn flat_rows_become_attributes_and_nested_attributes_win() {
        let m = write(router(json!({})).route("public-users"));
        let item = m
            .item(&obj(json!({"id": "u1", "plan": "free", "attributes": {"plan": "pro", "seats": null}, "name": null})))
            .unwrap();
        assert_eq!(
            item.attributes,
            obj(json!({"plan": "pro", "seats": null}))
                .into_iter()
                .collect::<crate::model::Props>()
        );
        assert_eq!(
            item.fields,
            obj(json!({"name": null}))
                .into_iter()
                .collect::<crate::model::Props>()
        );
        assert_eq!(item.action, Action::Upsert);
    }

    #[test]
    fn updated_at_is_the_sources_bookmark_and_not_sent_unless_renamed() {
        for stream in ["users", "groups"] {
            let m = write(router(json!({})).route(stream));
            let at = |t: &str| {
                m.item(&obj(
                    json!({"id": "u1", "name": "N", "plan": "p", "updated_at": t}),
                ))
                .unwrap()
            };
            let item = at("2024-01-02T03:04:05Z");
            assert_eq!(
                item.fields,
                obj(json!({"name": "N"}))
                    .into_iter()
                    .collect::<crate::model::Props>(),
                "{stream}"
            );
            assert_eq!(
                item.attributes,
                obj(json!({"plan": "p"}))
                    .into_iter()
                    .collect::<crate::model::Props>(),
                "{stream}"
            );
            // A record that differs only in it is the same record (change detection).
            assert_eq!(item, at("2025-06-07T00:00:00Z"), "{stream}");
        }
        let r = router(json!({"users": {"rename": {"updated_at": "source_updated_at"}}}));
        let item = write(r.route("users"))
            .item(&obj(
                json!({"id": "u1", "updated_at": "2024-01-02T03:04:05Z"}),
            ))
            .unwrap();
        assert_eq!(
            item.attributes,
            obj(json!({"source_updated_at": "2024-01-02T03:04:05Z"}))
                .into_iter()
                .collect::<crate::model::Props>()
        );
        assert!(item.fields.is_empty());
    }

    #[test]
    fn required_ids_are_checked() {
        let r = router(json!({}));
        let users = write(r.route("users"));
        let err = users.item(&obj(json!({"email": "x"}))).unwrap_err();
        assert!(err.reason.contains("\"id\" is missing"), "{}", err.reason);
        let err = users.item(&obj(json!({"id": null}))).unwrap_err();
        assert!(err.reason.contains("is null"), "{}", err.reason);
        let err = users.item(&obj(json!({"id": 1.5}))).unwrap_err();
        assert!(
            err.reason.contains("string or an integer"),
            "{}",
            err.reason
        );
        let memberships = write(r.route("memberships"));
        let err = memberships.item(&obj(json!({"user_id": "u"}))).unwrap_err();
        assert!(err.reason.contains("group_id"), "{}", err.reason);
        let item = memberships
            .item(&obj(
                json!({"user_id": "u", "group_id": 3, "role": "admin"}),
            ))
            .unwrap();
        assert_eq!(item.group_id.as_deref(), Some("3"));
        assert_eq!(
            item.attributes,
            obj(json!({"role": "admin"}))
                .into_iter()
                .collect::<crate::model::Props>()
        );
        let events = write(r.route("events"));
        let err = events.item(&obj(json!({"user_id": "u"}))).unwrap_err();
        assert!(err.reason.contains("\"name\""), "{}", err.reason);
        let item = events
            .item(&obj(
                json!({"user_id": "u", "name": "signed_up", "group_id": null, "plan": "x"}),
            ))
            .unwrap();
        assert_eq!(item.group_id, None);
        assert_eq!(
            item.fields,
            obj(json!({"name": "signed_up"}))
                .into_iter()
                .collect::<crate::model::Props>()
        );
        let err = events
            .item(&obj(
                json!({"user_id": "u", "name": "x", "_sdc_deleted_at": "2024-01-01T00:00:00+02:00"}),
            ))
            .unwrap_err();
        assert!(err.reason.contains("cannot be deleted"), "{}", err.reason);
    }

    #[test]
    fn only_an_rfc3339_date_time_in_sdc_deleted_at_deletes() {
        for kind in ["users", "groups", "memberships", "segments"] {
            let m = write(router(json!({})).route(kind));
            let record = |deleted: Value| {
                obj(
                    json!({"id": "k", "segment": "s", "user_id": "u", "group_id": "g",
                           "_sdc_deleted_at": deleted}),
                )
            };
            for deleted in [
                json!("2024-03-01T10:00:00Z"),
                json!("2024-03-01T10:00:00.123456+02:00"),
                json!("2024-03-01 10:00:00Z"),
            ] {
                let item = m.item(&record(deleted.clone())).unwrap();
                assert_eq!(item.action, Action::Delete, "{kind} {deleted}");
            }
            for kept in [json!(null), json!(""), json!(false), json!(0), json!(0.0)] {
                let item = m.item(&record(kept.clone())).unwrap();
                assert_eq!(item.action, Action::Upsert, "{kind} {kept}");
            }
            let item = m
                .item(&obj(
                    json!({"id": "k", "segment": "s", "user_id": "u", "group_id": "g"}),
                ))
                .unwrap();
            assert_eq!(item.action, Action::Upsert, "{kind} absent");
            for bad in [
                json!("not-a-date"),
                json!("2024-03-01"),
                json!("true"),
                json!(" "),
                json!(true),
                json!(1),
                json!(-1),
                json!({"at": "2024-03-01T10:00:00Z"}),
                json!(["2024-03-01T10:00:00Z"]),
            ] {
                let err = m.item(&record(bad.clone())).unwrap_err();
                assert!(
                    err.reason
                        .contains("\"_sdc_deleted_at\" must be an RFC 3339 date-time"),
                    "{kind} {bad}: {}",
                    err.reason
                );
            }
        }
        let m = write(router(json!({})).route("users"));
        let long = "x".repeat(10_000);
        let err = m
            .item(&obj(json!({"id": "k", "_sdc_deleted_at": long})))
            .unwrap_err();
        assert!(err.reason.len() < 300, "{}", err.reason);
    }

    #[test]
    fn bad_overrides_are_config_errors() {
        let overrides: BTreeMap<String, StreamOverride> =
            serde_json::from_value(json!({"x": {"kind": "people"}})).unwrap();
        let err = Router::new("userflow", ALL, &overrides)
            .unwrap_err()
            .to_string();
        assert!(err.contains("streams.x.kind"), "{err}");
        let overrides: BTreeMap<String, StreamOverride> =
            serde_json::from_value(json!({"x": {"kind": "events"}})).unwrap();
        let err = Router::new("userguiding", &["users"], &overrides)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not take"), "{err}");
    }

    #[test]
    fn nested_and_null_values_follow_their_settings() {
        let rows = obj(
            json!({"id": "u1", "tags": ["a"], "plan": null, "attributes": {"o": {"k": 1}, "n": null}}),
        );
        let item = |nested, nulls, rule| {
            let r = router(json!({})).defaults(nested, nulls).nested_rule(rule);
            write(r.route("users")).item(&rows).unwrap().attributes
        };
        assert_eq!(
            item(
                NestedValues::JsonString,
                NullValues::Clear,
                NestedRule::ScalarsOnly
            ),
            obj(json!({"tags": "[\"a\"]", "plan": null, "o": "{\"k\":1}", "n": null}))
                .into_iter()
                .collect::<crate::model::Props>()
        );
        assert_eq!(
            item(
                NestedValues::Drop,
                NullValues::Skip,
                NestedRule::ScalarsOnly
            ),
            obj(json!({})).into_iter().collect::<crate::model::Props>()
        );
        // `reject` leaves the value for the writer to refuse, naming what the vendor takes.
        assert_eq!(
            item(
                NestedValues::Reject,
                NullValues::Clear,
                NestedRule::ScalarsOnly
            ),
            obj(json!({"tags": ["a"], "plan": null, "o": {"k": 1}, "n": null}))
                .into_iter()
                .collect::<crate::model::Props>()
        );
        // A vendor that places structured values itself gets them as they are.
        assert_eq!(
            item(
                NestedValues::JsonString,
                NullValues::Skip,
                NestedRule::Taken
            ),
            obj(json!({"tags": ["a"], "o": {"k": 1}}))
                .into_iter()
                .collect::<crate::model::Props>()
        );
        // Per stream over the top level.
        let r = router(json!({"users": {"null_values": "skip", "nested_values": "drop"}}))
            .nested_rule(NestedRule::ScalarsOnly);
        let m = write(r.route("users"));
        assert_eq!(
            m.item(&rows).unwrap().attributes,
            crate::model::Props::default()
        );
    }

    #[test]
    fn a_group_key_makes_a_membership_of_a_users_row() {
        let r = router(json!({"public-users": {"group_key": "company_id", "include": ["email"]}}));
        let m = write(r.route("public-users"));
        let mut user = m
            .item(&obj(json!({"id": "u1", "email": "e", "company_id": 7})))
            .unwrap();
        let membership = m.membership(&mut user).unwrap();
        assert_eq!(
            (
                membership.kind,
                membership.user_id.as_deref(),
                membership.group_id.as_deref()
            ),
            (Kind::Memberships, Some("u1"), Some("7"))
        );
        assert_eq!(user.group_id, None);
        assert!(user.attributes.is_empty(), "{:?}", user.attributes);
        let mut none = m
            .item(&obj(json!({"id": "u2", "company_id": null})))
            .unwrap();
        assert!(m.membership(&mut none).is_none());
        let err = m
            .item(&obj(json!({"id": "u3", "company_id": [1]})))
            .unwrap_err();
        assert!(err.reason.contains("company_id"), "{}", err.reason);
        // Only users streams, only vendors that take memberships.
        for (overrides, writes, want) in [
            (
                json!({"orgs": {"kind": "groups", "group_key": "x"}}),
                ALL,
                "users streams only",
            ),
            (
                json!({"users": {"group_key": ""}}),
                ALL,
                "must name a field",
            ),
            (
                json!({"users": {"group_key": "x"}}),
                &["users"][..],
                "needs memberships",
            ),
        ] {
            let overrides: BTreeMap<String, StreamOverride> =
                serde_json::from_value(overrides).unwrap();
            let err = Router::new("v", writes, &overrides)
                .unwrap_err()
                .to_string();
            assert!(err.contains("group_key") && err.contains(want), "{err}");
        }
    }

    #[test]
    fn kinds_the_vendor_does_not_take_are_rejected_with_a_reason() {
        let overrides = BTreeMap::new();
        let r = Router::new(
            "userguiding",
            &["users", "groups", "memberships"],
            &overrides,
        )
        .unwrap();
        let Route::Reject(why) = r.route("events") else {
            panic!()
        };
        assert!(why.contains("does not take events"), "{why}");
    }

    #[test]
    fn override_errors_name_their_path() {
        let err = check_overrides(&json!({"public-users": {"kind": "users", "exlude": ["x"]}}))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("config key \"streams.public-users.exlude\" is not an override field"),
            "{err}"
        );
        let err = check_overrides(&json!({"public-users": {"rename": {"a": 1}}}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"streams.public-users.rename\""), "{err}");
        let err = check_overrides(&json!({"events": "users"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"streams.events\""), "{err}");
        assert!(
            check_overrides(
                &json!({"a": {"kind": "users", "key": "k", "rename": {"m": "email"},
                "include": null, "exclude": ["x"], "constants": {"plan": 1}}})
            )
            .is_ok()
        );
    }

    #[test]
    fn unused_overrides_are_those_no_stream_matched() {
        let overrides: BTreeMap<String, StreamOverride> = serde_json::from_value(json!({
            "users": {"key": "uid"}, "public-groups": {}, "acounts": {"kind": "groups"}
        }))
        .unwrap();
        let router = Router::new("userflow", &["users", "groups"], &overrides).unwrap();
        assert_eq!(
            router.unused(&["public-users", "public-groups"]),
            vec!["acounts".to_string()]
        );
    }
}

//! The fast lane against the engine's own way: for every record, either the same item (or the
//! same refusal) as `jsonschema` + [`StreamMap::item`], or "ask the engine" — never a record
//! the engine would reject.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::*;
use crate::config::StreamOverride;
use crate::load::route::{Route, Router};
use crate::singer::SchemaMessage;

/// The benchmark's SCHEMA (benches/gen_input.py).
fn bench_schema() -> Value {
    json!({"type": "object", "properties": {
        "id": {"type": "string"},
        "email": {"type": ["string", "null"], "format": "email"},
        "name": {"type": ["string", "null"]},
        "active": {"type": ["boolean", "null"]},
        "created_at": {"type": ["string", "null"], "format": "date-time"},
        "seats": {"type": ["integer", "null"]},
        "mrr": {"type": ["number", "null"]},
        "address": {"type": ["object", "null"], "properties": {"city": {"type": "string"}},
                    "required": ["city"]},
        "attributes": {"type": ["object", "null"], "properties": {
            "plan": {"type": ["string", "null"]},
            "seats": {"type": ["integer", "null"]},
        }},
    }, "required": ["id"]})
}

fn compiled(schema: Value) -> Arc<StreamSchema> {
    Arc::new(
        StreamSchema::compile(SchemaMessage {
            stream: "users".into(),
            schema,
            key_properties: vec!["id".into()],
            bookmark_properties: vec![],
        })
        .unwrap(),
    )
}

fn map(overrides: Value) -> Arc<StreamMap> {
    let overrides: BTreeMap<String, StreamOverride> = serde_json::from_value(overrides).unwrap();
    let router = Router::new("fake", &["users", "groups", "memberships"], &overrides).unwrap();
    match router.route("users") {
        Route::Write(map) => map,
        Route::Skip(why) | Route::Reject(why) => panic!("not written: {why}"),
    }
}

/// What the engine makes of a record: `None` when it rejects it before mapping (a repeated
/// key, a SCHEMA failure), else the mapping's outcome.
fn engine_way(schema: &StreamSchema, map: &StreamMap, text: &str) -> Option<Result<Item, Refusal>> {
    let strict: StrictValue = serde_json::from_str(text).unwrap();
    if strict.duplicate.is_some() {
        return None;
    }
    let Value::Object(record) = strict.value else {
        return None;
    };
    let (record, checked) = schema.check(record);
    checked.ok()?;
    Some(map.item(&record))
}

/// Checks one record both ways; returns whether the fast lane took it.
fn same(prepared: &Prepared, text: &str) -> bool {
    let raw = RawValue::from_string(text.to_string()).unwrap();
    let fast = prepared.item(&raw);
    let slow = engine_way(&prepared.schema, &prepared.map, text);
    match fast {
        None => false,
        Some(fast) => {
            assert!(
                slow.is_some(),
                "the fast lane took a record the engine rejects: {text}"
            );
            assert_eq!(Some(fast), slow, "{text}");
            true
        }
    }
}

const TAKEN: &[&str] = &[
    r#"{"id":"user-1","email":"a@x.io","name":"Ada","active":false,"created_at":"2020-01-01T00:00:00.000Z","attributes":{"plan":"free","seats":0,"mrr":0.0,"country":"DE"}}"#,
    r#"{"id":"u2","attributes":null}"#,
    r#"{"id":"u3","seats":null,"mrr":3,"extra":"kept","updated_at":"2026-01-01T00:00:00Z"}"#,
    r#"{"id":"u4","na\u006de":"escaped key","attributes":{"pl\u0061n":"pro","new\nline":"x"}}"#,
    r#"{"id":"u5","name":"nul \u0000 and\ttab, comma; slash/../..","email":null}"#,
    r#"{"id":"u6","_sdc_deleted_at":"2026-01-01T00:00:00Z"}"#,
    r#"{"id":"u7","_sdc_deleted_at":"yesterday"}"#,
    r#"{"id":"u8","_sdc_extracted_at":"2026-01-01T00:00:00Z","_sdc_deleted_at":null}"#,
    r#"{"id":"u9","address":{"city":"Berlin","zip":"10115"}}"#,
    r#"{"id":"u10","tags":["a","b"],"deep":{"a":{"b":1}}}"#,
    r#"{"id":"u11","attributes":{"plan":"x","plan2":{"nested":true}},"plan2":"top"}"#,
    r#"{"id":""}"#,
    r#"{"id":"u14","seats":18446744073709551615}"#,
];

const ASKED: &[&str] = &[
    // A repeated key, at the top, in attributes, in a nested value.
    r#"{"id":"u1","id":"u2"}"#,
    r#"{"id":"u1","attributes":{"plan":"a","plan":"b"}}"#,
    r#"{"id":"u1","deep":{"a":1,"a":2}}"#,
    r#"{"id":"u1","extra":1,"extra":2}"#,
    r#"{"id":"u1","i\u0064":"u2"}"#,
    r#"{"id":"u1","attributes":{"zz":1,"plan":"a","zz":2}}"#,
    r#"{"id":"u1","attributes":{"plan":"a","seats":1,"pl\u0061n":"b"}}"#,
    // What the SCHEMA refuses, or what only jsonschema judges.
    r#"{"id":"u1","seats":"many"}"#,
    r#"{"id":"u1","seats":1.0}"#,
    r#"{"id":"u1","seats":1.5}"#,
    r#"{"email":"no id"}"#,
    r#"{"id":"u1","address":{"zip":"no city"}}"#,
    r#"{"id":"u1","address":"not an object"}"#,
    r#"{"id":"u1","attributes":{"seats":"many"}}"#,
    r#"{"id":"u1","attributes":"a string"}"#,
    r#"{"id":"u1","attributes":[1,2]}"#,
    r#"{"id":"u1","active":"yes"}"#,
    r#"{"id":7}"#,
];

#[test]
fn the_fast_lane_agrees_with_the_engine_or_asks_it() {
    let prepared = Prepared::new(compiled(bench_schema()), map(json!({}))).unwrap();
    for text in TAKEN {
        assert!(same(&prepared, text), "the fast lane did not take {text}");
    }
    for text in ASKED {
        assert!(!same(&prepared, text), "the fast lane took {text}");
    }
}

#[test]
fn without_a_declared_attributes_property_anything_goes_the_same_way() {
    // `attributes` undeclared: the SCHEMA takes any value; the mapping refuses non-objects.
    let prepared = Prepared::new(
        compiled(json!({"type": "object", "properties": {"id": {"type": "string"}}})),
        map(json!({})),
    )
    .unwrap();
    for text in [
        r#"{"id":"u1","attributes":"a string"}"#,
        r#"{"id":"u1","attributes":true}"#,
        r#"{"id":"u1","attributes":1.5}"#,
        r#"{"id":"u1","attributes":{"a":{"b":[1]}}}"#,
        r#"{"id":"u1"}"#,
    ] {
        assert!(same(&prepared, text), "{text}");
    }
    // A settings-driven mapping of nulls and nested values is the mapping's own.
    let prepared = Prepared::new(
        compiled(json!(true)),
        map(json!({"users": {"kind": "users"}})),
    )
    .unwrap();
    assert!(same(&prepared, r#"{"id":"u1","a":null,"b":{"c":1}}"#));
}

#[test]
fn schemas_and_streams_the_fast_lane_cannot_judge_go_the_engines_way() {
    let refused = [
        json!({"type": "object", "properties": {"id": {"anyOf": [{"type": "string"}]}}}),
        json!({"type": "object", "additionalProperties": false}),
        json!({"type": "object", "properties": {"id": {"type": "string", "minLength": 1}}}),
        json!({"type": "object", "$defs": {}}),
        json!({"type": "string"}),
        json!({"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}}}}),
    ];
    for schema in refused {
        assert!(
            Prepared::new(compiled(schema.clone()), map(json!({}))).is_none(),
            "{schema}"
        );
    }
    // A field mapping: the engine maps the record.
    let mapped = map(json!({"users": {"rename": {"mail": "email"}}}));
    assert!(Prepared::new(compiled(bench_schema()), mapped).is_none());
    // Annotations and `additionalProperties: true` are fine.
    let annotated = json!({"type": "object", "title": "t", "description": "d",
        "additionalProperties": true, "properties": {"id": {"type": "string", "format": "uuid",
        "description": "the key", "x-vendor": 1}}});
    assert!(Prepared::new(compiled(annotated), map(json!({}))).is_some());
}

#[test]
fn a_group_key_membership_comes_out_the_same() {
    let prepared = Prepared::new(
        compiled(json!({"type": "object"})),
        map(json!({"users": {"group_key": "team"}})),
    )
    .unwrap();
    for text in [
        r#"{"id":"u1","team":"g1","plan":"pro"}"#,
        r#"{"id":"u1","team":null}"#,
        r#"{"id":"u1","team":5}"#,
    ] {
        assert!(same(&prepared, text), "{text}");
    }
}

#[test]
fn published_streams_are_replaced_whole_and_withdrawn() {
    let published = Published::default();
    let before = published.snapshot();
    let prepared = Prepared::new(compiled(bench_schema()), map(json!({}))).unwrap();
    published.set("users", Some(prepared));
    assert!(before.is_empty(), "a snapshot taken before does not change");
    assert!(published.snapshot().contains_key("users"));
    published.set("users", None);
    assert!(published.snapshot().is_empty());
}

#[test]
fn names_the_schema_or_the_model_declares_are_shared_not_copied_per_record() {
    // An item's keys: the model's standard field names and the SCHEMA's declared attribute
    // names are shared (no `String` per key per record); an undeclared one is its own copy.
    let prepared = Prepared::new(compiled(bench_schema()), map(json!({}))).unwrap();
    let raw = RawValue::from_string(TAKEN[0].to_string()).unwrap();
    let item = prepared.item(&raw).unwrap().unwrap();
    let shared = |k: &PropKey| matches!(k, PropKey::Borrowed(_));
    let names = |props: &crate::model::Props| {
        props
            .keys()
            .map(|k| (k.to_string(), shared(k)))
            .collect::<Vec<_>>()
    };
    let declared = |name: &str| (name.to_string(), true);
    let own = |name: &str| (name.to_string(), false);
    assert_eq!(
        names(&item.fields),
        ["email", "name", "active", "created_at"].map(declared)
    );
    assert_eq!(
        names(&item.attributes),
        [
            declared("plan"),
            declared("seats"),
            own("mrr"),
            own("country")
        ]
    );
    // The same name twice is the same shared text.
    let again = prepared.item(&raw).unwrap().unwrap();
    let (PropKey::Borrowed(a), PropKey::Borrowed(b)) = (
        item.attributes.get_index(0).unwrap().0,
        again.attributes.get_index(0).unwrap().0,
    ) else {
        panic!("not shared");
    };
    assert!(std::ptr::eq(*a, *b));
    // The engine's own way shares the model's names too.
    let slow = engine_way(&prepared.schema, &prepared.map, TAKEN[0])
        .unwrap()
        .unwrap();
    assert!(slow.fields.keys().all(shared), "{:?}", slow.fields);
    assert_eq!(slow, item);
}

#[test]
fn the_one_pass_read_of_a_line_gives_the_same_item_or_leaves_the_line_to_the_usual_read() {
    // The walk fused with the envelope's read (`ItemSeed`) against `Prepared::item` over the
    // record's text as the usual read keeps it: the same item, or the usual read.
    let prepared = Arc::new(Prepared::new(compiled(bench_schema()), map(json!({}))).unwrap());
    for (text, taken) in TAKEN
        .iter()
        .map(|t| (t, true))
        .chain(ASKED.iter().map(|t| (t, false)))
    {
        for line in [
            format!(r#"{{"type":"RECORD","stream":"users","record":{text},"time_extracted":"t"}}"#),
            format!(r#"{{"type":"RECORD","stream":"users","record": {text} }}"#),
        ] {
            let fused = crate::singer::parse_record_with(1, line.as_bytes(), |stream| {
                (stream == "users").then_some(ItemSeed(&prepared))
            });
            let usual = prepared.item(&RawValue::from_string(text.to_string()).unwrap());
            match fused {
                Some((raw, (used, item))) => {
                    assert!(taken, "read in one pass: {line}");
                    assert!(Arc::ptr_eq(&used, &prepared));
                    assert_eq!(raw.record.get(), *text);
                    assert_eq!(Some(item), usual, "{line}");
                }
                None => assert!(!taken && usual.is_none(), "not read in one pass: {line}"),
            }
        }
    }
}

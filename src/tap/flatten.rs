//! Schema flattening, the Singer SDK's `schema-flattening` capability (`flattening_enabled`,
//! `flattening_max_depth`): nested objects become top-level columns named with `__` between
//! the keys (`attributes__plan`), down to `flattening_max_depth` levels; arrays, and objects
//! below that depth, become their JSON text. SCHEMA and RECORD messages are flattened alike, so
//! a warehouse loader gets typed columns instead of one JSON column.
//!
//! roster's `attributes` is an open map of scalars, so its columns are not all known when the
//! SCHEMA goes out. They come from the vendor's attribute definitions where it has them
//! (Userflow), typed from them; a key that appears in a record without being declared yet, or a
//! value of a type its column does not take, makes the tap send the stream's SCHEMA again with
//! the column added or widened, just before that record. Nothing is dropped: every value lands
//! in a declared column.
//!
//! It is a layer over the tap's output ([`FlattenWriter`]): the sync engine writes SCHEMA and
//! RECORD messages as always, and this layer rewrites them on their way to stdout.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::singer::{SingerWriter, WriteError};

/// The separator between a parent's key and a child's.
pub const SEPARATOR: &str = "__";

/// The tap's flattening settings.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FlatteningSettings {
    /// Flatten SCHEMA and RECORD messages.
    #[serde(default)]
    pub flattening_enabled: bool,
    /// How many levels of nested objects become columns.
    #[serde(default)]
    pub flattening_max_depth: Option<usize>,
}

/// The default `flattening_max_depth`: roster's records nest one level (`attributes`).
pub const DEFAULT_MAX_DEPTH: usize = 1;

/// How to flatten, and the attribute types the vendor declares.
#[derive(Debug, Clone, Default)]
pub struct Flattening {
    /// Levels of nested objects that become columns (0 flattens nothing: objects become JSON text).
    pub max_depth: usize,
    /// Per stream, the declared `attributes` keys and their JSON Schemas.
    pub attributes: BTreeMap<String, Map<String, Value>>,
}

impl FlatteningSettings {
    /// The flattening to apply, if enabled.
    pub fn flattening(&self) -> Option<Flattening> {
        self.flattening_enabled.then(|| Flattening {
            max_depth: self.flattening_max_depth.unwrap_or(DEFAULT_MAX_DEPTH),
            attributes: BTreeMap::new(),
        })
    }
}

/// A key joined to its parents with [`SEPARATOR`].
fn join(parents: &[&str], key: &str) -> String {
    let mut out = String::new();
    for p in parents {
        out.push_str(p);
        out.push_str(SEPARATOR);
    }
    out.push_str(key);
    out
}

fn types_of(schema: &Value) -> Vec<&str> {
    match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn is_object(schema: &Value) -> bool {
    types_of(schema).contains(&"object")
}

/// The schema of a column holding JSON text (an array, or an object below the depth).
fn json_text(schema: &Value) -> Value {
    let mut out = json!({"type": ["string", "null"]});
    if let Some(d) = schema.get("description") {
        out["description"] = json!(format!("{} (JSON text)", d.as_str().unwrap_or_default()));
    }
    out
}

/// The JSON Schema type of a value.
fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// True when a column of `schema` takes `value`.
fn accepts(schema: &Value, value: &Value) -> bool {
    let types = types_of(schema);
    if types.is_empty() {
        return true;
    }
    let t = type_of(value);
    types.contains(&t) || (t == "integer" && types.contains(&"number"))
}

/// One stream's flattened shape.
#[derive(Debug, Clone)]
pub struct StreamShape {
    /// The SCHEMA message as the tap wrote it, its properties replaced when sent.
    message: Value,
    /// The flattened properties (the columns).
    columns: Map<String, Value>,
    /// Flattened keys of the objects that are split into columns.
    split: Vec<String>,
    max_depth: usize,
}

impl StreamShape {
    /// Flattens a SCHEMA message; `attributes` are the declared attribute keys for it.
    pub fn new(message: Value, max_depth: usize, attributes: Option<&Map<String, Value>>) -> Self {
        let mut shape = StreamShape {
            message,
            columns: Map::new(),
            split: Vec::new(),
            max_depth,
        };
        let mut properties = shape.message["schema"]["properties"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        if let (Some(declared), Some(attrs)) =
            (attributes, properties.get_mut(crate::model::ATTRIBUTES))
        {
            attrs["properties"] = Value::Object(declared.clone());
        }
        shape.flatten_properties(&properties, &[], 0);
        shape
    }

    fn flatten_properties(
        &mut self,
        properties: &Map<String, Value>,
        parents: &[&str],
        level: usize,
    ) {
        for (name, schema) in properties {
            let key = join(parents, name);
            if is_object(schema) && level < self.max_depth {
                self.split.push(key);
                if let Some(children) = schema.get("properties").and_then(Value::as_object) {
                    let mut path: Vec<&str> = parents.to_vec();
                    path.push(name);
                    self.flatten_properties(children, &path, level + 1);
                }
            } else if is_object(schema) || types_of(schema).contains(&"array") {
                self.columns.insert(key, json_text(schema));
            } else {
                self.columns.insert(key, schema.clone());
            }
        }
    }

    /// The flattened SCHEMA message.
    pub fn message(&self) -> Value {
        let mut message = self.message.clone();
        message["schema"]["properties"] = Value::Object(self.columns.clone());
        message
    }

    /// The flattened columns.
    pub fn columns(&self) -> &Map<String, Value> {
        &self.columns
    }

    /// Flattens a record. Returns true when the stream's columns changed (a new key, or a
    /// value its column did not take), so the SCHEMA must be sent again before the record.
    pub fn record(&mut self, record: &Map<String, Value>) -> (Map<String, Value>, bool) {
        let mut out = Map::new();
        self.flatten_record(record, &[], 0, &mut out);
        let mut changed = false;
        for (key, value) in &out {
            match self.columns.get_mut(key) {
                Some(schema) if accepts(schema, value) => {}
                Some(schema) => {
                    // Widen the column: the value's type joins the declared ones.
                    let mut types: Vec<Value> =
                        types_of(schema).into_iter().map(Value::from).collect();
                    types.push(Value::from(type_of(value)));
                    schema["type"] = Value::Array(types);
                    schema.as_object_mut().map(|s| s.remove("format"));
                    changed = true;
                }
                None => {
                    let t = type_of(value);
                    let types = if t == "null" {
                        json!(["string", "null"])
                    } else {
                        json!([t, "null"])
                    };
                    self.columns.insert(key.clone(), json!({"type": types}));
                    changed = true;
                }
            }
        }
        (out, changed)
    }

    fn flatten_record(
        &self,
        record: &Map<String, Value>,
        parents: &[&str],
        level: usize,
        out: &mut Map<String, Value>,
    ) {
        for (name, value) in record {
            let key = join(parents, name);
            match value {
                Value::Object(children) if level < self.max_depth && self.split.contains(&key) => {
                    let mut path: Vec<&str> = parents.to_vec();
                    path.push(name);
                    self.flatten_record(children, &path, level + 1, out);
                }
                Value::Object(_) | Value::Array(_) => {
                    out.insert(key, Value::String(value.to_string()));
                }
                _ => {
                    out.insert(key, value.clone());
                }
            }
        }
    }
}

/// Flattens the SCHEMA and RECORD lines written through it, and passes every other line on.
#[derive(Debug)]
pub struct FlattenWriter<'a, W: Write> {
    inner: &'a mut SingerWriter<W>,
    flattening: Flattening,
    streams: HashMap<String, StreamShape>,
    pending: Vec<u8>,
}

impl<'a, W: Write> FlattenWriter<'a, W> {
    /// Flattens into `inner`.
    pub fn new(inner: &'a mut SingerWriter<W>, flattening: Flattening) -> Self {
        Self {
            inner,
            flattening,
            streams: HashMap::new(),
            pending: Vec::new(),
        }
    }

    fn line(&mut self, line: &[u8]) -> Result<(), WriteError> {
        let message: Value = serde_json::from_slice(line)?;
        let stream = message["stream"].as_str().unwrap_or_default().to_string();
        match message["type"].as_str() {
            Some("SCHEMA") => {
                let shape = StreamShape::new(
                    message,
                    self.flattening.max_depth,
                    self.flattening.attributes.get(&stream),
                );
                self.inner.write_json(&shape.message())?;
                self.streams.insert(stream, shape);
            }
            Some("RECORD") => {
                let Some(shape) = self.streams.get_mut(&stream) else {
                    return self.inner.write_json(&message);
                };
                let empty = Map::new();
                let record = message["record"].as_object().unwrap_or(&empty);
                let (flat, changed) = shape.record(record);
                if changed {
                    tracing::info!(
                        stream = %stream,
                        "a record brought a new or wider column; sending the stream's SCHEMA again"
                    );
                    self.inner.write_json(&shape.message())?;
                }
                self.inner.write_record(
                    &stream,
                    &flat,
                    message["time_extracted"].as_str(),
                    message["version"].as_u64(),
                )?;
            }
            _ => self.inner.write_json(&message)?,
        }
        Ok(())
    }
}

fn to_io(err: WriteError) -> io::Error {
    match err {
        WriteError::Closed => io::Error::from(io::ErrorKind::BrokenPipe),
        WriteError::Io(err) => err,
        WriteError::Serialize(err) => io::Error::other(err),
    }
}

impl<W: Write> Write for FlattenWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        while let Some(end) = memchr::memchr(b'\n', &self.pending) {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let line = &line[..end];
            if !line.iter().all(u8::is_ascii_whitespace) {
                self.line(line).map_err(to_io)?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().map_err(to_io)
    }
}

/// A column's JSON Schema for a vendor attribute's declared data type (Userflow's `string`,
/// `number`, `boolean`, `datetime`, `list`); `None` for a type roster does not know, whose
/// column is then typed from the values.
pub fn attribute_schema(data_type: &str) -> Option<Value> {
    Some(match data_type {
        "string" => json!({"type": ["string", "null"]}),
        "number" => json!({"type": ["number", "null"]}),
        "boolean" => json!({"type": ["boolean", "null"]}),
        "datetime" => json!({"type": ["string", "null"], "format": "date-time"}),
        "list" => json!({"type": ["string", "null"], "description": "JSON text"}),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users_schema() -> Value {
        json!({"type": "SCHEMA", "stream": "users", "key_properties": ["id"], "schema": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "email": {"type": ["string", "null"]},
                "tags": {"type": ["array", "null"], "items": {"type": "string"}},
                "attributes": {
                    "type": ["object", "null"],
                    "additionalProperties": {"type": ["string", "number", "boolean", "null"]}
                },
                "meta": {"type": ["object", "null"], "properties": {
                    "source": {"type": ["object", "null"], "properties": {
                        "name": {"type": "string"}}}}}
            }
        }})
    }

    fn object(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn objects_become_columns_joined_with_two_underscores_down_to_the_depth() {
        let shape = StreamShape::new(users_schema(), 1, None);
        let columns: Vec<&String> = shape.columns().keys().collect();
        assert_eq!(columns, ["id", "email", "tags", "meta__source"]);
        assert_eq!(shape.columns()["tags"]["type"], json!(["string", "null"]));
        assert_eq!(
            shape.columns()["meta__source"]["type"],
            json!(["string", "null"])
        );
        let message = shape.message();
        assert_eq!(message["key_properties"], json!(["id"]));
        assert_eq!(message["schema"]["type"], "object");

        let deep = StreamShape::new(users_schema(), 2, None);
        assert!(deep.columns().contains_key("meta__source__name"));
        let none = StreamShape::new(users_schema(), 0, None);
        assert_eq!(
            none.columns()["attributes"]["type"],
            json!(["string", "null"])
        );
    }

    #[test]
    fn records_are_flattened_like_the_schema_and_arrays_become_json_text() {
        let mut shape = StreamShape::new(users_schema(), 1, None);
        let (flat, _) = shape.record(&object(json!({
            "id": "u1",
            "tags": ["a", "b"],
            "attributes": {"plan": "pro", "seats": 3},
            "meta": {"source": {"name": "x"}},
        })));
        assert_eq!(
            Value::Object(flat),
            json!({
                "id": "u1",
                "tags": "[\"a\",\"b\"]",
                "attributes__plan": "pro",
                "attributes__seats": 3,
                "meta__source": "{\"name\":\"x\"}",
            })
        );
        let (deep, _) = StreamShape::new(users_schema(), 2, None).record(&object(json!({
            "meta": {"source": {"name": "x"}},
        })));
        assert_eq!(Value::Object(deep), json!({"meta__source__name": "x"}));
    }

    #[test]
    fn declared_attributes_are_typed_and_undeclared_ones_add_a_column() {
        let declared = object(json!({
            "plan": attribute_schema("string").unwrap(),
            "seats": attribute_schema("number").unwrap(),
            "signed_up": attribute_schema("datetime").unwrap(),
        }));
        let mut shape = StreamShape::new(users_schema(), 1, Some(&declared));
        assert_eq!(
            shape.columns()["attributes__seats"]["type"],
            json!(["number", "null"])
        );
        assert_eq!(
            shape.columns()["attributes__signed_up"]["format"],
            "date-time"
        );

        // Declared and of the declared type: no new SCHEMA.
        let (_, changed) = shape.record(&object(
            json!({"id": "u1", "attributes": {"plan": "pro", "seats": 2}}),
        ));
        assert!(!changed);
        // A new key: a column typed from the value.
        let (flat, changed) =
            shape.record(&object(json!({"id": "u2", "attributes": {"beta": true}})));
        assert!(changed);
        assert_eq!(flat["attributes__beta"], true);
        assert_eq!(
            shape.columns()["attributes__beta"]["type"],
            json!(["boolean", "null"])
        );
        // A value the column does not take: the column is widened.
        let (_, changed) = shape.record(&object(
            json!({"id": "u3", "attributes": {"seats": "many"}}),
        ));
        assert!(changed);
        assert_eq!(
            shape.columns()["attributes__seats"]["type"],
            json!(["number", "null", "string"])
        );
        let (_, changed) = shape.record(&object(
            json!({"id": "u4", "attributes": {"seats": 1, "beta": false}}),
        ));
        assert!(!changed);
    }

    #[test]
    fn the_writer_flattens_schema_and_records_and_resends_the_schema_for_a_new_column() {
        let mut out = SingerWriter::new(Vec::new());
        {
            let mut flattening = Flattening {
                max_depth: 1,
                attributes: BTreeMap::new(),
            };
            flattening.attributes.insert(
                "users".into(),
                object(json!({"plan": {"type": ["string", "null"]}})),
            );
            let mut flat = SingerWriter::new(FlattenWriter::new(&mut out, flattening));
            flat.write_json(&users_schema()).unwrap();
            for attributes in [json!({"plan": "pro"}), json!({"plan": "free", "seats": 2})] {
                let mut record = Map::new();
                record.insert("id".into(), json!("u"));
                record.insert("attributes".into(), attributes);
                flat.write_record("users", &record, Some("2026-01-01T00:00:00Z"), Some(3))
                    .unwrap();
            }
            flat.write_activate_version("users", 3).unwrap();
            flat.write_state(&json!({"bookmarks": {}})).unwrap();
        }
        let text = String::from_utf8(out.into_inner().unwrap()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let kinds: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "SCHEMA",
                "RECORD",
                "SCHEMA",
                "RECORD",
                "ACTIVATE_VERSION",
                "STATE"
            ]
        );
        assert!(lines[0]["schema"]["properties"]["attributes__plan"].is_object());
        assert!(
            lines[0]["schema"]["properties"]
                .get("attributes__seats")
                .is_none()
        );
        assert_eq!(
            lines[1]["record"],
            json!({"id": "u", "attributes__plan": "pro"})
        );
        assert_eq!(lines[1]["time_extracted"], "2026-01-01T00:00:00Z");
        assert_eq!(lines[1]["version"], 3, "the version passes through");
        assert_eq!(
            lines[4],
            json!({"type": "ACTIVATE_VERSION", "stream": "users", "version": 3})
        );
        assert_eq!(
            lines[2]["schema"]["properties"]["attributes__seats"]["type"],
            json!(["integer", "null"])
        );
        assert_eq!(lines[3]["record"]["attributes__seats"], 2);
        assert_eq!(lines[5]["value"], json!({"bookmarks": {}}));
    }
}

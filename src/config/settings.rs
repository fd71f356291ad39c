//! Settings as data: one declaration per key drives validation, `--config ENV` casting, the
//! settings JSON Schema in `--about`, and the README's configuration table.

use serde_json::{Map, Value, json};

use super::ConfigError;

/// The type of a setting's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// Any string.
    String,
    /// A URL (validated as one).
    Url,
    /// A file path.
    Path,
    /// A file path, or `true`/`false` (the default file, or none).
    PathOrOff,
    /// A whole number ≥ 0.
    Integer,
    /// A number ≥ 0.
    Number,
    /// `true` or `false`.
    Boolean,
    /// One of these strings.
    Options(&'static [&'static str]),
    /// A JSON object.
    Object,
}

/// Which binary reads a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applies {
    /// Both the tap and the target.
    Both,
    /// Only tap-roster.
    Tap,
    /// Only target-roster.
    Target,
}

/// One config key.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The key.
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// One line for `--about` and the README.
    pub description: &'static str,
    /// A credential: redacted everywhere, marked `secret`/`writeOnly` in the schema.
    pub secret: bool,
    /// Must be given for a sync or a target run.
    pub required: bool,
    /// The default, as JSON text, for documentation.
    pub default: Option<&'static str>,
    /// Which binary reads it.
    pub applies: Applies,
    /// The accepted range of a numeric setting.
    pub range: Option<Range>,
}

/// The values a numeric setting accepts: `min..=max`, and 0 too when `or_zero` (0 then means
/// "off" or "the default"). Checked when the config loads, so no later conversion (a
/// `Duration`, a `u32`, a `usize`) can overflow or panic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    /// The smallest value (besides 0 when `or_zero`).
    pub min: f64,
    /// The largest value.
    pub max: f64,
    /// 0 is accepted as well.
    pub or_zero: bool,
}

impl Range {
    /// True when `n` is accepted.
    pub fn contains(&self, n: f64) -> bool {
        (n >= self.min && n <= self.max) || (self.or_zero && n == 0.0)
    }

    /// `from 1 to 1024`, `0 or from 0.01 to 10000`.
    pub fn describe(&self) -> String {
        let span = format!("from {} to {}", number(self.min), number(self.max));
        if self.or_zero && self.min > 0.0 {
            format!("0 or {span}")
        } else {
            span
        }
    }
}

/// A number as people write it: no `.0`, no exponent for the bounds roster uses.
fn number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

impl Setting {
    /// An optional setting read by both binaries.
    pub const fn new(name: &'static str, kind: Kind, description: &'static str) -> Self {
        Self {
            name,
            kind,
            description,
            secret: false,
            required: false,
            default: None,
            applies: Applies::Both,
            range: None,
        }
    }

    /// The values a numeric setting accepts, `min..=max` (documented in `--about` and checked
    /// when the config loads).
    pub const fn range(mut self, min: f64, max: f64) -> Self {
        self.range = Some(Range {
            min,
            max,
            or_zero: false,
        });
        self
    }

    /// Accepts 0 besides the range (0 means "off" or "the default").
    pub const fn or_zero(mut self) -> Self {
        if let Some(range) = &mut self.range {
            range.or_zero = true;
        }
        self
    }

    /// The description with the accepted range appended, for `--about` and the docs.
    pub fn full_description(&self) -> String {
        match self.range {
            Some(range) => format!("{} (accepted: {})", self.description, range.describe()),
            None => self.description.to_string(),
        }
    }

    /// Marks the setting as a credential.
    pub const fn secret(mut self) -> Self {
        self.secret = true;
        self
    }

    /// Marks the setting as required.
    pub const fn required(mut self) -> Self {
        self.required = true;
        self
    }

    /// Documents its default.
    pub const fn default(mut self, json: &'static str) -> Self {
        self.default = Some(json);
        self
    }

    /// Limits it to one binary.
    pub const fn only(mut self, applies: Applies) -> Self {
        self.applies = applies;
        self
    }

    /// True when `binary` reads this setting.
    pub fn applies_to(&self, binary: Applies) -> bool {
        self.applies == Applies::Both || binary == Applies::Both || self.applies == binary
    }

    /// This setting's JSON Schema.
    pub fn schema(&self) -> Value {
        let mut schema = match self.kind {
            Kind::String | Kind::Path => json!({"type": "string"}),
            Kind::PathOrOff => json!({"type": ["string", "boolean"]}),
            Kind::Url => json!({"type": "string", "format": "uri"}),
            Kind::Integer => json!({"type": "integer", "minimum": 0}),
            Kind::Number => json!({"type": "number", "minimum": 0}),
            Kind::Boolean => json!({"type": "boolean"}),
            Kind::Options(options) => json!({"type": "string", "enum": options}),
            Kind::Object => json!({"type": "object"}),
        };
        if let Value::Object(map) = &mut schema {
            if let Some(range) = self.range {
                map.insert(
                    "minimum".into(),
                    json_number(if range.or_zero { 0.0 } else { range.min }),
                );
                map.insert("maximum".into(), json_number(range.max));
                if range.or_zero && range.min > 0.0 {
                    // 0, or at least `min`: nothing strictly between.
                    map.insert(
                        "not".into(),
                        json!({"exclusiveMinimum": 0, "exclusiveMaximum": json_number(range.min)}),
                    );
                }
            }
            map.insert("description".into(), Value::from(self.full_description()));
            if let Some(default) = self
                .default
                .and_then(|d| serde_json::from_str::<Value>(d).ok())
            {
                map.insert("default".into(), default);
            }
            if self.secret {
                map.insert("secret".into(), Value::Bool(true));
                map.insert("writeOnly".into(), Value::Bool(true));
            }
        }
        schema
    }

    /// Casts a value read from the environment to this setting's type.
    pub fn cast_env(&self, raw: &str) -> Result<Value, ConfigError> {
        let bad = |expected: &str| ConfigError::Invalid {
            key: self.name.to_string(),
            problem: if self.secret {
                format!("must be {expected}")
            } else {
                format!("must be {expected}, got {raw:?}")
            },
        };
        match self.kind {
            Kind::Integer => raw
                .trim()
                .parse::<u64>()
                .map(Value::from)
                .map_err(|_| bad(&self.expected())),
            Kind::Number => raw
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| bad(&self.expected())),
            Kind::Boolean => match raw.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(Value::Bool(true)),
                "false" | "0" | "no" | "off" => Ok(Value::Bool(false)),
                _ => Err(bad("true or false")),
            },
            Kind::Object => serde_json::from_str::<Value>(raw)
                .ok()
                .filter(Value::is_object)
                .ok_or_else(|| bad("a JSON object")),
            Kind::PathOrOff => Ok(match raw.trim().to_ascii_lowercase().as_str() {
                "true" | "on" | "yes" => Value::Bool(true),
                "false" | "off" | "no" => Value::Bool(false),
                _ => Value::String(raw.to_string()),
            }),
            Kind::String | Kind::Url | Kind::Path | Kind::Options(_) => {
                Ok(Value::String(raw.to_string()))
            }
        }
    }

    /// What a numeric setting accepts, in words: `a whole number from 1 to 1024`.
    fn expected(&self) -> String {
        let what = match self.kind {
            Kind::Integer => "a whole number",
            _ => "a number",
        };
        match self.range {
            Some(range) => format!("{what} {}", range.describe()),
            None => format!("{what} ≥ 0"),
        }
    }

    /// Checks a value's type and range. Error messages never show a secret's value.
    pub fn check(&self, value: &Value) -> Result<(), ConfigError> {
        let problem = |expected: String| ConfigError::Invalid {
            key: self.name.to_string(),
            problem: if self.secret {
                format!("must be {expected}")
            } else {
                format!("must be {expected}, got {value}")
            },
        };
        match self.kind {
            Kind::String | Kind::Path => value
                .is_string()
                .then_some(())
                .ok_or_else(|| problem("a string".into())),
            Kind::PathOrOff => (value.is_string() || value.is_boolean())
                .then_some(())
                .ok_or_else(|| problem("a file path, or true or false".into())),
            Kind::Url => match value.as_str() {
                Some(text) => url::Url::parse(text)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https"))
                    .map(|_| ())
                    .ok_or_else(|| problem("an http or https URL".into())),
                None => Err(problem("a URL string".into())),
            },
            // A whole number above u64 arrives as a float: refused here with the range, like
            // any other out-of-range value.
            Kind::Integer => value
                .as_u64()
                .filter(|n| self.range.is_none_or(|r| r.contains(*n as f64)))
                .map(|_| ())
                .ok_or_else(|| problem(self.expected())),
            Kind::Number => value
                .as_f64()
                .filter(|n| n.is_finite() && *n >= 0.0)
                .filter(|n| self.range.is_none_or(|r| r.contains(*n)))
                .map(|_| ())
                .ok_or_else(|| problem(self.expected())),
            Kind::Boolean => value
                .is_boolean()
                .then_some(())
                .ok_or_else(|| problem("true or false".into())),
            Kind::Options(options) => match value.as_str() {
                Some(text) if options.contains(&text) => Ok(()),
                _ => Err(problem(format!("one of {}", options.join(", ")))),
            },
            Kind::Object => value
                .is_object()
                .then_some(())
                .ok_or_else(|| problem("a JSON object".into())),
        }
    }
}

/// A bound as JSON: an integer when it is whole.
fn json_number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        Value::from(n as i64)
    } else {
        Value::from(n)
    }
}

/// A JSON Schema (draft 2020-12) for a list of settings.
pub fn schema_for<'a>(settings: impl IntoIterator<Item = &'a Setting>) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for setting in settings {
        properties.insert(setting.name.to_string(), setting.schema());
        if setting.required {
            required.push(Value::from(setting.name));
        }
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

/// A markdown table of settings, for `--about --format markdown` and the README.
pub fn markdown_table<'a>(settings: impl IntoIterator<Item = &'a Setting>) -> String {
    let mut out = String::from(
        "| Setting | Type | Required | Default | Description |\n| --- | --- | --- | --- | --- |\n",
    );
    for s in settings {
        let kind = match s.kind {
            Kind::String => "string".to_string(),
            Kind::Url => "URL".into(),
            Kind::Path => "path".into(),
            Kind::PathOrOff => "path \\| false".into(),
            Kind::Integer => "integer".into(),
            Kind::Number => "number".into(),
            Kind::Boolean => "boolean".into(),
            Kind::Options(o) => o.join(" \\| "),
            Kind::Object => "object".into(),
        };
        let description = if s.secret {
            format!("{} (secret)", s.full_description())
        } else {
            s.full_description()
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            s.name,
            kind,
            if s.required { "yes" } else { "no" },
            s.default.map(|d| format!("`{d}`")).unwrap_or_default(),
            description
        ));
    }
    out
}

/// The largest `max_concurrency`: far above any vendor's documented limit, and small enough
/// for every semaphore and window that is sized from it.
const MAX_CONCURRENCY_CEILING: f64 = 1024.0;

/// Keys every vendor takes.
pub const COMMON_SETTINGS: &[Setting] = &[
    Setting::new(
        "vendor",
        Kind::String,
        "Which vendor to read or write (see the vendor table)",
    )
    .required(),
    Setting::new(
        "base_url",
        Kind::Url,
        "The vendor's origin plus the fixed path prefix; defaults per vendor and region (point it at roster-sandbox for tests)",
    ),
    Setting::new(
        "region",
        Kind::Options(&["us", "eu"]),
        "The vendor's data centre, where it has more than one",
    )
    .default("\"us\""),
    Setting::new(
        "max_concurrency",
        Kind::Integer,
        "Ceiling for adaptive concurrency (requests in flight), in the tap and the target alike",
    )
    .default("16")
    .range(1.0, MAX_CONCURRENCY_CEILING),
    Setting::new(
        "requests_per_second",
        Kind::Number,
        "Client-side rate limit (requests per second), one rule for the tap and the target: unset is the rate roster keeps to for the vendor's calls where it has one (the writers of Userpilot, UserGuiding, Appcues, Guru and Guru SCIM; the tap's listings have none), otherwise no fixed limit and the HTTP engine slows down on 429s; 0 turns the limit off",
    )
    .range(0.01, 10_000.0)
    .or_zero(),
    Setting::new(
        "timeout_seconds",
        Kind::Number,
        "Timeout of one HTTP request",
    )
    .default("60")
    .range(0.1, 3600.0),
    Setting::new(
        "max_retries",
        Kind::Integer,
        "Retries per request for 429, 408, 5xx, timeouts and dropped connections",
    )
    .default("5")
    .range(0.0, 100_000.0),
    Setting::new(
        "allow_insecure_http",
        Kind::Boolean,
        "Allow a plain http:// base_url to a host other than loopback (127.0.0.0/8, ::1, localhost, *.localhost) or a reserved test name (*.test); credentials then travel in the clear, and every run warns",
    )
    .default("false"),
];

/// Keys only the tap takes: the Singer SDK's `schema-flattening` capability and INCREMENTAL
/// replication's `start_date` (docs/tap.md).
pub const TAP_SETTINGS: &[Setting] = &[
    Setting::new("flattening_enabled", Kind::Boolean, "Flatten nested objects into columns named parent__child (attributes__plan), for warehouse loaders").default("false").only(Applies::Tap),
    Setting::new("flattening_max_depth", Kind::Integer, "With flattening_enabled: how many levels of nested objects become columns (deeper objects and arrays become JSON text)").default("1").range(0.0, 100.0).only(Applies::Tap),
    Setting::new("start_date", Kind::String, "INCREMENTAL streams (a catalog's replication-method INCREMENTAL, where the vendor can filter by modification time): read only what changed after this RFC 3339 date-time or date when the state holds no bookmark yet. Unset: the first pass reads everything").only(Applies::Tap),
];

/// Keys only the target takes.
pub const TARGET_SETTINGS: &[Setting] = &[
    Setting::new("mode", Kind::Options(&["realtime", "bulk"]), "realtime upserts, or NDJSON bulk import jobs (Appcues, Userpilot)").default("\"realtime\"").only(Applies::Target),
    Setting::new("reject_file", Kind::Path, "NDJSON file that receives every rejected record with its reason (replayable); created 0600 at the first reject, appended to, never truncated (a replay moves it aside)").only(Applies::Target),
    Setting::new("on_invalid", Kind::Options(&["reject", "fail"]), "What to do with a record that fails validation or is refused: write it to the reject file and go on, or stop").default("\"reject\"").only(Applies::Target),
    Setting::new("hard_delete", Kind::Boolean, "SCIM: delete users instead of deactivating them (active=false)").default("false").only(Applies::Target),
    Setting::new("max_reject_ratio", Kind::Number, "Fail the run (exit 1, after the last safe state) when more than this share (0 to 1) of the records is rejected; checked at the end of the input, and during the run once 1000 records have an outcome. Unset: no limit").range(0.0, 1.0).only(Applies::Target),
    Setting::new("nested_values", Kind::Options(&["json_string", "reject", "drop"]), "An array or object where the vendor takes only scalars (Appcues, Userpilot, UserGuiding; Userflow but for change objects): send it as its JSON text, reject the record, or leave the field out; warned once per field. streams.<name>.nested_values overrides it").default("\"json_string\"").only(Applies::Target),
    Setting::new("null_values", Kind::Options(&["clear", "skip"]), "A null value in a record: clear the vendor's value, or leave it alone (as if the field were absent). streams.<name>.null_values overrides it").default("\"clear\"").only(Applies::Target),
    Setting::new("sync_log", Kind::Path, "File that receives the run's sync log as Singer messages (streams _roster_sync_log: one row per record with its action and reason; _roster_rejects: the rejected records), for `target-postgres < FILE`; created 0600, one per run: an existing file is renamed to FILE.<its time> first. Unset: none").only(Applies::Target),
    Setting::new("on_duplicate_identity", Kind::Options(&["warn", "reject"]), "One email on several user keys, or user keys that differ only in case or surrounding whitespace: warn (and send), or reject the later records to the reject file, naming the earlier key and line").default("\"warn\"").only(Applies::Target),
    Setting::new("ledger", Kind::PathOrOff, "The sync ledger (SQLite, created 0600): what each vendor account accepted, so the next run sends only what changed (docs/sync.md). A file; false turns it off; unset: $XDG_STATE_HOME/roster/ledger.sqlite (~/.local/state/roster/ledger.sqlite). Keep it on a volume: without it every record is sent once and the ledger is rebuilt").only(Applies::Target),
    Setting::new("change_detection", Kind::Boolean, "With a ledger: skip a record whose payload the vendor already accepted (counted skipped, reason unchanged); --full-resync sends everything for one run").default("true").only(Applies::Target),
    Setting::new("sync_mode", Kind::Options(&["upsert", "update_only", "create_only", "mirror"]), "upsert: create or update; update_only: never create what the destination does not hold; create_only: never change what it holds; mirror: upsert, and once a full pass of a stream was read (ACTIVATE_VERSION), delete at the vendor what roster wrote earlier for that stream and the pass no longer holds (max_deletes, max_delete_ratio). What the destination holds comes from the ledger; records a mode leaves out are skipped with the mode as the reason").default("\"upsert\"").only(Applies::Target),
    Setting::new("max_deletes", Kind::Integer, "sync_mode mirror: the most deletes one stream's full pass may make; past it the run sends no delete, writes the last safe state and exits 1 (--force-deletes overrides it for one run). Unset: no count limit").range(0.0, 1_000_000_000.0).only(Applies::Target),
    Setting::new("max_delete_ratio", Kind::Number, "sync_mode mirror: the largest share (0 to 1) of what the ledger holds for a stream that its full pass may delete; past it the run sends no delete, writes the last safe state and exits 1 (--force-deletes overrides it for one run)").default("0.1").range(0.0, 1.0).only(Applies::Target),
    Setting::new("streams", Kind::Object, "Per-stream overrides: {\"<stream>\": {\"kind\", \"key\", \"rename\", \"include\", \"exclude\", \"constants\", \"group_key\", \"nested_values\", \"null_values\"}}").only(Applies::Target),
];

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: Setting = Setting::new("api_key", Kind::String, "the key")
        .secret()
        .required();
    const RETRIES: Setting = Setting::new("max_retries", Kind::Integer, "retries").default("8");

    #[test]
    fn schema_marks_secrets_and_defaults() {
        let schema = schema_for([&KEY, &RETRIES]);
        assert_eq!(schema["properties"]["api_key"]["secret"], true);
        assert_eq!(schema["properties"]["api_key"]["writeOnly"], true);
        assert_eq!(schema["properties"]["max_retries"]["default"], 8);
        assert_eq!(schema["required"], json!(["api_key"]));
    }

    #[test]
    fn type_errors_never_show_a_secret() {
        let err = KEY.check(&json!(12345)).unwrap_err().to_string();
        assert!(!err.contains("12345"), "{err}");
        assert!(err.contains("api_key"), "{err}");
        let err = RETRIES.check(&json!("lots")).unwrap_err().to_string();
        assert!(err.contains("\"lots\""), "{err}");
    }

    const TIMEOUT: Setting =
        Setting::new("timeout_seconds", Kind::Number, "timeout").range(0.1, 3600.0);
    const RATE: Setting = Setting::new("requests_per_second", Kind::Number, "rate")
        .range(0.01, 10_000.0)
        .or_zero();
    const CONCURRENCY: Setting =
        Setting::new("max_concurrency", Kind::Integer, "ceiling").range(1.0, 1024.0);

    #[test]
    fn numbers_out_of_range_name_the_key_and_the_range() {
        for (setting, value) in [
            (&TIMEOUT, json!(1e300)),
            (&TIMEOUT, json!(0)),
            (&TIMEOUT, json!(-1)),
            (&RATE, json!(1e-300)),
            (&RATE, json!(10_001)),
            (&CONCURRENCY, json!(u64::MAX)),
            (&CONCURRENCY, json!(0)),
            (&CONCURRENCY, json!(1.5)),
            (
                &CONCURRENCY,
                serde_json::from_str::<Value>("18446744073709551616").unwrap(),
            ),
        ] {
            let err = setting.check(&value).unwrap_err().to_string();
            assert!(err.contains(&format!("\"{}\"", setting.name)), "{err}");
            assert!(err.contains(" from "), "{err}");
        }
        let err = CONCURRENCY
            .check(&serde_json::from_str::<Value>("18446744073709551616").unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("a whole number from 1 to 1024"), "{err}");
        let err = RATE.check(&json!(1e-300)).unwrap_err().to_string();
        assert!(err.contains("0 or from 0.01 to 10000"), "{err}");
        for (setting, value) in [
            (&TIMEOUT, json!(0.1)),
            (&TIMEOUT, json!(3600)),
            (&RATE, json!(0)),
            (&RATE, json!(0.01)),
            (&CONCURRENCY, json!(1024)),
        ] {
            assert!(setting.check(&value).is_ok(), "{} {value}", setting.name);
        }
        // Through the environment too: casting, then the same check.
        for (setting, raw) in [
            (&TIMEOUT, "1e300"),
            (&TIMEOUT, "NaN"),
            (&TIMEOUT, "inf"),
            (&CONCURRENCY, "18446744073709551616"),
            (&CONCURRENCY, "-1"),
        ] {
            let err = setting
                .cast_env(raw)
                .and_then(|v| setting.check(&v))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(setting.name) && err.contains(" from "),
                "{err}"
            );
        }
    }

    #[test]
    fn the_schema_and_the_table_document_ranges() {
        let schema = schema_for([&TIMEOUT, &RATE, &CONCURRENCY]);
        let p = &schema["properties"];
        assert_eq!(p["timeout_seconds"]["minimum"], 0.1);
        assert_eq!(p["timeout_seconds"]["maximum"], 3600);
        assert_eq!(p["max_concurrency"]["minimum"], 1);
        assert_eq!(p["requests_per_second"]["minimum"], 0);
        assert_eq!(
            p["requests_per_second"]["not"],
            json!({"exclusiveMinimum": 0, "exclusiveMaximum": 0.01})
        );
        assert!(
            p["max_concurrency"]["description"]
                .as_str()
                .unwrap()
                .ends_with("(accepted: from 1 to 1024)")
        );
        assert!(markdown_table([&RATE]).contains("(accepted: 0 or from 0.01 to 10000)"));
    }

    #[test]
    fn casts_environment_values() {
        assert_eq!(RETRIES.cast_env("3").unwrap(), json!(3));
        assert!(RETRIES.cast_env("x").is_err());
        let flag = Setting::new("hard_delete", Kind::Boolean, "");
        assert_eq!(flag.cast_env("TRUE").unwrap(), json!(true));
        let streams = Setting::new("streams", Kind::Object, "");
        assert_eq!(streams.cast_env(r#"{"a":{}}"#).unwrap(), json!({"a":{}}));
        assert!(streams.cast_env("[1]").is_err());
    }
}

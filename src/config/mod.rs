//! What every vendor's config shares: loading, the common keys, validation, and [`Secret`].
//!
//! Config comes from `--config FILE` (repeatable; later files override earlier keys) and
//! `--config ENV`, which reads `TAP_ROSTER_<KEY>` / `TARGET_ROSTER_<KEY>` variables; the
//! environment beats files, as in the Meltano SDK. The merged object is then checked against the
//! settings the chosen vendor declares ([`Setting`]): an unknown key is an error that names it,
//! a wrong type is an error that names the key (never a secret's value), and a missing required
//! key is an error that lists what is missing. This module never imports `vendors/`: the
//! registry passes the vendor's settings in.

mod secret;
pub mod settings;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;
use serde_json::{Map, Value};
use url::Url;

pub use secret::{REDACTED, Secret};
pub use settings::{Applies, Kind, Setting};

/// Why a config could not be used. Every variant maps to exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A config file is not a JSON object.
    #[error("config file {path} is not a JSON object: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No `vendor` key.
    #[error("config has no \"vendor\" key (valid vendors: {valid})")]
    NoVendor {
        /// The valid vendor names.
        valid: String,
    },
    /// `vendor` names no known vendor.
    #[error("unknown vendor {name:?} (valid vendors: {valid})")]
    UnknownVendor {
        /// What was given.
        name: String,
        /// The valid vendor names.
        valid: String,
    },
    /// A key is not a setting of this vendor and binary.
    #[error(
        "unknown config key {key:?} for vendor {vendor} in {binary}{hint} (valid keys: {valid})"
    )]
    UnknownKey {
        /// The key.
        key: String,
        /// The vendor.
        vendor: String,
        /// `tap-roster` or `target-roster`.
        binary: &'static str,
        /// Where the key does belong, if anywhere.
        hint: String,
        /// The keys this vendor and binary accept.
        valid: String,
    },
    /// A key has the wrong type or value.
    #[error("config key {key:?} {problem}")]
    Invalid {
        /// The key.
        key: String,
        /// What is wrong (never a secret's value).
        problem: String,
    },
    /// Required keys are missing.
    #[error("vendor {vendor} needs config key(s) {}", missing.join(", "))]
    Missing {
        /// The vendor.
        vendor: String,
        /// The missing keys.
        missing: Vec<String>,
    },
}

/// Where config comes from: a JSON file, or the environment (`--config ENV`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A JSON file.
    File(PathBuf),
    /// `TAP_ROSTER_*` / `TARGET_ROSTER_*` variables.
    Env,
}

impl FromStr for ConfigSource {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(if s == "ENV" {
            ConfigSource::Env
        } else {
            ConfigSource::File(PathBuf::from(s))
        })
    }
}

/// Config as loaded, before it is checked against a vendor's settings.
#[derive(Debug, Clone, Default)]
pub struct RawConfig {
    files: Map<String, Value>,
    env: BTreeMap<String, String>,
    /// The variable each `env` key came from, to name it in a warning.
    env_names: BTreeMap<String, String>,
}

impl RawConfig {
    /// Loads every source in order. `env_prefix` is `TAP_ROSTER_` or `TARGET_ROSTER_`.
    pub fn load(sources: &[ConfigSource], env_prefix: &str) -> Result<Self, ConfigError> {
        let mut raw = RawConfig::default();
        for source in sources {
            match source {
                ConfigSource::File(path) => raw.merge_file(path)?,
                ConfigSource::Env => raw.merge_env(std::env::vars(), env_prefix),
            }
        }
        Ok(raw)
    }

    /// Config from a JSON object (tests, the sandbox's ready-made configs).
    pub fn from_object(files: Map<String, Value>) -> Self {
        Self {
            files,
            ..Self::default()
        }
    }

    fn merge_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let value: Value = serde_json::from_str(&text).map_err(|err| ConfigError::Parse {
            path: path.to_path_buf(),
            reason: err.to_string(),
        })?;
        let Value::Object(object) = value else {
            return Err(ConfigError::Parse {
                path: path.to_path_buf(),
                reason: "the top level must be an object".into(),
            });
        };
        for (key, value) in object {
            // Meltano writes unset settings as null: treat them as absent.
            if value.is_null() {
                self.files.remove(&key);
            } else {
                self.files.insert(key, value);
            }
        }
        Ok(())
    }

    /// Reads `<PREFIX><KEY>` variables. Keys after a double underscore (`TAP_ROSTER__SELECT`)
    /// are Meltano's own and are skipped.
    pub fn merge_env(&mut self, vars: impl IntoIterator<Item = (String, String)>, prefix: &str) {
        for (name, value) in vars {
            let Some(key) = name.strip_prefix(prefix) else {
                continue;
            };
            if key.is_empty() || key.starts_with('_') {
                continue;
            }
            let key = key.to_ascii_lowercase();
            self.env_names.insert(key.clone(), name.clone());
            self.env.insert(key, value);
        }
    }

    /// The `vendor` key, from the environment or the files.
    pub fn vendor(&self) -> Option<String> {
        if let Some(vendor) = self.env.get("vendor") {
            return Some(vendor.clone());
        }
        self.files
            .get("vendor")
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    /// Checks the config against `settings` (the common keys, the binary's keys and the
    /// vendor's keys) and returns the merged object. With `require`, missing required keys are
    /// an error; discovery runs without credentials.
    pub fn resolve(
        &self,
        vendor: &str,
        settings: &[&Setting],
        binary: Applies,
        require: bool,
        other_keys: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Map<String, Value>, ConfigError> {
        let find = |key: &str| {
            settings
                .iter()
                .find(|s| s.name == key && s.applies_to(binary))
        };
        let mut merged = Map::new();
        for (key, value) in &self.files {
            let Some(setting) = find(key) else {
                return Err(ConfigError::UnknownKey {
                    key: key.clone(),
                    vendor: vendor.to_string(),
                    binary: binary_name(binary),
                    hint: other_keys(key)
                        .map(|h| format!(" ({h})"))
                        .unwrap_or_default(),
                    valid: settings
                        .iter()
                        .filter(|s| s.applies_to(binary))
                        .map(|s| s.name)
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            };
            setting.check(value)?;
            merged.insert(key.clone(), value.clone());
        }
        for (key, raw) in &self.env {
            match find(key) {
                Some(setting) => {
                    let value = setting.cast_env(raw)?;
                    setting.check(&value)?;
                    merged.insert(key.clone(), value);
                }
                // `<BINARY>_LOGLEVEL` is the log level (Meltano's name), not a setting.
                None if key == "loglevel" => {}
                // A misspelt key in a file is an error; in the environment other tools may
                // share the prefix, so it is a warning that names the variable (never its
                // value, which may be a secret).
                None => tracing::warn!(
                    "ignoring environment variable {}: not a config key for vendor {vendor} in {}{}",
                    self.env_names.get(key).map_or(key.as_str(), String::as_str),
                    binary_name(binary),
                    other_keys(key)
                        .map(|h| format!(" ({h})"))
                        .unwrap_or_default(),
                ),
            }
        }
        if require {
            let missing: Vec<String> = settings
                .iter()
                .filter(|s| s.required && s.applies_to(binary) && !merged.contains_key(s.name))
                .map(|s| s.name.to_string())
                .collect();
            if !missing.is_empty() {
                return Err(ConfigError::Missing {
                    vendor: vendor.to_string(),
                    missing,
                });
            }
        }
        Ok(merged)
    }
}

fn binary_name(binary: Applies) -> &'static str {
    match binary {
        Applies::Tap => "tap-roster",
        Applies::Target => "target-roster",
        Applies::Both => "roster",
    }
}

/// Deserialises a typed view of a resolved config, naming the key on failure.
pub fn typed<T: for<'de> Deserialize<'de>>(config: &Map<String, Value>) -> Result<T, ConfigError> {
    serde_json::from_value(Value::Object(config.clone())).map_err(|err| ConfigError::Invalid {
        key: "(config)".into(),
        problem: err.to_string(),
    })
}

/// The vendors' regions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    /// The default data centre.
    #[default]
    Us,
    /// The EU data centre (Userflow, Userpilot, Appcues).
    Eu,
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
        "Ceiling for adaptive concurrency (requests in flight)",
    )
    .default("16")
    .range(1.0, MAX_CONCURRENCY_CEILING),
    Setting::new(
        "requests_per_second",
        Kind::Number,
        "Client-side rate limit; defaults to the vendor's documented limit, 0 turns it off",
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
    Setting::new("start_date", Kind::String, "INCREMENTAL streams (a catalog's replication-method INCREMENTAL, where the vendor can filter by modification time): read only what changed after this RFC 3339 date-time or date when the state holds no bookmark yet. Unset: the first pass reads everything").only(Applies::Tap),
    Setting::new("flattening_enabled", Kind::Boolean, "Flatten nested objects into columns named parent__child (attributes__plan), for warehouse loaders").default("false").only(Applies::Tap),
    Setting::new("flattening_max_depth", Kind::Integer, "With flattening_enabled: how many levels of nested objects become columns (deeper objects and arrays become JSON text)").default("1").range(0.0, 100.0).only(Applies::Tap),
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
    Setting::new("streams", Kind::Object, "Per-stream overrides: {\"<stream>\": {\"kind\", \"key\", \"rename\", \"include\", \"exclude\", \"constants\", \"group_key\", \"nested_values\", \"null_values\"}}").only(Applies::Target),
];

/// The typed common keys.
#[derive(Debug, Clone, Deserialize)]
pub struct CommonSettings {
    /// The vendor's name.
    pub vendor: String,
    /// An explicit base URL.
    #[serde(default)]
    pub base_url: Option<Url>,
    /// The vendor's region.
    #[serde(default)]
    pub region: Region,
    /// Ceiling for adaptive concurrency.
    #[serde(default)]
    pub max_concurrency: Option<usize>,
    /// Client-side rate limit (0 = off).
    #[serde(default)]
    pub requests_per_second: Option<f64>,
    /// Per-request timeout.
    #[serde(default)]
    pub timeout_seconds: Option<f64>,
    /// Retry budget per request.
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// Plain http to a host that is not loopback or a test name is allowed.
    #[serde(default)]
    pub allow_insecure_http: bool,
}

impl CommonSettings {
    /// The base URL to use: the explicit one, else the vendor's default for the region.
    /// Trailing slashes are dropped so paths join predictably.
    pub fn base_url_or(&self, us: Option<&str>, eu: Option<&str>) -> Result<Url, ConfigError> {
        let chosen = match (&self.base_url, self.region) {
            (Some(url), _) => url.as_str().to_string(),
            (None, Region::Eu) => eu
                .ok_or_else(|| ConfigError::Invalid {
                    key: "region".into(),
                    problem: format!(
                        "\"eu\" is not offered by vendor {}; set base_url",
                        self.vendor
                    ),
                })?
                .to_string(),
            (None, Region::Us) => us
                .ok_or_else(|| ConfigError::Missing {
                    vendor: self.vendor.clone(),
                    missing: vec!["base_url".into()],
                })?
                .to_string(),
        };
        let trimmed = chosen.trim_end_matches('/');
        let url = Url::parse(trimmed).map_err(|err| ConfigError::Invalid {
            key: "base_url".into(),
            problem: format!("is not a valid URL: {err}"),
        })?;
        self.check_url(&url)?;
        Ok(url)
    }

    /// Checks an explicit `base_url` when the config loads, so a bad one exits 2 before
    /// anything runs; warns once when `allow_insecure_http` lets plain http through.
    pub fn check_base_url(&self) -> Result<(), ConfigError> {
        let Some(url) = &self.base_url else {
            return Ok(());
        };
        self.check_url(url)?;
        static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if url.scheme() == "http"
            && !is_local_test_host(url)
            && !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                "allow_insecure_http: sending credentials in the clear over plain http to {}",
                url.host_str().unwrap_or("")
            );
        }
        Ok(())
    }

    fn check_url(&self, url: &Url) -> Result<(), ConfigError> {
        // Credentials in a URL end up in logs and error messages; they have their own keys.
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ConfigError::Invalid {
                key: "base_url".into(),
                problem:
                    "must not carry credentials (user:password@); use the vendor's credential keys"
                        .into(),
            });
        }
        if url.scheme() == "http" && !self.allow_insecure_http && !is_local_test_host(url) {
            return Err(ConfigError::Invalid {
                key: "base_url".into(),
                problem: format!(
                    "uses plain http to {}, which would send the credentials in the clear; use https (plain http is accepted for loopback and *.test hosts), or set allow_insecure_http: true",
                    url.host_str().unwrap_or("")
                ),
            });
        }
        Ok(())
    }
}

/// Hosts plain http may reach without `allow_insecure_http`: loopback (127.0.0.0/8, ::1,
/// `localhost` and `*.localhost`, which RFC 6761 keeps on the machine) and `*.test` (RFC 6761
/// reserves it for testing; no public DNS answers for it). Private ranges (RFC 1918) and
/// `.local` are not on the list: traffic to them crosses a shared network where the token can
/// be read, and a real vendor proxy may live there.
pub fn is_local_test_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost"
                || name.ends_with(".localhost")
                || name == "test"
                || name.ends_with(".test")
        }
        None => false,
    }
}

/// What the target does with a record that fails validation or is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnInvalid {
    /// Write it to the reject file and go on.
    #[default]
    Reject,
    /// Stop the run (exit 1).
    Fail,
}

/// What the target does with an array or object where the vendor takes only scalars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NestedValues {
    /// Send its JSON text (as tap-roster writes arrays).
    #[default]
    JsonString,
    /// Reject the record, naming the field.
    Reject,
    /// Leave the field out.
    Drop,
}

/// What the target does with a `null` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NullValues {
    /// Pass it on: the vendor clears its value.
    #[default]
    Clear,
    /// Leave the field out: the vendor keeps its value.
    Skip,
}

/// How the target writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One upsert per record.
    #[default]
    Realtime,
    /// NDJSON bulk import jobs.
    Bulk,
}

/// The typed target keys.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TargetSettings {
    /// realtime or bulk.
    #[serde(default)]
    pub mode: Mode,
    /// Where rejected records go.
    #[serde(default)]
    pub reject_file: Option<PathBuf>,
    /// reject or fail.
    #[serde(default)]
    pub on_invalid: OnInvalid,
    /// SCIM: delete instead of deactivate.
    #[serde(default)]
    pub hard_delete: bool,
    /// The share of rejected records (0 to 1) past which the run fails; `None`: no limit.
    #[serde(default)]
    pub max_reject_ratio: Option<f64>,
    /// Arrays and objects where the vendor takes only scalars.
    #[serde(default)]
    pub nested_values: NestedValues,
    /// `null` values.
    #[serde(default)]
    pub null_values: NullValues,
    /// Per-stream overrides.
    #[serde(default)]
    pub streams: BTreeMap<String, StreamOverride>,
}

/// Overrides for one incoming stream.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamOverride {
    /// The kind of object: users, groups, memberships, events (or segments for Appcues).
    #[serde(default)]
    pub kind: Option<String>,
    /// The field that holds the record's key.
    #[serde(default)]
    pub key: Option<String>,
    /// Field renames, source name → roster name.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// Only these fields (after renaming), if given.
    #[serde(default)]
    pub include: Option<Vec<String>>,
    /// Drop these fields (after renaming).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Fields added to every record (they do not override the record's own values).
    #[serde(default)]
    pub constants: Map<String, Value>,
    /// Users streams: the field (after renaming) whose value is the key of a group the user is
    /// a member of; the record also writes that membership.
    #[serde(default)]
    pub group_key: Option<String>,
    /// Overrides the top-level `nested_values` for this stream.
    #[serde(default)]
    pub nested_values: Option<NestedValues>,
    /// Overrides the top-level `null_values` for this stream.
    #[serde(default)]
    pub null_values: Option<NullValues>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEY: Setting = Setting::new("api_key", Kind::String, "key")
        .secret()
        .required();

    fn settings() -> Vec<&'static Setting> {
        COMMON_SETTINGS
            .iter()
            .chain(TARGET_SETTINGS)
            .chain([&KEY])
            .collect()
    }

    fn no_hint(_: &str) -> Option<String> {
        None
    }

    fn raw(value: Value) -> RawConfig {
        RawConfig::from_object(value.as_object().cloned().unwrap())
    }

    #[test]
    fn later_files_override_earlier_ones_and_null_means_unset() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.json");
        let b = dir.path().join("b.json");
        std::fs::write(
            &a,
            r#"{"vendor":"userflow","api_key":"one","max_retries":2}"#,
        )
        .unwrap();
        std::fs::write(&b, r#"{"api_key":"two","max_retries":null}"#).unwrap();
        let raw = RawConfig::load(
            &[ConfigSource::File(a), ConfigSource::File(b)],
            "TAP_ROSTER_",
        )
        .unwrap();
        let merged = raw
            .resolve("userflow", &settings(), Applies::Tap, true, &no_hint)
            .unwrap();
        assert_eq!(merged["api_key"], "two");
        assert!(!merged.contains_key("max_retries"));
    }

    #[test]
    fn environment_beats_files_and_is_cast() {
        let mut raw = raw(json!({"vendor": "userflow", "api_key": "file", "max_retries": 1}));
        raw.merge_env(
            [
                ("TAP_ROSTER_API_KEY".to_string(), "env".to_string()),
                ("TAP_ROSTER_MAX_RETRIES".to_string(), "4".to_string()),
                ("TAP_ROSTER__SELECT".to_string(), "[]".to_string()),
                ("TAP_ROSTER_LOGLEVEL".to_string(), "debug".to_string()),
                ("OTHER".to_string(), "x".to_string()),
            ],
            "TAP_ROSTER_",
        );
        let merged = raw
            .resolve("userflow", &settings(), Applies::Tap, true, &no_hint)
            .unwrap();
        assert_eq!(merged["api_key"], "env");
        assert_eq!(merged["max_retries"], 4);
    }

    #[test]
    fn unknown_keys_are_named_with_a_hint() {
        let raw = raw(json!({"vendor": "userflow", "api_key": "k", "reject_file": "r.ndjson"}));
        let hint =
            |key: &str| (key == "reject_file").then(|| "a target-roster setting".to_string());
        let err = raw
            .resolve("userflow", &settings(), Applies::Tap, true, &hint)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("unknown config key \"reject_file\" for vendor userflow in tap-roster (a target-roster setting)"), "{err}");
        let err = raw.resolve("userflow", &settings(), Applies::Target, true, &no_hint);
        assert!(err.is_ok(), "target keys are fine for the target");
    }

    #[test]
    fn missing_and_mistyped_keys() {
        let err = raw(json!({"vendor": "userflow"}))
            .resolve("userflow", &settings(), Applies::Tap, true, &no_hint)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "vendor userflow needs config key(s) api_key"
        );
        assert!(
            raw(json!({"vendor": "userflow"}))
                .resolve("userflow", &settings(), Applies::Tap, false, &no_hint)
                .is_ok()
        );
        let err = raw(json!({"vendor": "userflow", "api_key": "k", "region": "mars"}))
            .resolve("userflow", &settings(), Applies::Tap, true, &no_hint)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "config key \"region\" must be one of us, eu, got \"mars\""
        );
    }

    #[test]
    fn base_url_defaults_by_region_and_loses_trailing_slashes() {
        let mut common: CommonSettings =
            typed(&json!({"vendor": "userflow"}).as_object().cloned().unwrap()).unwrap();
        let url = common
            .base_url_or(
                Some("https://api.userflow.com"),
                Some("https://api.eu.userflow.com"),
            )
            .unwrap();
        assert_eq!(url.as_str(), "https://api.userflow.com/");
        common.region = Region::Eu;
        let url = common
            .base_url_or(Some("https://a"), Some("https://api.eu.userflow.com/"))
            .unwrap();
        assert_eq!(url.host_str(), Some("api.eu.userflow.com"));
        common.base_url = Some(Url::parse("http://127.0.0.1:8787/guru/api/v1/").unwrap());
        assert_eq!(
            common.base_url_or(None, None).unwrap().as_str(),
            "http://127.0.0.1:8787/guru/api/v1"
        );
        common.base_url = Some(Url::parse("https://me:hunter2@api.example.com").unwrap());
        let err = common.base_url_or(None, None).unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
        common.base_url = None;
        assert!(
            common.base_url_or(Some("https://a"), None).is_err(),
            "no eu host"
        );
    }

    #[test]
    fn plain_http_only_to_loopback_and_test_hosts_unless_allowed() {
        let common = |url: &str, allow: bool| -> CommonSettings {
            typed(
                &json!({"vendor": "userflow", "base_url": url, "allow_insecure_http": allow})
                    .as_object()
                    .cloned()
                    .unwrap(),
            )
            .unwrap()
        };
        for url in [
            "http://127.0.0.1:8787/userflow",
            "http://127.3.4.5/",
            "http://[::1]:9/",
            "http://localhost:1/",
            "http://sandbox.localhost/",
            "http://roster.test/",
            "https://api.userflow.com",
        ] {
            assert!(common(url, false).check_base_url().is_ok(), "{url}");
            assert!(common(url, false).base_url_or(None, None).is_ok(), "{url}");
        }
        for url in [
            "http://api.userflow.com",
            "http://10.0.0.5/",
            "http://192.168.1.2/",
            "http://printer.local/",
            "http://sandbox/",
            "http://[fd00::1]/",
        ] {
            let err = common(url, false).check_base_url().unwrap_err();
            let text = err.to_string();
            assert!(
                text.starts_with("config key \"base_url\" uses plain http"),
                "{text}"
            );
            assert!(text.contains("allow_insecure_http"), "{text}");
            assert!(common(url, false).base_url_or(None, None).is_err(), "{url}");
            assert!(common(url, true).check_base_url().is_ok(), "{url}");
        }
        let err = common("http://me:hunter2@127.0.0.1/", true)
            .check_base_url()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("base_url") && !err.contains("hunter2"),
            "{err}"
        );
    }

    #[test]
    fn integers_too_large_for_their_type_name_the_key() {
        for (key, value) in [
            ("max_retries", json!(5_000_000_000u64)),
            ("max_concurrency", json!(u64::MAX)),
            ("timeout_seconds", json!(1e300)),
            ("requests_per_second", json!(1e-300)),
        ] {
            let mut config = json!({"vendor": "userflow", "api_key": "k"});
            config[key] = value;
            let err = raw(config)
                .resolve("userflow", &settings(), Applies::Tap, true, &no_hint)
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("config key \"{key}\" must be")),
                "{err}"
            );
        }
    }

    #[test]
    fn stream_overrides_reject_unknown_fields() {
        let ok: TargetSettings = typed(&json!({"streams": {"public-users": {"kind": "users", "key": "user_id", "rename": {"mail": "email"}}}}).as_object().cloned().unwrap()).unwrap();
        assert_eq!(ok.streams["public-users"].key.as_deref(), Some("user_id"));
        let err = typed::<TargetSettings>(
            &json!({"streams": {"x": {"knd": "users"}}})
                .as_object()
                .cloned()
                .unwrap(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("knd"), "{err}");
    }
}

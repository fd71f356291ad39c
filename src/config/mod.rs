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
pub mod vendor;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;
use serde_json::{Map, Value};
use url::Url;

pub use secret::{REDACTED, Secret};
pub use settings::{Applies, COMMON_SETTINGS, Kind, Setting, TAP_SETTINGS, TARGET_SETTINGS};
pub use vendor::{Resolved, Vendor};

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
    /// Where the Singer sync log goes (`None`: nowhere).
    #[serde(default)]
    pub sync_log: Option<PathBuf>,
    /// What to do with a duplicate identity.
    #[serde(default)]
    pub on_duplicate_identity: OnDuplicateIdentity,
    /// The sync ledger: a file, `false` (off), or absent (the default file).
    #[serde(default)]
    pub ledger: Option<LedgerSetting>,
    /// Skip records whose payload the vendor already accepted (default: on with a ledger).
    #[serde(default)]
    pub change_detection: Option<bool>,
    /// What a run may create or change.
    #[serde(default)]
    pub sync_mode: SyncMode,
    /// `sync_mode: mirror`: the most deletes one stream's pass may make (`None`: no limit).
    #[serde(default)]
    pub max_deletes: Option<u64>,
    /// `sync_mode: mirror`: the largest share of what the ledger holds for a stream that its
    /// pass may delete (`None`: the default, 0.1).
    #[serde(default)]
    pub max_delete_ratio: Option<f64>,
}

/// The `ledger` key: a file, or `true`/`false` for the default file or none.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum LedgerSetting {
    /// `true`: the default file; `false`: no ledger.
    On(bool),
    /// This file (the strings `"false"` and `"off"`, as Meltano and the environment pass them,
    /// mean no ledger).
    Path(PathBuf),
}

/// What a target run may create or change (docs/sync.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// Create or update.
    #[default]
    Upsert,
    /// Never create what the destination does not hold.
    UpdateOnly,
    /// Never change what the destination holds.
    CreateOnly,
    /// Upsert, and delete what a full pass (ACTIVATE_VERSION) no longer holds.
    Mirror,
}

impl SyncMode {
    /// The mode as config writes it (also the skip reason of a record it leaves out).
    pub fn as_str(self) -> &'static str {
        match self {
            SyncMode::Upsert => "upsert",
            SyncMode::UpdateOnly => "update_only",
            SyncMode::CreateOnly => "create_only",
            SyncMode::Mirror => "mirror",
        }
    }
}

/// What the target does with a users record whose identity duplicates an earlier one's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDuplicateIdentity {
    /// Warn and send it.
    #[default]
    Warn,
    /// Write it to the reject file.
    Reject,
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
mod tests;

//! Appcues settings.

use serde::Deserialize;

use crate::config::{Applies, Kind, Secret, Setting};

/// The bulk import path, after `/v2/accounts/{account_id}`. The seed says `/import/users`;
/// every production client found uses `/import/profiles` (reference/vendors.md).
pub const DEFAULT_IMPORT_PATH: &str = "/import/profiles";

/// Appcues' own keys.
pub const SETTINGS: &[Setting] = &[
    Setting::new(
        "account_id",
        Kind::String,
        "Appcues account id (it is part of every API path)",
    )
    .required(),
    Setting::new(
        "api_key",
        Kind::String,
        "Appcues v2 API key (Studio → Settings → API Keys)",
    )
    .secret()
    .required(),
    Setting::new(
        "api_secret",
        Kind::String,
        "Appcues v2 API secret, shown once when the key is created",
    )
    .secret()
    .required(),
    Setting::new(
        "import_path",
        Kind::String,
        "Bulk import path after /v2/accounts/{account_id} (mode: bulk)",
    )
    .default("\"/import/profiles\"")
    .only(Applies::Target),
    Setting::new(
        "bulk_max_rows",
        Kind::Integer,
        "Rows per upload at most: NDJSON import files (mode: bulk) and segment CSV files",
    )
    .default("10000")
    .range(1.0, 10_000_000.0)
    .only(Applies::Target),
    Setting::new(
        "bulk_max_bytes",
        Kind::Integer,
        "Bytes per upload at most (Appcues takes POST bodies up to 20 MB)",
    )
    .default("19500000")
    .range(1024.0, 1_000_000_000.0)
    .only(Applies::Target),
    Setting::new(
        "bulk_job_timeout_seconds",
        Kind::Number,
        "Longest wait for one import or segment job; past it the run stops and a rerun from the last state sends the job's records again",
    )
    .default("3600")
    .range(1.0, 604_800.0)
    .only(Applies::Target),
];

/// Typed Appcues config.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// The account in every path.
    pub account_id: String,
    /// The API key (Basic user).
    pub api_key: Secret,
    /// The API secret (Basic password).
    pub api_secret: Secret,
    /// The bulk import path.
    #[serde(default = "default_import_path")]
    pub import_path: String,
}

impl Config {
    /// Checks what goes into every path: an `account_id` that is empty or a dot segment (`..`
    /// would put every request under `/v2/` instead of the account), and an `import_path` with
    /// a `.` or `..` segment, are config errors rather than requests sent elsewhere.
    pub fn check_paths(&self) -> Result<(), crate::config::ConfigError> {
        if let Err(refusal) = crate::sink::path_key("value", self.account_id.trim()) {
            return Err(crate::config::ConfigError::Invalid {
                key: "account_id".into(),
                problem: refusal.reason,
            });
        }
        if self
            .import_path
            .split(['/', '?'])
            .any(crate::http::is_dot_segment)
        {
            return Err(crate::config::ConfigError::Invalid {
                key: "import_path".into(),
                problem: "has a . or .. segment, which would put the import outside the account"
                    .into(),
            });
        }
        Ok(())
    }
}

fn default_import_path() -> String {
    DEFAULT_IMPORT_PATH.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_account_or_import_path_that_leaves_the_account_is_a_config_error() {
        let config = |account: &str, import: &str| -> Config {
            serde_json::from_value(json!({"account_id": account, "api_key": "k", "api_secret": "s", "import_path": import}))
                .unwrap_or_else(|e| panic!("{e}"))
        };
        assert!(config("12345", "import/profiles").check_paths().is_ok());
        for (account, import, key) in [
            ("..", "import/profiles", "account_id"),
            (".", "import/profiles", "account_id"),
            ("", "import/profiles", "account_id"),
            ("%2e%2e", "import/profiles", "account_id"),
            ("12345", "../../v1/x", "import_path"),
            ("12345", "import/./profiles", "import_path"),
        ] {
            let err = config(account, import)
                .check_paths()
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{account} {import}: {err}");
        }
    }
}

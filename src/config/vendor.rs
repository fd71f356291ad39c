//! What describes a vendor before connecting to it ([`Vendor`]: its name, base URLs and
//! settings) and a config checked against it ([`Resolved`]).
//!
//! These sit below the shared machinery (`crate::sink`, `crate::vendors::source`, `crate::http`)
//! so that none of it imports the registry (`crate::vendors`), which names the vendors' factories
//! and so imports that machinery.

use serde_json::{Map, Value};

use super::{
    Applies, COMMON_SETTINGS, CommonSettings, ConfigError, REDACTED, Setting, TAP_SETTINGS,
    TARGET_SETTINGS, typed,
};

/// What roster knows about a vendor before connecting to it.
#[derive(Debug)]
pub struct Vendor {
    /// The `vendor` config value.
    pub name: &'static str,
    /// The vendor's product name.
    pub title: &'static str,
    /// One line on what tap-roster reads from it, starting "reads"; empty when not listable.
    pub reads_summary: &'static str,
    /// One line on what target-roster writes to it, starting "writes".
    pub writes_summary: &'static str,
    /// Default base URL (origin + fixed prefix), if the vendor has one.
    pub base_url_us: Option<&'static str>,
    /// Default base URL in the EU region, if offered.
    pub base_url_eu: Option<&'static str>,
    /// The vendor's own settings (credentials and options), besides the common ones.
    pub settings: &'static [Setting],
    /// Streams the tap reads; empty when the vendor has no list API.
    pub reads: &'static [&'static str],
    /// Kinds of objects the target writes.
    pub writes: &'static [&'static str],
    /// True when the target offers `mode: bulk`.
    pub bulk: bool,
    /// The request rate the vendor's API document sets, which target-roster paces its writes
    /// at when `requests_per_second` is unset (`None`: none documented; the rate is found from
    /// 429s).
    pub write_rate: Option<f64>,
}

/// Settings that name who is calling without being secret.
const IDENTITY_KEYS: &[&str] = &["username", "scim_username", "account_id", "auth_scheme"];

impl Vendor {
    /// True when the tap can read this vendor.
    pub fn listable(&self) -> bool {
        !self.reads.is_empty()
    }

    /// The one-line summary that fits `binary`: what the tap reads, or what the target writes.
    pub fn summary(&self, binary: Applies) -> &'static str {
        match binary {
            Applies::Tap => self.reads_summary,
            _ => self.writes_summary,
        }
    }

    /// Every setting this vendor takes in `binary`: common, binary-specific, its own.
    pub fn all_settings(&self, binary: Applies) -> Vec<&'static Setting> {
        COMMON_SETTINGS
            .iter()
            .chain(TAP_SETTINGS)
            .chain(TARGET_SETTINGS)
            .chain(self.settings)
            .filter(|s| s.applies_to(binary))
            .collect()
    }

    /// What to check when the vendor refuses the credentials: its credential keys and
    /// `base_url` (a sandbox or EU URL with production keys is refused too).
    pub fn credentials_hint(&self) -> String {
        let mut names: Vec<String> = self
            .settings
            .iter()
            .filter(|s| s.secret || IDENTITY_KEYS.contains(&s.name))
            .map(|s| format!("`{}`", s.name))
            .collect();
        names.push("`base_url`/`region`".to_string());
        format!("check the config keys {}", names.join(", "))
    }
}

/// A config checked against its vendor's settings.
#[derive(Clone)]
pub struct Resolved {
    /// The vendor.
    pub spec: &'static Vendor,
    /// The common keys, typed.
    pub common: CommonSettings,
    /// Every key given, checked. Vendors deserialise their own typed view from it.
    pub values: Map<String, Value>,
}

impl std::fmt::Debug for Resolved {
    /// Prints the config with every secret setting redacted.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let values: Map<String, Value> = self
            .values
            .iter()
            .map(|(key, value)| {
                let secret = self.spec.settings.iter().any(|s| s.secret && s.name == key);
                let shown = if secret {
                    Value::from(REDACTED)
                } else {
                    value.clone()
                };
                (key.clone(), shown)
            })
            .collect();
        f.debug_struct("Resolved")
            .field("vendor", &self.spec.name)
            .field("common", &self.common)
            .field("values", &values)
            .finish()
    }
}

impl Resolved {
    /// The vendor's typed view of the config.
    pub fn typed<T: for<'de> serde::Deserialize<'de>>(&self) -> Result<T, ConfigError> {
        typed(&self.values)
    }

    /// The base URL to use (explicit, or the vendor's default for the region).
    pub fn base_url(&self) -> Result<url::Url, ConfigError> {
        self.common
            .base_url_or(self.spec.base_url_us, self.spec.base_url_eu)
    }
}

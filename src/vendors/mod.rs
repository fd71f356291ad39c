//! One room per vendor, and the registry that names them.
//!
//! Every room has the same files: `mod.rs` (its [`VendorSpec`] and the mode dispatch),
//! `config.rs` (its settings and typed config), `wire.rs` (its wire types, both directions),
//! `read.rs` when the tap can list it, `write.rs` for the target, `bulk.rs` where it has a bulk
//! mode, and `tests.rs`. Write patterns several rooms share are in `patterns.rs`. Adding a vendor
//! is one line in [`REGISTRY`] (docs/adding-a-vendor.md).
//!
//! A [`VendorSpec`] is the vendor's description ([`Vendor`], in `crate::config`, which the
//! shared machinery may read) plus its factories (the tap's source, the target's sink), which
//! only this registry names: nothing in `crate::sink`, `crate::http` or [`source`] imports it.

use std::ops::Deref;

use serde_json::Value;

use crate::config::{Applies, CommonSettings, ConfigError, RawConfig, Setting, typed};
pub use crate::config::{Resolved, Vendor};

pub mod appcues;
pub mod guru;
pub mod guru_scim;
pub mod patterns;
pub mod scim;
pub mod source;
pub mod userflow;
pub mod userguiding;
pub mod userpilot;

/// Every vendor roster knows, one line each.
pub const REGISTRY: &[&VendorSpec] = &[
    &userguiding::SPEC,
    &userflow::SPEC,
    &userpilot::SPEC,
    &appcues::SPEC,
    &guru::SPEC,
    &guru_scim::SPEC,
    &scim::SPEC,
];

/// A registry entry: the vendor's description and the factories of its tap source and target
/// sink. Derefs to the description, so `spec.name` reads as before.
#[derive(Debug)]
pub struct VendorSpec {
    /// What describes the vendor (name, base URLs, settings).
    pub vendor: Vendor,
    /// How the tap reads it; `None` when the vendor has no list API.
    pub source: Option<source::SourceFactory>,
    /// Builds the target's writer; `None` while the vendor cannot be written yet.
    pub sink: Option<crate::sink::SinkFactory>,
}

impl Deref for VendorSpec {
    type Target = Vendor;

    fn deref(&self) -> &Vendor {
        &self.vendor
    }
}

impl VendorSpec {
    /// True when `binary` can use this vendor: the tap reads listable vendors, the target writes
    /// those with a writer.
    pub fn serves(&self, binary: Applies) -> bool {
        match binary {
            Applies::Tap => self.listable(),
            Applies::Target => self.sink.is_some(),
            Applies::Both => true,
        }
    }
}

/// The registry entry of a checked config's vendor (`None` only for a description that is not
/// in the registry, which [`resolve`] never returns).
pub fn entry(config: &Resolved) -> Option<&'static VendorSpec> {
    REGISTRY
        .iter()
        .copied()
        .find(|v| std::ptr::eq(&v.vendor, config.spec) || v.name == config.spec.name)
}

/// The vendors `binary` can use, in registry order.
pub fn serving(binary: Applies) -> impl Iterator<Item = &'static VendorSpec> {
    REGISTRY.iter().copied().filter(move |v| v.serves(binary))
}

/// The names of every vendor, comma-separated.
pub fn names() -> String {
    REGISTRY
        .iter()
        .map(|v| v.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The names of the vendors the tap can read, comma-separated.
pub fn listable_names() -> String {
    REGISTRY
        .iter()
        .filter(|v| v.listable())
        .map(|v| v.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why the tap refuses a vendor without a list API.
pub fn not_listable_message(spec: &Vendor) -> String {
    format!(
        "vendor {} has no list API, so tap-roster cannot read it (the tap reads: {})",
        spec.name,
        listable_names()
    )
}

/// What to check when `vendor` refuses the credentials: its credential keys and `base_url`
/// (a sandbox or EU URL with production keys is refused too).
pub fn credentials_hint(vendor: &str) -> String {
    match find(vendor) {
        Ok(spec) => spec.credentials_hint(),
        Err(_) => "check the config keys `base_url`/`region`".to_string(),
    }
}

/// Looks a vendor up by its `vendor` config value.
pub fn find(name: &str) -> Result<&'static VendorSpec, ConfigError> {
    REGISTRY
        .iter()
        .copied()
        .find(|v| v.name == name)
        .ok_or_else(|| ConfigError::UnknownVendor {
            name: name.to_string(),
            valid: names(),
        })
}

/// Checks a loaded config for `binary`. With `require`, missing credentials are an error.
pub fn resolve(raw: &RawConfig, binary: Applies, require: bool) -> Result<Resolved, ConfigError> {
    let name = raw
        .vendor()
        .ok_or_else(|| ConfigError::NoVendor { valid: names() })?;
    let spec = find(&name)?;
    let settings = spec.all_settings(binary);
    let hint = |key: &str| where_key_belongs(key, spec, binary);
    let values = raw.resolve(spec.name, &settings, binary, require, &hint)?;
    let common: CommonSettings = typed(&values)?;
    common.check_base_url()?;
    Ok(Resolved {
        spec: &spec.vendor,
        common,
        values,
    })
}

/// For an unknown key: is it a setting of the other binary, or of another vendor?
fn where_key_belongs(key: &str, spec: &VendorSpec, binary: Applies) -> Option<String> {
    let other = match binary {
        Applies::Tap => Applies::Target,
        _ => Applies::Tap,
    };
    if spec.all_settings(other).iter().any(|s| s.name == key) {
        return Some(format!(
            "a {} setting",
            if other == Applies::Tap {
                "tap-roster"
            } else {
                "target-roster"
            }
        ));
    }
    let owners: Vec<&str> = REGISTRY
        .iter()
        .filter(|v| v.name != spec.name && v.settings.iter().any(|s| s.name == key))
        .map(|v| v.name)
        .collect();
    (!owners.is_empty()).then(|| format!("a setting of vendor {}", owners.join(", ")))
}

/// The settings schema of a binary across the vendors it serves, for `--about`: the union of
/// their keys, `vendor` required (one of them), and each vendor's required keys under an
/// `if vendor == …` clause. A key several vendors define differently (`api_key`) says so, per
/// vendor, instead of taking the first vendor's words.
pub fn settings_schema(binary: Applies) -> Value {
    let vendors: Vec<&VendorSpec> = serving(binary).collect();
    let mut seen: Vec<Setting> = Vec::new();
    for spec in &vendors {
        for setting in spec.all_settings(binary) {
            if !seen.iter().any(|s| s.name == setting.name) {
                seen.push(for_binary(setting, binary));
            }
        }
    }
    let mut schema = crate::config::settings::schema_for(seen.iter());
    for setting in &seen {
        if let Some(description) = shared_description(setting.name, &vendors, binary) {
            schema["properties"][setting.name]["description"] = Value::from(description);
        }
    }
    let vendor_enum: Vec<Value> = vendors.iter().map(|v| Value::from(v.name)).collect();
    schema["properties"]["vendor"]["enum"] = Value::Array(vendor_enum);
    schema["required"] = Value::Array(vec![Value::from("vendor")]);
    let conditions: Vec<Value> = vendors
        .iter()
        .map(|spec| {
            let required: Vec<Value> = spec
                .settings
                .iter()
                .filter(|s| s.required && s.applies_to(binary))
                .map(|s| Value::from(s.name))
                .collect();
            serde_json::json!({
                "if": {"properties": {"vendor": {"const": spec.name}}, "required": ["vendor"]},
                "then": {"required": required},
            })
        })
        .collect();
    schema["allOf"] = Value::Array(conditions);
    schema
}

/// A common setting as `binary` describes it: `vendor` names what this binary does with it.
pub fn for_binary(setting: &Setting, binary: Applies) -> Setting {
    let mut setting = *setting;
    if setting.name == "vendor" {
        setting.description = match binary {
            Applies::Tap => "The vendor to read (see the vendor sections)",
            Applies::Target => "The vendor to write (see the vendor sections)",
            Applies::Both => setting.description,
        };
    }
    setting
}

/// For a vendor key that several of `vendors` define in different words: one description that
/// gives each vendor's, so no vendor's wording stands for all of them.
fn shared_description(name: &str, vendors: &[&VendorSpec], binary: Applies) -> Option<String> {
    let owners: Vec<(&str, String)> = vendors
        .iter()
        .filter_map(|v| {
            v.settings
                .iter()
                .find(|s| s.name == name && s.applies_to(binary))
                .map(|s| (v.name, s.full_description()))
        })
        .collect();
    let first = &owners.first()?.1;
    if owners.iter().all(|(_, d)| d == first) {
        return None;
    }
    let parts: Vec<String> = owners
        .iter()
        .map(|(vendor, description)| format!("{vendor}: {description}"))
        .collect();
    Some(format!("Depends on the vendor. {}", parts.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{COMMON_SETTINGS, TAP_SETTINGS, TARGET_SETTINGS};
    use serde_json::json;

    fn raw(value: Value) -> RawConfig {
        RawConfig::from_object(value.as_object().cloned().unwrap())
    }

    #[test]
    fn unknown_vendors_list_the_valid_ones() {
        let err = resolve(&raw(json!({"vendor": "intercom"})), Applies::Tap, true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown vendor \"intercom\" (valid vendors: userguiding, userflow, userpilot, appcues, guru, guru_scim, scim)"
        );
        let err = resolve(&raw(json!({})), Applies::Tap, true).unwrap_err();
        assert!(err.to_string().starts_with("config has no \"vendor\" key"));
    }

    #[test]
    fn hints_where_a_misplaced_key_belongs() {
        let err = resolve(
            &raw(json!({"vendor": "userflow", "api_key": "k", "api_secret": "s"})),
            Applies::Target,
            true,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("(a setting of vendor appcues)"), "{err}");
        let err = resolve(
            &raw(json!({"vendor": "userflow", "api_key": "k", "on_invalid": "fail"})),
            Applies::Tap,
            true,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("(a target-roster setting)"), "{err}");
    }

    #[test]
    fn every_vendor_has_a_room_with_consistent_metadata() {
        for spec in REGISTRY {
            assert!(
                !spec.title.is_empty()
                    && spec.writes_summary.starts_with("writes ")
                    && (spec.reads_summary.starts_with("reads ") == spec.listable())
                    && (spec.listable() || spec.reads_summary.is_empty()),
                "{}",
                spec.name
            );
            assert!(!spec.writes.is_empty(), "{} writes nothing", spec.name);
            assert!(
                spec.settings.iter().any(|s| s.secret),
                "{} has no credential",
                spec.name
            );
            for setting in spec.settings {
                assert!(
                    !COMMON_SETTINGS
                        .iter()
                        .chain(TAP_SETTINGS)
                        .chain(TARGET_SETTINGS)
                        .any(|c| c.name == setting.name),
                    "{} redefines {}",
                    spec.name,
                    setting.name
                );
            }
        }
        assert_eq!(listable_names(), "userflow, guru, guru_scim, scim");
    }

    #[test]
    fn the_about_schema_covers_every_vendor_and_marks_secrets() {
        let schema = settings_schema(Applies::Target);
        for key in [
            "api_key",
            "api_secret",
            "api_token",
            "scim_token",
            "bearer_token",
            "password",
        ] {
            assert_eq!(schema["properties"][key]["secret"], true, "{key}");
        }
        assert!(schema["properties"].get("reject_file").is_some());
        assert!(
            settings_schema(Applies::Tap)["properties"]
                .get("reject_file")
                .is_none()
        );
        assert_eq!(schema["allOf"].as_array().unwrap().len(), REGISTRY.len());
    }
}

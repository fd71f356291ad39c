//! `--about [--format text|json|markdown]`: what the binary is, its capabilities, and the
//! settings of the vendors it serves (the tap: those it can read; the target: those it can
//! write), with secrets marked. It needs no config and never shows a config value.

use serde_json::{Value, json};

use super::AboutFormat;
use crate::config::{Applies, settings::markdown_table};
use crate::exit::RunError;
use crate::vendors::{self, VendorSpec};

/// Meltano capabilities of the tap (singer-meltano.md §6).
pub const TAP_CAPABILITIES: &[&str] = &[
    "catalog",
    "discover",
    "state",
    "about",
    "test",
    "schema-flattening",
    "activate-version",
];

/// Meltano capabilities of the target.
pub const TARGET_CAPABILITIES: &[&str] = &[
    "about",
    "validate-records",
    "hard-delete",
    "activate-version",
];

fn identity(binary: Applies) -> (&'static str, &'static str, &'static [&'static str]) {
    match binary {
        Applies::Target => (
            "target-roster",
            "Writes Singer users, groups, memberships and events to UserGuiding, Userflow, Userpilot, Appcues, Guru or any SCIM 2.0 service, and emits STATE only after the vendor accepted every earlier record. With sync_mode mirror (capability activate-version), deletes at the vendor what it wrote and a full pass (ACTIVATE_VERSION) no longer holds, behind max_deletes and max_delete_ratio.",
            TARGET_CAPABILITIES,
        ),
        _ => (
            "tap-roster",
            "Reads users, groups and group memberships from Userflow, Guru, Guru SCIM or any SCIM 2.0 service, with resumable page bookmarks.",
            TAP_CAPABILITIES,
        ),
    }
}

/// The vendors `binary` serves.
fn served(binary: Applies) -> impl Iterator<Item = &'static VendorSpec> {
    vendors::serving(binary)
}

/// The common and binary-specific settings, as `binary` describes them.
fn common_settings(binary: Applies) -> Vec<crate::config::Setting> {
    crate::config::COMMON_SETTINGS
        .iter()
        .chain(crate::config::TAP_SETTINGS)
        .chain(crate::config::TARGET_SETTINGS)
        .filter(|s| s.applies_to(binary))
        .map(|s| vendors::for_binary(s, binary))
        .collect()
}

/// The `--about --format json` document.
pub fn json(binary: Applies) -> Value {
    let (name, description, capabilities) = identity(binary);
    let vendors: Vec<Value> = served(binary)
        .map(|spec| {
            let mut vendor = json!({
                "name": spec.name,
                "title": spec.title,
                "summary": spec.summary(binary),
                "base_url": spec.base_url_us,
                "eu_base_url": spec.base_url_eu,
            });
            if binary == Applies::Tap {
                vendor["reads"] = json!(spec.reads);
            } else {
                vendor["writes"] = json!(spec.writes);
                vendor["bulk"] = json!(spec.bulk);
            }
            vendor["settings"] = crate::config::settings::schema_for(
                spec.settings.iter().filter(|s| s.applies_to(binary)),
            );
            vendor
        })
        .collect();
    json!({
        "name": name,
        "description": description,
        "version": env!("CARGO_PKG_VERSION"),
        "capabilities": capabilities,
        "settings": vendors::settings_schema(binary),
        "vendors": vendors,
    })
}

/// The `--about --format markdown` document.
pub fn markdown(binary: Applies) -> String {
    let (name, description, capabilities) = identity(binary);
    let mut out = format!(
        "# {name} {}\n\n{description}\n\n## Capabilities\n\n{}\n\n## Common settings\n\n{}",
        env!("CARGO_PKG_VERSION"),
        capabilities
            .iter()
            .map(|c| format!("- `{c}`"))
            .collect::<Vec<_>>()
            .join("\n"),
        markdown_table(&common_settings(binary)),
    );
    for spec in served(binary) {
        let base = spec.base_url_us.unwrap_or("(none: set base_url)");
        out.push_str(&format!(
            "\n## `vendor: {}` ({})\n\n{}. Default base URL: `{base}`{}.\n\n{}",
            spec.name,
            spec.title,
            capitalise(spec.summary(binary)),
            spec.base_url_eu
                .map(|eu| format!(" (EU: `{eu}`)"))
                .unwrap_or_default(),
            markdown_table(spec.settings.iter().filter(|s| s.applies_to(binary))),
        ));
    }
    out
}

/// The plain-text `--about`.
pub fn text(binary: Applies) -> String {
    let (name, description, capabilities) = identity(binary);
    let mut out = format!(
        "{name} {}\n{description}\nCapabilities: {}\n\nVendors:\n",
        env!("CARGO_PKG_VERSION"),
        capabilities.join(", ")
    );
    for spec in served(binary) {
        let keys: Vec<String> = spec
            .settings
            .iter()
            .filter(|s| s.applies_to(binary))
            .map(|s| {
                if s.secret {
                    format!("{} (secret)", s.name)
                } else {
                    s.name.to_string()
                }
            })
            .collect();
        out.push_str(&format!(
            "  {:<12} {} — keys: {}\n",
            spec.name,
            spec.summary(binary),
            keys.join(", ")
        ));
    }
    out.push_str(&format!(
        "\nCommon keys: {}\nRun with --about --format json for the full settings schema.\n",
        common_settings(binary)
            .iter()
            .map(|s| s.name)
            .collect::<Vec<_>>()
            .join(", ")
    ));
    out
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Prints `--about` to stdout.
pub fn print(binary: Applies, format: AboutFormat) -> Result<(), RunError> {
    let mut out = super::stdout();
    let written = match format {
        AboutFormat::Json => out.write_json(&json(binary)),
        AboutFormat::Markdown => out.write_text(&markdown(binary)),
        AboutFormat::Text => out.write_text(&text(binary)),
    };
    match written {
        Ok(()) | Err(crate::singer::WriteError::Closed) => Ok(()),
        Err(err) => Err(RunError::runtime(&err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vendors::REGISTRY;

    #[test]
    fn json_has_the_sdk_keys_and_marks_secrets() {
        let about = json(Applies::Target);
        let keys: Vec<&String> = about.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "name",
                "description",
                "version",
                "capabilities",
                "settings",
                "vendors"
            ]
        );
        assert_eq!(about["capabilities"][1], "validate-records");
        assert_eq!(
            about["settings"]["properties"]["api_secret"]["secret"],
            true
        );
        assert_eq!(about["vendors"].as_array().unwrap().len(), REGISTRY.len());
    }

    #[test]
    fn the_tap_lists_only_listable_vendors() {
        let about = json(Applies::Tap);
        let names: Vec<&str> = about["vendors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["userflow", "guru", "guru_scim", "scim"]);
        assert_eq!(
            about["capabilities"],
            serde_json::json!([
                "catalog",
                "discover",
                "state",
                "about",
                "test",
                "schema-flattening",
                "activate-version"
            ])
        );
        assert!(markdown(Applies::Tap).contains("| `scim_token` | string | yes |  | Guru SCIM token (separate from REST tokens); alone it is sent as a Bearer token (Authorization: Bearer TOKEN) (secret) |"));
        assert!(text(Applies::Target).contains("api_secret (secret)"));
    }

    /// Meltano reads the tap's `--about --format json`: it must describe the tap only (issue 11
    /// item 12: it listed all seven vendors' keys and the target's, and called `api_key`
    /// UserGuiding's token).
    #[test]
    fn the_tap_describes_only_what_it_reads() {
        let about = json(Applies::Tap);
        let settings = &about["settings"];
        assert_eq!(
            settings["properties"]["vendor"]["enum"],
            serde_json::json!(["userflow", "guru", "guru_scim", "scim"])
        );
        assert_eq!(settings["allOf"].as_array().unwrap().len(), 4);
        for key in [
            "account_id",
            "api_secret",
            "reject_file",
            "mode",
            "bulk_max_rows",
            "team_member_type",
            "streams",
        ] {
            assert!(
                settings["properties"].get(key).is_none(),
                "the tap's settings list {key}"
            );
        }
        let api_key = settings["properties"]["api_key"]["description"]
            .as_str()
            .unwrap();
        assert!(api_key.starts_with("Userflow API key"), "{api_key}");
        assert!(
            settings["properties"]["vendor"]["description"]
                .as_str()
                .unwrap()
                .contains("to read")
        );
        for vendor in about["vendors"].as_array().unwrap() {
            let summary = vendor["summary"].as_str().unwrap();
            assert!(summary.starts_with("reads "), "{summary}");
            assert!(vendor.get("writes").is_none() && vendor.get("bulk").is_none());
        }
        let text = text(Applies::Tap);
        let markdown = markdown(Applies::Tap);
        for other in ["userguiding", "userpilot", "appcues", "writes "] {
            assert!(
                !text.contains(other),
                "tap --about mentions {other}:\n{text}"
            );
            assert!(
                !markdown.contains(other),
                "tap --about markdown mentions {other}"
            );
        }
    }

    #[test]
    fn the_target_describes_what_it_writes() {
        let about = json(Applies::Target);
        for vendor in about["vendors"].as_array().unwrap() {
            let summary = vendor["summary"].as_str().unwrap();
            assert!(summary.starts_with("writes "), "{summary}");
            assert!(vendor.get("reads").is_none());
        }
        let api_key = about["settings"]["properties"]["api_key"]["description"]
            .as_str()
            .unwrap();
        for vendor in ["userguiding:", "userflow:", "userpilot:", "appcues:"] {
            assert!(api_key.contains(vendor), "{api_key}");
        }
        assert!(
            about["settings"]["properties"]["vendor"]["description"]
                .as_str()
                .unwrap()
                .contains("to write")
        );
        assert!(!text(Applies::Target).contains(" reads "));
    }
}

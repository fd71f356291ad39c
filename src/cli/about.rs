//! `--about [--format text|json|markdown]`: what the binary is, its capabilities, and every
//! vendor's settings with secrets marked. It needs no config and never shows a config value.

use serde_json::{Value, json};

use super::AboutFormat;
use crate::config::{Applies, settings::markdown_table};
use crate::exit::RunError;
use crate::vendors::{self, REGISTRY};

/// Meltano capabilities of the tap (singer-meltano.md §6).
pub const TAP_CAPABILITIES: &[&str] = &["catalog", "discover", "state", "about", "test"];

/// Meltano capabilities of the target.
pub const TARGET_CAPABILITIES: &[&str] = &["about", "validate-records", "hard-delete"];

fn identity(binary: Applies) -> (&'static str, &'static str, &'static [&'static str]) {
    match binary {
        Applies::Target => (
            "target-roster",
            "Writes Singer users, groups, memberships and events to UserGuiding, Userflow, Userpilot, Appcues, Guru or any SCIM 2.0 service, and emits STATE only after the vendor accepted every earlier record.",
            TARGET_CAPABILITIES,
        ),
        _ => (
            "tap-roster",
            "Reads users, groups and group memberships from Userflow, Guru, Guru SCIM or any SCIM 2.0 service, with resumable page bookmarks.",
            TAP_CAPABILITIES,
        ),
    }
}

/// The `--about --format json` document.
pub fn json(binary: Applies) -> Value {
    let (name, description, capabilities) = identity(binary);
    let vendors: Vec<Value> = REGISTRY
        .iter()
        .filter(|spec| binary != Applies::Tap || spec.listable())
        .map(|spec| {
            json!({
                "name": spec.name,
                "title": spec.title,
                "summary": spec.summary,
                "base_url": spec.base_url_us,
                "eu_base_url": spec.base_url_eu,
                "reads": spec.reads,
                "writes": spec.writes,
                "bulk": spec.bulk,
                "settings": crate::config::settings::schema_for(spec.settings.iter().filter(|s| s.applies_to(binary))),
            })
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
        markdown_table(
            crate::config::COMMON_SETTINGS
                .iter()
                .chain(crate::config::TARGET_SETTINGS)
                .filter(|s| s.applies_to(binary))
        ),
    );
    for spec in REGISTRY {
        if binary == Applies::Tap && !spec.listable() {
            continue;
        }
        let base = spec.base_url_us.unwrap_or("(none: set base_url)");
        out.push_str(&format!(
            "\n## `vendor: {}` ({})\n\n{}. Default base URL: `{base}`{}.\n\n{}",
            spec.name,
            spec.title,
            capitalise(spec.summary),
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
    for spec in REGISTRY {
        if binary == Applies::Tap && !spec.listable() {
            continue;
        }
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
            spec.summary,
            keys.join(", ")
        ));
    }
    out.push_str(&format!(
        "\nCommon keys: {}\nRun with --about --format json for the full settings schema.\n",
        crate::config::COMMON_SETTINGS
            .iter()
            .chain(crate::config::TARGET_SETTINGS)
            .filter(|s| s.applies_to(binary))
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
            serde_json::json!(["catalog", "discover", "state", "about", "test"])
        );
        assert!(markdown(Applies::Tap).contains("| `scim_token` | string | yes |  | Guru SCIM token (separate from REST tokens) (secret) |"));
        assert!(text(Applies::Target).contains("api_secret (secret)"));
    }
}

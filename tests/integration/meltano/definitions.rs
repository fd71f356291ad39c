//! The plugin definitions (the sample projects' and the Hub-style ones) against `--about`,
//! and Meltano's redaction of the secrets.

use super::*;

/// The plugin definitions in `file` (a project's meltano.yml, or a Hub-style definition of one
/// plugin), read with the PyYAML that Meltano's virtualenv carries:
/// `{"plugins": {name: {setting: {kind, sensitive, options}, __capabilities, __executable,
/// __pip_url, __groups}}, "inherits": {name: {from, config}}}`.
fn declared_settings(venv: &Path, file: &Path) -> Value {
    let script = r#"
import json, sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
if "plugins" in doc:
    plugins = [p for kind in ("extractors", "loaders") for p in doc["plugins"].get(kind, [])]
else:
    plugins = [doc]
out = {}
inherits = {}
for p in plugins:
    if "inherit_from" in p:
        inherits[p["name"]] = {"from": p["inherit_from"], "config": p.get("config", {})}
        continue
    out[p["name"]] = {
        s["name"]: {
            "kind": s.get("kind", "string"),
            "sensitive": bool(s.get("sensitive", False)),
            "options": [o["value"] for o in s.get("options", [])],
            "description": s.get("description"),
        }
        for s in p.get("settings", [])
    }
    out[p["name"]]["__capabilities"] = p.get("capabilities", [])
    out[p["name"]]["__executable"] = p.get("executable")
    out[p["name"]]["__pip_url"] = p.get("pip_url")
    out[p["name"]]["__groups"] = p.get("settings_group_validation", [])
print(json.dumps({"plugins": out, "inherits": inherits}))
"#;
    let out = support::run(
        Command::new(venv.join("bin/python"))
            .args(["-c", script])
            .arg(file),
        MELTANO_TIMEOUT,
    );
    out.assert_success(&format!("reading {}", file.display()));
    serde_json::from_str(&out.stdout).unwrap()
}

/// The Meltano setting kind for a JSON Schema property of `--about`.
fn kind_of(property: &Value) -> &'static str {
    if property.get("enum").is_some() {
        return "options";
    }
    match property["type"].as_str() {
        Some("integer") => "integer",
        Some("number") => "decimal",
        Some("boolean") => "boolean",
        Some("object") => "object",
        Some("array") => "array",
        _ => "string",
    }
}

/// The `settings_group_validation` groups `--about`'s settings call for: per vendor, `vendor`
/// and its required keys (the `allOf` clauses), plus the two ways to sign in to a SCIM 2.0
/// provider, which `--about` cannot mark required because either one will do (docs/tap.md).
fn expected_groups(about: &Value, vendors: &[&str]) -> BTreeSet<Vec<String>> {
    let mut groups: BTreeSet<Vec<String>> = about["settings"]["allOf"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| vendors.contains(&c["if"]["properties"]["vendor"]["const"].as_str().unwrap()))
        .filter_map(|c| {
            let required = c["then"]["required"].as_array().unwrap();
            (!required.is_empty()).then(|| {
                let mut group: Vec<String> = std::iter::once("vendor".to_string())
                    .chain(required.iter().map(|k| k.as_str().unwrap().to_string()))
                    .collect();
                group.sort();
                group
            })
        })
        .collect();
    if vendors.contains(&"scim") {
        groups.insert(vec!["bearer_token".into(), "vendor".into()]);
        groups.insert(vec!["password".into(), "username".into(), "vendor".into()]);
    }
    groups
}

/// Checks the definitions of tap-roster and target-roster in `file` against `--about`.
fn check_definitions(venv: &Path, file: &Path, pip_url: &str) -> Value {
    let declared = declared_settings(venv, file);
    let at = file.display();
    for (plugin, binary, applies) in [
        ("tap-roster", bin::TAP, Applies::Tap),
        ("target-roster", bin::TARGET, Applies::Target),
    ] {
        let Some(ours) = declared["plugins"][plugin].as_object() else {
            continue;
        };
        let mut ours = ours.clone();
        // The tap's --about lists every vendor's keys; the project declares the ones of the
        // vendors the tap can read.
        let vendors: Vec<&VendorSpec> = REGISTRY
            .iter()
            .copied()
            .filter(|s| applies == Applies::Target || s.listable())
            .collect();
        let relevant: BTreeSet<&str> = vendors
            .iter()
            .flat_map(|s| s.all_settings(applies))
            .map(|s| s.name)
            .collect();
        let vendor_names: Vec<&str> = vendors.iter().map(|s| s.name).collect();
        let about = bin::Bin::new(binary)
            .args(["--about", "--format", "json"])
            .run(MELTANO_TIMEOUT);
        about.assert_success(&format!("{plugin} --about"));
        let about: Value = serde_json::from_str(&about.stdout).unwrap();
        assert_eq!(
            ours.remove("__capabilities").unwrap(),
            about["capabilities"],
            "{at}: {plugin}: capabilities"
        );
        assert_eq!(
            ours.remove("__executable").unwrap(),
            json!(plugin),
            "{at}: {plugin}: executable"
        );
        assert_eq!(
            ours.remove("__pip_url").unwrap(),
            json!(pip_url),
            "{at}: {plugin}: pip_url"
        );
        let groups: BTreeSet<Vec<String>> = ours
            .remove("__groups")
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                let mut g: Vec<String> = g
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|k| k.as_str().unwrap().to_string())
                    .collect();
                g.sort();
                g
            })
            .collect();
        assert_eq!(
            groups,
            expected_groups(&about, &vendor_names),
            "{at}: {plugin}: settings_group_validation, one group per vendor's credentials"
        );
        let properties: BTreeMap<&String, &Value> = about["settings"]["properties"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(name, _)| relevant.contains(name.as_str()))
            .collect();
        assert_eq!(
            ours.keys().collect::<BTreeSet<_>>(),
            properties.keys().copied().collect::<BTreeSet<_>>(),
            "{at}: {plugin}: settings vs --about"
        );
        for (name, property) in properties {
            let setting = &ours[name.as_str()];
            assert_eq!(
                setting["kind"],
                kind_of(property),
                "{at}: {plugin}.{name}: kind"
            );
            assert_eq!(
                setting["sensitive"],
                json!(property["secret"] == json!(true)),
                "{at}: {plugin}.{name}: sensitive exactly when --about marks it secret"
            );
            assert!(
                setting["description"]
                    .as_str()
                    .is_some_and(|d| !d.is_empty()),
                "{at}: {plugin}.{name}: a description"
            );
            let options: Vec<Value> = property
                .get("enum")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let options: Vec<Value> = if name == "vendor" {
                vendor_names.iter().map(|n| json!(n)).collect()
            } else {
                options
            };
            assert_eq!(
                setting["options"],
                json!(options),
                "{at}: {plugin}.{name}: options"
            );
        }
    }
    declared
}

#[test]
fn meltano_definitions_declare_what_about_prints_and_meltano_redacts_the_secrets() {
    let Some(venv) = meltano_venv() else { return };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for sample in [
        "samples/meltano/meltano.yml",
        "samples/meltano-vendors/meltano.yml",
    ] {
        let declared = check_definitions(&venv, &root.join(sample), SAMPLE_PIP_URL);
        let plugins: BTreeSet<&String> = declared["plugins"].as_object().unwrap().keys().collect();
        assert_eq!(
            plugins,
            BTreeSet::from([&"tap-roster".to_string(), &"target-roster".to_string()]),
            "{sample}: both plugins defined"
        );
    }
    // The several-vendors project: one inheriting plugin per vendor, each naming its vendor.
    let declared = declared_settings(&venv, &root.join("samples/meltano-vendors/meltano.yml"));
    assert_eq!(
        declared["inherits"],
        json!({
            "tap-roster-userflow": {"from": "tap-roster", "config": {"vendor": "userflow"}},
            "tap-roster-scim": {"from": "tap-roster", "config": {"vendor": "scim"}},
            "target-roster-appcues": {"from": "target-roster", "config": {
                "vendor": "appcues",
                "reject_file": "$MELTANO_PROJECT_ROOT/output/appcues-rejects.ndjson"}},
            "target-roster-guru": {"from": "target-roster", "config": {
                "vendor": "guru",
                "reject_file": "$MELTANO_PROJECT_ROOT/output/guru-rejects.ndjson"}},
        })
    );
    for (file, plugin) in [
        ("meltano-hub/tap-roster.yml", "tap-roster"),
        ("meltano-hub/target-roster.yml", "target-roster"),
    ] {
        let declared = check_definitions(&venv, &root.join(file), HUB_PIP_URL);
        assert!(declared["plugins"][plugin].is_object(), "{file}");
    }

    // Meltano shows the secrets from .env redacted, and the plain settings as they are.
    let sb = Sandbox::builder()
        .users(1)
        .groups(1)
        .start_background()
        .unwrap();
    let project = Project::new(venv.clone(), &sb, None);
    let listed = project.meltano(
        &["--environment=dev", "config", "list", "target-roster"],
        &[],
    );
    listed.assert_success("meltano config list target-roster");
    let printed = project.meltano(
        &["--environment=dev", "config", "print", "target-roster"],
        &[],
    );
    printed.assert_success("meltano config print target-roster");
    let config: Value = serde_json::from_str(printed.stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {}", printed.both()));
    assert_eq!(config["vendor"], "appcues");
    assert_eq!(config["account_id"], "10001");
    assert_eq!(config["base_url"], sb.base_url(Vendor::Appcues));
    for secret in ["sandbox-appcues-key", "sandbox-appcues-secret"] {
        for out in [&listed, &printed] {
            assert!(
                !out.both().contains(secret),
                "meltano showed {secret}:\n{}",
                out.both()
            );
        }
    }
    // `print` masks a sensitive value with asterisks, `list` says "(redacted)".
    for key in ["api_key", "api_secret"] {
        assert!(
            config[key]
                .as_str()
                .is_some_and(|s| !s.is_empty() && s.chars().all(|c| c == '*')),
            "{key}: {config}"
        );
        assert!(
            listed
                .stdout
                .lines()
                .any(|l| l.starts_with(key) && l.contains("(redacted)")),
            "{key}:\n{}",
            listed.both()
        );
    }

    // The Hub definitions load in Meltano: `meltano add --from-ref` in a fresh project, and
    // `config list` shows each vendor's credential group.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("hub");
    support::run(
        Command::new(venv.join("bin/meltano"))
            .args(["init", "hub", "--no-usage-stats"])
            .current_dir(dir.path())
            .env("NO_COLOR", "1")
            .env("MELTANO_SEND_ANONYMOUS_USAGE_STATS", "false"),
        MELTANO_TIMEOUT,
    )
    .assert_success("meltano init");
    let hub = Project {
        _dir: dir,
        root,
        venv,
        base_urls: Vec::new(),
    };
    for (file, kind, plugin) in [
        ("meltano-hub/tap-roster.yml", "extractor", "tap-roster"),
        ("meltano-hub/target-roster.yml", "loader", "target-roster"),
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let path = path.to_str().unwrap();
        hub.meltano(
            &["add", "--from-ref", path, kind, plugin, "--no-install"],
            &[],
        )
        .assert_success(&format!("meltano add --from-ref {file}"));
        let listed = hub.meltano(&["config", "list", plugin], &[]);
        listed.assert_success(&format!("meltano config list {plugin}"));
        for group in ["bearer_token, vendor", "api_token, username, vendor"] {
            assert!(
                listed.stdout.contains(group),
                "{plugin}: group {group}:\n{}",
                listed.both()
            );
        }
    }
}

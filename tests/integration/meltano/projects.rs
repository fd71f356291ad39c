//! A project with several vendors inheriting one install, and stream maps between the tap and
//! the target.

use super::*;

/// `samples/meltano-vendors/`: one install of each plugin, and per-vendor plugins inheriting
/// from them (Userflow → Appcues, SCIM → Guru), each with its own credentials. Meltano lists
/// each one's settings and vendor, and `meltano config test` passes for each, and fails, naming
/// the key, when a vendor's credential is missing. (Meltano 4.4.1 uses
/// `settings_group_validation` only to show the groups in `config list`; the missing key is
/// caught by roster's own check of its config, which `config test` runs.)
#[test]
fn meltano_project_with_several_vendors_inherits_one_install_and_tests_each_vendor() {
    let Some(venv) = meltano_venv() else { return };
    let Some(wheel) = wheel() else { return };
    let sb = Sandbox::builder()
        .users(3)
        .groups(2)
        .start_background()
        .unwrap();
    let project = Project::copy(
        "meltano-vendors",
        venv,
        Some(&wheel),
        vec![
            (
                "TAP_ROSTER_USERFLOW_BASE_URL".into(),
                sb.base_url(Vendor::Userflow),
            ),
            ("TAP_ROSTER_SCIM_BASE_URL".into(), sb.base_url(Vendor::Scim)),
            (
                "TARGET_ROSTER_APPCUES_BASE_URL".into(),
                sb.base_url(Vendor::Appcues),
            ),
            (
                "TARGET_ROSTER_GURU_BASE_URL".into(),
                sb.base_url(Vendor::Guru),
            ),
        ],
    );
    project.install(&["tap-roster", "target-roster"]);

    for (plugin, vendor) in [
        ("tap-roster-userflow", "userflow"),
        ("tap-roster-scim", "scim"),
        ("target-roster-appcues", "appcues"),
        ("target-roster-guru", "guru"),
    ] {
        let listed = project.meltano(&["--environment=dev", "config", "list", plugin], &[]);
        listed.assert_success(&format!("meltano config list {plugin}"));
        let out = &listed.stdout;
        assert!(
            out.contains("Setting groups (one of the following combinations is required)")
                && out.contains("bearer_token, vendor"),
            "{plugin}: the credential groups:\n{}",
            listed.both()
        );
        assert!(
            out.lines()
                .any(|l| l.starts_with("vendor ") && l.contains(&format!("'{vendor}'"))),
            "{plugin}: vendor {vendor}:\n{}",
            listed.both()
        );
    }
    for tap in ["tap-roster-userflow", "tap-roster-scim"] {
        let test = project.meltano(&["--environment=dev", "config", "test", tap], &[]);
        test.assert_success(&format!("meltano config test {tap}"));
        assert!(
            test.both().contains("Plugin configuration is valid"),
            "{tap}:\n{}",
            test.both()
        );
    }
    for target in ["target-roster-appcues", "target-roster-guru"] {
        let test = project.meltano(&["--environment=dev", "config", "test", target], &[]);
        let all = test.both();
        assert!(
            all.contains("Test data was written to your target system"),
            "{target}: the loader test did not pass:\n{all}"
        );
    }

    // The target's own connection test, through Meltano: the credentials reach Guru.
    project
        .meltano(
            &[
                "--environment=dev",
                "invoke",
                "target-roster-guru",
                "--test",
            ],
            &[],
        )
        .assert_success("meltano invoke target-roster-guru --test");

    // A missing credential, taken out of .env: Userflow's key and Guru's token.
    let env = std::fs::read_to_string(project.root.join(".env")).unwrap();
    let without: String = env
        .lines()
        .filter(|l| {
            !l.starts_with("TARGET_ROSTER_GURU_API_TOKEN=")
                && !l.starts_with("TAP_ROSTER_USERFLOW_API_KEY=")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        env.lines().count(),
        without.lines().count() + 2,
        ".env.example sets both"
    );
    std::fs::write(project.root.join(".env"), without).unwrap();
    let test = project.meltano(
        &["--environment=dev", "config", "test", "tap-roster-userflow"],
        &[],
    );
    let all = test.both();
    assert!(
        !test.success()
            && all.contains("api_key")
            && !all.contains("Plugin configuration is valid"),
        "the extractor test must fail and name the missing key:\n{all}"
    );
    // Meltano 4.4.1's loader test hides a failing target's words behind its ProcessLookupError
    // (see the module doc); the target's own test names the key.
    let test = project.meltano(
        &[
            "--environment=dev",
            "invoke",
            "target-roster-guru",
            "--test",
        ],
        &[],
    );
    let all = test.both();
    assert!(
        !test.success() && all.contains("api_token"),
        "the target's test must fail and name the missing key:\n{all}"
    );
}

/// Stream maps, the ecosystem's way: `meltano run tap-roster pro-users target-roster` puts
/// meltano-map-transformer (from PyPI, installed by `meltano install`) between the tap and the
/// target, with the sample's `pro-users` mapping: only the users on the pro plan, `name`
/// renamed to `full_name`, no groups or memberships. Appcues must hold exactly that.
#[test]
fn meltano_map_transformer_between_tap_and_target_filters_rows_and_renames_fields() {
    let Some(venv) = meltano_venv() else { return };
    let Some(wheel) = wheel() else { return };
    let sb = Sandbox::builder()
        .seed(7)
        .users(60)
        .groups(4)
        .start_background()
        .unwrap();
    let project = Project::new(venv, &sb, Some(&wheel));
    project.install(&["tap-roster", "target-roster"]);
    project
        .meltano(&["run", "tap-roster", "pro-users", "target-roster"], &[])
        .assert_success("meltano run tap-roster pro-users target-roster");

    let userflow = sb.dump(Vendor::Userflow);
    let pro: BTreeMap<String, Value> = userflow["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["attributes"]["plan"] == "pro")
        .map(|u| {
            (
                u["id"].as_str().unwrap().to_string(),
                u["attributes"]["name"].clone(),
            )
        })
        .collect();
    assert!(
        !pro.is_empty() && pro.len() < 60,
        "the seed has pro users and others: {}",
        pro.len()
    );
    let appcues = sb.dump(Vendor::Appcues);
    let held: BTreeMap<String, &Value> = appcues["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["user_id"].as_str().unwrap().to_string(), u))
        .collect();
    assert_eq!(
        held.keys().collect::<Vec<_>>(),
        pro.keys().collect::<Vec<_>>(),
        "Appcues holds exactly the pro users"
    );
    for (id, name) in &pro {
        let profile = held[id];
        assert_eq!(
            &profile["full_name"], name,
            "{id}: name renamed to full_name"
        );
        assert!(profile.get("name").is_none(), "{id}: no name: {profile}");
        assert_eq!(profile["plan"], "pro", "{id}");
    }
    assert_eq!(
        appcues["groups"],
        json!([]),
        "groups and memberships were mapped away"
    );
}
